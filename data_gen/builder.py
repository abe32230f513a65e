"""`build(config)`: write a corpus folder (DatasetDict, tokenizer, templates, config, card, manifest), a chunk of
individuals at a time."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import yaml
from datasets import Dataset, disable_progress_bars
from transformers import PreTrainedTokenizerBase

from common.errors import FULL_DISK, RecipeError, RunError

from .card import dataset_card
from .config import CorpusConfig
from .folders import contents, exclusive
from .layout import (
    BUILDER_CONFIG,
    CARD,
    DATASET_INDEX,
    INDIVIDUAL_SPLITS,
    MANIFEST,
    QUERIES_OF,
    QUERY_SPLITS,
    TEMPLATES,
)
from .population import Individuals, draw_population
from .resources import Pools, load_pools
from .shards import SplitWriter
from .tables import individuals_nbytes, individuals_table, queries_nbytes, queries_table
from .tokenizer import build_tokenizer
from .tokens import TemplateTokens, individual_tokens

FORMAT_VERSION = 2  # 2: eval_finetune queries


CHUNK = 16384  # individuals whose rows (and queries) are built at a time: the rows held never grow with the corpus


def _fingerprint(key: str) -> str:
    # A fixed fingerprint (rather than a random one) keeps the saved bytes a function of the config.
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def write_splits(folder: Path, config: CorpusConfig, population: Individuals, pools: Pools,
                 tokenizer: PreTrainedTokenizerBase, templates: TemplateTokens) -> dict[str, int]:
    """Every split of the corpus into `folder`, as `DatasetDict.save_to_disk` writes it, a chunk of
    individuals (and their queries) at a time; the rows of each split."""
    bounds = np.cumsum([0, config.n_individuals, config.n_heldout, config.n_finetune])
    key = json.dumps(config.to_dict(), sort_keys=True)
    folder.mkdir(parents=True)
    (folder / DATASET_INDEX).write_text(json.dumps({"splits": [*INDIVIDUAL_SPLITS, *QUERY_SPLITS]}))
    counts = {}
    for split, start, stop in zip(INDIVIDUAL_SPLITS, bounds[:-1], bounds[1:]):
        people, queries = population.take(slice(start, stop)), QUERIES_OF[split]
        counts[split], counts[queries] = len(people), people.eval_templates.size
        rows = SplitWriter(folder / split, counts[split], individuals_nbytes(people, pools),
                           _fingerprint(f"{key}/{split}"))
        query_rows = SplitWriter(folder / queries, counts[queries], queries_nbytes(people, pools, templates),
                                 _fingerprint(f"{key}/{queries}"))
        for at in range(0, max(len(people), 1), CHUNK):  # an empty split still gets its (empty) tables
            table = individuals_table(people.take(slice(at, at + CHUNK)), pools, start + at)
            rows.write(table)
            query_rows.write(queries_table(individual_tokens(Dataset(table), tokenizer), table, templates,
                                           pools.templates, tokenizer.bos_token_id, at))
        rows.close()
        query_rows.close()
    return {split: counts[split] for split in (*INDIVIDUAL_SPLITS, *QUERY_SPLITS)}


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()  # in blocks: a shard is never read whole


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _sha256(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def check_output_dir(out: Path, overwrite: bool) -> None:
    """A corpus goes into a new or empty folder, or replaces a corpus when asked to; never anything else."""
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file()):
        raise RecipeError(f"output_dir '{out}' holds files that are not a corpus "
                          f"({contents(out) if out.is_dir() else 'it is a file'}): --overwrite replaces only a corpus; "
                          f"choose another folder")
    if (out / MANIFEST).is_file() and not overwrite:
        raise RecipeError(f"output_dir '{out}' already exists and holds a corpus: choose another folder or pass "
                          f"--overwrite true to replace it")


def build(config: CorpusConfig) -> Path:
    """Write the corpus, holding the folder, into a temporary folder beside `output_dir`, moved into place."""
    out = Path(config.output_dir)
    check_output_dir(out, config.overwrite)
    pools = load_pools(config)
    tokenizer = build_tokenizer(pools)
    templates = TemplateTokens.from_texts(pools.templates, tokenizer)
    population = draw_population(config, pools)
    with exclusive(out, "corpus"):
        check_output_dir(out, config.overwrite)  # again: another build may have finished meanwhile
        _write(out, config, population, pools, tokenizer, templates)
    return out


def _write(out: Path, config: CorpusConfig, population: Individuals, pools: Pools, tokenizer: PreTrainedTokenizerBase,
           templates: TemplateTokens) -> None:
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    disable_progress_bars()
    try:
        rows = write_splits(tmp, config, population, pools, tokenizer, templates)
        first = Dataset(individuals_table(population.take(slice(0, 1)), pools, 0))
        tokenizer.save_pretrained(str(tmp))
        (tmp / TEMPLATES).write_text(yaml.safe_dump(pools.templates, sort_keys=False, allow_unicode=True))
        (tmp / BUILDER_CONFIG).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        (tmp / CARD).write_text(dataset_card(config, rows, first, tokenizer, templates))
        manifest = {"format_version": FORMAT_VERSION, "vocab_size": len(tokenizer),
                    "num_rows": rows, "sha256": _checksums(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except OSError as err:
        if err.errno not in FULL_DISK:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        needed = individuals_nbytes(population, pools) + queries_nbytes(population, pools, templates)
        raise RunError(f"no space left on the device to write the corpus into '{out}': it needs about "
                       f"{needed / 2**20:,.1f} MiB, and {shutil.disk_usage(out.parent).free / 2**20:,.1f} MiB are free "
                       f"there; free space, or choose another --output_dir (nothing was written)") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
