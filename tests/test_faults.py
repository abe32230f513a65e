"""Bad input and faults (the table is tests/FAULTS.md): each ends with one line on stderr naming the
problem and the fix, a non-zero exit status, and nothing lost."""

from __future__ import annotations

import errno
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from common.errors import run_cli
from data_gen.__main__ import main as data_main
from pipeline.finetune import main as finetune_main
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import CHECKPOINTS, RESUME, checkpoint_name, complete_checkpoints, load_trajectory
from pipeline.sweep import main as sweep_main
from pipeline.train.trainer import Trainer

from .conftest import tiny_flags

REPO = Path(__file__).resolve().parents[1]


def tiny(corpus_dir, out, *extra) -> list[str]:
    return [*tiny_flags(corpus_dir, out, eval_points=2, checkpoint_points=2, eval_individuals=20, max_steps=20,
                        save_steps=10), *extra]


def cli(main, argv, capsys) -> tuple[int, list[str]]:
    """Run an entry point as its command line does; returns the exit status and the stderr lines."""
    code = run_cli(lambda: main(argv))
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _one_error(err: list[str]) -> bool:
    """The run's last stderr line is its only error line (above it: the progress bar)."""
    return err[-1].startswith("error: ") and sum(line.startswith("error: ") for line in err) == 1


# (what is wrong, entry point, arguments after the corpus flags, message expected)
BAD_PRETRAIN = [
    ("misspelled key", ["--learning_rat", "0.1"], r"unknown key 'learning_rat'.*did you mean 'learning_rate'"),
    ("wrong type", ["--max_steps", "ten"], r"max_steps.*invalid int value: 'ten'"),
    ("zero batch", ["--batch_size", "0"], r"batch_size must be at least 1"),
    ("negative evaluation count", ["--eval_individuals", "-5"], r"eval_individuals must be 0 \(all\) or more"),
    ("negative learning rate", ["--learning_rate", "-1e-3"], r"learning_rate must be positive"),
    ("unknown scheduler", ["--lr_scheduler_type", "cosin"], r"lr_scheduler_type 'cosin' is unknown"),
    ("micro-batch not dividing the batch", ["--micro_batch_size", "5"], r"micro_batch_size 5 does not divide"),
    ("alpha out of range", ["--sampler", "power_law", "--alpha", "-1"], r"alpha must be between 0 and 10"),
    ("unknown sampler", ["--sampler", "zipf"], r"sampler 'zipf' is unknown"),
    ("warm-up longer than the run", ["--sampler", "warmup", "--indiv_warmup", "100", "--epochs_warmup", "50"],
     r"the warm-up lasts \d+ steps, not less than max_steps=20"),
    ("malformed schedule", ["--sampler", "schedule", "--sampler_schedule", "0:uniform:n=many"],
     r"schedule phase '0:uniform:n=many' is not"),
    ("push without a repository", ["--push_to_hub", "true"], r"push_to_hub is set but hub_model_id is not"),
    ("unknown model preset", ["--model_preset", "huge"], r"model_preset 'huge' is unknown"),
]


@pytest.mark.parametrize("what, extra, message", BAD_PRETRAIN, ids=[row[0] for row in BAD_PRETRAIN])
def test_bad_pretraining_input(corpus_dir, tmp_path, capsys, what, extra, message):
    code, err = cli(pretrain_main, tiny(corpus_dir, tmp_path / "run", *extra), capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert re.search(message, err[0]), err[0]
    assert not (tmp_path / "run").exists()  # nothing written


def test_bad_corpus_recipes(tmp_path, capsys):
    for argv, message in ((["build", "--output_dir", str(tmp_path / "c"), "--n_individuals", "0"],
                           "n_individuals must be at least 1"),
                          (["build", "--output_dir", str(tmp_path / "c"), "--n_individuals", "100000",
                            "--n_first_names", "5", "--n_last_names", "5"], "exceeds the 125 unique full names"),
                          (["biuld"], "unknown command 'biuld'")):
        code, err = cli(data_main, argv, capsys)
        assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "c").exists()


def _copy_corpus(corpus_dir: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(corpus_dir, to)
    return to


def test_corrupted_missing_or_outdated_corpus(corpus_dir, tmp_path, capsys):
    broken = _copy_corpus(corpus_dir, tmp_path / "broken")
    arrow = min((broken / "train").glob("*.arrow"))
    data = bytearray(arrow.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arrow.write_bytes(bytes(data))
    code, err = cli(pretrain_main, tiny(broken, tmp_path / "run"), capsys)
    assert code == 2 and "is corrupted (it does not match manifest.json)" in err[0]
    arrow.unlink()
    code, err = cli(pretrain_main, tiny(broken, tmp_path / "run"), capsys)
    assert code == 2 and "is missing" in err[0]
    old = _copy_corpus(corpus_dir, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    code, err = cli(pretrain_main, tiny(old, tmp_path / "run"), capsys)
    assert code == 2 and "has format 1" in err[0] and "--overwrite true" in err[0]
    code, err = cli(pretrain_main, tiny(tmp_path / "nowhere" / "corpus" / "x", tmp_path / "run"), capsys)
    assert code == 2 and "does not exist or was not built by data_gen" in err[0]
    assert not (tmp_path / "run").exists()


def test_output_folder_of_another_run_or_of_other_files(corpus_dir, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, err = cli(pretrain_main, tiny(corpus_dir, other), capsys)
    assert code == 2 and "holds files that are not a run" in err[0] and (other / "notes.txt").read_text() == "mine"


def test_disk_full_while_saving_keeps_the_previous_checkpoint(corpus_dir, tmp_path, capsys, monkeypatch):
    from transformers import PreTrainedModel

    original = PreTrainedModel.save_pretrained

    def full_at_step_20(self, path, *args, **kwargs):
        if Path(path).name.endswith(checkpoint_name(20)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full_at_step_20)
    out = tmp_path / "run"
    code, err = cli(pretrain_main, tiny(corpus_dir, out), capsys)
    assert code == 1 and _one_error(err) and "No space left on device" in err[-1] and "free disk space" in err[-1]
    permanent = complete_checkpoints(out / CHECKPOINTS)
    assert [p.name for p in permanent] == [checkpoint_name(0), checkpoint_name(1)]  # the earlier ones, complete
    assert not list((out / CHECKPOINTS).glob(".tmp-*"))  # no half-written folder left
    AutoModelForCausalLM.from_pretrained(permanent[-1])
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", original)
    assert cli(pretrain_main, tiny(corpus_dir, out), capsys)[0] == 0  # space back: rerun resumes and finishes
    assert max(r["step"] for r in load_trajectory(out)) == 20


def test_non_finite_loss_stops_before_any_checkpoint_is_written(corpus_dir, tmp_path, capsys, monkeypatch):
    original = Trainer.train_step

    def poison(self, step):  # the weights blow up after the step-10 resume checkpoint
        if step == 13:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
        return original(self, step)

    monkeypatch.setattr(Trainer, "train_step", poison)
    out = tmp_path / "run"
    code, err = cli(pretrain_main, tiny(corpus_dir, out, "--logging_steps", "50"), capsys)
    assert code == 1 and _one_error(err) and "training loss is nan at step 20" in err[-1]
    assert "lower learning_rate" in err[-1]
    assert [p.name for p in complete_checkpoints(out / RESUME)] == [checkpoint_name(10)]
    assert all(p.name != checkpoint_name(20) for p in complete_checkpoints(out / CHECKPOINTS))


@pytest.mark.slow
def test_sigterm_saves_a_resume_checkpoint_and_exits_143(corpus_dir, tmp_path):
    out = tmp_path / "run"
    argv = tiny(corpus_dir, out, "--max_steps", "3000", "--save_steps", "1000", "--eval_points", "0")
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


def test_study_and_launcher_input(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"base": "b.yaml", "output_dir": str(tmp_path / "o"), "grid": {"alfa": [1]}}))
    code, err = cli(sweep_main, ["--config", str(study)], capsys)
    assert code == 2 and "unknown keys ['alfa']" in err[0]
    study.write_text(yaml.safe_dump({"base": "b.yaml", "output_dir": "o", "grid": {"seed": [1]}, "stage": "eval"}))
    code, err = cli(sweep_main, ["--config", str(study)], capsys)
    assert code == 2 and "stage 'eval'" in err[0]


def test_bad_finetuning_input(corpus_dir, tmp_path, capsys):
    base = ["--corpus", str(corpus_dir), "--output_dir", str(tmp_path / "ft"), "--report_to", "none",
            "--n_individuals_finetune", "20"]
    for extra, message in ((["--init_from", "x", "--new_split", "heldout"], "new_split must be finetune or train"),
                           (["--init_from", "x", "--replay_weight", "-1"], "replay_weight must be 0 or more"),
                           (["--init_from", "x", "--freeze", "mlp", "--lora_rank", "4"], "lora_rank and freeze"),
                           (["--init_from", str(tmp_path / "a" / "b" / "c")], "neither an existing folder"),
                           (["--init_from", "x", "--n_individuals_finetune", "500"], "has 50: lower them")):
        code, err = cli(finetune_main, base + extra, capsys)
        assert code == 2 and len(err) == 1 and message in err[0], (extra, err)
    assert not (tmp_path / "ft").exists()
