"""Shared fixtures: small corpora built with the real builder into temporary folders."""

from __future__ import annotations

import pytest
from accelerate import Accelerator

from data_gen import Corpus, CorpusConfig
from data_gen.builder import build
from data_gen.recipe import to_flags

SMALL_POOLS = dict(n_first_names=40, n_last_names=40, n_cities=30, n_universities=20, n_majors=10, n_companies=30)


TINY_RUN = {"model_preset": "tiny", "batch_size": 16, "report_to": "none"}


def tiny_flags(corpus_dir, output_dir, **values) -> list[str]:
    """Command-line flags of a tiny CPU run on `corpus_dir` into `output_dir`: TINY_RUN, then `values`
    (a list gives several words, None leaves the key out, e.g. model_preset=None for fine-tuning)."""
    return ["--corpus", str(corpus_dir), "--output_dir", str(output_dir), *to_flags({**TINY_RUN, **values})]


def record_losses(monkeypatch) -> list[tuple[int, float]]:
    """(step, training loss) of every `train/loss` the trainer logs through its Accelerator, from now on."""
    losses = []
    original = Accelerator.log

    def log(self, values, step=None, log_kwargs=None):
        if "train/loss" in values:
            losses.append((step, values["train/loss"]))
        return original(self, values, step=step, log_kwargs=log_kwargs or {})

    monkeypatch.setattr(Accelerator, "log", log)
    return losses


def small_config(output_dir, **overrides) -> CorpusConfig:
    values = dict(output_dir=str(output_dir), n_individuals=200, n_heldout=50, n_finetune=50, seed=3, **SMALL_POOLS)
    values.update(overrides)
    return CorpusConfig(**values)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    return build(small_config(tmp_path_factory.mktemp("corpus") / "small"))


@pytest.fixture(scope="session")
def corpus(corpus_dir):
    return Corpus(corpus_dir)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run only where CUDA is available."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
