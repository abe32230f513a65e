"""Numbers that are not finite or out of range (docs/faults.md): blown-up losses, weights and evaluations
stop a run before anything holds them; hyperparameters are range-checked at parse time."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.finetune import main as finetune_main
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import CHECKPOINTS, RESUME, RunFolder, checkpoint_name, complete_checkpoints, read_state
from pipeline.train.loop import TrainingLoop

from .conftest import cli, one_error_line, tiny20, tiny30, tiny_flags


def _finite_weights(checkpoint: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values())


@pytest.mark.parametrize("save_steps", [1, 10])
def test_a_blown_up_update_is_never_saved_nor_evaluated(corpus_dir, tmp_path, capsys, monkeypatch, save_steps):
    original = TrainingLoop.train_step

    def blow_up_at_step_3(self, step):  # the loss of step 3 is computed before the update, so it is finite
        loss = original(self, step)
        if step == 2:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("inf"))
        return loss

    monkeypatch.setattr(TrainingLoop, "train_step", blow_up_at_step_3)
    out = tmp_path / "run"
    code, err = cli(pretrain_main, tiny30(corpus_dir, out, save_steps=save_steps, eval_steps=1), capsys)
    assert code == 1 and err[-1].startswith("error: the weights are not finite after step 3")
    run = RunFolder(out)
    assert all(_finite_weights(c) for c in run.complete_checkpoints())
    assert max(c.name for c in run.complete_checkpoints()) == checkpoint_name(1)
    assert [read_state(c)["step"] for c in RunFolder(out).resume.glob("step-*")] == ([2] if save_steps == 1 else [])
    assert max(r["step"] for r in RunFolder(out).trajectory()) == 2
    assert all(math.isfinite(r["attribute_loss"]) for r in RunFolder(out).trajectory())
    text = (out / "trajectory.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text


def test_learning_rates_that_blow_up_are_refused_or_stopped(corpus_dir, tmp_path, capsys):
    for value in ("inf", "nan"):
        code, err = cli(pretrain_main, tiny30(corpus_dir, tmp_path / value, learning_rate=value), capsys)
        assert code == 2 and err == [f"error: learning_rate must be a finite number, got {value}"]
        assert not (tmp_path / value).exists()
    out = tmp_path / "huge"  # finite, but the first update sends the weights near float32's largest number
    code, err = cli(pretrain_main, tiny30(corpus_dir, out, learning_rate=1e37, save_steps=1), capsys)
    assert code == 1 and err[-1].startswith("error: the weights are not finite after step 2"), err[-1]
    run = RunFolder(out)
    assert [c.name for c in run.complete_checkpoints()] == [checkpoint_name(0), checkpoint_name(1)]
    assert all(_finite_weights(c) for c in run.complete_checkpoints())
    assert read_state(run.latest_resume_checkpoint())["step"] == 1
    assert [r["step"] for r in RunFolder(out).trajectory()] == [0, 0, 1, 1]
    assert sorted(p.name for p in (out / "facts" / "queries").iterdir()) == [f"{checkpoint_name(s)}.parquet"
                                                                           for s in (0, 1)]  # nor facts/


@pytest.mark.parametrize("flag, value, message", [
    ("max_grad_norm", "-1", "max_grad_norm must be 0 or more, got -1.0"),
    ("adam_beta1", "2", "adam_beta1 must be in [0, 1), got 2.0"),
    ("adam_beta2", "1", "adam_beta2 must be in [0, 1), got 1.0"),
    ("adam_epsilon", "-1", "adam_epsilon must be positive, got -1.0"),
    ("weight_decay", "nan", "weight_decay must be a finite number, got nan"),
    ("alpha", "nan", "alpha must be a finite number, got nan"),
    ("celebrity_weight", "-5", "celebrity_weight must be positive, got -5.0"),
    ("epochs_warmup", "inf", "epochs_warmup must be a finite number, got inf"),
    ("peak_tflops", "0", "peak_tflops must be positive, got 0.0"),
    ("hub_min_commit_interval", "-3", "hub_min_commit_interval must be 0 or more, got -3.0"),
])
def test_hyperparameters_are_range_checked(corpus_dir, tmp_path, capsys, flag, value, message):
    code, err = cli(pretrain_main, tiny30(corpus_dir, tmp_path / "run", **{flag: value}), capsys)
    assert code == 2 and err == [f"error: {message}"]
    assert not (tmp_path / "run").exists()


def test_fine_tuning_values_are_range_checked(corpus_dir, tmp_path, capsys):
    for flag, value, message in (("replay_weight", "nan", "replay_weight must be a finite number"),
                                 ("lora_alpha", "0", "lora_alpha must be positive")):
        argv = tiny_flags(corpus_dir, tmp_path / "ft", model_preset=None, init_from="x", **{flag: value})
        code, err = cli(finetune_main, argv, capsys)
        assert code == 2 and len(err) == 1 and message in err[0]


def test_non_finite_loss_stops_before_any_checkpoint_is_written(corpus_dir, tmp_path, capsys, monkeypatch):
    original = TrainingLoop.train_step

    def poison(self, step):  # the weights blow up after the step-10 resume checkpoint
        if step == 13:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
        return original(self, step)

    monkeypatch.setattr(TrainingLoop, "train_step", poison)
    out = tmp_path / "run"
    code, err = cli(pretrain_main, tiny20(corpus_dir, out, "--logging_steps", "50"), capsys)
    assert code == 1 and one_error_line(err) and "training loss is nan at step 20" in err[-1]
    assert "lower learning_rate" in err[-1]
    assert [p.name for p in complete_checkpoints(out / RESUME)] == [checkpoint_name(10)]
    assert all(p.name != checkpoint_name(20) for p in complete_checkpoints(out / CHECKPOINTS))


def test_a_non_finite_evaluation_never_reaches_the_trajectory(corpus_dir, tmp_path, capsys, monkeypatch):
    from pipeline.evaluation import Evaluator

    original = Evaluator.metrics
    calls = []

    def overflowing(self, *args, **kwargs):  # finite weights, but logits that overflow at the third evaluation
        results = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            results["seen"]["attribute_loss"] = float("inf")
        return results

    monkeypatch.setattr(Evaluator, "metrics", overflowing)
    out = tmp_path / "run"
    code, err = cli(pretrain_main, tiny30(corpus_dir, out, eval_steps=1, save_steps=0), capsys)
    assert code == 1 and "the evaluation of seen individuals at step 2 is not finite" in err[-1]
    assert [r["step"] for r in RunFolder(out).trajectory()] == [0, 0, 1, 1]
    assert sorted(p.name for p in (out / "facts" / "queries").iterdir()) == [f"{checkpoint_name(s)}.parquet"
                                                                           for s in (0, 1)]  # nor facts/
