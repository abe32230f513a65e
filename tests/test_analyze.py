"""Phase detection on trajectories with known crossings."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.analysis.phases import detect_phases, hallucination_onset


def test_three_phases_found_at_interpolated_steps():
    steps = np.array([0, 100, 200, 300, 400, 500, 600])
    loss = np.array([9.0, 6.0, 5.0, 5.0, 4.5, 2.0, 1.0])  # baseline 5: band [4.75, 5.25]
    accuracy = np.array([0.0, 0.0, 0.0, 0.01, 0.1, 0.7, 0.9])
    phases = detect_phases(steps, loss, accuracy, baseline=5.0)
    assert phases.plateau_start == pytest.approx(100 + 100 * (6.0 - 5.25) / (6.0 - 5.0))
    assert phases.plateau_end == pytest.approx(300 + 100 * (5.0 - 4.75) / (5.0 - 4.5))
    assert phases.emergence == pytest.approx(400 + 100 * (0.5 - 0.1) / (0.7 - 0.1))
    assert phases.plateau_length == pytest.approx(phases.plateau_end - phases.plateau_start)


def test_missing_phases_are_none():
    steps = np.array([0, 10, 20])
    never = detect_phases(steps, np.array([9.0, 8.0, 7.0]), np.zeros(3), baseline=5.0)
    assert never.plateau_start is None and never.plateau_length is None and never.emergence is None
    stuck = detect_phases(steps, np.array([9.0, 5.0, 5.0]), np.zeros(3), baseline=5.0)
    assert stuck.plateau_end is None and stuck.plateau_length == pytest.approx(20 - stuck.plateau_start)


def test_hallucination_onset_is_where_heldout_loss_rises_off_its_minimum():
    steps = np.array([0, 100, 200, 300, 400])
    heldout = np.array([9.0, 6.0, 6.1, 6.5, 8.0])  # minimum 6.0; rising 5% of baseline 5 = 0.25 above it
    assert hallucination_onset(steps, heldout, baseline=5.0) == pytest.approx(200 + 100 * (6.25 - 6.1) / (6.5 - 6.1))
    assert hallucination_onset(steps, np.array([9.0, 8.0, 7.0, 6.0, 5.0]), baseline=5.0) is None
