"""The Hub, tested at the network boundary: the `huggingface_hub` client is replaced by one that
writes what would be uploaded into a local folder per repository and revision."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from datasets import DatasetDict
from huggingface_hub.errors import EntryNotFoundError
from transformers import AutoModelForCausalLM

from data_gen import Corpus
from data_gen import hub as data_hub
from data_gen.__main__ import main as data_main
from pipeline.hub import client as hub
from pipeline.hub.__main__ import main as hub_main
from pipeline.hub.manifest import file_hashes
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import HUB_LOG, MANIFEST, checkpoint_name

from common.errors import run_cli

from .conftest import cli, one_error_line, tiny_flags

SECRET = "hf_testTOKENthatMustNeverBeWritten"


def hub_hashes(path: Path) -> dict:
    """A file's size, sha256 and git blob id as the Hub reports them, computed by coreutils' sha256sum and
    `git hash-object`, not by the project's code."""
    def tool(*argv: str) -> str:
        return subprocess.run([*argv, str(path)], capture_output=True, text=True, check=True).stdout.split()[0]

    return {"size": path.stat().st_size, "sha256": tool("sha256sum"), "blob_id": tool("git", "hash-object")}


class Refused(Exception):
    """What the Hub answers a request it will never accept (here 403: no write access)."""

    response = SimpleNamespace(status_code=403, headers={})


class FakeHub:
    """Records the calls and keeps the uploaded files under root/<repo_id>/<revision>/; describes them as the
    Hub does (sha256 for LFS files, git blob ids for the others), `wrong_sha256` naming revisions whose
    weights it misreports."""

    def __init__(self, root: Path, fail_first: int = 0, always_fail: bool = False, refuse: str | None = None,
                 upload_seconds: float = 0.0):
        self.root, self.fail_first, self.always_fail = root, fail_first, always_fail
        self.refuse, self.upload_seconds = refuse, upload_seconds  # refuse: "create_repo" or "upload_folder"
        self.calls, self.threads, self.wrong_sha256 = [], set(), set()

    def __call__(self):  # stands in for the HfApi class
        return self

    def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
        self.calls.append(("create_repo", repo_id, private))
        if self.refuse == "create_repo":
            raise Refused("403 Forbidden: you cannot create repositories in this namespace")

    def list_repo_refs(self, repo_id, repo_type=None):
        repo = self.root / repo_id
        return SimpleNamespace(branches=[SimpleNamespace(name=p.name) for p in repo.iterdir()] if repo.is_dir() else [])

    def list_repo_tree(self, repo_id, revision=None, recursive=False, repo_type=None):
        folder = self.root / repo_id / revision
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            hashes = hub_hashes(path)
            lfs = path.suffix in (".safetensors", ".npy")
            if lfs and revision in self.wrong_sha256:
                hashes["sha256"] = hashlib.sha256(b"not these weights").hexdigest()
            yield SimpleNamespace(path=path.relative_to(folder).as_posix(), size=hashes["size"],
                                  blob_id=hashes["blob_id"], lfs=SimpleNamespace(sha256=hashes["sha256"]) if lfs
                                  else None)

    def hf_hub_download(self, repo_id, filename, revision=None):
        path = self.root / repo_id / revision / filename
        if not path.is_file():
            raise EntryNotFoundError(f"{filename} is not in {repo_id}@{revision}")
        return str(path)

    def create_branch(self, repo_id, branch, exist_ok=False, repo_type=None):
        self.calls.append(("create_branch", repo_id, branch))

    def upload_folder(self, repo_id, folder_path, revision=None, commit_message=None, ignore_patterns=None,
                      allow_patterns=None, repo_type=None):
        self.threads.add(threading.current_thread().name)
        self.calls.append(("upload_folder", repo_id, revision or "main"))
        time.sleep(self.upload_seconds)
        if self.refuse == "upload_folder":
            raise Refused("403 Forbidden: your token cannot write to this repository")
        if self.always_fail or self.fail_first > 0:
            self.fail_first -= 1
            raise ConnectionError("Hub unreachable")
        target = self.root / repo_id / (revision or "main")
        shutil.copytree(folder_path, target, dirs_exist_ok=True)


def _install(fake: FakeHub, monkeypatch) -> FakeHub:
    """The fake in place of the Hub client, with a token (a test never reads the user's own)."""
    monkeypatch.setattr(hub.huggingface_hub, "HfApi", fake)
    monkeypatch.setattr(hub.huggingface_hub, "hf_hub_download", fake.hf_hub_download)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    return fake


def _run(corpus_dir, out, *extra):
    return [*tiny_flags(corpus_dir, out, eval_points=2, checkpoint_points=2, eval_individuals=20, max_steps=6,
                        save_steps=3, push_to_hub="true", hub_model_id="me/facts", hub_min_commit_interval=0), *extra]


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_checkpoints_are_pushed_to_their_revisions_in_the_background(corpus_dir, tmp_path, monkeypatch, capfd):
    fake = _install(FakeHub(tmp_path / "remote"), monkeypatch)
    out = tmp_path / "run"
    pretrain_main(_run(corpus_dir, out))
    remote = tmp_path / "remote" / "me" / "facts"
    revisions = sorted(p.name for p in remote.iterdir())
    assert revisions == sorted(["main", *(checkpoint_name(s) for s in (0, 1, 6))])
    assert fake.threads == {"hub-push"}  # never the training thread
    assert ("create_branch", "me/facts", checkpoint_name(6)) in fake.calls
    for revision in revisions:  # each pushed folder loads as a model, without optimizer or RNG state
        AutoModelForCausalLM.from_pretrained(remote / revision)
        assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in _files_under(remote / revision))
    card = (remote / "main" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers") and "## Recipe" in card and "max_steps: 6" in card
    assert (remote / "main" / "phases.png").is_file() and (remote / "main" / "trajectory.jsonl").is_file()
    captured = capfd.readouterr()
    for path in _files_under(out) + _files_under(tmp_path / "remote"):
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in captured.out + captured.err
    assert "hub: 4 pushes to me/facts done, 0 failed" in captured.out
    manifest = json.loads((remote / checkpoint_name(6) / MANIFEST).read_text())
    assert manifest["step"] == 6 and manifest["tokens_seen"] > 0 and manifest["corpus_fingerprint"]
    weights = hub_hashes(out / "checkpoints" / checkpoint_name(6) / "model.safetensors")["sha256"]
    assert manifest["files"]["model.safetensors"]["sha256"] == weights
    assert f"| 6 | `{checkpoint_name(6)}` | {manifest['tokens_seen']:,} | `{weights}` |" in card


@pytest.fixture
def pushed(corpus_dir, tmp_path, monkeypatch):
    """A tiny run pushed to a fake Hub: (run folder, the fake, the repository's folder)."""
    fake = _install(FakeHub(tmp_path / "remote"), monkeypatch)
    out = tmp_path / "run"
    pretrain_main(_run(corpus_dir, out))
    return out, fake, tmp_path / "remote" / "me" / "facts"


def test_verify_passes_on_a_pushed_run_and_its_repository(pushed, capsys):
    out, _, _ = pushed
    assert cli(hub_main, ["verify", "--run", str(out)], capsys)[0] == 0
    assert cli(hub_main, ["verify", "--repo", "me/facts"], capsys)[0] == 0


def test_verify_lists_missing_mismatched_and_duplicated_revisions_and_push_repairs_them(pushed, capsys):
    out, fake, remote = pushed
    first, mid, last = (checkpoint_name(s) for s in (0, 1, 6))
    shutil.rmtree(remote / first)  # missing
    shutil.copy(remote / last / "model.safetensors", remote / mid / "model.safetensors")  # another step's weights
    (remote / "main" / "config.json").write_text("{}")  # changed
    code, err = cli(hub_main, ["verify", "--run", str(out)], capsys)
    assert code == 1 and one_error_line(err)
    assert f"{first} missing" in err[-1] and f"{mid} duplicate" in err[-1] and "main differs" in err[-1]
    assert f"pipeline.hub push --run {out}" in err[-1]
    fake.calls.clear()
    assert cli(hub_main, ["push", "--run", str(out), "--min_commit_interval", "0"], capsys)[0] == 0
    assert sorted(c[2] for c in fake.calls if c[0] == "upload_folder") == sorted([first, mid, "main"])
    assert cli(hub_main, ["verify", "--run", str(out)], capsys)[0] == 0


def test_verify_catches_a_hub_that_reports_a_wrong_hash(pushed, capsys):
    out, fake, _ = pushed
    fake.wrong_sha256.add(checkpoint_name(1))
    for flags in (["--run", str(out)], ["--repo", "me/facts"]):
        code, err = cli(hub_main, ["verify", *flags], capsys)
        assert code == 1 and f"{checkpoint_name(1)} differs" in err[-1]


def test_verify_of_a_repository_finds_a_revision_holding_another_step(pushed, capsys):
    _, _, remote = pushed
    shutil.rmtree(remote / checkpoint_name(1))
    shutil.copytree(remote / checkpoint_name(6), remote / checkpoint_name(1))  # step 6's files, manifest and all
    code, err = cli(hub_main, ["verify", "--repo", "me/facts"], capsys)
    assert code == 1 and f"{checkpoint_name(1)} wrong step" in err[-1]


def test_file_hashes_are_the_hubs_sha256_and_git_blob_ids(tmp_path):
    text = tmp_path / "hello.txt"
    text.write_bytes(b"hello\n")  # git hash-object and sha256sum of these six bytes, as any machine gives them
    assert file_hashes(text) == {"size": 6, "blob_id": "ce013625030ba8dba906f756967f9e9ca394464a",
                                 "sha256": "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"}
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(bytes(range(256)) * 12_000)  # larger than one read chunk
    assert file_hashes(weights) == hub_hashes(weights)


def test_push_uploads_an_offline_run_once(corpus_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    pretrain_main(_run(corpus_dir, out, "--push_to_hub", "false"))
    fake = _install(FakeHub(tmp_path / "remote"), monkeypatch)
    assert cli(hub_main, ["push", "--run", str(out), "--min_commit_interval", "0"], capsys)[0] == 0
    assert sorted(c[2] for c in fake.calls if c[0] == "upload_folder") == sorted(
        ["main", *(checkpoint_name(s) for s in (0, 1, 6))])
    fake.calls.clear()
    capsys.readouterr()
    assert run_cli(lambda: hub_main(["push", "--run", str(out)])) == 0
    assert "me/facts already holds every revision" in capsys.readouterr().out
    assert not any(c[0] == "upload_folder" for c in fake.calls)


@pytest.mark.parametrize("flags, env, message", [
    (["--hub_model_id", "a/b/c"], {}, "hub_model_id 'a/b/c' is not a Hub repository id: use owner/name"),
    ([], {"HF_HUB_OFFLINE": "1"}, "push_to_hub needs the network but HF_HUB_OFFLINE is set"),
    ([], {"HF_TOKEN": None}, "push_to_hub needs a Hub token and none is set"),
])
def test_a_push_that_cannot_succeed_is_refused_before_training(corpus_dir, tmp_path, monkeypatch, capsys, flags,
                                                                env, message):
    fake = _install(FakeHub(tmp_path / "remote"), monkeypatch)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no token file either
    for key, value in env.items():
        monkeypatch.delenv(key) if value is None else monkeypatch.setenv(key, value)
    out = tmp_path / "run"
    started = time.monotonic()
    code, err = cli(pretrain_main, _run(corpus_dir, out, *flags), capsys)
    assert code == 2 and one_error_line(err) and message in err[-1]
    assert time.monotonic() - started < 10 and not out.exists() and not fake.calls


def test_a_repository_that_cannot_be_created_is_refused_before_training(corpus_dir, tmp_path, monkeypatch, capsys):
    _install(FakeHub(tmp_path / "remote", refuse="create_repo"), monkeypatch)
    out = tmp_path / "run"
    code, err = cli(pretrain_main, _run(corpus_dir, out), capsys)
    assert code == 2 and one_error_line(err) and not out.exists()
    assert "cannot create or reach Hub repository 'me/facts' (Refused: 403 Forbidden" in err[-1]


def test_a_refused_upload_is_not_retried(corpus_dir, tmp_path, monkeypatch, capfd):
    fake = _install(FakeHub(tmp_path / "remote", refuse="upload_folder"), monkeypatch)
    out = tmp_path / "run"
    pretrain_main(_run(corpus_dir, out))
    log = [json.loads(line) for line in (out / HUB_LOG).read_text().splitlines()]
    assert [e["status"] for e in log] == ["failed"] * 4 and all(e["attempt"] == 1 for e in log)
    assert sum(c[0] == "upload_folder" for c in fake.calls) == 4
    err = capfd.readouterr().err
    assert "not retried: the Hub refused it" in err and f"python -m pipeline.hub push --run {out}" in err


def test_the_end_of_a_run_waits_for_its_pushes_a_bounded_time(corpus_dir, tmp_path, monkeypatch, capfd):
    _install(FakeHub(tmp_path / "remote", upload_seconds=30), monkeypatch)
    out = tmp_path / "run"
    started = time.monotonic()
    pretrain_main(_run(corpus_dir, out, "--hub_wait_at_end", "1"))
    assert time.monotonic() - started < 25  # not 4 uploads of 30 s
    captured = capfd.readouterr()
    assert "0 pushes to me/facts done, 0 failed, 4 not done after 1s" in captured.out
    assert f"python -m pipeline.hub push --run {out}" in captured.err


def test_failed_uploads_are_retried_reported_and_never_stop_training(corpus_dir, tmp_path, monkeypatch, capfd):
    _install(FakeHub(tmp_path / "remote", always_fail=True), monkeypatch)
    monkeypatch.setattr(hub.time, "sleep", lambda seconds: None)  # no real back-off waits in a test
    out = tmp_path / "run"
    pretrain_main(_run(corpus_dir, out))
    assert (out / "report.md").is_file()  # the run finished
    log = [yaml.safe_load(line) for line in (out / HUB_LOG).read_text().splitlines()]
    assert sum(entry["status"] == "failed" for entry in log) == 4
    assert sum(entry["status"] == "retrying" for entry in log) == 4 * 4  # 5 tries each
    err = capfd.readouterr().err
    assert "failed (ConnectionError: Hub unreachable); retry 1/4 in 2s" in err and "giving up, training goes on" in err


def test_a_flaky_upload_succeeds_on_retry(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path / "remote", fail_first=2)
    monkeypatch.setattr(hub.huggingface_hub, "HfApi", fake)
    waits = []
    monkeypatch.setattr(hub.time, "sleep", waits.append)
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    pusher = hub.HubPusher("me/facts", tmp_path / "log.jsonl", min_interval=0, backoff=2.0)
    pusher.push(folder, "step-000000010", "Checkpoint")
    assert pusher.close() == (["step-000000010"], [], [])
    assert [w for w in waits if w > 0] == [2.0, 4.0]  # exponential back-off
    assert (tmp_path / "remote" / "me" / "facts" / "step-000000010" / "config.json").is_file()


@pytest.mark.parametrize("status, transient", [(500, True), (503, True), (429, True), (408, True), (401, False),
                                               (403, False), (404, False), (400, False)])
def test_only_failures_that_can_pass_are_retried(status, transient):
    error = type("HubAnswer", (Exception,), {"response": SimpleNamespace(status_code=status, headers={})})()
    assert hub.is_transient(error) is transient
    assert hub.is_transient(ConnectionError("reset")) and hub.is_transient(TimeoutError())
    assert not hub.is_transient(ValueError("Invalid repo id"))


def test_a_corpus_round_trips_through_the_hub(corpus_dir, tmp_path, monkeypatch, capsys):
    remote = tmp_path / "remote" / "me" / "bios"

    def push_to_hub(self, repo_id, private=None, revision=None, commit_message=None):
        for split, dataset in self.items():
            dataset.to_parquet(str(remote / "data" / f"{split}-00000-of-00001.parquet"))

    monkeypatch.setattr(DatasetDict, "push_to_hub", push_to_hub)
    fake = FakeHub(tmp_path / "remote")
    monkeypatch.setattr(data_hub.huggingface_hub, "HfApi", fake)
    data_main(["push", "--corpus", str(corpus_dir), "--repo_id", "me/bios"])
    card = (remote / "main" / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---\n")[1])
    assert {"split": "eval_finetune", "path": "data/eval_finetune-*"} in metadata["configs"][0]["data_files"]
    assert "seed: 3" in card  # the builder config, with its seed
    for name in data_hub.side_files(corpus_dir):
        shutil.copy(remote / "main" / name, remote / name)  # the snapshot: data/ beside the side files

    calls = []

    def snapshot_download(repo_id, repo_type=None, revision=None):
        calls.append((repo_id, repo_type, revision))
        return str(remote)

    monkeypatch.setattr(data_hub.huggingface_hub, "snapshot_download", snapshot_download)
    fetched, local = Corpus("me/bios"), Corpus(corpus_dir)
    assert calls == [("me/bios", "dataset", None)]
    for split in local.dataset:
        assert fetched.dataset[split].to_dict() == local.dataset[split].to_dict()
    a, b = fetched.stream(8, 0).batch(5), local.stream(8, 0).batch(5)
    assert all((a[k] == b[k]).all() for k in a)


def test_missing_hub_corpus_is_a_clear_error(tmp_path, monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("offline and not cached")

    monkeypatch.setattr(data_hub.huggingface_hub, "snapshot_download", offline)
    with pytest.raises(Exception, match="neither a local folder nor a dataset fetched from the Hub"):
        Corpus("me/nothing")
