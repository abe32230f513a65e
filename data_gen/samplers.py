"""Which individuals a training step draws: uniform, power law, celebrities, warm-up curricula and
any piecewise schedule of these. A sampler is a pure function of (rng, step), so every schedule
resumes exactly and is the same whatever the number of processes (the global batch is drawn once).

A schedule phase is written "START:KIND[:key=value,...]", e.g. ["0:uniform:n=2000", "500:power_law:alpha=0.8"].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .recipe import RecipeError

KINDS = ("uniform", "power_law", "celebrities", "warmup", "schedule")


@dataclass(frozen=True)
class Uniform:
    """Individual i (of the first n) with probability 1/n."""

    n: int

    def draw(self, rng: np.random.Generator, step: int, size: int) -> np.ndarray:
        return rng.integers(0, self.n, size=size)

    def probabilities(self, step: int, population: int) -> np.ndarray:
        p = np.zeros(population)
        p[: self.n] = 1.0 / self.n
        return p


@dataclass(frozen=True)
class Weighted:
    """Individual i with probability proportional to weights[i]."""

    weights: np.ndarray
    cdf: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "cdf", np.cumsum(self.weights) / self.weights.sum())

    def draw(self, rng: np.random.Generator, step: int, size: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cdf, rng.random(size), side="right"), len(self.cdf) - 1)

    def probabilities(self, step: int, population: int) -> np.ndarray:
        return self.weights / self.weights.sum()


@dataclass(frozen=True)
class Schedule:
    """Piecewise: each phase's sampler from its start step until the next phase's."""

    phases: tuple[tuple[int, object], ...]

    def _at(self, step: int):
        return next(sampler for start, sampler in reversed(self.phases) if step >= start)

    def draw(self, rng: np.random.Generator, step: int, size: int) -> np.ndarray:
        return self._at(step).draw(rng, step, size)

    def probabilities(self, step: int, population: int) -> np.ndarray:
        return self._at(step).probabilities(step, population)


@dataclass(frozen=True)
class Replay:
    """Fine-tuning with replay: each row is one of the n_old individuals after the first n_new (drawn
    uniformly) with probability weight / (1 + weight), else drawn by `new` among the first n_new; so
    old biographies are `weight` times as many as new ones (none at weight 0)."""

    new: object
    n_new: int
    n_old: int
    weight: float

    def draw(self, rng: np.random.Generator, step: int, size: int) -> np.ndarray:
        who = self.new.draw(rng, step, size)
        if not self.weight:
            return who
        old = rng.random(size) < self.weight / (1 + self.weight)
        return np.where(old, self.n_new + rng.integers(0, self.n_old, size=size), who)

    def probabilities(self, step: int, population: int) -> np.ndarray:
        p = np.zeros(population)
        p[: self.n_new] = self.new.probabilities(step, self.n_new) / (1 + self.weight)
        if self.weight:
            p[self.n_new: self.n_new + self.n_old] = self.weight / (1 + self.weight) / self.n_old
        return p


def power_law(n: int, alpha: float) -> Weighted:
    """Individual i (0-based) with probability proportional to (i + 1)^-alpha."""
    return Weighted(np.arange(1, n + 1, dtype=float) ** -alpha)


def celebrities(n: int, n_celebrities: int, weight: float) -> Weighted:
    """The first n_celebrities individuals drawn `weight` times as often as the others."""
    weights = np.ones(n)
    weights[:n_celebrities] = weight
    return Weighted(weights)


def warmup(n: int, indiv_warmup: int, epochs_warmup: float, batch_size: int) -> Schedule:
    """Uniform over the first indiv_warmup individuals for epochs_warmup epochs of them, then over all."""
    switch = math.ceil(epochs_warmup * indiv_warmup / batch_size)
    return Schedule(((0, Uniform(indiv_warmup)), (switch, Uniform(n))))


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RecipeError(message)


def build_sampler(kind: str, n: int, batch_size: int, max_steps: int, alpha: float = 0.0, n_celebrities: int = 0,
                  celebrity_weight: float = 1.0, indiv_warmup: int = 0, epochs_warmup: float = 0.0,
                  schedule: list[str] | tuple = ()):
    """The sampler a recipe names, over a population of n individuals, with clear errors for bad values."""
    _check(kind in KINDS, f"sampler '{kind}' is unknown: use one of {', '.join(KINDS)}")
    if kind == "uniform":
        return Uniform(n)
    if kind == "power_law":
        _check(0 <= alpha <= 10, f"alpha must be between 0 and 10, got {alpha}")
        return power_law(n, alpha)
    if kind == "celebrities":
        _check(0 < n_celebrities <= n, f"n_celebrities must be between 1 and the {n} individuals, got {n_celebrities}")
        _check(celebrity_weight > 0, f"celebrity_weight must be positive, got {celebrity_weight}")
        return celebrities(n, n_celebrities, celebrity_weight)
    if kind == "warmup":
        _check(0 < indiv_warmup <= n, f"indiv_warmup must be between 1 and the {n} individuals, got {indiv_warmup}")
        _check(epochs_warmup > 0, f"epochs_warmup must be positive, got {epochs_warmup}")
        sampler = warmup(n, indiv_warmup, epochs_warmup, batch_size)
        switch = sampler.phases[1][0]
        _check(switch < max_steps, f"the warm-up lasts {switch} steps, not less than max_steps={max_steps}: lower "
                                   f"epochs_warmup or indiv_warmup")
        return sampler
    _check(len(schedule) > 0, "sampler 'schedule' needs sampler_schedule phases like '0:uniform:n=2000'")
    phases = []
    for text in schedule:
        start, _, rest = text.partition(":")
        sub_kind, _, params = rest.partition(":")
        try:
            values = {k: float(v) for k, v in (p.split("=") for p in params.split(",") if p)}
            phase_n = int(values.pop("n", n))
            _check(0 < phase_n <= n, f"schedule phase '{text}': n must be between 1 and {n}")
            _check(sub_kind not in ("schedule", "warmup"), f"schedule phase '{text}': use uniform, power_law or "
                                                           f"celebrities inside a schedule")
            kwargs = {k: int(v) if k == "n_celebrities" else v for k, v in values.items()}
            phases.append((int(start), build_sampler(sub_kind, phase_n, batch_size, max_steps, **kwargs)))
        except (ValueError, TypeError) as err:
            raise RecipeError(f"schedule phase '{text}' is not 'START:KIND[:key=value,...]' ({err})") from err
    phases.sort(key=lambda phase: phase[0])
    _check(phases[0][0] == 0, "the first sampler_schedule phase must start at step 0")
    return Schedule(tuple(phases))

