"""A run is its recipe's identity keys and the corpus it learned from, not paths nor how it is executed: a run
whose corpus moved resumes, one resumed with execution keys changed trains on to the unchanged run's trajectory,
a finished run trains on with --extend_to (an extended constant-rate run is the longer run), and every refusal of
a folder holding another run names what differs and the ways that keep it before the one that deletes it."""

from __future__ import annotations

import shutil

import pytest
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from data_gen.builder import build
from pipeline.config import PRETRAIN_ARGUMENTS, describe_extension, execution_keys, field_names
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import RUN_CONFIG, RunFolder
from tests.conftest import cli, interrupted_run, one_error_line, small_config, tiny30

CONSTANT = {"lr_scheduler_type": "constant", "save_steps": 10, "eval_points": 0, "eval_steps": 10}
# execution keys changed at a resume, by group -> the largest relative difference of any trajectory number from the
# unchanged run's that the change may make (0: bit for bit; measured on a 2-core CPU: 1.0e-8 for the evaluation
# batch, 1.4e-8 micro-batching, 1.9e-8 the eager kernel and shapes, 7.5e-9 packing)
EXECUTION_GROUPS = {
    "logging, trackers, Hub settings": ({"logging_steps": 3, "report_to": "tensorboard", "peak_tflops": 1.0,
                                         "hub_wait_at_end": 5.0}, 0),
    "checkpoint cadence, prefetch": ({"save_steps": 4, "prefetch_batches": 2}, 0),
    "evaluation batch": ({"eval_batch_size": 7}, 1e-6),
    "micro-batches of the same global batch": ({"micro_batch_size": 4}, 1e-6),
    "attention kernel and shapes": ({"attn_implementation": "eager", "fixed_length": True, "pad_to_multiple_of": 8},
                                    1e-6),
    "packing": ({"packing": True}, 1e-6),
    "compile": ({"torch_compile": True, "torch_compile_backend": "aot_eager"}, 1e-6),
    "precision": ({"mixed_precision": "bf16"}, 2e-2),
}


def _flat(values: dict, prefix: str = "") -> dict:
    """A trajectory row's values by their path (per_attribute/major/loss, by_exposure/0/loss)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, list):
            value = dict(enumerate(value))
        out.update(_flat(value, f"{prefix}{key}/") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def _numbers(run) -> list[dict]:
    """The run's trajectory rows, flat, without their wall-clock times."""
    return [{k: v for k, v in _flat(row).items() if k != "seconds"} for row in RunFolder(run).trajectory()]


@pytest.fixture(scope="module")
def unchanged(corpus_dir, tmp_path_factory):
    """A 30-step run with a resume checkpoint every 10 steps, never interrupted."""
    run = tmp_path_factory.mktemp("unchanged") / "run"
    pretrain_main(tiny30(corpus_dir, run, save_steps=10))
    return run


@pytest.mark.parametrize("group", [pytest.param(g, marks=() if g == "evaluation batch" else pytest.mark.slow)
                                   for g in EXECUTION_GROUPS])
def test_a_run_resumed_with_execution_keys_changed_trains_on_to_the_unchanged_trajectory(
        group, corpus_dir, unchanged, tmp_path, capsys, monkeypatch):
    changed, tolerance = EXECUTION_GROUPS[group]
    run = tmp_path / "run"
    interrupted_run(corpus_dir, run, 15, monkeypatch, save_steps=10)  # resumes from step 10
    AcceleratorState._reset_state(reset_partial_state=True)  # a new process would set its own precision
    code, err = cli(pretrain_main, tiny30(corpus_dir, run, **{"save_steps": 10, **changed}), capsys)
    AcceleratorState._reset_state(reset_partial_state=True)
    assert code == 0
    got, expected = _numbers(run), _numbers(unchanged)
    assert len(got) == len(expected) == 10  # five evaluations of two groups
    if tolerance == 0:
        assert got == expected
    else:
        for row, reference in zip(got, expected, strict=True):
            numbers = {k for k, v in reference.items() if isinstance(v, float)}
            assert {k: v for k, v in row.items() if k not in numbers} == {
                k: v for k, v in reference.items() if k not in numbers}  # steps, groups, counts: exact
            assert {k: row[k] for k in numbers} == pytest.approx({k: reference[k] for k in numbers}, rel=tolerance)
    recorded = RunFolder(run).recipe()["execution_changes"]
    assert recorded == sorted(f"step 10: {key} {RunFolder(unchanged).recipe()[key]} -> {value}"
                              for key, value in changed.items())
    assert all(f"{key} " in (run / "report.md").read_text().split("## Reproduce")[1] for key in changed)
    assert ("changes precision at step 10" in " ".join(err)) == ("mixed_precision" in changed)


def test_execution_keys_are_recipe_keys_and_every_other_key_is_the_runs_identity(
        corpus_dir, unchanged, tmp_path, capsys):
    keys = execution_keys(*PRETRAIN_ARGUMENTS)
    assert keys < field_names(*PRETRAIN_ARGUMENTS)
    assert {"eval_batch_size", "micro_batch_size", "report_to", "torch_compile", "attn_implementation"} <= keys
    assert not keys & {"batch_size", "learning_rate", "seed", "data_seed", "max_steps", "eval_individuals",
                       "eval_points", "sampler", "model_preset", "corpus"}
    run = tmp_path / "run"
    shutil.copytree(unchanged, run)  # a run folder moved is the same run
    before = (run / RUN_CONFIG).read_text()
    pretrain_main(tiny30(corpus_dir, run, save_steps=10, eval_batch_size=7))  # complete: nothing runs, nothing changes
    assert "already holds this run, complete" in capsys.readouterr().out and (run / RUN_CONFIG).read_text() == before
    code, err = cli(pretrain_main, tiny30(corpus_dir, run, save_steps=10, eval_batch_size=7, learning_rate=0.01),
                    capsys)
    assert code == 2 and one_error_line(err) and "differs in learning_rate (0.0004 there, 0.01 here))" in err[-1]
    assert "eval_batch_size" not in err[-1] and (run / RUN_CONFIG).read_text() == before


def test_a_run_whose_corpus_moved_resumes_and_records_the_new_path(corpus_dir, tmp_path, capsys, monkeypatch):
    straight, moved = tmp_path / "straight", tmp_path / "moved"
    pretrain_main(tiny30(corpus_dir, straight, save_steps=10))
    shutil.copytree(corpus_dir, tmp_path / "m")
    interrupted_run(tmp_path / "m", moved, 15, monkeypatch, save_steps=10)
    (tmp_path / "m").rename(tmp_path / "m2")
    code, err = cli(pretrain_main, tiny30(tmp_path / "m2", moved, save_steps=10), capsys)
    assert code == 0
    assert RunFolder(moved).recipe()["corpus"] == str(tmp_path / "m2")
    trajectory = [{k: v for k, v in row.items() if k != "seconds"} for row in RunFolder(moved).trajectory()]
    assert trajectory == [{k: v for k, v in row.items() if k != "seconds"} for row in RunFolder(straight).trajectory()]


def test_a_corpus_with_other_people_at_the_path_is_refused_with_the_ways_that_keep_the_run(
        corpus_dir, tmp_path, capsys):
    run, other = tmp_path / "run", tmp_path / "m"
    build(small_config(other, seed=5))
    pretrain_main(tiny30(other, run, max_steps=10, save_steps=10, eval_points=1))
    shutil.rmtree(other)
    build(small_config(other, seed=4))  # rebuilt in place with other people
    before = (run / RUN_CONFIG).read_text()
    code, err = cli(pretrain_main, tiny30(other, run, max_steps=10, save_steps=10, eval_points=1, seed=3), capsys)
    assert code == 2 and one_error_line(err)
    line = err[-1]
    assert "differs in data_seed (0 there, 3 here), seed (0 there, 3 here)" in line
    ways = ["another --output_dir", "--init_from", "--overwrite_output_dir true deletes it"]
    assert all(w in line for w in ways) and sorted(ways, key=line.index) == ways  # the destructive way last
    code, err = cli(pretrain_main, tiny30(corpus_dir, run, max_steps=10, save_steps=10, eval_points=1), capsys)
    assert code == 2 and f"corpus ('{other}' there, '{corpus_dir}' here)" in err[-1]
    assert "point --corpus at the corpus it was trained on (the corpus given holds other individuals)" in err[-1]
    assert (run / RUN_CONFIG).read_text() == before


def test_extending_a_constant_rate_run_equals_running_it_that_long(corpus_dir, tmp_path, capsys):
    short, extended, straight = tmp_path / "short", tmp_path / "extended", tmp_path / "straight"
    pretrain_main(tiny30(corpus_dir, straight, max_steps=60, **CONSTANT))
    pretrain_main(tiny30(corpus_dir, extended, **CONSTANT))
    capsys.readouterr()
    pretrain_main([*tiny30(corpus_dir, extended, **CONSTANT), "--extend_to", "60"])
    said = capsys.readouterr().out
    assert "extended from 30 to 60 steps" in said and "constant after the warm-up" in said
    runs = RunFolder(extended), RunFolder(straight)
    assert [r["attribute_loss"] for r in runs[0].trajectory()] == [r["attribute_loss"] for r in runs[1].trajectory()]
    weights = [load_file(run.checkpoint(60) / "model.safetensors") for run in runs]
    assert weights[0].keys() == weights[1].keys() and all((weights[0][k] == weights[1][k]).all() for k in weights[0])
    recipe = runs[0].recipe()
    assert (recipe["max_steps"], recipe["extended_from"], recipe["extend_to"]) == (60, [30], 0)
    assert "Trained to 30 then 60 steps (extend_to)" in (extended / "report.md").read_text()
    # the same command again: done; a shorter extension, or a longer max_steps without extend_to, refused
    pretrain_main([*tiny30(corpus_dir, extended, **CONSTANT), "--extend_to", "60"])
    assert "already holds this run, complete" in capsys.readouterr().out
    code, err = cli(pretrain_main, [*tiny30(corpus_dir, extended, **CONSTANT), "--extend_to", "40"], capsys)
    assert code == 2 and "extend_to 40 is not past the 60 steps" in err[-1]
    code, err = cli(pretrain_main, tiny30(corpus_dir, extended, **{**CONSTANT, "max_steps": 90}), capsys)
    assert code == 2 and "max_steps (60 there, 90 here)" in err[-1] and "--extend_to 90" in err[-1]
    assert err[-1].index("--extend_to 90") < err[-1].index("--overwrite_output_dir")
    code, err = cli(pretrain_main, [*tiny30(corpus_dir, short, **CONSTANT), "--extend_to", "60"], capsys)
    assert code == 2 and "holds no run to extend" in err[-1] and not short.exists()


def test_what_an_extension_does_to_the_learning_rate_is_said():
    base = {"max_steps": 60, "extended_from": [30], "lr_schedule_steps": None}
    assert describe_extension({**base, "extended_from": []}) is None
    cosine = describe_extension({**base, "lr_scheduler_type": "cosine"})
    assert cosine.startswith("Trained to 30 then 60 steps") and "rebuilt over 60 steps" in cosine
    assert "after step 30 is that of a 60-step run" in cosine
    kept = describe_extension({**base, "lr_scheduler_type": "cosine", "lr_schedule_steps": 100})
    assert "lr_schedule_steps=100, not max_steps" in kept


def test_a_run_is_extended_only_from_a_resume_checkpoint_and_not_under_a_sequential_sampler(
        corpus_dir, tmp_path, capsys):
    runs = {"no_resume": {"save_steps": 0}, "sequential": {"sampler": "sequential", "n_groups": 2, "n_repeats": 1}}
    fixes = {"no_resume": "holds no resume checkpoint to extend from (it ran with save_steps 0)",
             "sequential": "spreads its visits over max_steps, so a longer run draws other biographies"}
    for name, values in runs.items():
        flags = tiny30(corpus_dir, tmp_path / name, **{**CONSTANT, "max_steps": 8, **values})
        pretrain_main(flags)
        before = (tmp_path / name / RUN_CONFIG).read_text()
        code, err = cli(pretrain_main, [*flags, "--extend_to", "16"], capsys)
        assert code == 2 and one_error_line(err) and fixes[name] in err[-1]
        assert (tmp_path / name / RUN_CONFIG).read_text() == before
