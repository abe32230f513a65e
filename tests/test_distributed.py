"""Backends and interruptions change nothing: DeepSpeed ZeRO-2/3 saving, and a killed run resumed to the same
trajectory as an uninterrupted one (several gloo processes against one: tests/test_cluster.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from accelerate import Accelerator
from transformers import AutoModelForCausalLM

from pipeline.evaluation import Evaluator, pretraining_groups
from pipeline.pretrain import main
from pipeline.run_folder import RunFolder, checkpoint_name

from .conftest import tiny_flags

CONFIGS = Path(__file__).parent.parent / "recipes" / "accelerate_configs"


def _flags(corpus_dir, output_dir, max_steps, *extra) -> list[str]:
    return [*tiny_flags(corpus_dir, output_dir, learning_rate=3e-3, eval_points=4, eval_steps=10, checkpoint_points=2,
                        eval_individuals=30, max_steps=max_steps), *extra]


def _run(command: list[str], **env) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
@pytest.mark.parametrize("stage, compiled", [("zero2", False), ("zero3", False), ("zero3", True)])
def test_deepspeed_saves_weights_that_from_pretrained_loads(corpus, corpus_dir, tmp_path, stage, compiled):
    plain, out = tmp_path / "plain", tmp_path / stage
    main(_flags(corpus_dir, plain, 6, "--save_steps", "3"))
    compile_flags = ["--torch_compile", "true", "--torch_compile_backend", "aot_eager"] if compiled else []
    _run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / f"{stage}.yaml"),
          "--num_processes", "1", "--mixed_precision", "no", "-m", "pipeline.pretrain",
          *_flags(corpus_dir, out, 6, "--save_steps", "3", *compile_flags)])
    model, info = AutoModelForCausalLM.from_pretrained(out / "checkpoints" / checkpoint_name(6),
                                                       output_loading_info=True)
    assert not any(info.values()), info  # every key of the model, nothing else
    metrics = Evaluator(corpus, pretraining_groups(corpus, 30), 1024).evaluate(model, Accelerator(cpu=True))
    logged = {r["split"]: r for r in RunFolder(out).trajectory() if r["step"] == 6}
    assert metrics["seen"]["attribute_loss"] == pytest.approx(logged["seen"]["attribute_loss"], rel=1e-5)
    assert (out / "resume" / checkpoint_name(6) / "trainer_state.json").is_file()
    # same initial weights, same updates
    for a, b in zip(RunFolder(plain).trajectory(), RunFolder(out).trajectory(), strict=True):
        assert b["attribute_loss"] == pytest.approx(a["attribute_loss"], rel=1e-5)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_trajectory(corpus_dir, tmp_path):
    straight = tmp_path / "straight"
    main(_flags(corpus_dir, straight, 200, "--save_steps", "100"))

    resumed = tmp_path / "resumed"
    command = [sys.executable, "-m", "pipeline.pretrain", *_flags(corpus_dir, resumed, 200, "--save_steps", "100")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = resumed / "resume" / checkpoint_name(100) / "trainer_state.json"
    deadline = time.time() + 300
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert max(r["step"] for r in RunFolder(resumed).trajectory()) < 200, "the run finished before it could be killed"
    # leftovers of a save killed midway: a temporary folder, and a step folder without its state file
    (resumed / "resume" / f".tmp-{checkpoint_name(150)}").mkdir()
    (resumed / "resume" / checkpoint_name(140)).mkdir()
    assert RunFolder(resumed).latest_resume_checkpoint().name == checkpoint_name(100)

    main(_flags(corpus_dir, resumed, 200, "--save_steps", "100"))
    assert RunFolder(resumed).trajectory() == RunFolder(straight).trajectory()  # bit-identical on CPU, fp32
    a = AutoModelForCausalLM.from_pretrained(straight / "checkpoints" / checkpoint_name(200)).state_dict()
    b = AutoModelForCausalLM.from_pretrained(resumed / "checkpoints" / checkpoint_name(200)).state_dict()
    assert all((a[k] == b[k]).all() for k in a)


def test_rerunning_a_finished_run_changes_nothing(corpus_dir, tmp_path, capsys):
    out = tmp_path / "run"
    main(_flags(corpus_dir, out, 4, "--save_steps", "2"))
    trajectory = (out / "trajectory.jsonl").read_text()
    state = json.loads((out / "resume" / checkpoint_name(4) / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["recipe"]["max_steps"] == 4 and state["tokens_seen"] > 0
    assert [p.name for p in (out / "resume").iterdir()] == [checkpoint_name(4)]  # only the latest is kept
    main(_flags(corpus_dir, out, 4, "--save_steps", "2"))
    assert "already holds this run, complete" in capsys.readouterr().out
    assert (out / "trajectory.jsonl").read_text() == trajectory


@pytest.mark.slow
def test_a_kill_during_a_background_write_resumes_from_the_last_complete_checkpoint(corpus_dir, tmp_path):
    """Checkpoints are written by a background thread: training reaches the end while the resume checkpoint
    of step 150 is still being written; a SIGKILL then leaves it unpublished, and the rerun resumes from
    step 100 to the same trajectory and weights as an uninterrupted run."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    flags = _flags(corpus_dir, straight, 200, "--save_steps", "50")
    main(flags)
    flags[flags.index("--output_dir") + 1] = str(killed)
    marker = tmp_path / "stalled"
    script = (f"import time\nimport pipeline.run_folder as run_folder\nfrom pipeline.pretrain import main\n"
              f"original = run_folder.publish_checkpoint\n"
              f"def stalled(staging, final, record):\n"
              f"    if record['step'] == 150 and final.parent.name == 'resume':\n"
              f"        open({str(marker)!r}, 'w').close()\n        time.sleep(600)\n"
              f"    return original(staging, final, record)\n"
              f"run_folder.publish_checkpoint = stalled\nmain({flags!r})\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (marker.exists() and (killed / "trajectory.jsonl").is_file()
                                          and max(r["step"] for r in RunFolder(killed).trajectory()) == 200):
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be killed during its write"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert RunFolder(killed).latest_resume_checkpoint().name == checkpoint_name(100)
    assert (killed / "resume" / f".tmp-{checkpoint_name(150)}").is_dir()  # written, never published
    main(flags)
    assert RunFolder(killed).trajectory() == RunFolder(straight).trajectory()
    a = AutoModelForCausalLM.from_pretrained(straight / "checkpoints" / checkpoint_name(200)).state_dict()
    b = AutoModelForCausalLM.from_pretrained(killed / "checkpoints" / checkpoint_name(200)).state_dict()
    assert all((a[k] == b[k]).all() for k in a)
