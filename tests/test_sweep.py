"""The sweep runner: power-law fit, grids with corpora, skipping and resuming runs, aggregation."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from common.errors import RunError
from data_gen import RecipeError
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import RunFolder
from pipeline.studies.aggregate import aggregate, write_study_fits
from pipeline.studies.claims import StudyFiles, Undefined
from pipeline.studies.figures import draw_study_figures
from pipeline.studies.fit import fit_power_law
from pipeline.studies.parallel import slots
from pipeline.studies.schema import Study, load_study
from pipeline.sweep import main as sweep_main
from pipeline.train.loop import TrainingLoop

from .conftest import TINY_RUN


def test_power_law_fit_recovers_a_known_exponent():
    x = np.array([4e3, 8e3, 16e3, 32e3, 64e3])
    noise = np.exp(np.random.default_rng(0).normal(0, 0.01, len(x)))
    a, b, r2 = fit_power_law(x, 0.43 * x ** 0.81 * noise)
    assert b == pytest.approx(0.81, abs=0.02) and a == pytest.approx(0.43, rel=0.2) and r2 > 0.99


@pytest.fixture
def study(tmp_path, corpus_dir):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        **TINY_RUN, "corpus": str(corpus_dir), "max_steps": 4, "eval_points": 2, "checkpoint_points": 1,
        "eval_individuals": 20, "save_steps": 2}))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"base": str(base), "output_dir": str(tmp_path / "sweep"),
                                    "grid": {"seed": [0, 1]}, "fixed": {"learning_rate": 0.002}}))
    return path


def test_sweep_skips_finished_runs_and_resumes_interrupted_ones(study, tmp_path, monkeypatch, capsys):
    original = TrainingLoop.train_step

    def crash_seed_1(self, step):
        if self.args.seed == 1 and step == 3:
            raise KeyboardInterrupt("killed")
        return original(self, step)

    monkeypatch.setattr(TrainingLoop, "train_step", crash_seed_1)
    with pytest.raises(KeyboardInterrupt):
        sweep_main(["--config", str(study)])
    monkeypatch.setattr(TrainingLoop, "train_step", original)
    sweep = tmp_path / "sweep"
    finished = (sweep / "seed=0" / "trajectory.jsonl").read_text()
    assert max(r["step"] for r in RunFolder(sweep / "seed=1").trajectory()) < 4  # interrupted
    capsys.readouterr()

    sweep_main(["--config", str(study)])
    out = capsys.readouterr().out
    assert "seed=0 already holds this run, complete" in out and "resuming" in out
    assert (sweep / "seed=0" / "trajectory.jsonl").read_text() == finished  # untouched
    straight = tmp_path / "straight"
    pretrain_main(["--config", str(tmp_path / "base.yaml"), "--output_dir", str(straight), "--seed", "1",
                   "--learning_rate", "0.002"])
    assert RunFolder(sweep / "seed=1").trajectory() == RunFolder(straight).trajectory()

    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["seed"] for r in rows] == ["0", "1"] and all(float(r["final_loss"]) > 0 for r in rows)


def test_print_commands_runs_nothing(study, tmp_path, capsys):
    sweep_main(["--config", str(study), "--print_commands"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.startswith("accelerate launch -m pipeline.pretrain --config") for line in lines)
    assert "--seed 1" in lines[1] and "--learning_rate 0.002" in lines[1]
    assert not (tmp_path / "sweep").exists()


def test_slurm_array_runs_one_grid_point_per_task(study, tmp_path):
    script = tmp_path / "study.sbatch"
    sweep_main(["--config", str(study), "--slurm_array", str(script)])
    text = script.read_text()
    assert "#SBATCH --array=0-1" in text
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "accelerate").write_text('#!/bin/bash\necho "$@"\n')
    (stub / "accelerate").chmod(0o755)
    env = {"PATH": f"{stub}:/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": "1"}
    task = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert task[:3] == ["launch", "-m", "pipeline.pretrain"]
    assert task[task.index("--seed") + 1] == "1" and task[task.index("--output_dir") + 1].endswith("seed=1")
    with pytest.raises(RecipeError, match="already exists"):
        sweep_main(["--config", str(study), "--slurm_array", str(script)])
    with pytest.raises(RecipeError, match="accelerate config 'nope.yaml' does not exist"):
        sweep_main(["--config", str(study), "--print_commands", "--accelerate_config", "nope.yaml"])


def test_corpus_keys_need_a_data_recipe_and_unknown_keys_fail(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"base": "b.yaml", "output_dir": "o", "grid": {"n_individuals": [10]}}))
    with pytest.raises(RecipeError, match="varies corpus keys but has no 'data'"):
        load_study(str(path))
    path.write_text(yaml.safe_dump({"base": "b.yaml", "output_dir": "o", "grid": {"alfa": [0.1]}}))
    with pytest.raises(RecipeError, match=r"unknown keys \['alfa'\]"):
        load_study(str(path))


def _fits_and_figures(rows: list[dict], tmp_path: Path, grid: dict) -> list[Path]:
    study = Study("b.yaml", str(tmp_path), grid)
    return draw_study_figures(rows, write_study_fits(rows, study), study)


def test_study_figures_from_rows(tmp_path):
    rows = [{"n_individuals": n, "alpha": a, "plateau_length": 0.43 * n ** 0.81, "plateau_end": 100 + 0.43 * n ** 0.81,
             "final_loss": 1.0 / (1 + a),
             "final_accuracy": 0.5, "baseline": False, "indiv_warmup": None, "epochs_warmup": None}
            for n in (250, 500, 1000) for a in (0.0, 0.8)]
    figures = _fits_and_figures(rows, tmp_path, {"n_individuals": [], "alpha": []})
    assert [f.name for f in figures] == ["alpha.png"]  # no power-law fit across alphas
    uniform = [r for r in rows if r["alpha"] == 0.0]
    figures += _fits_and_figures(uniform, tmp_path, {"n_individuals": []})
    assert [f.name for f in figures] == ["alpha.png", "plateau_vs_population.png"]
    assert all(f.stat().st_size > 10_000 for f in figures)
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["b"] == pytest.approx(0.81) and fit["r2"] == pytest.approx(1.0)
    assert fit["plateau_end"]["mean"] == pytest.approx([100 + 0.43 * n ** 0.81 for n in (250, 500, 1000)])
    assert fit["plateau_end"]["b"] < 0.81  # the first phase's 100 steps flatten the end's growth


def test_a_figure_its_rows_cannot_give_is_skipped_in_one_line(tmp_path, capsys):
    rows = [{"n_individuals": n, "plateau_length": None, "plateau_start": None, "plateau_end": None, "final_loss": 1.0,
             "final_accuracy": 0.5, "baseline": False} for n in (100, 200)]  # no plateau anywhere
    (tmp_path / "plateau_vs_population.png").write_bytes(b"an older figure")
    assert _fits_and_figures(rows, tmp_path, {"n_individuals": []}) == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"skipped {tmp_path / 'plateau_vs_population.png'}: ")
    assert not (tmp_path / "plateau_vs_population.png").exists()


def test_a_study_whose_plateaus_are_all_zero_writes_its_files_and_skips_one_figure(tmp_path, capsys):
    rows = [{"n_individuals": n, "seed": seed, "plateau_length": 0, "plateau_start": 0, "plateau_end": 0,
             "final_loss": 1.0, "final_accuracy": 0.5, "baseline": False} for n in (100, 200) for seed in (0, 1)]
    study = Study("b.yaml", str(tmp_path), {"n_individuals": [100, 200], "seed": [0, 1], "alpha": [0.0]})
    figures = draw_study_figures(rows, write_study_fits(rows, study), study)
    assert [f.name for f in figures] == ["alpha.png"]  # drawn: the plateau figure's failure costs nothing else
    study = Study("b.yaml", str(tmp_path), {"n_individuals": [100, 200], "seed": [0, 1]})
    assert draw_study_figures(rows, write_study_fits(rows, study), study) == []
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"skipped {tmp_path / 'plateau_vs_population.png'}: no run has a plateau end above 0 to draw on "
                   f"log axes"]
    assert json.loads((tmp_path / "fit.json").read_text()) == {
        "fitted": False, "why": "a power law needs a plateau longer than 0 steps at two populations or more; 0 of "
                                "the 2 (100, 200) have one"}
    with pytest.raises(Undefined, match="holds no fit: a power law needs"):
        StudyFiles(tmp_path).fit("plateau_end")


def test_a_run_with_an_empty_trajectory_is_a_failed_row_not_the_end_of_the_study(tmp_path):
    study = Study("b.yaml", str(tmp_path), {"seed": [0]})
    run = RunFolder(study.run_folder(study.points()[0]))
    run.start({"seed": 0})
    (run / "trajectory.jsonl").write_text("")  # killed before its first evaluation
    assert aggregate(study) == []
    with (tmp_path / "summary.csv").open() as f:
        (row,) = csv.DictReader(f)
    assert row["status"] == "failed" and "holds no evaluation yet" in row["error"]


def test_attention_patching_is_a_study_like_the_others(tmp_path, capsys):
    from pipeline.studies.attention_patching import PatchingStudyArguments
    from pipeline.studies.runner import print_commands, run_flags

    recipe = tmp_path / "reference.yaml"
    recipe.write_text("model_preset: tiny\n")
    study = PatchingStudyArguments(str(recipe), str(tmp_path / "study"), [0, 60], 5).study()
    assert [study.name(p) for p in study.points()] == ["patched-0", "patched-60"]
    flags = run_flags(study.points()[1], study)
    assert flags[flags.index("--reference_run") + 1] == str(tmp_path / "study" / "reference")
    assert flags[flags.index("--reference_checkpoint") + 1] == "60" and "--start_patching" in flags
    print_commands(study)
    first, *runs = capsys.readouterr().out.splitlines()
    assert first.endswith(f"--output_dir {tmp_path / 'study' / 'reference'} --checkpoint_at 0 60") and len(runs) == 2


@pytest.mark.parametrize("entries, message", [
    ({"grid": {"seed": 1}}, "every grid and paired key needs a non-empty list"),
    ({"grid": {"seed": [1]}, "gird": {}}, r"unknown entries \['gird'\]"),
    ({"grid": {"seed": [1]}, "run_name": "run-{alpha}"}, "run_name 'run-{alpha}' names a key the grid does not set"),
    ({"grid": {"seed": [1]}, "fixed": {"n_individuals": 10}}, "varies corpus keys but has no 'data'"),
    ({"grid": {"eval_every": [5]}}, None),  # a former key name: renamed, with a warning
])
def test_study_files_are_checked(tmp_path, entries, message):
    from pipeline.studies.schema import parse_study

    values = {"base": "b.yaml", "output_dir": str(tmp_path), **entries}
    if message is None:
        assert list(parse_study(values, "s.yaml").grid) == ["eval_steps"]
        return
    with pytest.raises(RecipeError, match=message):
        parse_study(values, "s.yaml")


def _study_file(tmp_path, corpus_dir, grid: dict, max_steps: int = 4, name: str = "study.yaml") -> Path:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({**TINY_RUN, "corpus": str(corpus_dir), "max_steps": max_steps, "eval_points": 2,
                                    "checkpoint_points": 1, "eval_individuals": 20, "save_steps": 2}))
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"base": str(base), "output_dir": str(tmp_path / name.replace(".yaml", "")),
                                    "grid": grid}))
    return path


def test_slots_split_the_cores_or_give_each_run_one_gpu(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    assert slots(2, None, 1) == [{"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}] * 2
    gpus = slots(None, "0, 1", 2)  # K runs to each GPU
    assert [s["CUDA_VISIBLE_DEVICES"] for s in gpus] == ["0", "0", "1", "1"]
    assert all(s["OMP_NUM_THREADS"] == "2" for s in gpus)
    for jobs, devices, per_device, message in [(0, None, 1, "--jobs must be at least 1"),
                                                (None, ",", 1, "--devices takes GPU indices"),
                                                (None, "0", 0, "--runs_per_device at least 1")]:
        with pytest.raises(RecipeError, match=message):
            slots(jobs, devices, per_device)


@pytest.mark.slow
def test_parallel_runs_give_the_same_trajectories(tmp_path, corpus_dir, capsys):
    one = _study_file(tmp_path, corpus_dir, {"seed": [0, 1], "learning_rate": [0.002, 0.004]}, name="one.yaml")
    two = _study_file(tmp_path, corpus_dir, {"seed": [0, 1], "learning_rate": [0.002, 0.004]}, name="two.yaml")
    sweep_main(["--config", str(one), "--jobs", "1"])
    sweep_main(["--config", str(two), "--jobs", "2"])
    out = capsys.readouterr().out
    assert "runs: 4 done, 0 running, 0 failed, 0 queued" in out
    for run in ("learning_rate=0.002_seed=0", "learning_rate=0.004_seed=1"):  # keys sorted by yaml.safe_dump
        a, b = RunFolder(tmp_path / "one" / run).trajectory(), RunFolder(tmp_path / "two" / run).trajectory()
        assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
        for x, y in zip(a, b, strict=True):  # one thread per run against two: the same sums in another order
            assert x["attribute_loss"] == pytest.approx(y["attribute_loss"], rel=1e-4)
        assert (tmp_path / "two" / "logs" / f"{run}.log").is_file()
    with (tmp_path / "two" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
    assert (tmp_path / "two" / "study.png").stat().st_size > 10_000  # every run's loss and accuracy
    same_rate = [r for r in rows if r["learning_rate"] == "0.002"]  # seeds 0 and 1: one grid point
    assert same_rate[0]["final_loss_mean"] == same_rate[1]["final_loss_mean"]
    losses = [float(r["final_loss"]) for r in same_rate]
    assert float(same_rate[0]["final_loss_mean"]) == pytest.approx(sum(losses) / 2)
    assert same_rate[0]["final_loss_low"] == "" and same_rate[0]["final_loss_n"] == "2"  # two seeds: no interval


@pytest.mark.slow
def test_a_failing_run_is_retried_once_then_reported_without_stopping_the_others(tmp_path, corpus_dir, capsys):
    study = _study_file(tmp_path, corpus_dir, {"learning_rate": [0.002, -1.0]})
    with pytest.raises(RunError, match=r"1 runs failed after a retry \(learning_rate=-1.0: error: learning_rate "
                                       r"must be positive"):
        sweep_main(["--config", str(study), "--jobs", "2"])
    log = (tmp_path / "study" / "logs" / "learning_rate=-1.0.log").read_text()
    assert log.count("=== attempt") == 2  # retried once
    with (tmp_path / "study" / "summary.csv").open() as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert rows["learning_rate=0.002"]["status"] == "done" and float(rows["learning_rate=0.002"]["final_loss"]) > 0
    failed = rows["learning_rate=-1.0"]
    assert failed["status"] == "failed" and "must be positive" in failed["error"]


@pytest.mark.slow
def test_sigterm_stops_every_run_with_a_resume_checkpoint_and_a_rerun_continues(tmp_path, corpus_dir):
    study = _study_file(tmp_path, corpus_dir, {"seed": [0, 1, 2]}, max_steps=400)  # the third waits in the queue
    command = [sys.executable, "-m", "pipeline.sweep", "--config", str(study), "--jobs", "2"]
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    logs = [tmp_path / "study" / "logs" / f"seed={s}.log" for s in (0, 1)]
    deadline = time.time() + 300
    while time.time() < deadline and not all(log.is_file() and "/400 [" in log.read_text() for log in logs):
        time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 143 and err.strip().splitlines()[-1].startswith("error: stopped by SIGTERM: 2 running")
    assert not (tmp_path / "study" / "seed=2").exists()  # never started
    for seed in (0, 1):
        assert RunFolder(tmp_path / "study" / f"seed={seed}").latest_resume_checkpoint() is not None
        assert "stopped by SIGTERM after step" in logs[seed].read_text()
    sweep_main(["--config", str(study), "--jobs", "2"])  # continues
    for seed in (0, 1, 2):
        assert max(r["step"] for r in RunFolder(tmp_path / "study" / f"seed={seed}").trajectory()) == 400
    assert all("resuming" in log.read_text() for log in logs)


def test_bits_per_parameter_fit_and_capacity_figure(tmp_path):
    from pipeline.studies.fit import fit_bits_per_parameter

    fit = fit_bits_per_parameter({0: {1000.0: 1900.0, 4000.0: 8000.0}, 1: {1000.0: 2100.0}})
    assert fit["bits_per_parameter"] == pytest.approx((2000 * 1000 + 8000 * 4000) / (1000**2 + 4000**2))
    assert fit["low"] is None and fit["high"] is None  # two seeds: their slopes, no interval
    rows = [{"hidden_size": h, "seed": s, "baseline": False, "knowledge_bits": 1.5 * p * (1 + 0.05 * s),
             "parameters": 3 * p, "non_embedding_parameters": p, "plateau_length": None, "final_loss": 1.0}
            for h, p in ((16, 7000), (32, 16000), (64, 41000)) for s in (0, 1)]
    figures = _fits_and_figures(rows, tmp_path, {"hidden_size": [], "seed": []})
    assert [f.name for f in figures] == ["capacity.png"] and figures[0].stat().st_size > 10_000
    fits = json.loads((tmp_path / "capacity.json").read_text())
    assert fits["non_embedding_parameters"]["bits_per_parameter"] == pytest.approx(1.5 * 1.025, rel=1e-3)
    assert fits["parameters"]["bits_per_parameter"] == pytest.approx(0.5 * 1.025, rel=1e-3)


def test_a_patching_grid_names_each_start_and_reference(tmp_path):
    from pipeline.studies.attention_patching import PatchingStudyArguments
    from pipeline.studies.runner import run_flags

    recipe = tmp_path / "reference.yaml"
    recipe.write_text("model_preset: tiny\n")
    study = PatchingStudyArguments(str(recipe), str(tmp_path / "study"), [0, 60], [0, 60]).study()
    assert [study.name(p) for p in study.points()] == ["patched-0-from-0", "patched-60-from-0", "patched-0-from-60",
                                                       "patched-60-from-60"]
    flags = run_flags(study.points()[3], study)
    assert flags[flags.index("--start_patching") + 1] == "60" and flags[flags.index("--reference_checkpoint") + 1] == "60"


@pytest.mark.slow
def test_the_patching_grid_is_drawn_from_its_runs(corpus_dir, tmp_path):
    from pipeline.studies.attention_patching import main as patching_main

    recipe = tmp_path / "reference.yaml"
    recipe.write_text(yaml.safe_dump({"corpus": str(corpus_dir), "model_preset": "tiny", "batch_size": 16,
                                      "max_steps": 20, "eval_points": 0, "eval_steps": 5, "eval_individuals": 20,
                                      "save_steps": 0, "checkpoint_points": 0, "report_to": "none"}))
    out = tmp_path / "study"
    patching_main(["--reference_config", str(recipe), "--output_dir", str(out), "--reference_steps", "0", "10",
                   "--start_patching", "0", "10"])
    with (out / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["start_patching"], r["reference_checkpoint"]) for r in rows) == [
        ("0", "0"), ("0", "10"), ("10", "0"), ("10", "10")]
    assert (out / "patching_grid.png").stat().st_size > 10_000
    assert "## Start step x reference step" in (out / "study.md").read_text()
    reference = RunFolder(out / "reference").trajectory()
    frozen = RunFolder(out / "patched-10-from-10").trajectory()  # the diagonal: frozen attention from step 10
    assert [r for r in frozen if r["step"] < 10] == [r for r in reference if r["step"] < 10]
    assert [r for r in frozen if r["step"] == 20] != [r for r in reference if r["step"] == 20]


def test_paired_keys_vary_together(tmp_path):
    from pipeline.studies.schema import parse_study

    values = {"base": "b.yaml", "output_dir": str(tmp_path), "grid": {"seed": [0, 1]},
              "paired": {"batch_size": [16, 32, 64], "max_steps": [400, 200, 100]}}
    study = parse_study(values, "s.yaml")
    points = [(p.values["seed"], p.values["batch_size"], p.values["max_steps"]) for p in study.points()]
    assert points == [(s, b, 6400 // b) for s in (0, 1) for b in (16, 32, 64)]  # equal data: 6 runs, not 18
    assert study.name(study.points()[0]) == "seed=0_batch_size=16_max_steps=400"
    with pytest.raises(RecipeError, match="one length"):
        parse_study({**values, "paired": {"batch_size": [16, 32], "max_steps": [400]}}, "s.yaml")
    with pytest.raises(RecipeError, match="none of them in the grid"):
        parse_study({**values, "paired": {"seed": [2, 3]}}, "s.yaml")
