"""GPU-only paths: bf16, torch.compile, fused AdamW, SDPA and flash attention, MFU, study runs sharing a GPU.
Skipped without CUDA."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import yaml

from pipeline.pretrain import main
from pipeline.run_folder import RunFolder
from pipeline.train.flops import peak_flops

from .conftest import TINY_RUN, tiny_flags

pytestmark = pytest.mark.gpu


def _flags(corpus_dir, output_dir, *extra):
    return [*tiny_flags(corpus_dir, output_dir, batch_size=32, learning_rate=3e-3, eval_points=4, checkpoint_points=1,
                        eval_individuals=50, max_steps=60, mixed_precision="bf16"), *extra]


@pytest.mark.parametrize("compile_model", [False, True])
def test_bf16_training_learns(corpus_dir, tmp_path, compile_model):
    main(_flags(corpus_dir, tmp_path / "run", "--torch_compile", str(compile_model).lower()))
    seen = [r for r in RunFolder(tmp_path / "run").trajectory() if r["split"] == "seen"]
    assert all(math.isfinite(r["attribute_loss"]) for r in seen)
    assert seen[-1]["attribute_loss"] < seen[0]["attribute_loss"]


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None, reason="flash-attn is not installed")
def test_flash_attention_2_trains(corpus_dir, tmp_path):
    main(_flags(corpus_dir, tmp_path / "run", "--attn_implementation", "flash_attention_2"))
    assert RunFolder(tmp_path / "run").trajectory()[-1]["step"] == 60


def test_device_peak_is_known_for_mfu():
    assert peak_flops(torch.device("cuda")) is not None, f"add {torch.cuda.get_device_name()} to PEAK_TFLOPS_16BIT"


def test_study_runs_share_a_gpu(corpus_dir, tmp_path):
    from pipeline.sweep import main as sweep_main

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({**TINY_RUN, "corpus": str(corpus_dir), "max_steps": 20, "eval_points": 2,
                                    "checkpoint_points": 1, "eval_individuals": 20}))
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"base": str(base), "output_dir": str(tmp_path / "study"),
                                     "grid": {"seed": [0, 1]}}))
    sweep_main(["--config", str(study), "--devices", "0", "--runs_per_device", "2"])
    for seed in (0, 1):
        assert "device: cuda" in (tmp_path / "study" / "logs" / f"seed={seed}.log").read_text()
        assert RunFolder(tmp_path / "study" / f"seed={seed}").trajectory()[-1]["step"] == 20
