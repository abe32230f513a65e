"""Durable writes: a checkpoint's files, then its state file, then its folder reach the disk before the rename
that names it complete, and the rename itself after; the trajectory rows a checkpoint follows are on disk
before it is published; a rewritten trajectory or recipe replaces the old one in one rename."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import STATE, TRAJECTORY, RunFolder, publish_checkpoint, staging_folder
from tests.conftest import tiny30


@pytest.fixture
def disk_events(monkeypatch) -> list[tuple]:
    """("sync", path, size) for each os.fsync, ("rename", source, target) for each rename, in order."""
    events = []
    fsync, rename, replace = os.fsync, os.rename, os.replace

    def recorded_fsync(fd):
        events.append(("sync", Path(os.readlink(f"/proc/self/fd/{fd}")), os.fstat(fd).st_size))
        return fsync(fd)

    def recorded(original):
        def move(source, target, *args, **kwargs):
            original(source, target, *args, **kwargs)
            events.append(("rename", Path(source), Path(target)))
        return move

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "rename", recorded(rename))
    monkeypatch.setattr(os, "replace", recorded(replace))
    return events


def test_a_checkpoint_reaches_the_disk_before_and_after_its_rename(tmp_path, disk_events):
    final = tmp_path / "checkpoints" / "step-000000004"
    staging = staging_folder(final)
    (staging / "nested").mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"weights")
    (staging / "nested" / "optimizer.bin").write_bytes(b"moments")
    publish_checkpoint(staging, final, {"step": 4})
    synced = [e[1] for e in disk_events if e[0] == "sync"]
    renamed = next(i for i, e in enumerate(disk_events) if e[0] == "rename")
    assert disk_events[renamed][1:] == (staging, final)
    before, after = synced[:renamed], synced[renamed:]
    files = {staging / "model.safetensors", staging / "nested" / "optimizer.bin"}
    assert files | {staging / STATE, staging / "nested", staging} == set(before)
    assert before.index(staging / STATE) > max(before.index(f) for f in files)  # the state file last of the files
    assert before[-1] == staging  # the folder's entries, the state file among them, then the rename
    assert after == [final.parent, tmp_path]  # the rename on disk, and the parent a first checkpoint created
    assert json.loads((final / STATE).read_text()) == {"step": 4}


def test_a_run_syncs_its_trajectory_before_each_checkpoint_it_follows(corpus_dir, tmp_path, disk_events):
    run = RunFolder(tmp_path / "run")
    pretrain_main(tiny30(corpus_dir, run.path, save_steps=10, eval_points=0, eval_steps=10))
    lines = (run / TRAJECTORY).read_text().splitlines(keepends=True)
    published = [(i, e[2]) for i, e in enumerate(disk_events)
                 if e[0] == "rename" and e[2].parent.name in ("checkpoints", "resume")]
    assert {int(target.name.split("-")[1]) for _, target in published} >= {10, 20, 30}
    for index, target in published:
        step = int(target.name.split("-")[1])
        owed = sum(len(line.encode()) for line in lines if json.loads(line)["step"] <= step)
        synced = max((e[2] for e in disk_events[:index] if e[0] == "sync" and e[1] == run / TRAJECTORY), default=0)
        assert synced >= owed, f"{target.name} published before the trajectory up to its step was on disk"
    assert [e for e in disk_events if e[0] == "rename" and e[2] == run / "run_config.yaml"]  # replaced in one rename
