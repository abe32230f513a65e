"""Which individuals a training step draws: uniform, power law, celebrities, warm-up curricula, groups
visited in sequence, and any piecewise schedule of these. A sampler is a pure function of (rng, step), so every schedule
resumes exactly and is the same whatever the number of processes (the global batch is drawn once).

A schedule phase is written "START:KIND[:key=value,...]", e.g. ["0:uniform:n=2000", "500:power_law:alpha=0.8"];
`first` moves a phase's block of individuals (`first`, ..., `first` + n - 1), and phases that start at one step are
drawn together, each row from one of them with probability proportional to its `share`: ["0:uniform:first=200,n=800,
share=3", "0:uniform:n=100"] draws a quarter of each batch from individuals 0-99, the rest from 200-999.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from common.errors import RecipeError
from common.recipe import check_choice, check_values

KINDS = ("uniform", "power_law", "celebrities", "warmup", "sequential", "schedule")


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
class Block:
    """A sampler over `n` individuals moved to start at individual `first`."""

    first: int
    sampler: object

    def draw(self, rng: np.random.Generator, step: int, size: int) -> np.ndarray:
        return self.first + self.sampler.draw(rng, step, size)

    def probabilities(self, step: int, population: int) -> np.ndarray:
        p = np.zeros(population)
        inner = self.sampler.probabilities(step, population - self.first)
        p[self.first: self.first + len(inner)] = inner
        return p


@dataclass(frozen=True)
class Mixture:
    """Each row from one of `samplers`, chosen with probability `shares` (summing to 1)."""

    shares: tuple[float, ...]
    samplers: tuple[object, ...]

    def draw(self, rng: np.random.Generator, step: int, size: int) -> np.ndarray:
        which = rng.choice(len(self.samplers), size=size, p=self.shares)
        rows = np.empty(size, dtype=np.int64)
        for k, sampler in enumerate(self.samplers):
            rows[which == k] = sampler.draw(rng, step, int((which == k).sum()))
        return rows

    def probabilities(self, step: int, population: int) -> np.ndarray:
        return sum(share * sampler.probabilities(step, population)
                   for share, sampler in zip(self.shares, self.samplers, strict=True))


def group_edges(n: int, n_groups: int) -> np.ndarray:
    """Where each of `n_groups` consecutive blocks of the first n individuals starts, and n: as even as can be."""
    return np.linspace(0, n, n_groups + 1).round().astype(int)


def group_members(n: int, n_groups: int) -> list[np.ndarray]:
    """The individuals of each of `n_groups` groups (see group_edges)."""
    edges = group_edges(n, n_groups)
    return [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:])]


def sequential_segments(n_groups: int, n_repeats: int, steps: int, start: int = 0) -> list[tuple[int, int, int]]:
    """(first step, end step, group) of each segment of a sequential visit: the groups in order, n_repeats
    times, each segment an equal share of `steps` (the last ones one step longer where it does not divide)."""
    bounds = start + np.linspace(0, steps, n_groups * n_repeats + 1).round().astype(int)
    return [(int(a), int(b), k % n_groups) for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


@dataclass(frozen=True)
class Sequential:
    """Groups of individuals visited in order (claim C23): uniform within the group of the segment that
    holds the step (`sequential_segments`); 2 groups and several repeats alternate between them."""

    n: int
    n_groups: int
    n_repeats: int
    steps: int
    start: int = 0
    _ends: np.ndarray = field(init=False, repr=False, compare=False)  # each segment's end step, for the draws

    def __post_init__(self):
        object.__setattr__(self, "_ends", np.array([b for _, b, _ in self.segments()]))

    def groups(self) -> list[np.ndarray]:
        return group_members(self.n, self.n_groups)

    def segments(self) -> list[tuple[int, int, int]]:
        return sequential_segments(self.n_groups, self.n_repeats, self.steps, self.start)

    def group_at(self, step: int) -> int:
        """The group of the segment holding `step` (after the last segment: its group)."""
        return int(min(np.searchsorted(self._ends, step, side="right"), len(self._ends) - 1)) % self.n_groups

    def _members(self, step: int) -> tuple[int, int]:
        """The first individual and the size of the group trained at `step` (consecutive blocks)."""
        edges, group = group_edges(self.n, self.n_groups), self.group_at(step)
        return int(edges[group]), int(edges[group + 1] - edges[group])

    def draw(self, rng: np.random.Generator, step: int, size: int) -> np.ndarray:
        first, count = self._members(step)
        return first + rng.integers(0, count, size=size)

    def probabilities(self, step: int, population: int) -> np.ndarray:
        p = np.zeros(population)
        members = self.groups()[self.group_at(step)]
        p[members] = 1.0 / len(members)
        return p


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


SCHEDULE_KEYS = ("n", "first", "share", "alpha", "n_celebrities", "celebrity_weight", "n_groups", "n_repeats")


@dataclass(frozen=True)
class SchedulePhase:
    """From step `start`, the sampler `config` over the `n` individuals from `first` (n None: all those after
    `first`); phases that start together are mixed by their `share`."""

    start: int
    config: SamplerConfig
    n: int | None = None
    first: int = 0
    share: float = 1.0


def parse_phase(text: str) -> SchedulePhase:
    """One sampler_schedule phase, "START:KIND[:key=value,...]" with keys among SCHEDULE_KEYS."""
    start, _, rest = text.partition(":")
    kind, _, params = rest.partition(":")
    try:
        values = {k: float(v) for k, v in (p.split("=") for p in params.split(",") if p)}
        unknown = sorted(set(values) - set(SCHEDULE_KEYS))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]}, use {', '.join(SCHEDULE_KEYS)}")
        start = int(start)
    except ValueError as err:
        raise RecipeError(f"schedule phase '{text}' is not 'START:KIND[:key=value,...]' ({err})") from err
    _check(kind not in ("schedule", "warmup"), f"schedule phase '{text}': use uniform, power_law or celebrities "
                                               f"inside a schedule")
    _check(kind != "sequential" or not {"first", "share"} & set(values),
           f"schedule phase '{text}': a sequential phase takes neither first nor share")
    n, first, share = values.pop("n", None), int(values.pop("first", 0)), values.pop("share", 1.0)
    _check(first >= 0 and share > 0, f"schedule phase '{text}': first must be 0 or more and share positive")
    kwargs = {k: int(v) if k in ("n_celebrities", "n_groups", "n_repeats") else v for k, v in values.items()}
    return SchedulePhase(start, SamplerConfig(sampler=kind, **kwargs), None if n is None else int(n), first, share)


@dataclass
class SamplerConfig:
    """Which individuals each training step draws: a recipe's sampler keys. Values that do not depend on
    the population are checked (and a schedule parsed) when the config is made; the rest in `build`."""

    sampler: str = field(default="uniform", metadata={"help": f"Which individuals steps draw: {', '.join(KINDS)}."})
    alpha: float = field(default=0.0, metadata={"help": "power_law: individual i drawn with weight (i+1)^-alpha."})
    n_celebrities: int = field(default=0, metadata={"help": "celebrities: how many individuals are up-weighted."})
    celebrity_weight: float = field(default=1.0, metadata={"help": "celebrities: their weight (others have 1)."})
    indiv_warmup: int = field(default=0, metadata={"help": "warmup: individuals trained on first."})
    epochs_warmup: float = field(default=0.0, metadata={"help": "warmup: epochs over them before all."})
    n_groups: int = field(default=0, metadata={"help": "sequential: groups of individuals (consecutive blocks) "
                                                       "trained on one after another."})
    n_repeats: int = field(default=1, metadata={"help": "sequential: visits of the groups in order (2 groups and "
                                                        "several repeats: alternating)."})
    sampler_schedule: list[str] = field(default_factory=list, metadata={
        "help": "schedule: phases 'START:KIND[:key=value,...]', e.g. '0:uniform:n=2000' '500:power_law:alpha=0.8'."})

    def __post_init__(self):
        check_choice("sampler", self.sampler, KINDS)
        check_values(self, at_least_zero=("n_celebrities", "indiv_warmup", "epochs_warmup", "n_groups"),
                     at_least_one=("n_repeats",), positive=("celebrity_weight",))
        _check(0 <= self.alpha <= 10, f"alpha must be between 0 and 10, got {self.alpha}")
        if self.sampler == "warmup":
            _check(self.epochs_warmup > 0, f"epochs_warmup must be positive, got {self.epochs_warmup}")
        if self.sampler == "sequential":
            _check(self.n_groups >= 1, f"sampler 'sequential' needs n_groups of at least 1, got {self.n_groups}")
        if self.sampler == "schedule":
            self.schedule_phases()

    def schedule_phases(self) -> list[SchedulePhase]:
        """The parsed sampler_schedule, by start step."""
        _check(len(self.sampler_schedule) > 0, "sampler 'schedule' needs sampler_schedule phases like "
                                               "'0:uniform:n=2000'")
        phases = sorted((parse_phase(text) for text in self.sampler_schedule), key=lambda phase: phase.start)
        _check(phases[0].start == 0, "the first sampler_schedule phase must start at step 0")
        return phases

    def build(self, n: int, batch_size: int, max_steps: int, start: int = 0):
        """The sampler over a population of n individuals, for a run of max_steps steps of batch_size (in a
        schedule: a phase of max_steps steps from `start`)."""
        if self.sampler == "uniform":
            return Uniform(n)
        if self.sampler == "power_law":
            return power_law(n, self.alpha)
        if self.sampler == "celebrities":
            _check(0 < self.n_celebrities <= n, f"n_celebrities must be between 1 and the {n} individuals, got "
                                                f"{self.n_celebrities}")
            return celebrities(n, self.n_celebrities, self.celebrity_weight)
        if self.sampler == "warmup":
            _check(0 < self.indiv_warmup <= n, f"indiv_warmup must be between 1 and the {n} individuals, got "
                                               f"{self.indiv_warmup}")
            sampler = warmup(n, self.indiv_warmup, self.epochs_warmup, batch_size)
            switch = sampler.phases[1][0]
            _check(switch < max_steps, f"the warm-up lasts {switch} steps, not less than max_steps={max_steps}: "
                                       f"lower epochs_warmup or indiv_warmup")
            return sampler
        if self.sampler == "sequential":
            _check(self.n_groups <= n and self.n_groups * self.n_repeats <= max_steps,
                   f"{self.n_groups} groups x {self.n_repeats} repeats need at least {self.n_groups} individuals and "
                   f"{self.n_groups * self.n_repeats} steps, got {n} and {max_steps}: lower n_groups or n_repeats")
            return Sequential(n, self.n_groups, self.n_repeats, max_steps, start)
        return self._schedule(n, batch_size, max_steps)

    def phase_spans(self, max_steps: int) -> list[tuple[SchedulePhase, int]]:
        """Each schedule phase with the step it ends at (the next later start, or the run's end)."""
        phases = self.schedule_phases()
        end = max(max_steps, phases[-1].start + 1)
        return [(phase, min((p.start for p in phases if p.start > phase.start), default=end)) for phase in phases]

    def segments(self, max_steps: int) -> list[tuple[int, int, int]]:
        """The (first step, end step, group) segments of the sequential sampler (or schedule phase) of a run of
        max_steps steps; none without one."""
        if self.sampler == "sequential":
            return sequential_segments(self.n_groups, self.n_repeats, max_steps)
        if self.sampler != "schedule":
            return []
        return next((sequential_segments(phase.config.n_groups, phase.config.n_repeats, end - phase.start,
                                         phase.start)
                     for phase, end in self.phase_spans(max_steps) if phase.config.sampler == "sequential"), [])

    def _schedule(self, n: int, batch_size: int, max_steps: int) -> Schedule:
        built: dict[int, list[tuple[float, object]]] = {}
        for phase, end in self.phase_spans(max_steps):
            phase_n = n - phase.first if phase.n is None else phase.n
            _check(0 < phase_n and phase.first + phase_n <= n, f"schedule phase starting at step {phase.start}: "
                                                               f"first + n must be at most the {n} individuals")
            sampler = phase.config.build(phase_n, batch_size, end - phase.start, phase.start)
            built.setdefault(phase.start, []).append((phase.share, Block(phase.first, sampler) if phase.first
                                                      else sampler))
        return Schedule(tuple((start, parts[0][1] if len(parts) == 1 else Mixture(
            tuple(share / sum(s for s, _ in parts) for share, _ in parts), tuple(p for _, p in parts)))
            for start, parts in built.items()))


def find_sequential(sampler) -> Sequential | None:
    """A sequential sampler (alone, or the first sequential phase of a schedule), or None."""
    if isinstance(sampler, Sequential):
        return sampler
    return next((found for _, phase in getattr(sampler, "phases", ()) if (found := find_sequential(phase))), None)
