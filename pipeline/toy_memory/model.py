"""The associative memory: key -> one hidden layer of ReLU units -> logits over the classes."""

from __future__ import annotations

import torch

from .config import MemoryArguments


def build_memory(memory: MemoryArguments, seed: int) -> torch.nn.Sequential:
    """The MLP, initialised (PyTorch's default init) from `seed` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(memory.key_dim, memory.hidden_size), torch.nn.ReLU(),
                                   torch.nn.Linear(memory.hidden_size, memory.n_classes))
