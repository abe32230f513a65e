"""Loading a built corpus folder back: datasets, tokenizer and the token tables of each split."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import yaml
from datasets import DatasetDict, load_from_disk
from transformers import PreTrainedTokenizerFast

from .builder import FORMAT_VERSION, MANIFEST
from .recipe import RecipeError
from .stream import BiographyStream
from .tokens import IndividualTokens, TemplateTokens


class Corpus:
    """A corpus folder written by `python -m data_gen build`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / MANIFEST).is_file():
            raise RecipeError(f"corpus folder '{self.path}' does not exist or was not built by data_gen: "
                              f"build it with `python -m data_gen build --config <data.yaml>` or fix the path")
        version = json.loads((self.path / MANIFEST).read_text()).get("format_version")
        if version != FORMAT_VERSION:
            raise RecipeError(f"corpus '{self.path}' has format {version} but this data_gen reads format "
                              f"{FORMAT_VERSION}: rebuild it with `python -m data_gen build --config <data.yaml> "
                              f"--overwrite true`")
        self.dataset: DatasetDict = load_from_disk(str(self.path))
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(str(self.path))
        self.config = yaml.safe_load((self.path / "builder_config.yaml").read_text())
        self.template_texts = yaml.safe_load((self.path / "templates.yaml").read_text())
        self.templates = TemplateTokens.from_texts(self.template_texts, self.tokenizer)

    def split(self, name: str):
        """One split of the DatasetDict, with a clear error when the corpus lacks it."""
        if name not in self.dataset:
            raise RecipeError(f"corpus '{self.path}' has no split '{name}': it has {', '.join(self.dataset)}")
        return self.dataset[name]

    @functools.cache
    def individuals(self, split: str = "train") -> IndividualTokens:
        return IndividualTokens.from_dataset(self.split(split), self.tokenizer)

    def stream(self, batch_size: int, seed: int, split: str = "train", sampler=None,
               people: IndividualTokens | None = None) -> BiographyStream:
        """Training biographies of a split's individuals (or of `people`), drawn by `sampler` (default: uniformly)."""
        t = self.tokenizer
        return BiographyStream(self.individuals(split) if people is None else people, self.templates, t.bos_token_id, t.eos_token_id,
                               t.pad_token_id, batch_size, seed, sampler)
