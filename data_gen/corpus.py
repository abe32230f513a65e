"""Loading a built corpus folder back: datasets, tokenizer and the token tables of each split."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import yaml
from datasets import Dataset, DatasetDict, load_from_disk
from transformers import PreTrainedTokenizerFast

from common.errors import RecipeError

from .builder import FORMAT_VERSION
from .columns import as_array
from .hub import fetch_corpus, is_hub_id
from .layout import BUILDER_CONFIG, HUB_DATA, MANIFEST, QUERIES_OF, TEMPLATES
from .population import Individuals
from .stream import BiographyStream
from .tokenizer import with_decoder
from .tokens import TemplateTokens, individual_tokens


class Corpus:
    """A corpus folder written by `python -m data_gen build`."""

    def __init__(self, path: str | Path):
        self.path = fetch_corpus(str(path)) if is_hub_id(str(path)) else Path(path)
        if not (self.path / MANIFEST).is_file():
            raise RecipeError(f"corpus folder '{self.path}' does not exist or was not built by data_gen: "
                              f"build it with `python -m data_gen build --config <data.yaml>` or fix the path")
        manifest = json.loads((self.path / MANIFEST).read_text())
        self.checksums: dict[str, str] = manifest.get("sha256", {})
        if manifest.get("format_version") != FORMAT_VERSION:
            raise RecipeError(f"corpus '{self.path}' has format {manifest.get('format_version')} but this data_gen "
                              f"reads format {FORMAT_VERSION}: rebuild it with `python -m data_gen build --config "
                              f"<data.yaml> --overwrite true`")
        if (self.path / HUB_DATA).is_dir():  # a Hub snapshot: parquet shards
            self.dataset = DatasetDict({split: Dataset.from_parquet(sorted(map(str, (self.path / HUB_DATA).glob(
                f"{split}-*.parquet")))) for split in manifest["num_rows"]})
        else:
            self._verify(manifest)
            self.dataset = load_from_disk(str(self.path))
        rows = {split: len(ds) for split, ds in self.dataset.items()}
        if rows != manifest["num_rows"]:
            raise RecipeError(f"corpus '{self.path}' holds {rows} rows but its manifest says {manifest['num_rows']}: "
                              f"it is incomplete, rebuild or fetch it again")
        self.tokenizer = with_decoder(PreTrainedTokenizerFast.from_pretrained(str(self.path)))  # older corpora too
        self.config = yaml.safe_load((self.path / BUILDER_CONFIG).read_text())
        self.template_texts = yaml.safe_load((self.path / TEMPLATES).read_text())
        self.templates = TemplateTokens.from_texts(self.template_texts, self.tokenizer)

    def _verify(self, manifest: dict) -> None:
        """Every file listed in the manifest is there with its checksum."""
        for name, digest in manifest["sha256"].items():
            file = self.path / name
            if not file.is_file() or hashlib.sha256(file.read_bytes()).hexdigest() != digest:
                raise RecipeError(f"corpus file '{file}' is {'corrupted' if file.is_file() else 'missing'} (it does "
                                  f"not match {MANIFEST}): rebuild the corpus with `python -m data_gen build "
                                  f"--config <data.yaml> --overwrite true`")

    def fingerprint(self, split: str | None = None) -> str:
        """The identity of the corpus (or of one split's files), from the checksums of its manifest: the same
        config builds the same bytes, so the same fingerprint; any rebuild with other people changes it."""
        files = {name: digest for name, digest in self.checksums.items()
                 if split is None or name.startswith(f"{split}/")}
        return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]

    def provenance(self) -> dict:
        """What a run records of the corpus it learns from."""
        return {"path": str(self.path), "fingerprint": self.fingerprint(), "train_fingerprint":
                self.fingerprint("train"), "seed": self.config.get("seed")}

    def split(self, name: str):
        """One split of the DatasetDict, with a clear error when the corpus lacks it."""
        if name not in self.dataset:
            raise RecipeError(f"corpus '{self.path}' has no split '{name}': it has {', '.join(self.dataset)}")
        return self.dataset[name]

    def queries(self, split: str, individuals: np.ndarray | None = None):
        """The evaluation queries about the individuals of `split` (train, heldout or finetune): all, or those
        about `individuals` (indices in the split), in the split's order."""
        queries = self.split(QUERIES_OF[split])
        if individuals is None:
            return queries
        return queries.select(np.flatnonzero(np.isin(as_array(queries, "individual"), individuals)))

    @functools.cache
    def individuals(self, split: str = "train") -> Individuals:
        return individual_tokens(self.split(split), self.tokenizer)

    def stream(self, batch_size: int, seed: int, split: str = "train", sampler=None,
               people: Individuals | None = None, shuffle_sentences: bool = True) -> BiographyStream:
        """Training biographies of a split's individuals (or of `people`), drawn by `sampler` (default:
        uniformly), their sentences in a random order (or, without `shuffle_sentences`, always in one)."""
        t = self.tokenizer
        people = self.individuals(split) if people is None else people
        return BiographyStream(people, self.templates, t.bos_token_id, t.eos_token_id, t.pad_token_id, batch_size,
                               seed, sampler, shuffle_sentences)
