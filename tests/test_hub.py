"""The Hub, tested at the network boundary: the `huggingface_hub` client is replaced by one that
writes what would be uploaded into a local folder per repository and revision."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import yaml
from datasets import DatasetDict
from transformers import AutoModelForCausalLM

from data_gen import Corpus
from data_gen import hub as data_hub
from data_gen.__main__ import main as data_main
from pipeline import hub
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import HUB_LOG, checkpoint_name

from .conftest import tiny_flags

SECRET = "hf_testTOKENthatMustNeverBeWritten"


class FakeHub:
    """Records the calls and keeps the uploaded files under root/<repo_id>/<revision>/."""

    def __init__(self, root: Path, fail_first: int = 0, always_fail: bool = False):
        self.root, self.fail_first, self.always_fail = root, fail_first, always_fail
        self.calls, self.threads = [], set()

    def __call__(self):  # stands in for the HfApi class
        return self

    def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
        self.calls.append(("create_repo", repo_id, private))

    def create_branch(self, repo_id, branch, exist_ok=False, repo_type=None):
        self.calls.append(("create_branch", repo_id, branch))

    def upload_folder(self, repo_id, folder_path, revision=None, commit_message=None, ignore_patterns=None,
                      allow_patterns=None, repo_type=None):
        self.threads.add(threading.current_thread().name)
        self.calls.append(("upload_folder", repo_id, revision or "main"))
        if self.always_fail or self.fail_first > 0:
            self.fail_first -= 1
            raise ConnectionError("Hub unreachable")
        target = self.root / repo_id / (revision or "main")
        shutil.copytree(folder_path, target, dirs_exist_ok=True)


def _run(corpus_dir, out, *extra):
    return [*tiny_flags(corpus_dir, out, eval_points=2, checkpoint_points=2, eval_individuals=20, max_steps=6,
                        save_steps=3, push_to_hub="true", hub_model_id="me/facts", hub_min_commit_interval=0), *extra]


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_checkpoints_are_pushed_to_their_revisions_in_the_background(corpus_dir, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    fake = FakeHub(tmp_path / "remote")
    monkeypatch.setattr(hub.huggingface_hub, "HfApi", fake)
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


def test_failed_uploads_are_retried_reported_and_never_stop_training(corpus_dir, tmp_path, monkeypatch, capfd):
    fake = FakeHub(tmp_path / "remote", always_fail=True)
    monkeypatch.setattr(hub.huggingface_hub, "HfApi", fake)
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
    assert pusher.close() == (["step-000000010"], [])
    assert [w for w in waits if w > 0] == [2.0, 4.0]  # exponential back-off
    assert (tmp_path / "remote" / "me" / "facts" / "step-000000010" / "config.json").is_file()


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
