"""The three learning phases of a run's trajectory, and the onset of hallucinations.

Phases, on the attribute loss of seen individuals against the no-knowledge baseline B and its band
[B(1-tol), B(1+tol)]:
1. the loss falls to the baseline: phase 1 ends, and the plateau starts, when it first enters the band;
2. the plateau lasts until the loss leaves the band downwards;
3. knowledge emerges: the step at which accuracy first reaches `emergence_accuracy`.
Every crossing (entering the band, leaving it, emergence, the hallucination onset) is interpolated linearly
between the two evaluations around it (`crossings.crossing`). A plateau needs an evaluation inside the band:
when the loss jumps across the band between two evaluations, the plateau is not resolved and has length 0,
starting and ending where the loss crosses B itself (interpolated), instead of a length that only measures
the spacing of the evaluations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..run_folder import HELDOUT, SEEN, series
from .crossings import crossing


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


def _plateau(steps: np.ndarray, loss: np.ndarray, baseline: float,
             tolerance: float) -> tuple[float | None, float | None]:
    """The plateau's start and end (None where the loss never enters, or never leaves, the band)."""
    start, i = crossing(steps, loss, baseline * (1 + tolerance))
    if start is None:
        return None, None
    if loss[i] < baseline * (1 - tolerance):  # across the band between two evaluations: not resolved
        at_baseline = crossing(steps, loss, baseline)[0]
        return at_baseline, at_baseline
    return start, crossing(steps, loss, baseline * (1 - tolerance), i)[0]


def detect_phases(steps: np.ndarray, loss: np.ndarray, accuracy: np.ndarray, baseline: float,
                  tolerance: float = 0.05, emergence_accuracy: float = 0.5) -> Phases:
    plateau_start, plateau_end = _plateau(steps, loss, baseline, tolerance)
    emergence = crossing(steps, accuracy, emergence_accuracy, rising=True)[0]
    return Phases(baseline, plateau_start, plateau_end, emergence, float(steps.max()) if len(steps) else 0.0)


def hallucination_onset(steps: np.ndarray, heldout_loss: np.ndarray, baseline: float,
                        tolerance: float = 0.05) -> float | None:
    """The step at which the held-out loss starts to rise: `tolerance` x baseline above its minimum."""
    lowest = int(np.argmin(heldout_loss))
    return crossing(steps, heldout_loss, heldout_loss[lowest] + tolerance * baseline, lowest, rising=True)[0]


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
