"""Individuals as integer tables, and drawing a population of them: unique full names and
independent uniform attributes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.errors import RecipeError

from .config import CorpusConfig
from .resources import ATTRIBUTES, Pools

TEMPLATE_CHUNK = 65_536  # individuals whose template order is drawn at once (floats, 1.2 kB each)


@dataclass
class Individuals:
    """Individuals as integers: names [n, 3] (first, middle, last), one [n, slots] array per attribute,
    and each individual's training and evaluation template indices [n, 6, k]. Drawn, the integers are
    pool indices (`draw_population`); read from a corpus, they are token ids (`data_gen.tokens`)."""

    names: np.ndarray
    values: dict[str, np.ndarray]
    train_templates: np.ndarray
    eval_templates: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def take(self, rows: np.ndarray | slice) -> Individuals:
        """The individuals at `rows` (indices, in that order, or a slice)."""
        return Individuals(self.names[rows], {a: v[rows] for a, v in self.values.items()},
                           self.train_templates[rows], self.eval_templates[rows])

    @classmethod
    def concatenate(cls, parts: Sequence[Individuals]) -> Individuals:
        return cls(np.concatenate([p.names for p in parts]),
                   {a: np.concatenate([p.values[a] for p in parts]) for a in parts[0].values},
                   np.concatenate([p.train_templates for p in parts]),
                   np.concatenate([p.eval_templates for p in parts]))


def spread(individuals: np.ndarray, n: int) -> np.ndarray:
    """`n` of `individuals` spread evenly over them (all when n is 0). Samplers weight individuals by
    index (power law, celebrities, warm-up), so the first n would all be the frequent ones."""
    if not n or n >= len(individuals):
        return individuals
    return individuals[np.unique(np.linspace(0, len(individuals) - 1, n).round().astype(np.int64))]


def draw_population(config: CorpusConfig, pools: Pools) -> Individuals:
    """All `n_total` individuals of a corpus, as pool indices (int32; template indices int8, about 0.2 kB an
    individual); each component has its own seeded stream, so that changing one pool size does not reshuffle
    the others."""
    n, n_first, n_last = config.n_total, len(pools.first_names), len(pools.last_names)
    if n > pools.name_space:
        raise RecipeError(
            f"n_individuals + n_heldout + n_finetune = {n} exceeds the {pools.name_space} unique full names of "
            f"{n_first} first/middle x {n_last} last names: lower the counts or raise n_first_names/n_last_names")
    seeds = np.random.SeedSequence(config.seed).spawn(3)
    names_rng, values_rng, templates_rng = (np.random.default_rng(s) for s in seeds)
    flat = names_rng.choice(pools.name_space, size=n, replace=False)
    names = np.stack([flat // (n_first * n_last), flat // n_last % n_first, flat % n_last], axis=1)
    values = {
        attribute: np.stack([values_rng.integers(0, len(slot), size=n) for slot in pools.slots[attribute]], axis=1)
        for attribute in ATTRIBUTES
    }
    n_templates = len(pools.templates[ATTRIBUTES[0]])
    train, held = [], []
    for start in range(0, n, TEMPLATE_CHUNK):  # one uniform draw per (individual, attribute, template), in order
        order = np.argsort(templates_rng.random((min(n - start, TEMPLATE_CHUNK), len(ATTRIBUTES), n_templates)),
                           axis=-1).astype(np.int8)
        train.append(np.sort(order[..., : config.n_train_templates], axis=-1))
        held.append(np.sort(order[..., config.n_train_templates:], axis=-1))
    return Individuals(names.astype(np.int32), {a: v.astype(np.int32) for a, v in values.items()},
                       np.concatenate(train), np.concatenate(held))
