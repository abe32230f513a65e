"""Learning and forgetting of the groups of a sequential sampler (claim C23): each group's attribute loss
while it is trained (a visit: the loss falls) and from when it is left until it is trained again or the run
ends (the loss rises), as rates in nats per 1,000 steps, interpolated between evaluations."""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from data_gen.samplers import SamplerConfig

from ..run_folder import sequence_group, series


def run_segments(recipe: dict) -> list[tuple[int, int, int]]:
    """The (first step, end step, group) segments of a run's sequential sampler, from its recipe; none when
    it has none."""
    config = SamplerConfig(**{f.name: recipe[f.name] for f in fields(SamplerConfig) if f.name in recipe})
    return config.segments(recipe["max_steps"])


def _half_steps(steps: np.ndarray, loss: np.ndarray, start: float, until: float, first: float,
                last: float) -> float | None:
    """Steps from `start` until the loss first covers half of its change from `first` (at `start`) to `last`
    (at `until`)."""
    inside = (steps >= start) & (steps <= until)
    xs, ys = steps[inside], loss[inside]
    if not len(xs) or first == last:
        return None
    crossed = np.nonzero((ys - (first + last) / 2) * np.sign(last - first) >= 0)[0]
    return float(xs[crossed[0]] - start) if len(crossed) else None


def visit_rates(rows: list[dict], segments: list[tuple[int, int, int]]) -> list[dict]:
    """Per visit of a group: its loss when the visit starts and ends, the learning rate over the visit and
    the forgetting rate from its end to the group's next visit (or the last evaluation), and the steps each
    takes to cover half of its change (a half-life: the mean rates dilute a fast change that saturates)."""
    visits = []
    for k, (start, end, group) in enumerate(segments):
        steps, loss = series(rows, sequence_group(group), "attribute_loss")
        if not len(steps) or end > steps[-1]:
            continue
        later = [a for a, _, g in segments[k + 1:] if g == group]
        until = min(later[0] if later else steps[-1], steps[-1])
        at = np.interp([start, end, until], steps, loss)
        visits.append({"group": group, "start": start, "end": end, "loss_start": float(at[0]),
                       "loss_end": float(at[1]), "learning_per_1k": 1000 * float(at[0] - at[1]) / (end - start),
                       "left_until": int(until),
                       "forgetting_per_1k": 1000 * float(at[2] - at[1]) / (until - end) if until > end else None,
                       "learning_half_steps": _half_steps(steps, loss, start, end, at[0], at[1]),
                       "forgetting_half_steps": _half_steps(steps, loss, end, until, at[1], at[2])
                       if until > end else None})
    return visits


SEQUENCE_KEYS = ("learning_per_1k", "forgetting_per_1k", "learning_half_steps", "forgetting_half_steps")


def sequence_summary(rows: list[dict], segments: list[tuple[int, int, int]]) -> dict:
    """The mean learning and forgetting rates and half-lives over a run's visits (None where there is none)."""
    visits = visit_rates(rows, segments)
    return {key: float(np.mean(values)) if (values := [v[key] for v in visits if v[key] is not None]) else None
            for key in SEQUENCE_KEYS}
