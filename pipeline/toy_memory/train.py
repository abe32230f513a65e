"""The training loop (plain PyTorch, CPU, deterministic under its seeds) and the evaluation of groups of
pairs into trajectory lines."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from common.errors import RunError

from ..train.callbacks import log_spaced_steps
from .config import ToyTrainArguments
from .data import batch_indices

Groups = dict[str, tuple[torch.Tensor, torch.Tensor]]  # group name -> (keys, classes)


def lr_factor(kind: str, max_steps: int) -> Callable[[int], float]:
    """The learning rate at a step, as a fraction of the peak: cosine to 0 at max_steps, or constant."""
    if kind == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, max_steps) / max_steps))


@torch.no_grad()
def evaluate(model: torch.nn.Module, groups: Groups, stage: str, step: int) -> list[dict]:
    """One trajectory line per group: mean cross-entropy and accuracy over its pairs, and log(classes)."""
    rows = []
    for name, (keys, classes) in groups.items():
        logits = model(keys)
        loss = float(F.cross_entropy(logits, classes))
        if not math.isfinite(loss):
            raise RunError(f"the {name} loss is {loss} at step {step}: lower learning_rate and rerun")
        rows.append({"stage": stage, "step": step, "split": name, "attribute_loss": loss,
                     "attribute_accuracy": float((logits.argmax(-1) == classes).float().mean()),
                     "baseline_loss": math.log(logits.shape[-1])})
    return rows


@contextmanager
def one_thread() -> Iterator[None]:
    """PyTorch on one CPU thread: the model is too small to gain from more (two threads on two busy cores ran
    50x slower), and its numbers then do not depend on the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@one_thread()
def fit(model: torch.nn.Module, keys: torch.Tensor, classes: torch.Tensor, sampler, args: ToyTrainArguments,
        on_eval: Callable[[int], None]) -> None:
    """Train on the rows of (keys, classes) that `sampler` draws, calling `on_eval(step)` at step 0 and
    at the log-spaced evaluation steps (the last is max_steps), on one thread."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(args.lr_scheduler_type, args.max_steps))
    eval_steps = set(log_spaced_steps(args.max_steps, args.eval_points))
    on_eval(0)
    for step in range(args.max_steps):
        rows = batch_indices(sampler, args.data_seed, step, args.batch_size)
        loss = F.cross_entropy(model(keys[rows]), classes[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step + 1 in eval_steps:
            on_eval(step + 1)
