"""Bad recipes and command lines (docs/faults.md): each is one line on stderr naming the problem and the
fix, exit status 2, and nothing written."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from data_gen.__main__ import main as data_main
from data_gen.resources import RESOURCES
from pipeline.finetune import main as finetune_main
from pipeline.pretrain import main as pretrain_main
from pipeline.sweep import main as sweep_main

from .conftest import cli, tiny20, tiny30

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
    ("attention kernel whose package is missing", ["--attn_implementation", "flash_attention_2"],
     r"attn_implementation flash_attention_2 needs the flash_attn package, which is not installed: pip install "
     r"flash-attn .*, or pass --attn_implementation sdpa"),
    ("unknown attention kernel", ["--attn_implementation", "flash"], r"attn_implementation 'flash' is unknown"),
    ("fine-tuning key in pretraining", ["--replay_weight", "0.5"], r"key 'replay_weight' in the command line is a "
     r"key of fine-tuning \(python -m pipeline.finetune\), not of this command: remove it, or give it there"),
]


@pytest.mark.parametrize("what, extra, message", BAD_PRETRAIN, ids=[row[0] for row in BAD_PRETRAIN])
def test_bad_pretraining_input(corpus_dir, tmp_path, capsys, what, extra, message):
    code, err = cli(pretrain_main, tiny20(corpus_dir, tmp_path / "run", *extra), capsys)
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


def test_template_lists_of_unequal_length_or_over_127_are_refused(tmp_path, capsys):
    shipped = yaml.safe_load((RESOURCES / "templates.yaml").read_text())
    for name, templates, counts in (
            ("unequal", {**shipped, "major": shipped["major"][:-1]}, "24, 25"),
            ("too many", {a: [f"{{name}} {i} {{value}}" for i in range(128)] for a in shipped}, "128")):
        resources = tmp_path / name
        shutil.copytree(RESOURCES, resources)
        (resources / "templates.yaml").write_text(yaml.safe_dump(templates))
        code, err = cli(data_main, ["build", "--output_dir", str(tmp_path / "c"), "--resources_dir", str(resources)],
                        capsys)
        assert code == 2 and err == [f"error: '{resources / 'templates.yaml'}' must give every attribute the same "
                                     f"number of templates, at most 127 (indices are stored as int8); it has {counts}"]
    assert not (tmp_path / "c").exists()


def test_study_and_launcher_input(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"base": "b.yaml", "output_dir": str(tmp_path / "o"), "grid": {"alfa": [1]}}))
    code, err = cli(sweep_main, ["--config", str(study)], capsys)
    assert code == 2 and "unknown keys ['alfa']" in err[0]
    study.write_text(yaml.safe_dump({"base": "b.yaml", "output_dir": "o", "grid": {"seed": [1]}, "stage": "eval"}))
    code, err = cli(sweep_main, ["--config", str(study)], capsys)
    assert code == 2 and "stage 'eval'" in err[0]
    study.write_text(yaml.safe_dump({"base": "b.yaml", "output_dir": "o", "grid": {"seed": [0, 1, 0]}}))
    code, err = cli(sweep_main, ["--config", str(study)], capsys)
    assert code == 2 and len(err) == 1 and "grid key 'seed' gives 0 more than once: give each value once" in err[0]
    study.write_text(yaml.safe_dump({"base": "b.yaml", "output_dir": "o", "grid": {"seed": [0, 1], "lr_scheduler_type":
                                     ["constant", "cosine"]}, "run_name": "seed={seed}"}))
    code, err = cli(sweep_main, ["--config", str(study)], capsys)
    assert code == 2 and "2 grid points that repeat another's run folder (seed=0, seed=1)" in err[0]
    assert err[0].endswith("name every key the grid varies in run_name")


def test_a_pretraining_key_in_fine_tuning_is_named_as_such(corpus_dir, tmp_path, capsys):
    recipe = tmp_path / "ft.yaml"
    recipe.write_text("init_from: x\nmodel_preset: tiny\n")
    code, err = cli(finetune_main, ["--config", str(recipe), "--corpus", str(corpus_dir), "--output_dir",
                                    str(tmp_path / "ft")], capsys)
    assert code == 2 and err == [f"error: key 'model_preset' in recipe '{recipe}' is a key of pretraining (python -m "
                                 f"pipeline.pretrain), not of this command: remove it, or give it there"]


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


@pytest.mark.parametrize("text, message", [
    ("learning_rate: 1\nlearning_rate: 2\n", "at line 2, column 1: key 'learning_rate' is given twice"),
    ("max_steps: [1\n", "is not valid YAML at line 2, column 1"),
    ("learning_rate:\n", "gives 'learning_rate' no value (null)"),
    ("report_to: tensorbord\n", "report_to 'tensorbord' is unknown: use one of none, all"),
])
def test_recipe_mistakes_are_one_line_with_where(corpus_dir, tmp_path, capsys, text, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    code, err = cli(pretrain_main, [*tiny30(corpus_dir, tmp_path / "run", report_to=None), "--config", str(recipe)],
                    capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_missing_tracker_package_says_how_to_install(corpus_dir, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code, err = cli(pretrain_main, tiny30(corpus_dir, tmp_path / "run", report_to="wandb"), capsys)
    assert code == 2 and err == ["error: report_to 'wandb' needs the wandb package: pip install wandb, or pass "
                                 "--report_to none"]


def test_a_malformed_study_grid_is_one_line(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text("base: b.yaml\noutput_dir: o\ngrid:\n  seed: 1\n")
    code, err = cli(sweep_main, ["--config", str(study)], capsys)
    assert code == 2 and err == [f"error: study '{study}': every grid and paired key needs a non-empty list of values"]
    study.write_text("base: b.yaml\noutput_dir: o\ngrid: {seed: [1]}\ngrid: {seed: [2]}\n")
    code, err = cli(sweep_main, ["--config", str(study)], capsys)
    assert code == 2 and "key 'grid' is given twice" in err[0]
