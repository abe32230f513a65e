"""forgetting_summary on hand-made fine-tuning trajectories, its numbers worked out by hand."""

from __future__ import annotations

import pytest

from pipeline.analysis.forgetting import forgetting_summary


def trajectory(steps, old_accuracy, old_loss, new_accuracy, heldout_loss) -> list[dict]:
    """Rows as a fine-tuning run's trajectory.jsonl holds them (one per step and group, stage finetune), written
    newest first, after a line of the pretraining stage that the summary must not read."""
    rows = [{"step": 400, "split": "heldout", "stage": "pretrain", "attribute_accuracy": 1.0, "attribute_loss": 0.1}]
    for i, step in reversed(list(enumerate(steps))):
        rows += [{"step": step, "split": "old", "stage": "finetune", "attribute_accuracy": old_accuracy[i],
                  "attribute_loss": old_loss[i]},
                 {"step": step, "split": "new", "stage": "finetune", "attribute_accuracy": new_accuracy[i],
                  "attribute_loss": 5.0},
                 {"step": step, "split": "heldout", "stage": "finetune", "attribute_accuracy": 0.0,
                  "attribute_loss": heldout_loss[i]}]
    return rows


def test_a_collapse_and_a_partial_recovery():
    rows = trajectory(steps=[0, 10, 20, 30, 40, 50],
                      old_accuracy=[0.90, 0.80, 0.40, 0.30, 0.50, 0.60],
                      old_loss=[1.0, 1.5, 3.0, 3.5, 2.5, 2.0],
                      new_accuracy=[0.0, 0.1, 0.3, 0.55, 0.7, 0.8],
                      heldout_loss=[6.0, 6.1, 6.2, 6.3, 6.4, 6.5])
    # old accuracy drops 0.90 - 0.30 = 0.60 (lowest at step 30); half of it, 0.60, is first reached at step 20
    # (0.40; step 10's 0.80 is above); new accuracy first reaches 50% at step 30 (0.55)
    assert forgetting_summary(rows) == pytest.approx({
        "last_step": 50.0, "old_accuracy_before": 0.90, "old_accuracy_lowest": 0.30, "old_accuracy_lowest_step": 30.0,
        "old_accuracy_final": 0.60, "half_drop_step": 20.0, "old_loss_before": 1.0, "old_loss_final": 2.0,
        "new_accuracy_before": 0.0, "new_accuracy_final": 0.8, "new_half_step": 30.0, "heldout_loss_final": 6.5})


def test_no_drop_and_no_acquisition_have_no_step():
    rows = trajectory(steps=[0, 5, 10], old_accuracy=[0.7, 0.9, 0.8], old_loss=[1.0, 0.8, 0.9],
                      new_accuracy=[0.0, 0.2, 0.49], heldout_loss=[6.0, 6.0, 6.0])
    summary = forgetting_summary(rows)
    # never below its start: the lowest point is step 0 itself, a drop of 0, so no half-drop step
    assert (summary["old_accuracy_lowest"], summary["old_accuracy_lowest_step"]) == (0.7, 0.0)
    assert summary["half_drop_step"] is None and summary["new_half_step"] is None
    assert summary["old_accuracy_final"] == 0.8 and summary["new_accuracy_final"] == 0.49


def test_the_lowest_point_reached_twice_is_the_first():
    rows = trajectory(steps=[0, 10, 20, 30], old_accuracy=[1.0, 0.2, 0.6, 0.2], old_loss=[0.5, 2.0, 1.0, 2.0],
                      new_accuracy=[0.0, 0.5, 0.6, 0.9], heldout_loss=[6.0, 6.0, 6.0, 6.0])
    summary = forgetting_summary(rows)
    assert (summary["old_accuracy_lowest"], summary["old_accuracy_lowest_step"]) == (0.2, 10.0)
    assert summary["half_drop_step"] == 10.0  # 0.2 <= 1.0 - 0.8 / 2 at step 10 already
    assert summary["new_half_step"] == 10.0  # exactly 50% counts
