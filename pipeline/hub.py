"""The Hugging Face Hub boundary: every call to `huggingface_hub` goes through this module."""

from __future__ import annotations

import json
import math
import queue
import shutil
import sys
import threading
import time
from pathlib import Path

import huggingface_hub
import yaml

from common.errors import RecipeError
from data_gen.hub import is_hub_id, snapshot

from .run_folder import HUB_STAGING, MODEL_CARD, REPORT, REPORT_FILES, RUN_CONFIG, RunFolder

WEIGHT_FILES = ["*.json", "*.safetensors"]  # config, tokenizer and weights: no optimizer or training state


def resolve_checkpoint(init_from: str, revision: str | None = None) -> Path:
    """A local folder holding the weights of `init_from`: the folder itself, or the files of a Hub
    model id at `revision` downloaded into the local Hugging Face cache."""
    path = Path(init_from)
    if path.exists():
        if not (path / "config.json").is_file():
            raise RecipeError(f"init_from '{init_from}' holds no model (no config.json): point it at a checkpoint "
                              f"folder such as runs/demo/checkpoints/step-000001500")
        return path
    if not is_hub_id(init_from):
        raise RecipeError(f"init_from '{init_from}' is neither an existing folder nor a Hub id 'owner/name': fix "
                          f"the path")
    return snapshot(init_from, f"init_from '{init_from}' is neither a local folder nor a model fetched from the "
                               f"Hub at revision {revision or 'main'} ({{error}}): fix the path, or the id, revision "
                               f"and your login", revision=revision, allow_patterns=WEIGHT_FILES)


class HubPusher:
    """Uploads finished folders to one Hub model repository from a background thread, so training
    never waits for the network. Each upload is retried with exponential back-off (longer when the
    Hub answers 429), commits are spaced by at least `min_interval` seconds (the Hub limits commits
    per hour), and failures are reported on stderr and in `log`, never raised."""

    def __init__(self, repo_id: str, log: Path, private: bool = False, retries: int = 5, backoff: float = 2.0,
                 min_interval: float = 30.0):
        self.repo_id, self.log, self.private = repo_id, log, private
        self.retries, self.backoff, self.min_interval = retries, backoff, min_interval
        self.api = huggingface_hub.HfApi()
        self.queue: queue.Queue = queue.Queue()
        self.failed: list[str] = []
        self.pushed: list[str] = []
        self._last_commit = -math.inf
        self._repo_ready = False
        self._thread = threading.Thread(target=self._work, name="hub-push", daemon=True)
        self._thread.start()

    def push(self, folder: Path, revision: str, message: str, ignore: list[str] | None = None) -> None:
        """Queue `folder` (complete, not written to again) for upload to `revision` (a branch)."""
        self.queue.put((folder, revision, message, ignore))

    def close(self) -> tuple[list[str], list[str]]:
        """Wait for the queued uploads; returns (pushed, failed) revisions."""
        self.queue.put(None)
        self._thread.join()
        return self.pushed, self.failed

    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            self._upload(*item)

    def _record(self, **entry) -> None:
        with self.log.open("a") as f:
            f.write(json.dumps({"time": time.time(), "repo_id": self.repo_id, **entry}) + "\n")

    def _upload(self, folder: Path, revision: str, message: str, ignore: list[str] | None) -> None:
        for attempt in range(1, self.retries + 1):
            time.sleep(max(0.0, self._last_commit + self.min_interval - time.monotonic()))
            try:
                if not self._repo_ready:
                    self.api.create_repo(self.repo_id, private=self.private, exist_ok=True)
                    self._repo_ready = True
                if revision != "main":
                    self.api.create_branch(self.repo_id, branch=revision, exist_ok=True)
                self.api.upload_folder(repo_id=self.repo_id, folder_path=str(folder), revision=revision,
                                       commit_message=message, ignore_patterns=ignore)
                self._last_commit = time.monotonic()
                self.pushed.append(revision)
                self._record(revision=revision, folder=str(folder), status="pushed", attempt=attempt)
                return
            except Exception as err:  # noqa: BLE001 - any network or server error: retried, reported, never fatal
                self._last_commit = time.monotonic()
                delay = self.backoff * 2 ** (attempt - 1)
                response = getattr(err, "response", None)
                if getattr(response, "status_code", None) == 429:
                    delay = max(delay, float(response.headers.get("Retry-After", 60)))
                last = attempt == self.retries
                print(f"hub: pushing {folder.name} to {self.repo_id}@{revision} failed ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''}); "
                      + ("giving up, training goes on" if last else f"retry {attempt}/{self.retries - 1} in "
                                                                     f"{delay:.0f}s"), file=sys.stderr)
                self._record(revision=revision, folder=str(folder), status="failed" if last else "retrying",
                             attempt=attempt, error=type(err).__name__)
                if last:
                    self.failed.append(revision)
                    return
                time.sleep(delay)


def model_card(run: RunFolder, repo_id: str) -> str:
    """README.md of a run's repository: metadata, the run's report, and the recipe."""
    metadata = {"library_name": "transformers", "tags": ["fact-dynamics", "synthetic-biographies"],
                "pipeline_tag": "text-generation"}
    return (f"---\n{yaml.safe_dump(metadata, sort_keys=False)}---\n\n"
            f"Each permanent checkpoint is the branch named after its step: `AutoModelForCausalLM.from_pretrained("
            f"\"{repo_id}\", revision=\"step-000001000\")`; `main` holds the final weights.\n\n"
            f"{(run / REPORT).read_text()}\n## Recipe\n\n```yaml\n{(run / RUN_CONFIG).read_text()}```\n")


def push_run_files(pusher: HubPusher, run: RunFolder, final_checkpoint: Path) -> None:
    """Queue the final weights, the model card, the report's figures and tables for `main`."""
    staging = run / HUB_STAGING
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(final_checkpoint, staging)
    for name in REPORT_FILES:
        if (run / name).is_file():
            shutil.copy(run / name, staging / name)
    (staging / MODEL_CARD).write_text(model_card(run, pusher.repo_id))
    pusher.push(staging, "main", "Final weights, model card and report")
