"""Drawing a population: unique full names and independent uniform attributes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import CorpusConfig
from .recipe import RecipeError
from .resources import ATTRIBUTES, Pools


@dataclass
class Population:
    """Individuals as pool indices: names [n, 3] (first, middle, last), one [n, slots] array per
    attribute, and each individual's training and evaluation templates [n, 6, k]."""

    names: np.ndarray
    values: dict[str, np.ndarray]
    train_templates: np.ndarray
    eval_templates: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def slice(self, start: int, stop: int) -> Population:
        return Population(self.names[start:stop], {a: v[start:stop] for a, v in self.values.items()},
                          self.train_templates[start:stop], self.eval_templates[start:stop])


def draw_population(config: CorpusConfig, pools: Pools) -> Population:
    """All `n_total` individuals of a corpus; each component has its own seeded stream, so that
    changing one pool size does not reshuffle the others."""
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
    order = np.argsort(templates_rng.random((n, len(ATTRIBUTES), n_templates)), axis=-1)
    train = np.sort(order[..., : config.n_train_templates], axis=-1)
    held = np.sort(order[..., config.n_train_templates:], axis=-1)
    return Population(names, values, train, held)
