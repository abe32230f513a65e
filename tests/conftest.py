"""Shared fixtures: small corpora built with the real builder into temporary folders."""

from __future__ import annotations

import pytest

from data_gen import Corpus, CorpusConfig
from data_gen.builder import build

SMALL_POOLS = dict(n_first_names=40, n_last_names=40, n_cities=30, n_universities=20, n_majors=10, n_companies=30)


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
