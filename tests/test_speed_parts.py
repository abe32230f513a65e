"""Pieces behind the speed: FLOPs per token, the peak lookup, the prefetching loader, the slurm line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig

from data_gen.stream import shard_rows
from pipeline.train.flops import flops_per_token, peak_flops
from pipeline.train.loader import StreamLoader

ROOT = Path(__file__).parent.parent


def test_flops_per_token_by_hand():
    config = LlamaConfig(hidden_size=8, num_hidden_layers=2, intermediate_size=16, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=10)
    per_layer = 4 * 8 * 8 + 3 * 8 * 16  # q, k, v, o and gate, up, down
    assert flops_per_token(config, seq_len=5) == 6 * (2 * per_layer + 8 * 10) + 12 * 2 * 8 * 5


def test_peak_flops_needs_a_known_device_or_an_override():
    assert peak_flops(torch.device("cpu")) is None
    assert peak_flops(torch.device("cpu"), override_tflops=100) == 1e14


def test_prefetching_loader_gives_the_stream_batches(corpus):
    stream = corpus.stream(12, seed=0)
    ahead = StreamLoader(stream, rank=1, world_size=2, n_micro=2, device=torch.device("cpu"), depth=3,
                         pad_to_multiple_of=8)
    inline = StreamLoader(stream, rank=1, world_size=2, n_micro=2, device=torch.device("cpu"), depth=0)
    fixed = StreamLoader(stream, rank=1, world_size=2, n_micro=2, device=torch.device("cpu"), depth=0,
                         pad_to_multiple_of=8, length=stream.max_length + 3)
    for step in (0, 1, 2, 7, 8):
        got = ahead.get(step)
        n_tokens, micro = got.n_tokens, got.micro
        assert n_tokens == stream.num_label_tokens(step) == inline.get(step).n_tokens == got.count.item()
        assert (got.who == stream.draw(step)[0]).all()
        assert all(set(m) == {"input_ids", "labels"} for m in micro)  # right padding, causal: no mask needed
        assert all(m["input_ids"].shape[1] == stream.max_length + 3 for m in fixed.get(step).micro)
        for m, batch in enumerate(micro):
            expected = stream.batch(step, shard_rows(12, 1, 2, m, 2))
            width = expected["input_ids"].shape[1]
            assert batch["input_ids"].shape[1] % 8 == 0 and batch["input_ids"].shape[1] - width < 8
            assert (batch["input_ids"][:, :width].numpy() == expected["input_ids"]).all()
            assert (batch["labels"][:, width:] == -100).all()
    ahead.close()


def test_slurm_script_assembles_the_launch_line():
    env = {**os.environ, "SLURM_NNODES": "2", "GPUS_PER_NODE": "8"}
    result = subprocess.run(["bash", "recipes/launch.slurm", "--study", "paper", "--stage", "pretrain", "--config",
                             "default", "--accelerator", "zero3", "--dry_run", "--learning_rate", "1e-3"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert "--config_file recipes/accelerate_configs/zero3.yaml --num_machines 2 --num_processes 16" in line
    recipe = "recipes/paper/pretrain/config_default.yaml"
    assert line.endswith(f"-m pipeline.pretrain --config {recipe} --learning_rate 1e-3")
    assert "--machine_rank $SLURM_PROCID" in line


@pytest.mark.parametrize("args, message", [
    (["--stage", "pretrain", "--config", "nope", "--study", "paper"], "'recipes/paper/pretrain/config_nope.yaml'"),
    (["--stage", "pretrain", "--config", "default", "--study", "paper", "--accelerator", "zero9"], "zero9.yaml"),
])
def test_slurm_script_bad_input(args, message):
    result = subprocess.run(["bash", "recipes/launch.slurm", *args, "--dry_run"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 2 and message in result.stderr


def test_slurm_script_refuses_deepspeed_across_cpu_nodes():
    env = {**os.environ, "SLURM_NNODES": "2", "GPUS_PER_NODE": "0"}
    args = ["--study", "paper", "--stage", "pretrain", "--config", "default", "--dry_run"]
    result = subprocess.run(["bash", "recipes/launch.slurm", *args, "--accelerator", "zero2"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "cannot spread over CPU processes: use --accelerator ddp" in result.stderr
    ddp = subprocess.run(["bash", "recipes/launch.slurm", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    assert ddp.stdout.startswith("ACCELERATE_USE_CPU=1 accelerate launch") and "--num_processes 2" in ddp.stdout


def _step_row(side: str, mode: str | None, ms: float, paper: bool) -> dict:
    return {"side": side, "compile_mode": mode, "compiled": True, "ms_per_step": ms, "tokens_per_s": 8e5 / ms,
            "mfu": 0.2, "peak_memory_gb": 9.0, "ours_faster_by": ms / 10.0, "compile_seconds": 45.0,
            "warmup_seconds": 47.5, "paper_recipe_mode": paper}


def test_the_gpu_suite_writes_its_report_after_each_stage(tmp_path, monkeypatch):
    from bench import gpu_suite

    rows = [_step_row("HF Trainer", None, 25.0, False), _step_row("ours, default", "default", 10.0, True),
            _step_row("ours, reduce-overhead", "reduce-overhead", 8.0, False)]

    def killed(corpus, out, smoke, steps):  # as a time limit's SIGKILL: the suite gets no chance to write
        on_disk = json.loads((tmp_path / "gpu_suite.json").read_text())
        assert on_disk["steps"] == rows and on_disk["running"] == "run" and steps == 30
        raise KeyboardInterrupt

    monkeypatch.setattr(gpu_suite, "build_corpus", lambda out, smoke: (out / "corpus", 1.5))
    monkeypatch.setattr(gpu_suite, "step_timing", lambda corpus, smoke: rows)
    monkeypatch.setattr(gpu_suite, "default_run", killed)
    with pytest.raises(KeyboardInterrupt):
        gpu_suite.main(["--smoke", "--stages", "eval,run,steps", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert report["stages"] == ["steps", "run", "eval"] and report["steps"] == rows
    assert "default_run" not in report and "evaluation" not in report
    table = (tmp_path / "gpu_suite.md").read_text().splitlines()
    assert "| corpus build | 1.5 s |" in table and "| GPU tests | not run (not in --stages) |" in table
    assert ("| step, ours, default (the paper recipe's mode) | 10.00 ms, 80,000 tokens/s, MFU 20.0%, peak 9.0 GiB; "
            "outside ms/step: first step (compile) 45.0 s, warmup 47.5 s |") in table
    assert any(line.startswith("| step, ours, reduce-overhead | 8.00 ms") and "0.80x the time of `ours, default`"
               in line for line in table)
    assert any(line.startswith("| default run | not finished: running, or the suite was stopped in it")
               for line in table)
    assert any(line.startswith("| full evaluation | not run: not reached yet") for line in table)


def test_the_gpu_suite_stages_and_the_trainers_summary_line(tmp_path, monkeypatch):
    from bench import gpu_suite

    assert gpu_suite.stages("eval, tests") == ["tests", "eval"]
    with pytest.raises(SystemExit):
        gpu_suite.main(["--smoke", "--stages", "steps,train", "--out", str(tmp_path)])
    monkeypatch.setattr(gpu_suite, "build_corpus", lambda out, smoke: (out / "corpus", None))
    gpu_suite.main(["--smoke", "--stages", "eval", "--out", str(tmp_path)])  # no run in --out: eval fails, reported
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert report["running"] is None and "no checkpoint" in report["evaluation"]["error"]
    assert "| corpus build | already built in --out |" in (tmp_path / "gpu_suite.md").read_text()

    line = "trained 1,500 steps in 123.4 s (82.27 ms/step); {}evaluations and checkpoints 45.6 s"
    before, after = (gpu_suite.parse_summary(f"...\n{line.format(c)}\n") for c in ("", "compile 12.3 s; "))
    assert before == {"steps": 1500, "train_seconds": 123.4, "ms_per_step": 82.27, "compile_seconds": None,
                      "callback_seconds": 45.6}
    assert after == {**before, "compile_seconds": 12.3}
    run = {**after, "wall_seconds": 200.0, "recipe_steps": 16000, "final_seen_accuracy": 0.5}
    tests = {"passed": 4, "failed": 0, "skipped": 1, "seconds": 80.0, "tail": ["4 passed, 1 skipped in 79s"]}
    table = gpu_suite.markdown({**report, "tests": tests, "default_run": run, "stages": ["run"]}).splitlines()
    assert "| GPU tests | 4 passed, 0 failed, 1 skipped (80 s; 4 passed, 1 skipped in 79s) |" in table
    assert "| default run (cut to 1,500 of 16,000 steps), wall | 200.0 s (process start to report) |" in table
    assert "| default run, compile | 12.3 s (the trainer's figure) |" in table
    table = gpu_suite.markdown({**report, "default_run": {**run, **before, "steps": 16000}}).splitlines()
    assert "| default run (all 16,000 steps), wall | 200.0 s (process start to report) |" in table
    assert "| default run, compile | not reported by this trainer |" in table


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\tZ" not in next(line for line in status.read_text().splitlines() if line.startswith("State:"))
    except FileNotFoundError:
        return False


def test_the_gpu_suite_stops_the_gpu_tests_at_their_budget(tmp_path):
    from bench import gpu_suite

    pids = tmp_path / "pids"
    stuck = ("-c", f"import os, subprocess, sys, time\nchild = subprocess.Popen([sys.executable, '-c', "
                   f"'import time; time.sleep(600)'])\nopen({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')"
                   f"\ntime.sleep(600)")  # tests that never end, with a run of their own
    tests = gpu_suite.gpu_tests(budget=10, command=stuck)
    assert tests == {"passed": 0, "failed": 0, "skipped": 0, "seconds": tests["seconds"],
                     "tail": ["stopped at its 10 s budget"]}
    assert 10 <= tests["seconds"] < 60
    assert not any(map(_alive, map(int, pids.read_text().split())))  # both killed: none is left holding a GPU


@pytest.mark.slow
def test_the_gpu_suite_runs_its_smoke_version_anywhere(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_suite.py"), "--smoke", "--out", "out"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)  # any folder, no PYTHONPATH
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_suite.json").read_text())
    assert report["stages"] == ["steps", "run", "eval"] and report["running"] is None
    assert [row["side"] for row in report["steps"]] == ["HF Trainer", "ours"]
    assert all(row["ms_per_step"] > 0 and row["tokens_per_s"] > 0 and row["compile_seconds"] > 0
               and row["warmup_seconds"] >= row["compile_seconds"] for row in report["steps"])
    run = report["default_run"]
    assert run["steps"] == 30 and run["recipe_steps"] == 16000 and run["train_seconds"] > 0
    assert report["evaluation"]["queries"] == 500 * 30  # every seen individual, 5 templates x 6 attributes
    table = (tmp_path / "out" / "gpu_suite.md").read_text()
    assert table.startswith("**CPU") and "| step, ours |" in table and "x the time of `ours`" in table
    assert "| default run (cut to 30 of 16,000 steps), wall |" in table and "| default run, compile |" in table
    assert "| GPU tests | not run (not in --stages) |" in table
    assert table in result.stdout and "failed" not in table
