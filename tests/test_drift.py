"""The reference movement beside a fine-tuning run's attention drift: which pretraining checkpoints it is
measured between, why there is none, and drift.jsonl and the report of a real tiny run."""

from __future__ import annotations

import json

import pytest
import yaml

from pipeline.analysis.circuits import analysis_batch, attention_patterns
from pipeline.analysis.forgetting import attention_distance, reference_checkpoints
from pipeline.finetune import main as finetune_main
from pipeline.model import load_eager
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import RunFolder, checkpoint_name

from .conftest import tiny_flags

BASELINE = 4.0


def _run(folder, recipe: dict, losses: dict[int, float] | None = None, steps=(), stage="pretrain") -> RunFolder:
    """A run folder by hand: its recipe, seen-individual losses (no trajectory without them) and empty checkpoints."""
    folder.mkdir(parents=True)
    (folder / "run_config.yaml").write_text(yaml.safe_dump(recipe))
    if losses:
        rows = [{"step": s, "split": "seen", "stage": stage, "attribute_loss": loss, "attribute_accuracy": 0.0,
                 "baseline_loss": BASELINE} for s, loss in losses.items()]
        (folder / "trajectory.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for step in steps:
        (folder / "checkpoints" / checkpoint_name(step)).mkdir(parents=True)
        (folder / "checkpoints" / checkpoint_name(step) / "trainer_state.json").write_text(json.dumps({"step": step}))
    return RunFolder(folder)


def _finetuning_from(tmp_path, init_from) -> RunFolder:
    return _run(tmp_path / "finetune", {"init_from": str(init_from)})


LEARNS = {0: 5.0, 100: 4.0, 200: 4.0, 300: 4.0, 400: 4.0, 500: 4.0, 600: 3.0, 700: 2.0, 800: 1.0, 1000: 0.5}


def test_the_reference_starts_at_the_checkpoint_nearest_the_plateau_end(tmp_path):
    pretraining = _run(tmp_path / "pretrain", {}, LEARNS, steps=(0, 100, 500, 800, 1000))
    # the loss leaves the plateau (5% below the baseline, 3.8) between steps 500 and 600: nearest is step 500
    found = reference_checkpoints(_finetuning_from(tmp_path, pretraining.checkpoint(1000)))
    assert found == (pretraining.checkpoint(500), 1000)


def test_without_a_plateau_end_the_reference_starts_at_the_first_checkpoint_after_step_0(tmp_path):
    flat = {step: BASELINE for step in LEARNS}
    pretraining = _run(tmp_path / "pretrain", {}, flat, steps=(0, 100, 500, 1000))
    assert reference_checkpoints(_finetuning_from(tmp_path, pretraining.checkpoint(1000))) == (
        pretraining.checkpoint(100), 1000)


def test_the_reference_ends_before_init_from(tmp_path):
    pretraining = _run(tmp_path / "pretrain", {}, LEARNS, steps=(0, 100, 500, 800, 1000))
    assert reference_checkpoints(_finetuning_from(tmp_path, pretraining.checkpoint(500))) == (
        pretraining.checkpoint(100), 500)


@pytest.mark.parametrize("case, reason", [
    ("hub", "not a checkpoint of a run folder found"),
    ("missing", "not a checkpoint of a run folder found"),
    ("finetuned", "is a checkpoint of a fine-tuning run"),
    ("no earlier checkpoint", "saved no checkpoint between step 0 and step 1,000"),
])
def test_no_reference_says_why(tmp_path, case, reason):
    steps = (1000,) if case == "no earlier checkpoint" else (0, 100, 1000)
    earlier = _run(tmp_path / "earlier", {}, LEARNS, steps, stage="finetune" if case == "finetuned" else "pretrain")
    init_from = {"hub": "someone/fact-model", "missing": tmp_path / "gone" / "checkpoints" / checkpoint_name(1000)}.get(
        case, earlier.checkpoint(1000))
    found = reference_checkpoints(_finetuning_from(tmp_path, init_from))
    assert isinstance(found, str) and reason in found


@pytest.mark.slow
def test_drift_rows_and_report_carry_the_reference(corpus_dir, corpus, tmp_path):
    pretrained = tmp_path / "pretrain"
    pretrain_main(tiny_flags(corpus_dir, pretrained, max_steps=20, eval_points=2, checkpoint_points=1,
                             eval_individuals=20, save_steps=0))
    finetuned = tmp_path / "finetune"
    finetune_main(tiny_flags(corpus_dir, finetuned, model_preset=None, n_individuals_finetune=20, max_steps=2,
                             init_from=RunFolder(pretrained).checkpoint(20), eval_points=0, checkpoint_points=1,
                             eval_individuals=20, save_steps=0))
    rows = [json.loads(line) for line in (finetuned / "drift.jsonl").read_text().splitlines()]
    start = RunFolder(pretrained).checkpoint(1)  # its only checkpoint between steps 0 and 20
    assert reference_checkpoints(RunFolder(finetuned)) == (start, 20)
    batch = analysis_batch(corpus, 64)
    expected = attention_distance(attention_patterns(load_eager(start), batch),
                                  attention_patterns(load_eager(RunFolder(pretrained).checkpoint(20)), batch),
                                  batch["attention_mask"]).mean()
    assert all(r["reference_steps"] == [1, 20] for r in rows)
    assert all(r["reference_attention_distance"] == pytest.approx(float(expected), rel=1e-5) for r in rows)
    assert "Reference movement: attention moved" in (finetuned / "report.md").read_text()
