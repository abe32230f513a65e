"""Corpora on the Hugging Face Hub: push a built corpus, fetch one by its id. Every call to the Hub
for corpora goes through this module (tokens come from `huggingface_hub`'s login or HF_TOKEN)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import huggingface_hub
import yaml
from datasets import load_from_disk
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from common.errors import RecipeError

from .layout import CARD, DATASET_INDEX, HUB_DATA, MANIFEST


def is_hub_id(text: str) -> bool:
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and not Path(text).exists()


def hub_card(card: str, splits: list[str]) -> str:
    """The corpus's dataset card with the parquet layout in its metadata, so `load_dataset(repo_id)` finds
    the splits."""
    _, header, body = card.split("---\n", 2)
    metadata = yaml.safe_load(header)
    metadata["configs"] = [{"config_name": "default",
                            "data_files": [{"split": s, "path": f"{HUB_DATA}/{s}-*"} for s in splits]}]
    return f"---\n{yaml.safe_dump(metadata, sort_keys=False)}---\n{body}"


def side_files(folder: Path) -> list[str]:
    """The corpus's files beside its splits: tokenizer, templates, builder config, card and manifest."""
    listed = json.loads((folder / MANIFEST).read_text())["sha256"]
    return sorted(name for name in listed if "/" not in name and name != DATASET_INDEX) + [MANIFEST]


def push_corpus(folder: Path, repo_id: str, private: bool = False, revision: str | None = None) -> None:
    """Upload a built corpus: the splits as parquet (DatasetDict.push_to_hub), then the tokenizer,
    templates, builder config (with its seed), manifest and dataset card."""
    dataset = load_from_disk(str(folder))
    dataset.push_to_hub(repo_id, private=private, revision=revision, commit_message="Corpus splits")
    api = huggingface_hub.HfApi()
    with tempfile.TemporaryDirectory() as staging:
        for name in side_files(folder):
            shutil.copy(folder / name, staging)
        (Path(staging) / CARD).write_text(hub_card((folder / CARD).read_text(), list(dataset)))
        api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=staging, revision=revision,
                          commit_message="Tokenizer, templates, builder config, manifest and dataset card")


def snapshot(repo_id: str, problem: str, **kwargs) -> Path:
    """A local snapshot (in the Hugging Face cache) of a Hub repository; `problem` starts the one-line
    error when it cannot be had (offline and not cached, unknown id or revision, no access)."""
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, **kwargs))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as err:
        raise RecipeError(problem.format(error=type(err).__name__)) from err


def fetch_corpus(repo_id: str, revision: str | None = None) -> Path:
    """A local snapshot of a corpus pushed by `push_corpus`."""
    return snapshot(repo_id, f"corpus '{repo_id}' is neither a local folder nor a dataset fetched from the Hub "
                             "({error}): build it with `python -m data_gen build --config <data.yaml>`, or fix the "
                             "path or the dataset id", repo_type="dataset", revision=revision)
