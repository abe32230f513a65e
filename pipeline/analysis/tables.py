"""Analysis tables kept in a run's folder: computed once from its checkpoints, then read back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from data_gen import Corpus

from ..run_folder import ATTENTION_TABLE, DRIFT_TABLE, RunFolder, read_jsonl, write_atomically
from .circuits import ATTENTION_BIOGRAPHIES, run_attention_table
from .forgetting import drift_table


def cached_table(path: Path, compute: Callable[[], list[dict]], recompute: bool = False) -> list[dict]:
    """Rows computed once into a JSON-lines file, then read back from it."""
    if recompute or not path.is_file():
        write_atomically(path, "".join(json.dumps(r) + "\n" for r in compute()))
    return read_jsonl(path)


def attention_table(run: RunFolder, corpus: Corpus, n_biographies: int = ATTENTION_BIOGRAPHIES,
                    recompute: bool = False) -> list[dict]:
    """The run's attention statistics per checkpoint, layer and head (attention.jsonl)."""
    return cached_table(run / ATTENTION_TABLE, lambda: run_attention_table(run, corpus, n_biographies), recompute)


def weight_drift_table(run: RunFolder, corpus: Corpus) -> list[dict]:
    """A fine-tuning run's distance to its pretrained weights per checkpoint (drift.jsonl)."""
    return cached_table(run / DRIFT_TABLE, lambda: drift_table(run, corpus))
