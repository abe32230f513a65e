"""Groups visited in sequence (claim C23): each group evaluated on its own, its learning and forgetting
rates, and the report's section."""

from __future__ import annotations

import pytest

from pipeline.analysis.sequence import run_segments, sequence_summary, visit_rates
from pipeline.pretrain import main
from pipeline.run_folder import SEQUENCE_FIGURE, RunFolder, sequence_group
from pipeline.studies.aggregate import aggregate
from pipeline.studies.schema import Study

from .conftest import tiny_flags


def _row(step: int, group: int, loss: float, accuracy: float | None = None) -> dict:
    """An evaluation of a group; its accuracy by default 1 - loss / 6, a linear image of the loss whose half-way
    crossings are the loss's."""
    return {"stage": "pretrain", "step": step, "split": sequence_group(group), "attribute_loss": loss,
            "attribute_accuracy": 1 - loss / 6 if accuracy is None else accuracy}


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
    # learning 6 -> 4 crosses 5 at step 50; forgetting 4 -> 6 crosses 5 2/3 of the way from 4 (step 100) to 5.5
    # (step 125), 50/3 steps after leaving (not 25: the half level is interpolated, not snapped to an evaluation)
    assert (visit["learning_half_steps"], visit["forgetting_half_steps"]) == pytest.approx((50.0, 50 / 3))
    assert visit["forgetting_per_1k"] == pytest.approx(20.0) and visit["learning_per_1k"] == pytest.approx(20.0)



def test_rates_and_half_lives_never_interpolate_across_a_switch_between_evaluations():
    # switches at steps 125, 250, 375, evaluations every 50: each span reads only the evaluations inside it
    segments = [(0, 125, 0), (125, 250, 1), (250, 375, 0), (375, 500, 1)]
    group0 = (6.0, 4.5, 4.0, 4.3, 4.65, 4.7, 3.7, 3.1, 3.4, 3.45, 3.6)
    group1 = (6.0, 6.0, 6.0, 5.6, 4.8, 4.4, 4.7, 4.8, 4.2, 3.8, 3.6)
    rows = [_row(50 * i, group, loss) for group, losses in enumerate((group0, group1)) for i, loss in enumerate(losses)]
    visits = visit_rates(rows, segments)
    # visit 0-125 of group 0: 6.0 (step 0) -> 4.0 (step 100), not 4.15 interpolated at 125 from step 150, when
    # group 1 was trained; 2 nats over the 100 evaluated steps; half (5.0) 2/3 of the way from 6.0 to 4.5
    assert (visits[0]["loss_start"], visits[0]["loss_end"]) == (6.0, 4.0)
    # learning: 2.0, 1.2 (5.6 at 150 -> 4.4 at 250), 1.6 (4.7 at 250 -> 3.1 at 350), 0.6 (4.2 at 400 -> 3.6)
    # nats over 100 evaluated steps each
    assert [v["learning_per_1k"] for v in visits] == pytest.approx([20.0, 12.0, 16.0, 6.0])
    # half levels 5.0 from 6.0 to 4.5; 5.0 from 5.6 to 4.8 (3/4); 3.9 from 4.7 to 3.7 (4/5); 3.9 from 4.2 to 3.8
    assert [v["learning_half_steps"] for v in visits] == pytest.approx([100 / 3, 37.5, 40.0, 37.5])
    # forgetting: 4.3 (150) -> 4.7 (250); 4.4 (250) -> 4.8 (350); 3.4 (400) -> 3.6 (500); the last visit ends
    # the run; half levels 4.5 from 4.3 to 4.65 (4/7 of 50 steps), 4.6 from 4.4 to 4.7 (2/3), 3.5 from 3.45 to
    # 3.6 (1/3 of the way, from step 450)
    assert [v["forgetting_per_1k"] for v in visits] == pytest.approx([4.0, 4.0, 2.0, None])
    assert [v["forgetting_half_steps"] for v in visits] == pytest.approx([200 / 7, 100 / 3, 50 + 50 / 3, None])
    # the summary leaves out the visit from step 0 (the plateau)
    assert sequence_summary(rows, segments) == pytest.approx(
        {"learning_per_1k": 34 / 3, "forgetting_per_1k": 3.0, "learning_half_steps": 115 / 3,
         "forgetting_half_steps": (100 / 3 + 200 / 3) / 2})


def test_half_lives_read_the_accuracy_where_it_and_the_loss_disagree():
    segments = [(0, 100, 0), (100, 200, 1)]
    # the loss falls evenly over the visit while the accuracy jumps in its last quarter: half of the accuracy's
    # rise (0 -> 0.8, level 0.4) is crossed at step 87.5, half of the loss's fall at step 50
    evaluations = ((0, 6.0, 0.0), (25, 5.5, 0.0), (50, 5.0, 0.0), (75, 4.5, 0.0), (100, 4.0, 0.8),
                   (150, 4.0, 0.8), (200, 4.0, 0.8))
    visit, _ = visit_rates([_row(s, 0, loss, acc) for s, loss, acc in evaluations]
                           + [_row(s, 1, 6.0, 0.0) for s, _, _ in evaluations], segments)
    assert visit["learning_half_steps"] == pytest.approx(87.5)
    assert visit["learning_per_1k"] == pytest.approx(20.0)  # the rate is still the loss's


def test_a_visit_with_fewer_than_two_evaluations_has_no_rate():
    rows = [_row(s, g, 6.0 - s / 100) for g in (0, 1) for s in (0, 50, 100)]
    visits = visit_rates(rows, [(0, 40, 0), (40, 100, 1)])  # only step 0 inside the first visit
    assert [(v["group"], v["learning_per_1k"]) for v in visits] == [(1, pytest.approx(10.0))]


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
    # the means leave out the visit from step 0 (the plateau)
    assert row["learning_per_1k"] == pytest.approx(sum(v["learning_per_1k"] for v in visits[1:]) / 3)
    assert row["forgetting_per_1k"] is not None and row["learning_per_1k_n"] == 1
