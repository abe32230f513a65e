"""GPU-only paths: bf16, torch.compile, fused AdamW, SDPA and flash attention, MFU, study runs sharing a GPU.
Skipped without CUDA."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import yaml
from accelerate.state import AcceleratorState
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from pipeline.pretrain import main
from pipeline.run_folder import RunFolder
from pipeline.train.flops import peak_flops

from .conftest import TINY_RUN, tiny_flags

pytestmark = pytest.mark.gpu
BF16_TOLERANCE = 2e-2  # relative, of every evaluated loss against fp32: the CPU matrix's bf16 bound (test_paper_path)


def _flags(corpus_dir, output_dir, *extra):
    return [*tiny_flags(corpus_dir, output_dir, batch_size=32, learning_rate=3e-3, eval_points=4, checkpoint_points=1,
                        eval_individuals=50, max_steps=60, mixed_precision="bf16"), *extra]


def _losses(run, split: str | None = None) -> list[float]:
    """Every evaluated loss of the run, in order (of `split` only, when given)."""
    return [r["attribute_loss"] for r in RunFolder(run).trajectory() if split in (None, r["split"])]


@pytest.fixture
def fp32_losses(corpus_dir, tmp_path) -> list[float]:
    """The same run in fp32 with eager attention, uncompiled: the reference the fast paths are held to."""
    AcceleratorState._reset_state(reset_partial_state=True)
    main(_flags(corpus_dir, tmp_path / "fp32", "--mixed_precision", "no", "--attn_implementation", "eager"))
    AcceleratorState._reset_state(reset_partial_state=True)
    return _losses(tmp_path / "fp32")


@pytest.mark.parametrize("compile_model", [False, True])
def test_bf16_training_follows_the_fp32_run(corpus_dir, tmp_path, compile_model, fp32_losses):
    main(_flags(corpus_dir, tmp_path / "run", "--torch_compile", str(compile_model).lower()))
    AcceleratorState._reset_state(reset_partial_state=True)
    losses = _losses(tmp_path / "run")
    seen = _losses(tmp_path / "run", "seen")
    assert len(losses) == len(fp32_losses) and seen[-1] < seen[0]
    assert losses == pytest.approx(fp32_losses, rel=BF16_TOLERANCE)  # every evaluation, both groups


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None, reason="flash-attn is not installed")
def test_flash_attention_2_is_called_and_follows_the_fp32_run(corpus_dir, tmp_path, fp32_losses, monkeypatch):
    kernel, calls = ALL_ATTENTION_FUNCTIONS["flash_attention_2"], []

    def counted(*args, **kwargs):
        calls.append(1)
        return kernel(*args, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "flash_attention_2", counted)
    main(_flags(corpus_dir, tmp_path / "run", "--attn_implementation", "flash_attention_2"))
    AcceleratorState._reset_state(reset_partial_state=True)
    losses = _losses(tmp_path / "run")
    assert calls  # the kernel ran, not a fallback
    assert len(losses) == len(fp32_losses) and losses == pytest.approx(fp32_losses, rel=BF16_TOLERANCE)


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
