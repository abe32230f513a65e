"""The three learning phases of a run's trajectory, and the onset of hallucinations.

Phases, on the attribute loss of seen individuals against the no-knowledge baseline B:
1. the loss falls to the baseline: phase 1 ends, and the plateau starts, when it first enters
   [B(1-tol), B(1+tol)];
2. the plateau lasts until the loss leaves that band downwards;
3. knowledge emerges: the step at which accuracy first reaches `emergence_accuracy`.
Crossing steps are interpolated linearly between evaluations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..run_folder import HELDOUT, SEEN, series


def _crossing(steps: np.ndarray, values: np.ndarray, level: float, start: int = 0) -> tuple[float | None, int]:
    """First step at or after index `start` where `values` falls to `level`, and its index."""
    below = np.flatnonzero(values[start:] <= level)
    if not len(below):
        return None, len(values)
    i = start + below[0]
    if i == 0 or values[i - 1] == values[i]:
        return float(steps[i]), i
    fraction = (values[i - 1] - level) / (values[i - 1] - values[i])
    return float(steps[i - 1] + fraction * (steps[i] - steps[i - 1])), i


@dataclass
class Phases:
    baseline: float
    plateau_start: float | None  # the end of phase 1
    plateau_end: float | None
    emergence: float | None
    max_step: float
    hallucination_onset: float | None = None

    @property
    def plateau_length(self) -> float | None:
        if self.plateau_start is None:
            return None
        return (self.plateau_end if self.plateau_end is not None else self.max_step) - self.plateau_start

    def to_dict(self) -> dict:
        return {**asdict(self), "plateau_length": self.plateau_length}


def detect_phases(steps: np.ndarray, loss: np.ndarray, accuracy: np.ndarray, baseline: float,
                  tolerance: float = 0.05, emergence_accuracy: float = 0.5) -> Phases:
    plateau_start, i = _crossing(steps, loss, baseline * (1 + tolerance))
    plateau_end = _crossing(steps, loss, baseline * (1 - tolerance), i)[0] if plateau_start is not None else None
    emergence = _crossing(steps, -accuracy, -emergence_accuracy)[0]
    return Phases(baseline, plateau_start, plateau_end, emergence, float(steps.max()) if len(steps) else 0.0)


def hallucination_onset(steps: np.ndarray, heldout_loss: np.ndarray, baseline: float,
                        tolerance: float = 0.05) -> float | None:
    """The step at which the held-out loss starts to rise: `tolerance` x baseline above its minimum."""
    lowest = int(np.argmin(heldout_loss))
    return _crossing(steps, -heldout_loss, -(heldout_loss[lowest] + tolerance * baseline), lowest)[0]


def run_phases(rows: list[dict], tolerance: float = 0.05, **kwargs) -> Phases:
    """The phases of a run's seen-individual trajectory, and the onset of its hallucinations."""
    steps, loss = series(rows, SEEN, "attribute_loss")
    _, accuracy = series(rows, SEEN, "attribute_accuracy")
    baseline = next(r["baseline_loss"] for r in rows if r["split"] == SEEN)
    phases = detect_phases(steps, loss, accuracy, baseline, tolerance=tolerance, **kwargs)
    heldout_steps, heldout_loss = series(rows, HELDOUT, "attribute_loss")
    if len(heldout_steps):
        phases.hallucination_onset = hallucination_onset(heldout_steps, heldout_loss, baseline, tolerance)
    return phases
