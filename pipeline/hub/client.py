"""The Hugging Face Hub boundary: every call to `huggingface_hub` goes through this module. Pushes are
checked before the first step (`check_can_push`), run in the background, and retried only when the failure
can pass (no connection, a server error, 429); revisions are listed and described for `verify`."""

from __future__ import annotations

import json
import math
import os
import queue
import sys
import threading
import time
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants
from huggingface_hub.errors import EntryNotFoundError

from common.errors import RecipeError, RunError
from data_gen.hub import is_hub_id, snapshot

from ..run_folder import MANIFEST
from .manifest import RemoteFile

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


TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
TRANSPORT_ERRORS = ("TransportError", "ConnectionError", "Timeout")  # httpx's and httpx2's, requests'


def status_of(err: BaseException) -> int | None:
    return getattr(getattr(err, "response", None), "status_code", None)


def is_transient(err: BaseException) -> bool:
    """Whether a failed call may succeed if tried again: no connection or a timeout, a server error, or 429;
    never a refusal (401, 403, 404, a bad id)."""
    status = status_of(err)
    if status is not None:
        return status in TRANSIENT_STATUS
    return isinstance(err, (ConnectionError, TimeoutError)) or any(c.__name__ in TRANSPORT_ERRORS
                                                                    for c in type(err).__mro__)


def describe(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def offline() -> bool:
    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def check_can_push(repo_id: str, private: bool, create: bool = True) -> None:
    """Refuse in one line, before any training, a push that cannot succeed: offline mode, no token, or a
    repository that cannot be created or reached (`create`: asked of the Hub, by one process)."""
    later = "or train with --push_to_hub false and push afterwards with python -m pipeline.hub push --run <output_dir>"
    if offline():
        raise RecipeError(f"push_to_hub needs the network but HF_HUB_OFFLINE is set: unset it, {later}")
    if huggingface_hub.get_token() is None:
        raise RecipeError(f"push_to_hub needs a Hub token and none is set: run `hf auth login` or set HF_TOKEN, "
                          f"{later}")
    if create:
        try:
            huggingface_hub.HfApi().create_repo(repo_id, private=private, exist_ok=True)
        except Exception as err:  # noqa: BLE001 - whatever the Hub answers, the run must not start
            raise RecipeError(f"cannot create or reach Hub repository '{repo_id}' ({describe(err)}): check the id, "
                              f"your token's write access and the network, {later}") from None


class HubPusher:
    """Uploads finished folders to one Hub model repository from a background thread, so training
    never waits for the network. An upload that fails for a reason that can pass is retried with
    exponential back-off (longer when the Hub answers 429); a refusal is not retried. Commits are spaced
    by at least `min_interval` seconds (the Hub limits commits per hour), and every outcome is reported on
    stderr and in `log`, never raised."""

    def __init__(self, repo_id: str, log: Path, private: bool = False, retries: int = 5, backoff: float = 2.0,
                 min_interval: float = 30.0):
        self.repo_id, self.log, self.private = repo_id, log, private
        self.retries, self.backoff, self.min_interval = retries, backoff, min_interval
        self.api = huggingface_hub.HfApi()
        self.queue: queue.Queue = queue.Queue()
        self.failed: list[str] = []
        self.pushed: list[str] = []
        self.waiting: list[str] = []  # queued or being uploaded
        self._last_commit = -math.inf
        self._repo_ready = False
        self._thread = threading.Thread(target=self._work, name="hub-push", daemon=True)
        self._thread.start()

    def push(self, folder: Path, revision: str, message: str, ignore: list[str] | None = None) -> None:
        """Queue `folder` (complete, not written to again) for upload to `revision` (a branch)."""
        self.waiting.append(revision)
        self.queue.put((folder, revision, message, ignore))

    def close(self, timeout: float | None = None) -> tuple[list[str], list[str], list[str]]:
        """Wait for the queued uploads, at most `timeout` seconds; returns the revisions pushed, failed, and
        not done in time (left to the daemon thread, which ends with the process)."""
        self.queue.put(None)
        self._thread.join(timeout)
        return self.pushed, self.failed, list(self.waiting)

    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            self._upload(*item)
            self.waiting.remove(item[1])

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
            except Exception as err:  # noqa: BLE001 - any network or server error: reported, never fatal
                self._last_commit = time.monotonic()
                delay = self.backoff * 2 ** (attempt - 1)
                if status_of(err) == 429:
                    delay = max(delay, float(err.response.headers.get("Retry-After", 60)))
                transient = is_transient(err)
                last = attempt == self.retries or not transient
                then = ("not retried: the Hub refused it" if not transient else "giving up, training goes on" if last
                        else f"retry {attempt}/{self.retries - 1} in {delay:.0f}s")
                print(f"hub: pushing {folder.name} to {self.repo_id}@{revision} failed ({describe(err)}); {then}",
                      file=sys.stderr)
                self._record(revision=revision, folder=str(folder), status="failed" if last else "retrying",
                             attempt=attempt, error=describe(err))
                if last:
                    self.failed.append(revision)
                    return
                time.sleep(delay)


def _asked(what: str, call):
    """A listing call to the Hub, a failure of which is one line."""
    try:
        return call()
    except Exception as err:  # noqa: BLE001 - whatever the Hub answers, the command stops in one line
        raise RunError(f"cannot {what} ({describe(err)}): check the repository id, your token and the network") \
            from None


def remote_revisions(repo_id: str) -> list[str]:
    """The repository's branches."""
    refs = _asked(f"list the revisions of '{repo_id}'", lambda: huggingface_hub.HfApi().list_repo_refs(repo_id))
    return sorted(branch.name for branch in refs.branches)


def remote_files(repo_id: str, revision: str) -> dict[str, RemoteFile]:
    """Each file of a revision as the Hub describes it: size, git blob id, and sha256 for LFS files."""
    entries = _asked(f"list the files of '{repo_id}'@{revision}", lambda: list(
        huggingface_hub.HfApi().list_repo_tree(repo_id, revision=revision, recursive=True)))
    return {e.path: RemoteFile(e.size, e.blob_id, e.lfs.sha256 if e.lfs else None)
            for e in entries if hasattr(e, "blob_id")}


def remote_manifest(repo_id: str, revision: str) -> dict | None:
    """A revision's manifest.json (a small download), None where it has none."""
    try:
        path = huggingface_hub.hf_hub_download(repo_id, MANIFEST, revision=revision)
    except EntryNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - as _asked
        raise RunError(f"cannot read {MANIFEST} of '{repo_id}'@{revision} ({describe(err)}): check the repository "
                       f"id, your token and the network") from None
    return json.loads(Path(path).read_text())
