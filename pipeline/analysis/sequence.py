"""Learning and forgetting of the groups of a sequential sampler (claim C23): each group's attribute loss
while it is trained (a visit: the loss falls) and from when it is left until it is trained again or the run
ends (the loss rises), as rates in nats per 1,000 steps, and the half-lives of its accuracy (the steps until
it covers half of its change: a visit's rise, the forgetting's fall).

An evaluation at step s describes the model after s steps: a visit (start, end) is described by the group's
evaluations at steps in [start, end], the forgetting after it by those in [end, until]. Nothing is
interpolated across a switch of group: a span's losses are those of its first and last evaluation, its rate
their difference over the steps between them, and its half-life the steps from its first evaluation until
the accuracy covers half of its difference (that crossing interpolated between the evaluations inside the
span). A span with fewer than two evaluations has no rate; a visit without one is left out, as is a visit that
ends after the last evaluation. The run's summary leaves out the visits that start at step 0: the model first
learns the format and the names there (the plateau), not only the group's facts.
"""

from __future__ import annotations

from dataclasses import fields
from typing import NamedTuple

import numpy as np

from data_gen.samplers import SamplerConfig

from ..run_folder import sequence_group, series
from .crossings import crossing


def run_segments(recipe: dict) -> list[tuple[int, int, int]]:
    """The (first step, end step, group) segments of a run's sequential sampler, from its recipe; none when
    it has none."""
    config = SamplerConfig(**{f.name: recipe[f.name] for f in fields(SamplerConfig) if f.name in recipe})
    return config.segments(recipe["max_steps"])


class Span(NamedTuple):
    """A span's evaluations: the loss at its first and last, the change per 1,000 steps between them, and the
    steps from the first until the accuracy covers half of its change (None without a change)."""

    loss_first: float
    loss_last: float
    change_per_1k: float
    half_steps: float | None


def _span(steps: np.ndarray, loss: np.ndarray, accuracy: np.ndarray, first: float, last: float) -> Span | None:
    """The Span of the evaluations at steps `first` to `last` (both included); None with fewer than two."""
    inside = (steps >= first) & (steps <= last)
    xs, ys, acc = steps[inside], loss[inside], accuracy[inside]
    if len(xs) < 2:
        return None
    change = float(acc[-1] - acc[0])
    half = crossing(xs, acc, acc[0] + change / 2, rising=change > 0)[0] if change else None
    return Span(float(ys[0]), float(ys[-1]), 1000 * float(ys[-1] - ys[0]) / float(xs[-1] - xs[0]),
                None if half is None else half - float(xs[0]))


def visit_rates(rows: list[dict], segments: list[tuple[int, int, int]]) -> list[dict]:
    """Per visit of a group: its loss at the visit's first and last evaluation, the learning rate over the visit
    and the forgetting rate from its end to the group's next visit (or the last evaluation), and the steps each
    takes its accuracy to cover half of its change (a half-life: the mean rates dilute a fast change that
    saturates)."""
    visits = []
    for k, (start, end, group) in enumerate(segments):
        steps, loss = series(rows, sequence_group(group), "attribute_loss")
        _, accuracy = series(rows, sequence_group(group), "attribute_accuracy")
        if not len(steps) or end > steps[-1] or (learning := _span(steps, loss, accuracy, start, end)) is None:
            continue
        later = [a for a, _, g in segments[k + 1:] if g == group]
        until = min(later[0] if later else steps[-1], steps[-1])
        forgetting = _span(steps, loss, accuracy, end, until)
        visits.append({"group": group, "start": start, "end": end, "loss_start": learning.loss_first,
                       "loss_end": learning.loss_last, "learning_per_1k": -learning.change_per_1k,
                       "left_until": int(until),
                       "forgetting_per_1k": forgetting.change_per_1k if forgetting else None,
                       "learning_half_steps": learning.half_steps,
                       "forgetting_half_steps": forgetting.half_steps if forgetting else None})
    return visits


SEQUENCE_COLUMNS = {  # summary.csv: each a mean over the visits of a sequential sampler's groups after step 0
    "learning_per_1k": "Fall of a group's attribute loss per 1,000 steps while it is trained (nats; mean over the "
                       "visits after step 0).",
    "forgetting_per_1k": "Rise of its loss per 1,000 steps from when it is left until it is trained again or the run "
                         "ends (mean over the visits).",
    "learning_half_steps": "Steps until its accuracy covers half of its rise over a visit (mean over the visits).",
    "forgetting_half_steps": "Steps until its accuracy covers half of its fall after a visit (mean over the visits).",
}
SEQUENCE_KEYS = tuple(SEQUENCE_COLUMNS)


def sequence_summary(rows: list[dict], segments: list[tuple[int, int, int]]) -> dict:
    """The mean learning and forgetting rates and half-lives over a run's visits after step 0 (None where there
    is none)."""
    visits = [v for v in visit_rates(rows, segments) if v["start"] > 0]
    return {key: float(np.mean(values)) if (values := [v[key] for v in visits if v[key] is not None]) else None
            for key in SEQUENCE_KEYS}
