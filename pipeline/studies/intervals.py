"""Intervals over seeds, and the verdicts they decide: the one place a study's numbers get an interval.

An interval is a 95% Student t-interval of the mean over runs that differ only in seed, labelled with its
method and n. Below three runs there is none: a bootstrap over two runs cannot be wider than their range,
and one run has no spread, so the runs' values are shown instead. Paired quantities (two runs that share a
seed share the data order) are compared seed by seed, and the per-seed ratios or differences summarised.

A verdict is decided by where the whole interval lies on a `Scale`, the number line cut into labelled
regions (reproduced, partly, not reproduced): inside one region, that region's label; across a cut,
inconclusive, with the runs that would settle it at the observed spread. Adding runs narrows a t-interval
at a given spread, so more seeds can only make a verdict more decided, never easier to pass.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

LEVEL = 0.95
MIN_RUNS = 3  # fewer runs: their values, no interval
MAX_RUNS = 10_000  # "more than" this many runs to settle a verdict
REPRODUCED, PARTLY, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "partly", "not reproduced", "inconclusive"


def fmt(x: float | None) -> str:
    """A number as the ledger writes it: 3 significant digits, thousands in full (2,000, not 2e+03)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3g}" if abs(x) < 1e3 else f"{x:,.0f}"


def half_width(sd: float, n: int) -> float:
    """The half-width of the 95% t-interval of a mean over n runs of standard deviation sd."""
    return float(stats.t.ppf(0.5 + LEVEL / 2, n - 1) * sd / math.sqrt(n))


@dataclass(frozen=True)
class Interval:
    """The mean of one number per run, with its 95% t-interval (None below MIN_RUNS runs)."""

    values: tuple[float, ...]
    mean: float
    low: float | None
    high: float | None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def method(self) -> str:
        return f"95% t-interval, n={self.n}" if self.low is not None else f"values of {self.n} run(s), no interval"

    def text(self) -> str:
        """'0.959 [0.942, 0.979] (95% t, n=3)', or the runs' values below three runs."""
        if self.low is None:
            return ", ".join(fmt(v) for v in self.values) + f" ({self.n} run{'s' if self.n != 1 else ''})"
        return f"{fmt(self.mean)} [{fmt(self.low)}, {fmt(self.high)}] (95% t, n={self.n})"

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n, "values": list(self.values),
                "method": self.method}


def over_seeds(values: list[float]) -> Interval:
    """The mean of `values` (one per run) and its 95% t-interval from three runs up."""
    if not values:
        raise ValueError("an interval needs at least one run")
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < MIN_RUNS:
        return Interval(tuple(map(float, x)), mean, None, None)
    half = half_width(float(x.std(ddof=1)), len(x))
    return Interval(tuple(map(float, x)), mean, mean - half, mean + half)


def paired(of: dict[Any, float], to: dict[Any, float]) -> list[tuple[Any, float, float]]:
    """(seed, of, to) for every seed the two hold (LookupError if none: nothing to pair)."""
    seeds = [s for s in of if s in to]
    if not seeds:
        raise LookupError(f"no seed in common to pair ({sorted(map(str, of))} against {sorted(map(str, to))})")
    return [(s, of[s], to[s]) for s in seeds]


def seeds_to_settle(interval: Interval, edge: float) -> int | None:
    """The fewest runs whose t-interval, at the observed mean and spread, excludes `edge`; None when the
    runs give no spread (one run) or their mean sits on the edge."""
    if interval.n < 2 or interval.mean == edge:
        return None
    sd, gap = float(np.std(interval.values, ddof=1)), abs(interval.mean - edge)
    n = MIN_RUNS
    while n <= MAX_RUNS and half_width(sd, n) >= gap:
        n += 1
    return n if n <= MAX_RUNS else MAX_RUNS + 1


@dataclass(frozen=True)
class Scale:
    """The number line cut at `edges` (increasing) into regions labelled `labels` (one more than edges); a
    value on an edge belongs to the region above it (below it with `edge_up` False: a strict bound)."""

    edges: tuple[float, ...]
    labels: tuple[str, ...]
    edge_up: bool = True

    def label(self, x: float) -> str:
        return self.labels[(bisect.bisect_right if self.edge_up else bisect.bisect_left)(self.edges, x)]

    def describe(self) -> str:
        parts = [self.labels[0]]
        for edge, label in zip(self.edges, self.labels[1:]):
            parts += [f"| {fmt(edge)} |", label]
        return " ".join(parts)


def at_least(reproduced: float, partly: float | None = None, strict: bool = False) -> Scale:
    """Reproduced from `reproduced` up (strictly above it with `strict`), partly from `partly`, not below."""
    if partly is None or partly >= reproduced:
        return Scale((reproduced,), (NOT_REPRODUCED, REPRODUCED), not strict)
    return Scale((partly, reproduced), (NOT_REPRODUCED, PARTLY, REPRODUCED), not strict)


def at_most(reproduced: float, partly: float | None = None, strict: bool = False) -> Scale:
    """Reproduced up to `reproduced` (strictly below it with `strict`), partly up to `partly`, not above."""
    if partly is None or partly <= reproduced:
        return Scale((reproduced,), (REPRODUCED, NOT_REPRODUCED), strict)
    return Scale((reproduced, partly), (REPRODUCED, PARTLY, NOT_REPRODUCED), strict)


def window(target: tuple[float, float], direction: tuple[float | None, float | None]) -> Scale:
    """Reproduced inside `target`, partly elsewhere inside `direction` (None: unbounded), else not."""
    edges = sorted({e for e in (*target, *direction) if e is not None})
    points = [edges[0] - 1, *((a + b) / 2 for a, b in zip(edges, edges[1:])), edges[-1] + 1]
    d_lo, d_hi = direction

    def label(x: float) -> str:
        if target[0] <= x <= target[1]:
            return REPRODUCED
        return PARTLY if (d_lo is None or x > d_lo) and (d_hi is None or x < d_hi) else NOT_REPRODUCED

    return Scale(tuple(edges), tuple(label(x) for x in points))


@dataclass(frozen=True)
class Decision:
    verdict: str
    why: str
    seeds_needed: int | None = None  # inconclusive: the runs that would settle it at the observed spread


def settle_text(n: int | None, have: int) -> str:
    if n is None:
        return "one run has no spread to say how many would settle it" if have < 2 else "the mean sits on the cut"
    return f"about {n:,} runs would settle it at the observed spread" if n <= MAX_RUNS else \
        f"more than {MAX_RUNS:,} runs would be needed at the observed spread"


def decide(interval: Interval, scale: Scale) -> Decision:
    """The verdict of an interval on a scale: the region holding it whole, else inconclusive."""
    if interval.low is None:
        nearest = min(scale.edges, key=lambda e: abs(e - interval.mean))
        n = seeds_to_settle(interval, nearest)
        runs = f"{interval.n} run{'s' if interval.n != 1 else ''}"
        return Decision(INCONCLUSIVE, f"{runs}, too few for an interval ({MIN_RUNS} needed), in "
                        f"'{scale.label(interval.mean)}'; {settle_text(n, interval.n)}", n)
    low, high = scale.label(interval.low), scale.label(interval.high)
    inside = [e for e in scale.edges if interval.low < e < interval.high
              or (e in (interval.low, interval.high) and scale.label(interval.low) != scale.label(interval.high))]
    if low == high and not inside:
        return Decision(low, f"the interval [{fmt(interval.low)}, {fmt(interval.high)}] lies in '{low}'")
    nearest = min(inside, key=lambda e: abs(e - interval.mean))
    n = seeds_to_settle(interval, nearest)
    return Decision(INCONCLUSIVE, f"the interval [{fmt(interval.low)}, {fmt(interval.high)}] straddles "
                    f"{', '.join(fmt(e) for e in inside)}; {settle_text(n, interval.n)}", n)


def combine(decisions: list[Decision], every: bool = True) -> Decision:
    """The decisions of several points (every one must hold): not reproduced if one is, else inconclusive if
    one is, else partly if one is, else reproduced. With every=False (parts of one claim, all_of): reproduced
    if all are, inconclusive if one is, not reproduced if all are, else partly."""
    verdicts = [d.verdict for d in decisions]
    needed = max((d.seeds_needed for d in decisions if d.seeds_needed), default=None)
    why = "; ".join(d.why for d in decisions)
    if every:
        for verdict in (NOT_REPRODUCED, INCONCLUSIVE, PARTLY):
            if verdict in verdicts:
                return Decision(verdict, why, needed if verdict == INCONCLUSIVE else None)
        return Decision(REPRODUCED, why)
    if all(v == REPRODUCED for v in verdicts):
        return Decision(REPRODUCED, why)
    if INCONCLUSIVE in verdicts:
        return Decision(INCONCLUSIVE, why, needed)
    return Decision(NOT_REPRODUCED if all(v == NOT_REPRODUCED for v in verdicts) else PARTLY, why)
