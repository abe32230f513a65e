"""Misuse that used to lose data or mix it (the seven reproductions of tests/FAULTS.md, rows 32-38) and the
classes they belong to: blown-up models, shared folders, rebuilt or other corpora, folders that are not
what a flag replaces, out-of-range hyperparameters, Ctrl-C, and input errors without a traceback."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from common.errors import run_cli
from data_gen.__main__ import main as data_main
from data_gen.builder import build
from pipeline.finetune import main as finetune_main
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import RunFolder, checkpoint_name, load_trajectory, read_state
from pipeline.sweep import main as sweep_main
from pipeline.train.trainer import Trainer

from .conftest import small_config, tiny_flags

REPO = Path(__file__).resolve().parents[1]


def tp(corpus_dir, out, **values) -> list[str]:
    """The issue's short pretraining run (TP)."""
    return tiny_flags(corpus_dir, out, **{"max_steps": 30, "eval_individuals": 20, "eval_points": 4, "eval_steps": 0,
                                          "checkpoint_points": 4, **values})


def cli(main, argv, capsys) -> tuple[int, list[str]]:
    """Run an entry point as its command line does; returns the exit status and its stderr lines."""
    capsys.readouterr()  # what ran before
    code = run_cli(lambda: main(argv))
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _finite_weights(checkpoint: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values())


@pytest.mark.parametrize("save_steps", [1, 10])
def test_a_blown_up_update_is_never_saved_nor_evaluated(corpus_dir, tmp_path, capsys, monkeypatch, save_steps):
    original = Trainer.train_step

    def blow_up_at_step_3(self, step):  # the loss of step 3 is computed before the update, so it is finite
        loss = original(self, step)
        if step == 2:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("inf"))
        return loss

    monkeypatch.setattr(Trainer, "train_step", blow_up_at_step_3)
    out = tmp_path / "run"
    code, err = cli(pretrain_main, tp(corpus_dir, out, save_steps=save_steps, eval_steps=1), capsys)
    assert code == 1 and err[-1].startswith("error: the weights are not finite after step 3")
    run = RunFolder(out)
    assert all(_finite_weights(c) for c in run.complete_checkpoints())
    assert max(c.name for c in run.complete_checkpoints()) == checkpoint_name(1)
    assert [read_state(c)["step"] for c in RunFolder(out).resume.glob("step-*")] == ([2] if save_steps == 1 else [])
    assert max(r["step"] for r in load_trajectory(out)) == 2
    assert all(math.isfinite(r["attribute_loss"]) for r in load_trajectory(out))
    text = (out / "trajectory.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text


def test_learning_rates_that_blow_up_are_refused_or_stopped(corpus_dir, tmp_path, capsys):
    for value in ("inf", "nan"):
        code, err = cli(pretrain_main, tp(corpus_dir, tmp_path / value, learning_rate=value), capsys)
        assert code == 2 and err == [f"error: learning_rate must be a finite number, got {value}"]
        assert not (tmp_path / value).exists()
    out = tmp_path / "huge"  # finite, but the first update sends the weights near float32's largest number
    code, err = cli(pretrain_main, tp(corpus_dir, out, learning_rate=1e37, save_steps=1), capsys)
    assert code == 1 and err[-1].startswith("error: the weights are not finite after step 2"), err[-1]
    run = RunFolder(out)
    assert [c.name for c in run.complete_checkpoints()] == [checkpoint_name(0), checkpoint_name(1)]
    assert all(_finite_weights(c) for c in run.complete_checkpoints())
    assert read_state(run.latest_resume_checkpoint())["step"] == 1
    assert [r["step"] for r in load_trajectory(out)] == [0, 0, 1, 1]


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
    code, err = cli(pretrain_main, tp(corpus_dir, tmp_path / "run", **{flag: value}), capsys)
    assert code == 2 and err == [f"error: {message}"]
    assert not (tmp_path / "run").exists()


def test_fine_tuning_values_are_range_checked(corpus_dir, tmp_path, capsys):
    for flag, value, message in (("replay_weight", "nan", "replay_weight must be a finite number"),
                                 ("lora_alpha", "0", "lora_alpha must be positive")):
        argv = tiny_flags(corpus_dir, tmp_path / "ft", model_preset=None, init_from="x", **{flag: value})
        code, err = cli(finetune_main, argv, capsys)
        assert code == 2 and len(err) == 1 and message in err[0]


def _background_run(corpus_dir, out, **values) -> subprocess.Popen:
    """A long run in another process, returned once it has evaluated step 0."""
    argv = tp(corpus_dir, out, max_steps=100_000, save_steps=50_000, **values)
    process = subprocess.Popen([sys.executable, "-m", "pipeline.pretrain", *argv], cwd=REPO, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out / "trajectory.jsonl").is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()[1][-2000:]
    return process


@pytest.mark.slow
def test_a_run_folder_is_held_by_one_run_and_a_killed_holder_is_taken_over(corpus_dir, tmp_path, capsys):
    out = tmp_path / "conc"
    first = _background_run(corpus_dir, out)
    before = (out / "run_config.yaml").read_text()
    code, err = cli(pretrain_main, tp(corpus_dir, out, save_steps=10), capsys)
    assert code == 2 and len(err) == 1
    assert f"run folder '{out}' is in use by pid {first.pid}" in err[0] and "pipeline.pretrain" in err[0]
    assert (out / "run_config.yaml").read_text() == before and first.poll() is None  # the first run goes on
    code, err = cli(pretrain_main, tp(corpus_dir, out, save_steps=10, overwrite_output_dir="true"), capsys)
    assert code == 2 and "is in use by" in err[0]  # not even when asked to overwrite
    first.send_signal(signal.SIGKILL)
    first.wait()
    code, err = cli(pretrain_main, tp(corpus_dir, out, max_steps=2, overwrite_output_dir="true"), capsys)
    assert code == 0 and any(f"taking over run folder '{out}' from pid {first.pid}" in line for line in err)


def test_a_second_corpus_build_into_the_same_folder_is_refused(tmp_path, capsys):
    from data_gen.folders import exclusive

    target = tmp_path / "c"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom data_gen.folders import exclusive\n"
                               f"with exclusive({str(target)!r}, 'corpus'):\n    print('held', flush=True)\n"
                               "    time.sleep(60)"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    code, err = cli(data_main, ["build", "--config", str(REPO / "recipes/demo/data.yaml"), "--output_dir",
                                str(target), "--n_individuals", "50", "--n_heldout", "0", "--n_finetune", "0"], capsys)
    assert code == 2 and f"corpus folder '{target}' is in use by pid {holder.pid}" in err[-1]
    holder.kill()
    holder.wait()
    with exclusive(target, "corpus"):  # a lock left by a killed process is taken over, saying so
        pass
    assert "taking over corpus folder" in capsys.readouterr().err


def _interrupted_run(corpus_dir, out, at_step: int, monkeypatch, **values) -> None:
    original = Trainer.train_step

    def crash(self, step):
        if step == at_step:
            raise KeyboardInterrupt("killed")
        return original(self, step)

    monkeypatch.setattr(Trainer, "train_step", crash)
    with pytest.raises(KeyboardInterrupt):
        pretrain_main(tp(corpus_dir, out, **values))
    monkeypatch.setattr(Trainer, "train_step", original)


def test_a_rebuilt_corpus_is_not_resumed(tmp_path, capsys, monkeypatch):
    corpus = build(small_config(tmp_path / "a"))
    out = tmp_path / "run"
    _interrupted_run(corpus, out, 21, monkeypatch, save_steps=10)
    assert read_state(RunFolder(out).latest_resume_checkpoint())["corpus"]["seed"] == 3
    trajectory = (out / "trajectory.jsonl").read_text()
    build(small_config(corpus, seed=1, overwrite=True))  # same tokenizer, other people
    code, err = cli(pretrain_main, tp(corpus, out, save_steps=10), capsys)
    assert code == 2 and len(err) == 1 and "was trained on corpus" in err[0] and "seed 3" in err[0]
    assert "now holds another" in err[0] and "seed 1" in err[0]
    assert (out / "trajectory.jsonl").read_text() == trajectory  # nothing touched
    build(small_config(corpus, seed=3, overwrite=True))  # rebuilt as it was: the same bytes, so it resumes
    assert cli(pretrain_main, tp(corpus, out, save_steps=10), capsys)[0] == 0


def test_fine_tuning_refuses_a_model_pretrained_on_other_individuals(corpus_dir, tmp_path, capsys):
    pretrained = tmp_path / "pretrained"
    pretrain_main(tp(corpus_dir, pretrained, max_steps=4, eval_points=0, checkpoint_points=1, save_steps=0))
    init = RunFolder(pretrained).checkpoint(4)
    assert read_state(init)["corpus"]["train_fingerprint"]
    other = build(small_config(tmp_path / "other", seed=11))  # the same tokenizer, other people
    argv = tiny_flags(other, tmp_path / "ft", model_preset=None, init_from=init, n_individuals_finetune=20,
                      max_steps=2, eval_points=0, checkpoint_points=1, save_steps=0, eval_individuals=20)
    code, err = cli(finetune_main, argv, capsys)
    assert code == 2 and len(err) == 1 and f"init_from '{init}' was pretrained on corpus '{corpus_dir}'" in err[0]
    assert "--allow_other_corpus true" in err[0] and not (tmp_path / "ft").exists()
    assert cli(finetune_main, [*argv, "--allow_other_corpus", "true"], capsys)[0] == 0
    assert "**Another corpus**" in (tmp_path / "ft" / "report.md").read_text()
    same = tiny_flags(corpus_dir, tmp_path / "ft-same", model_preset=None, init_from=init, n_individuals_finetune=20,
                      max_steps=2, eval_points=0, checkpoint_points=1, save_steps=0, eval_individuals=20)
    assert cli(finetune_main, same, capsys)[0] == 0
    assert "Another corpus" not in (tmp_path / "ft-same" / "report.md").read_text()


def test_overwrite_replaces_only_what_it_is_for(corpus_dir, tmp_path, capsys):
    run = tmp_path / "run"
    pretrain_main(tp(corpus_dir, run, max_steps=2, eval_points=0, checkpoint_points=0, save_steps=0))
    before = sorted(p.name for p in run.iterdir())
    build_argv = ["build", "--config", str(REPO / "recipes/demo/data.yaml"), "--n_individuals", "50", "--n_heldout",
                  "0", "--n_finetune", "0", "--overwrite", "true"]
    code, err = cli(data_main, [*build_argv, "--output_dir", str(run)], capsys)
    assert code == 2 and len(err) == 1 and "holds files that are not a corpus (attention.jsonl," in err[0]
    assert sorted(p.name for p in run.iterdir()) == before
    code, err = cli(pretrain_main, tp(corpus_dir, corpus_dir, overwrite_output_dir="true"), capsys)
    assert code == 2 and "holds files that are not a run of this pipeline (README.md," in err[0]
    assert (Path(corpus_dir) / "manifest.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(data_main, [*build_argv, "--output_dir", str(empty)], capsys)[0] == 0  # an empty folder is fine
    assert cli(data_main, [*build_argv, "--output_dir", str(empty), "--seed", "4"], capsys)[0] == 0  # a corpus too


def test_a_restarted_run_keeps_its_folder(corpus_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _interrupted_run(corpus_dir, out, 5, monkeypatch, save_steps=20, max_steps=10)  # before any resume checkpoint
    (out / "notes.md").write_text("mine")
    pretrain_main(tp(corpus_dir, out, save_steps=20, max_steps=10))
    assert "restarting" in capsys.readouterr().out and (out / "notes.md").read_text() == "mine"
    straight = tmp_path / "straight"
    pretrain_main(tp(corpus_dir, straight, save_steps=20, max_steps=10))
    assert load_trajectory(out) == load_trajectory(straight)


def _sigint_run(corpus_dir, out, *, save_steps: int) -> tuple[int, str]:
    argv = tp(corpus_dir, out, max_steps=100_000, save_steps=save_steps, eval_points=0, checkpoint_points=0)
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

    from pipeline.train.trainer import StopSignal

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


@pytest.mark.parametrize("text, message", [
    ("learning_rate: 1\nlearning_rate: 2\n", "at line 2, column 1: key 'learning_rate' is given twice"),
    ("max_steps: [1\n", "is not valid YAML at line 2, column 1"),
    ("learning_rate:\n", "gives 'learning_rate' no value (null)"),
    ("report_to: tensorbord\n", "report_to 'tensorbord' is unknown: use one of none, all"),
])
def test_recipe_mistakes_are_one_line_with_where(corpus_dir, tmp_path, capsys, text, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    code, err = cli(pretrain_main, [*tp(corpus_dir, tmp_path / "run", report_to=None), "--config", str(recipe)], capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_missing_tracker_package_says_how_to_install(corpus_dir, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code, err = cli(pretrain_main, tp(corpus_dir, tmp_path / "run", report_to="wandb"), capsys)
    assert code == 2 and err == ["error: report_to 'wandb' needs the wandb package: pip install wandb, or pass "
                                 "--report_to none"]


def test_unwritable_paths_and_damaged_files_are_one_line(corpus_dir, tmp_path, capsys):
    long = tmp_path / ("x" * 300)
    code, err = cli(pretrain_main, tp(corpus_dir, long), capsys)
    assert code == 2 and len(err) == 1 and "cannot be written (File name too long)" in err[0]
    out = tmp_path / "run"
    pretrain_main(tp(corpus_dir, out, max_steps=20, save_steps=10, eval_points=0, checkpoint_points=0))
    pretrain_main(tp(corpus_dir, out, max_steps=20, save_steps=10, eval_points=0, checkpoint_points=0))  # done
    resume = RunFolder(out).latest_resume_checkpoint()
    (resume / "trainer_state.json").write_text('{"step": 2')
    code, err = cli(pretrain_main, tp(corpus_dir, out, max_steps=20, save_steps=10, eval_points=0,
                                      checkpoint_points=0), capsys)
    assert code == 1 and len(err) == 1 and "is damaged (trainer_state.json is not JSON" in err[0]
    (resume / "trainer_state.json").write_text(json.dumps({"step": 10, "tokens_seen": 1, "recipe": {}}))
    weights = next(resume.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    code, err = cli(pretrain_main, tp(corpus_dir, out, max_steps=20, save_steps=10, eval_points=0,
                                      checkpoint_points=0), capsys)
    assert code == 1 and _one_line(err) and f"resume checkpoint '{resume}' is damaged" in err[-1]
    assert max(r["step"] for r in load_trajectory(out)) == 20  # nothing rewound for a checkpoint that did not load


def _one_line(err: list[str]) -> bool:
    return err[-1].startswith("error: ") and sum(line.startswith("error: ") for line in err) == 1


def test_a_malformed_study_grid_is_one_line(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text("base: b.yaml\noutput_dir: o\ngrid:\n  seed: 1\n")
    code, err = cli(sweep_main, ["--config", str(study)], capsys)
    assert code == 2 and err == [f"error: study '{study}': every grid key needs a non-empty list of values"]
    study.write_text("base: b.yaml\noutput_dir: o\ngrid: {seed: [1]}\ngrid: {seed: [2]}\n")
    code, err = cli(sweep_main, ["--config", str(study)], capsys)
    assert code == 2 and "key 'grid' is given twice" in err[0]


def test_exposures_are_recorded_with_the_corpus(corpus_dir, tmp_path):
    out = tmp_path / "run"
    pretrain_main(tp(corpus_dir, out, max_steps=3, eval_points=0, checkpoint_points=1, save_steps=3))
    for checkpoint in (RunFolder(out).checkpoint(3), RunFolder(out).latest_resume_checkpoint()):
        record = read_state(checkpoint)["corpus"]
        assert record["path"] == str(corpus_dir) and record["seed"] == 3 and len(record["fingerprint"]) == 16
    assert np.load(RunFolder(out).checkpoint(3) / "exposures.npy").sum() == 3 * 16


def test_a_non_finite_evaluation_never_reaches_the_trajectory(corpus_dir, tmp_path, capsys, monkeypatch):
    from pipeline.evaluation import Evaluator

    original = Evaluator.evaluate
    calls = []

    def overflowing(self, *args, **kwargs):  # finite weights, but logits that overflow at the third evaluation
        results = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            results["seen"]["attribute_loss"] = float("inf")
        return results

    monkeypatch.setattr(Evaluator, "evaluate", overflowing)
    out = tmp_path / "run"
    code, err = cli(pretrain_main, tp(corpus_dir, out, eval_steps=1, save_steps=0), capsys)
    assert code == 1 and "the evaluation of seen individuals at step 2 is not finite" in err[-1]
    assert [r["step"] for r in load_trajectory(out)] == [0, 0, 1, 1]
