"""Where a series of evaluations reaches a level: the one crossing rule of the detectors (phases, half-lives).

A series reaches a falling level when a value is at or below it (a rising level: at or above it). The crossing
is searched among the evaluations from an index on: at that index if the series has reached the level there
already, else interpolated linearly between the last evaluation before the level is reached and the first at
it, so that it moves with the series and not with the spacing of the evaluations.
"""

from __future__ import annotations

import numpy as np


def crossing(steps: np.ndarray, values: np.ndarray, level: float, start: int = 0,
             rising: bool = False) -> tuple[float | None, int]:
    """The first step at or after index `start` where `values` falls (or rises, if `rising`) to `level`,
    interpolated, and the index of the first evaluation there; (None, len(values)) when it never does."""
    sign = 1.0 if rising else -1.0
    reached = np.flatnonzero(sign * (values[start:] - level) >= 0)
    if not len(reached):
        return None, len(values)
    i = start + int(reached[0])
    if i == start:
        return float(steps[i]), i
    fraction = (level - values[i - 1]) / (values[i] - values[i - 1])
    return float(steps[i - 1] + fraction * (steps[i] - steps[i - 1])), i
