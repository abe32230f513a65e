"""A corpus's queries as lm-evaluation-harness tasks (`python -m data_gen export-lm-eval`).

Per group of individuals (seen: the train split; heldout; new: the fine-tuning split) a JSONL file with one doc per
query, the held-out templates the pipeline evaluates on, and a loglikelihood task on it; a group YAML runs them all.
A doc's context is the query up to its value and its target the value with the space before it: `<bos>` + context
tokenizes to the query's tokens before `value_start`, the target to its value tokens, so lm-eval's `acc` (every target
token the greedy continuation) is the pipeline's attribute accuracy on the same queries (its mean over attributes is
the mean over queries: every attribute has as many).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import yaml

from common.errors import RecipeError

from .columns import as_array, as_list
from .corpus import Corpus
from .folders import contents
from .population import spread

GROUPS = {"seen": "train", "heldout": "heldout", "new": "finetune"}  # a task's group: its individuals' corpus split
EXPORT_RECORD = "export.json"  # what was exported from which corpus; marks the folder as an export


def task_prefix(corpus: str) -> str:
    """The group name of a corpus's tasks, from its folder (or Hub dataset) name: `corpora/demo` -> demo_facts."""
    name = re.sub(r"\W+", "_", Path(corpus.rstrip("/")).name).strip("_")
    return f"{name or 'corpus'}_facts"


def query_docs(corpus: Corpus, split: str, individuals: np.ndarray) -> list[dict]:
    """One doc per query about `individuals` (indices in `split`), in the corpus's order: context (the query up to
    its value), target (the value tokens, decoded with the space before them), individual, attribute, template."""
    queries = corpus.queries(split, individuals)
    ids, start, end = as_list(queries, "input_ids"), as_array(queries, "value_start"), as_array(queries, "value_end")
    contexts = corpus.tokenizer.batch_decode([row[:s] for row, s in zip(ids, start)])
    targets = corpus.tokenizer.batch_decode([row[s:e] for row, s, e in zip(ids, start, end)])
    return [{"context": context, "target": target, "individual": int(who), "attribute": attribute,
             "template": int(template)}
            for context, target, who, attribute, template in zip(contexts, targets, as_array(queries, "individual"),
                                                                  as_list(queries, "attribute"),
                                                                  as_array(queries, "template"))]


def task_config(name: str, docs: Path) -> dict:
    """A loglikelihood task on a JSONL file of docs (named by its absolute path: lm-eval reads it from anywhere);
    the target follows the context with no delimiter, since it holds its own space."""
    return {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(docs)}},
            "test_split": "test", "output_type": "loglikelihood", "doc_to_text": "context", "doc_to_target": "target",
            "target_delimiter": "", "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0}}


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Tasks go into a new or empty folder, or replace an earlier export when asked to; never anything else."""
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / EXPORT_RECORD).is_file()):
        raise RecipeError(f"output_dir '{out}' holds files that are not an lm-eval export "
                          f"({contents(out) if out.is_dir() else 'it is a file'}): choose another folder")
    if (out / EXPORT_RECORD).is_file() and not overwrite:
        raise RecipeError(f"output_dir '{out}' already holds an lm-eval export: choose another folder or pass "
                          f"--overwrite to replace it")


def write_tasks(folder: Path, final: Path, prefix: str, docs: dict[str, list[dict]], record: dict) -> None:
    """Into `folder` (to be renamed `final`): each group's docs and task YAML, the group YAML, the export record."""
    folder.mkdir(parents=True)
    for group, rows in docs.items():
        (folder / f"{group}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        config = task_config(f"{prefix}_{group}", final / f"{group}.jsonl")
        (folder / f"{group}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    group = {"group": prefix, "task": [f"{prefix}_{group}" for group in docs], "metadata": {"version": 1.0}}
    (folder / f"{prefix}.yaml").write_text(yaml.safe_dump(group, sort_keys=False))
    (folder / EXPORT_RECORD).write_text(json.dumps(record, indent=1) + "\n")


def export_tasks(corpus_path: str, output_dir: str | Path, individuals: int = 0, overwrite: bool = False) -> dict:
    """Write the tasks of `individuals` individuals per group (0: all), spread over each split as the pipeline's
    evaluation picks them, through a temporary folder beside `output_dir` renamed into place; what was written
    (the export record). A group without individuals gets no task."""
    if individuals < 0:
        raise RecipeError(f"--individuals must be at least 0 (0: all), not {individuals}")
    out = Path(output_dir).absolute()
    check_output_dir(out, overwrite)
    corpus, prefix = Corpus(corpus_path), task_prefix(corpus_path)
    picked = {group: spread(np.arange(len(corpus.split(split))), individuals) for group, split in GROUPS.items()}
    docs = {group: query_docs(corpus, GROUPS[group], who) for group, who in picked.items() if len(who)}
    record = {"corpus": str(corpus.path.absolute()), "fingerprint": corpus.fingerprint(), "group": prefix,
              "tasks": {f"{prefix}_{group}": {"split": GROUPS[group], "individuals": len(picked[group]),
                                              "docs": len(rows)} for group, rows in docs.items()}}
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_tasks(tmp, out, prefix, docs, record)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record
