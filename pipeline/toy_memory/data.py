"""The pairs, a pure function of (pair_seed), and the batches, a pure function of (data_seed, step).

Pair i is the i-th draw of its seed's streams whatever how many are drawn, so the pretraining pairs
[0, n_pairs), the held-out ones [n_pairs, n_pairs + n_heldout) and the new ones after them are the same
in both stages."""

from __future__ import annotations

import numpy as np
import torch

from .config import MemoryArguments


def memory_pairs(memory: MemoryArguments, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `stop` keys (float32, unit norm) and their classes."""
    keys = np.random.default_rng([memory.pair_seed, 0]).standard_normal((stop, memory.key_dim))
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    classes = np.random.default_rng([memory.pair_seed, 1]).integers(0, memory.n_classes, size=stop)
    return torch.from_numpy(keys.astype(np.float32)), torch.from_numpy(classes)


def batch_indices(sampler, data_seed: int, step: int, batch_size: int) -> torch.Tensor:
    """The rows a step trains on, drawn by `sampler` (data_gen.samplers) from the step's own generator."""
    return torch.from_numpy(sampler.draw(np.random.default_rng([data_seed, step]), step, batch_size))
