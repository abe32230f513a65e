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

from data_gen.hub import is_hub_id, snapshot
from data_gen.recipe import RecipeError

from .callbacks import Callback
from .checkpoints import checkpoint_name
from .run_dir import RUN_CONFIG

WEIGHT_FILES = ["*.json", "*.safetensors"]  # config, tokenizer and weights: no optimizer or training state
HUB_LOG = "hub_push.jsonl"
HUB_STAGING = ".hub-main"
REPORT_FILES = ["report.md", "trajectory.jsonl", "phases.json", "phases.png", "hallucinations.png", "attention.png",
                "finetune.json", "forgetting.png", "drift.jsonl"]


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


class HubPushCallback(Callback):
    """Pushes each permanent checkpoint, once saved, to its own revision (step-000001000) of the run's repo."""

    def __init__(self, pusher: HubPusher | None, steps: list[int], checkpoints: Path):
        self.pusher, self.steps, self.checkpoints = pusher, set(steps), checkpoints

    def on_step(self, trainer, step: int) -> None:
        if self.pusher is not None and step in self.steps:
            name = checkpoint_name(step)
            self.pusher.push(self.checkpoints / name, name, f"Checkpoint at step {step:,}")


def model_card(run_dir: Path, repo_id: str) -> str:
    """README.md of a run's repository: metadata, the run's report, and the recipe."""
    metadata = {"library_name": "transformers", "tags": ["fact-dynamics", "synthetic-biographies"],
                "pipeline_tag": "text-generation"}
    return (f"---\n{yaml.safe_dump(metadata, sort_keys=False)}---\n\n"
            f"Each permanent checkpoint is the branch named after its step: `AutoModelForCausalLM.from_pretrained("
            f"\"{repo_id}\", revision=\"step-000001000\")`; `main` holds the final weights.\n\n"
            f"{(run_dir / 'report.md').read_text()}\n## Recipe\n\n```yaml\n{(run_dir / RUN_CONFIG).read_text()}```\n")


def push_run_files(pusher: HubPusher, run_dir: Path, final_checkpoint: Path) -> None:
    """Queue the final weights, the model card, the report's figures and tables for `main`."""
    staging = run_dir / HUB_STAGING
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(final_checkpoint, staging)
    for name in REPORT_FILES:
        if (run_dir / name).is_file():
            shutil.copy(run_dir / name, staging / name)
    (staging / "README.md").write_text(model_card(run_dir, pusher.repo_id))
    pusher.push(staging, "main", "Final weights, model card and report")
