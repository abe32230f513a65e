"""Groups visited in sequence (claim C23): each group evaluated on its own, its learning and forgetting
rates, and the report's section."""

from __future__ import annotations

import pytest

from pipeline.analysis.sequence import run_segments, visit_rates
from pipeline.pretrain import main
from pipeline.run_folder import SEQUENCE_FIGURE, RunFolder, sequence_group
from pipeline.studies.aggregate import aggregate
from pipeline.studies.schema import Study

from .conftest import tiny_flags


def _row(step: int, group: int, loss: float) -> dict:
    return {"stage": "pretrain", "step": step, "split": sequence_group(group), "attribute_loss": loss}


def test_visit_rates_are_the_loss_slopes_while_trained_and_after():
    segments = [(0, 100, 0), (100, 200, 1), (200, 300, 0), (300, 400, 1)]
    rows = [_row(s, 0, loss) for s, loss in ((0, 6.0), (100, 4.0), (200, 4.5), (300, 3.0), (400, 3.2))]
    rows += [_row(s, 1, loss) for s, loss in ((0, 6.0), (100, 6.0), (200, 5.0), (300, 5.5), (400, 4.0))]
    visits = visit_rates(rows, segments)
    assert [(v["group"], v["start"]) for v in visits] == [(0, 0), (1, 100), (0, 200), (1, 300)]
    assert [v["learning_per_1k"] for v in visits] == pytest.approx([20.0, 10.0, 15.0, 15.0])
    # forgetting from a visit's end to the next visit of the group, or to the last evaluation
    assert [v["forgetting_per_1k"] for v in visits] == pytest.approx([5.0, 5.0, 2.0, None])
    assert len(visit_rates(rows[:3] + rows[5:8], segments)) == 2  # no visit past the last evaluation


def test_half_lives_are_the_steps_to_half_of_each_change():
    segments = [(0, 100, 0), (100, 200, 1)]
    losses = ((0, 6.0), (25, 5.5), (50, 5.0), (75, 4.5), (100, 4.0), (125, 5.5), (150, 5.8), (200, 6.0))
    visit, _ = visit_rates([_row(s, 0, loss) for s, loss in losses] + [_row(s, 1, 6.0) for s, _ in losses],
                           segments)
    # learning 6 -> 4 crosses 5 at step 50; forgetting 4 -> 6 crosses 5 by step 125, 25 steps after leaving
    assert (visit["learning_half_steps"], visit["forgetting_half_steps"]) == (50.0, 25.0)
    assert visit["forgetting_per_1k"] == pytest.approx(20.0) and visit["learning_per_1k"] == pytest.approx(20.0)


@pytest.mark.slow
def test_a_sequential_run_evaluates_each_group_and_reports_its_rates(corpus_dir, tmp_path):
    out = tmp_path / "study" / "seed=0"
    main(tiny_flags(corpus_dir, out, max_steps=80, sampler="sequential", n_groups=4, n_repeats=1, eval_points=0,
                    eval_steps=10, eval_individuals=20, learning_rate=3e-3, save_steps=0, checkpoint_points=0))
    run = RunFolder(out)
    rows = run.trajectory()
    assert {r["split"] for r in rows} == {"seen", "heldout", *(sequence_group(g) for g in range(4))}
    segments = run_segments(run.recipe())
    assert segments == [(0, 20, 0), (20, 40, 1), (40, 60, 2), (60, 80, 3)]
    visits = visit_rates(rows, segments)
    assert len(visits) == 4 and all(v["learning_per_1k"] > 0 for v in visits)
    assert (out / SEQUENCE_FIGURE).is_file() and "## Groups visited in sequence" in (out / "report.md").read_text()
    (row,) = aggregate(Study("b.yaml", str(tmp_path / "study"), {"seed": [0]}))  # a study's row has the means
    assert row["learning_per_1k"] == pytest.approx(sum(v["learning_per_1k"] for v in visits) / 4)
    assert row["forgetting_per_1k"] is not None and row["learning_per_1k_n"] == 1
