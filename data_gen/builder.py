"""`build(config)`: write a corpus folder (DatasetDict, tokenizer, templates, config, card, manifest)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml
from datasets import Dataset, DatasetDict, disable_progress_bars
from transformers import PreTrainedTokenizerBase

from common.errors import FULL_DISK, RecipeError, RunError

from .card import dataset_card
from .columns import as_list
from .config import CorpusConfig
from .folders import contents, exclusive
from .layout import BUILDER_CONFIG, CARD, INDIVIDUAL_SPLITS, MANIFEST, QUERY_SPLITS, TEMPLATES
from .population import Individuals, draw_population
from .resources import ATTRIBUTES, Pools, load_pools
from .tokenizer import build_tokenizer
from .tokens import TemplateTokens, individual_tokens

FORMAT_VERSION = 2  # 2: eval_finetune queries


def _nested(array: np.ndarray) -> pa.Array:
    """A numpy array [n, a, b, ...] as nested fixed-size Arrow lists."""
    out = pa.array(array.ravel())
    for size in reversed(array.shape[1:]):
        out = pa.FixedSizeListArray.from_arrays(out, size)
    return out


def _dataset(columns: dict[str, pa.Array], fingerprint: str) -> Dataset:
    # A fixed fingerprint (rather than a random one) keeps the saved bytes a function of the config.
    return Dataset(pa.table(columns), fingerprint=hashlib.sha256(fingerprint.encode()).hexdigest()[:16])


def individuals_table(population: Individuals, pools: Pools, offset: int) -> dict[str, pa.Array]:
    first = np.array(pools.first_names, dtype=object)
    last = np.array(pools.last_names, dtype=object)
    parts = [first[population.names[:, 0]], first[population.names[:, 1]], last[population.names[:, 2]]]
    columns = {
        "id": pa.array(np.arange(offset, offset + len(population))),
        "name": pa.array([f"{a} {b} {c}" for a, b, c in zip(*parts)]),
        "first_name": pa.array(parts[0]),
        "middle_name": pa.array(parts[1]),
        "last_name": pa.array(parts[2]),
    }
    for attribute in ATTRIBUTES:
        slot_strings = [np.array(slot, dtype=object)[population.values[attribute][:, k]]
                        for k, slot in enumerate(pools.slots[attribute])]
        columns[attribute] = pa.array([" ".join(v) for v in zip(*slot_strings)])
    columns["train_templates"] = _nested(population.train_templates.astype(np.int8))
    columns["eval_templates"] = _nested(population.eval_templates.astype(np.int8))
    return columns


def queries_table(people: Individuals, names: list[str], values: dict[str, list[str]],
                  templates: TemplateTokens, texts: dict[str, list[str]], bos_id: int) -> dict[str, pa.Array]:
    """One query per (individual, attribute, held-out template), ordered that way; each is
    ``<bos> sentence`` with the value tokens at ``[value_start, value_end)``."""
    n, n_attr, n_eval = people.eval_templates.shape
    template = people.eval_templates.astype(np.int64)
    attribute = np.broadcast_to(np.arange(n_attr)[None, :, None], template.shape)
    n_slots = np.array([people.values[a].shape[1] for a in ATTRIBUTES])
    prefix_len = np.array([[len(p) for p in row] for row in templates.prefix])
    middle_len = np.array([[len(m) for m in row] for row in templates.middle])
    lengths = (1 + templates.word_lengths()[attribute, template] + 3 + n_slots[attribute]).ravel()
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    value_start = (1 + prefix_len[attribute, template] + 3 + middle_len[attribute, template]).ravel()
    flat = np.empty(offsets[-1], dtype=np.int32)
    individual = np.broadcast_to(np.arange(n)[:, None, None], template.shape)
    for a, name in enumerate(ATTRIBUTES):
        for t in range(len(templates.prefix[a])):
            rows = np.flatnonzero((attribute == a) & (template == t))
            if not len(rows):
                continue
            who = individual.ravel()[rows]
            pieces = [np.full((len(rows), 1), bos_id), np.tile(templates.prefix[a][t], (len(rows), 1)),
                      people.names[who], np.tile(templates.middle[a][t], (len(rows), 1)), people.values[name][who],
                      np.tile(templates.suffix[a][t], (len(rows), 1))]
            ids = np.concatenate([p.reshape(len(rows), -1) for p in pieces], axis=1)
            flat[offsets[rows][:, None] + np.arange(ids.shape[1])] = ids
    text = [texts[ATTRIBUTES[a]][t].format(name=names[i], value=values[ATTRIBUTES[a]][i])
            for i, a, t in zip(individual.ravel(), attribute.ravel(), template.ravel())]
    return {
        "individual": pa.array(individual.ravel()),
        "attribute": pa.array(np.array(ATTRIBUTES, dtype=object)[attribute.ravel()]),
        "template": pa.array(template.ravel().astype(np.int8)),
        "text": pa.array(text),
        "input_ids": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat)),
        "value_start": pa.array(value_start.astype(np.int32)),
        "value_end": pa.array((value_start + n_slots[attribute].ravel()).astype(np.int32)),
    }


def corpus_dict(config: CorpusConfig, pools: Pools, tokenizer: PreTrainedTokenizerBase,
                templates: TemplateTokens) -> DatasetDict:
    population = draw_population(config, pools)
    bounds = np.cumsum([0, config.n_individuals, config.n_heldout, config.n_finetune])
    key = json.dumps(config.to_dict(), sort_keys=True)
    splits = {}
    for split, start, stop in zip(INDIVIDUAL_SPLITS, bounds[:-1], bounds[1:]):
        splits[split] = _dataset(individuals_table(population.take(slice(start, stop)), pools, start), f"{key}/{split}")
    for split, source in QUERY_SPLITS.items():
        people = splits[source]
        columns = queries_table(individual_tokens(people, tokenizer), as_list(people, "name"),
                                {a: as_list(people, a) for a in ATTRIBUTES}, templates, pools.templates,
                                tokenizer.bos_token_id)
        splits[split] = _dataset(columns, f"{key}/{split}")
    return DatasetDict(splits)


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
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
    """Build the corpus, then write it, holding the folder, in a temporary folder beside `output_dir` moved
    into place."""
    out = Path(config.output_dir)
    check_output_dir(out, config.overwrite)
    pools = load_pools(config)
    tokenizer = build_tokenizer(pools)
    templates = TemplateTokens.from_texts(pools.templates, tokenizer)
    corpus = corpus_dict(config, pools, tokenizer, templates)
    with exclusive(out, "corpus"):
        check_output_dir(out, config.overwrite)  # again: another build may have finished meanwhile
        _write(out, config, corpus, pools, tokenizer, templates)
    return out


def _write(out: Path, config: CorpusConfig, corpus: DatasetDict, pools: Pools, tokenizer: PreTrainedTokenizerBase,
           templates: TemplateTokens) -> None:
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    disable_progress_bars()
    try:
        corpus.save_to_disk(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / TEMPLATES).write_text(yaml.safe_dump(pools.templates, sort_keys=False, allow_unicode=True))
        (tmp / BUILDER_CONFIG).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        (tmp / CARD).write_text(dataset_card(config, corpus, tokenizer, templates))
        manifest = {"format_version": FORMAT_VERSION, "vocab_size": len(tokenizer),
                    "num_rows": {split: len(ds) for split, ds in corpus.items()}, "sha256": _checksums(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except OSError as err:
        if err.errno not in FULL_DISK:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        needed = sum(dataset.data.nbytes for dataset in corpus.values())
        raise RunError(f"no space left on the device to write the corpus into '{out}': it needs about "
                       f"{needed / 2**20:,.1f} MiB, and {shutil.disk_usage(out.parent).free / 2**20:,.1f} MiB are free "
                       f"there; free space, or choose another --output_dir (nothing was written)") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
