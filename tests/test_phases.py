"""Phase detectors that do not depend on the evaluation grid: the crossing rule, a plateau the loss jumps across
between two evaluations, numbers by hand at the summary's three tolerances, and one smooth trajectory
evaluated densely, every 50 steps and on a log-spaced grid."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.analysis.crossings import crossing
from pipeline.analysis.phases import detect_phases, hallucination_onset, run_phases
from pipeline.run_folder import HELDOUT, SEEN


def test_a_crossing_is_interpolated_between_the_evaluations_around_it_in_both_directions():
    steps, values = np.array([0.0, 10.0, 20.0, 30.0]), np.array([4.0, 3.0, 1.0, 2.0])
    assert crossing(steps, values, 2.0) == (15.0, 2)  # falls from 3 (step 10) to 1 (step 20)
    assert crossing(steps, values, 1.5, start=2, rising=True) == (25.0, 3)  # from 1 (step 20) up to 2 (step 30)
    assert crossing(steps, values, 4.0, start=1) == (10.0, 1)  # reached at `start` already: that step
    assert crossing(steps, values, 0.5) == (None, 4)


def test_a_loss_that_jumps_across_the_band_has_no_plateau_but_a_crossing_of_the_baseline():
    # band [5.225, 5.775] around B = 5.5 and no evaluation inside it: the old rule found a plateau from the
    # band's upper edge (step 140.5) to its lower one (239.5), 99 steps that only measured the spacing
    phases = detect_phases(np.array([0.0, 100.0, 1000.0]), np.array([9.0, 6.0, 1.0]), np.array([0.0, 0.2, 1.0]),
                           baseline=5.5, tolerance=0.05)
    assert phases.plateau_start == phases.plateau_end == pytest.approx(100 + 900 * (6.0 - 5.5) / (6.0 - 1.0))
    assert phases.plateau_length == 0.0
    assert phases.emergence == pytest.approx(100 + 900 * (0.5 - 0.2) / (1.0 - 0.2))


STEPS = np.arange(0.0, 700.0, 100.0)
LOSS = np.array([8.0, 4.3, 4.15, 3.85, 3.7, 3.5, 1.0])  # baseline 4
HELDOUT_LOSS = np.array([9.0, 6.2, 6.0, 6.1, 6.6, 7.0, 8.0])  # 6.2 before the minimum does not count
# (tolerance, plateau start, end, length, hallucination onset), by hand: bands [3.9, 4.1], [3.8, 4.2], [3.6, 4.4]
BY_HAND = [
    # no evaluation in [3.9, 4.1] (4.15 at step 200, 3.85 at 300): the loss crosses 4 halfway, at step 250;
    # the onset: 0.1 x 4 above the held-out minimum 6.0 is 6.1, reached at step 300 itself
    (0.025, 250.0, 250.0, 0.0, 300.0),
    # enters at 4.2, 2/3 of the way from 4.3 (step 100) to 4.15 (step 200); leaves at 3.8, 1/3 of the way from
    # 3.85 (300) to 3.7 (400); the onset at 6.2, 1/5 of the way from 6.1 (300) to 6.6 (400)
    (0.05, 100 + 200 / 3, 300 + 100 / 3, 500 / 3, 320.0),
    # enters at 4.4, 3.6/3.7 of the way from 8 (0) to 4.3 (100); leaves at 3.6, halfway from 3.7 (400) to 3.5
    # (500); the onset at 6.4, 3/5 of the way from 6.1 (300) to 6.6 (400)
    (0.1, 360 / 3.7, 450.0, 450 - 360 / 3.7, 360.0),
]


@pytest.mark.parametrize("tolerance, start, end, length, onset", BY_HAND)
def test_phases_and_onset_by_hand_at_the_summary_tolerances(tolerance, start, end, length, onset):
    phases = detect_phases(STEPS, LOSS, np.zeros(len(STEPS)), baseline=4.0, tolerance=tolerance)
    assert (phases.plateau_start, phases.plateau_end, phases.plateau_length) == pytest.approx((start, end, length))
    assert hallucination_onset(STEPS, HELDOUT_LOSS, baseline=4.0, tolerance=tolerance) == pytest.approx(onset)
    rows = [{"step": int(s), "split": split, "attribute_loss": loss, "attribute_accuracy": 0.0, "baseline_loss": 4.0}
            for split, losses in ((SEEN, LOSS), (HELDOUT, HELDOUT_LOSS)) for s, loss in zip(STEPS, losses)]
    from_rows = run_phases(rows, tolerance=tolerance)  # what summary.csv's plateau_length_tol<t> columns read
    assert (from_rows.plateau_length, from_rows.hallucination_onset) == pytest.approx((length, onset))


BASELINE = 5.0


def _loss(t: np.ndarray) -> np.ndarray:
    """Falls to the baseline, drifts 0.03 per 300 steps inside the band, then falls as knowledge emerges."""
    return BASELINE + 4 * np.exp(-t / 80) - 1e-4 * t - 4 / (1 + np.exp(-(t - 700) / 40))


def _accuracy(t: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(t - 720) / 40))


def _width(grid: np.ndarray, step: float) -> float:
    """The width of the interval of `grid` that holds `step`."""
    i = int(np.searchsorted(grid, step))
    return float(grid[i] - grid[i - 1])


DENSE = 5.0
GRIDS = {"every 50 steps": np.arange(0.0, 1501.0, 50.0),
         "log-spaced": np.unique(np.concatenate([[0.0], np.round(np.geomspace(10, 1500, 25))]))}


@pytest.mark.parametrize("grid", GRIDS.values(), ids=GRIDS.keys())
def test_a_coarse_grid_finds_the_phases_of_a_dense_one(grid):
    dense_steps = np.arange(0.0, 1501.0, DENSE)
    dense = detect_phases(dense_steps, _loss(dense_steps), _accuracy(dense_steps), BASELINE)
    coarse = detect_phases(grid, _loss(grid), _accuracy(grid), BASELINE)
    assert 300 < dense.plateau_length < 400 and dense.plateau_end < dense.emergence
    # Tolerance: the curve crosses each level once, so on either grid the crossing is interpolated inside the
    # interval that holds the true one: the coarse answer is within that coarse interval's width of it, the
    # dense one within 5 steps; a length adds the tolerances of its two ends.
    tolerances = {}
    for key in ("plateau_start", "plateau_end", "emergence"):
        tolerances[key] = _width(grid, getattr(dense, key)) + DENSE
        assert getattr(coarse, key) == pytest.approx(getattr(dense, key), abs=tolerances[key]), key
    assert coarse.plateau_length == pytest.approx(dense.plateau_length,
                                                  abs=tolerances["plateau_start"] + tolerances["plateau_end"])
