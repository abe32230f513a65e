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


@pytest.mark.slow
def test_the_gpu_suite_runs_its_smoke_version_anywhere(tmp_path):
    result = subprocess.run([sys.executable, "bench/gpu_suite.py", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert [row["side"] for row in report["steps"]] == ["HF Trainer", "ours"]
    assert all(row["ms_per_step"] > 0 and row["tokens_per_s"] > 0 for row in report["steps"])
    assert report["default_run"]["steps"] == 30 and report["run_cut"]
    assert report["evaluation"]["queries"] == 500 * 30  # every seen individual, 5 templates x 6 attributes
    table = (tmp_path / "gpu_suite.md").read_text()
    assert table.startswith("**CPU") and "| step, ours |" in table and "x the time of `ours`" in table
    assert table in result.stdout and "failed" not in table
