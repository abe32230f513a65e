"""Stopped runs (docs/faults.md): SIGTERM and a first Ctrl-C finish the step and save a resume checkpoint,
a second Ctrl-C stops at once, and a run killed before its first resume checkpoint restarts in its folder."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from common.errors import run_cli
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import CHECKPOINTS, RESUME, RunFolder, checkpoint_name, complete_checkpoints, read_state

from .conftest import REPO, interrupted_run, tiny20, tiny30


@pytest.mark.slow
def test_sigterm_saves_a_resume_checkpoint_and_exits_143(corpus_dir, tmp_path):
    out = tmp_path / "run"
    argv = tiny20(corpus_dir, out, "--max_steps", "3000", "--save_steps", "1000", "--eval_points", "0")
    process = subprocess.Popen([sys.executable, "-m", "pipeline.pretrain", *argv], cwd=REPO, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out / CHECKPOINTS / checkpoint_name(0)).is_dir() and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(2)  # some steps in
    process.send_signal(signal.SIGTERM)
    err = process.communicate(timeout=300)[1]
    assert process.returncode == 143
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("error: stopped by SIGTERM after step") and "rerun the same command" in last
    (saved,) = complete_checkpoints(out / RESUME)
    step = int(saved.name.split("-")[1])
    assert 0 < step < 3000 and f"after step {step};" in last


def _sigint_run(corpus_dir, out, *, save_steps: int) -> tuple[int, str]:
    argv = tiny30(corpus_dir, out, max_steps=100_000, save_steps=save_steps, eval_points=0, checkpoint_points=0)
    process = subprocess.Popen([sys.executable, "-m", "pipeline.pretrain", *argv], cwd=REPO, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out / "trajectory.jsonl").is_file() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=300), process.communicate()[1]


@pytest.mark.slow
def test_ctrl_c_finishes_the_step_and_saves(corpus_dir, tmp_path):
    out = tmp_path / "once"
    code, err = _sigint_run(corpus_dir, out, save_steps=100_000)
    last = err.strip().splitlines()[-1]
    assert code == 130 and last.startswith("error: stopped by SIGINT after step") and "Traceback" not in err
    (saved,) = RunFolder(out).resume.glob("step-*")
    step = read_state(saved)["step"]
    assert f"after step {step};" in last and 0 < step < 100_000


def test_a_second_ctrl_c_stops_at_once(capsys):
    import os

    from pipeline.train.loop import StopSignal

    with StopSignal() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # the first asks to stop after the step
        time.sleep(0.1)
        assert stop.flag and stop.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
    assert "press it again to stop at once" in capsys.readouterr().err

    def interrupted():
        raise KeyboardInterrupt

    assert run_cli(interrupted) == 130
    assert capsys.readouterr().err.startswith("error: stopped at once by Ctrl-C")


def test_a_restarted_run_keeps_its_folder(corpus_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    interrupted_run(corpus_dir, out, 5, monkeypatch, save_steps=20, max_steps=10)  # before any resume checkpoint
    (out / "notes.md").write_text("mine")
    pretrain_main(tiny30(corpus_dir, out, save_steps=20, max_steps=10))
    assert "restarting" in capsys.readouterr().out and (out / "notes.md").read_text() == "mine"
    straight = tmp_path / "straight"
    pretrain_main(tiny30(corpus_dir, straight, save_steps=20, max_steps=10))
    assert RunFolder(out).trajectory() == RunFolder(straight).trajectory()
