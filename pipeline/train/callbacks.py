"""Training-loop callbacks: what they see of the loop, the base class, evaluation into the trajectory,
Hub pushes of permanent checkpoints, and log-spaced schedules."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from accelerate import Accelerator

from common.errors import RunError

from ..evaluation import Evaluator
from ..evaluation.facts import exposure_table, query_table, write_facts
from ..hub.client import HubPusher
from ..run_folder import EXPOSURE_FACTS, QUERY_FACTS, RunFolder, checkpoint_name

FINITE_METRICS = ("attribute_loss", "attribute_accuracy", "first_token_top_prob", "first_token_entropy")
# What a trajectory line holds beside its group's metrics (evaluation.metrics.METRIC_COLUMNS)
LINE_COLUMNS = {
    "stage": "pretrain or finetune: the stage that wrote the line.",
    "step": "Optimizer steps done when the model was evaluated (0: before training).",
    "split": "The group of individuals evaluated: seen and heldout (pretraining); old, new and heldout (fine-tuning); "
             "group_k (a sequential sampler's k-th group); individuals_A-B (a block of eval_ranges).",
    "tokens": "Tokens predicted in training up to this step, over all processes (not in the toy memory's lines).",
}


def log_spaced_steps(max_steps: int, n_points: int, every: int = 0) -> list[int]:
    """Step 0, `n_points` steps spaced evenly in log between 1 and max_steps, every `every`-th
    step, and max_steps."""
    steps = {0, max_steps}
    if n_points:
        steps |= set(np.unique(np.round(np.logspace(0, np.log10(max_steps), n_points))).astype(int).tolist())
    if every:
        steps |= set(range(every, max_steps + 1, every))
    return sorted(steps)


class TrainingState(Protocol):
    """What callbacks see of the training loop."""

    accelerator: Accelerator
    model: torch.nn.Module  # as prepared by the accelerator
    tokens_seen: int  # tokens predicted so far, all processes

    def exposures(self, step: int) -> np.ndarray:
        """How many times each training individual was drawn in the first `step` steps."""

    def last_drawn(self, step: int) -> np.ndarray:
        """The step after which each training individual was last drawn in the first `step` steps (0: never)."""

    def reset_optimizer_state(self) -> None:
        """Forget the optimizer's moments (the learning-rate schedule goes on)."""

    def write_in_background(self, write: Callable[[], None]) -> None:
        """Run `write` in the checkpoint writer's thread, after the writes queued before it."""


class Callback:
    """Called with the number of optimizer steps done: `on_train_begin` once with the step training
    starts from (0, or a resumed step), `on_step` at 0 before training and after each step."""

    def on_train_begin(self, state: TrainingState, step: int) -> None:
        pass

    def on_step(self, state: TrainingState, step: int) -> None:
        pass

    def writes_at(self, step: int) -> bool:
        """Whether on_step writes weights or evaluations at `step` (the loop first checks that the loss and
        the weights are finite)."""
        return False


class EvaluationCallback(Callback):
    """Evaluates at scheduled steps (the last with `final`, when given: e.g. every individual); the main
    process appends one trajectory line per group, and writes the evaluation's facts (`evaluation.facts`)."""

    def __init__(self, evaluator: Evaluator, steps: list[int], run: RunFolder, stage: str,
                 final: Evaluator | None = None):
        self.evaluator, self.steps, self.run, self.stage = evaluator, set(steps), run, stage
        self.final, self.last = final, max(steps)

    def writes_at(self, step: int) -> bool:
        return step in self.steps

    def on_step(self, state: TrainingState, step: int) -> None:
        if step not in self.steps:
            return
        evaluator = self.final if self.final is not None and step == self.last else self.evaluator
        exposures = state.exposures(step) if evaluator.exposure_group else None
        scores = evaluator.score_groups(state.model, state.accelerator)
        results = evaluator.metrics(scores, state.model, state.accelerator, exposures)
        for group, metrics in results.items():
            if not all(math.isfinite(metrics[key]) for key in FINITE_METRICS):
                raise RunError(f"the evaluation of {group} individuals at step {step} is not finite "
                               f"(attribute loss {metrics['attribute_loss']}): the weights are finite but too large; "
                               f"lower learning_rate (or add warmup_steps); nothing was written for this step")
        if state.accelerator.is_main_process:
            self.run.append_trajectory([{"stage": self.stage, "step": step, "split": group,
                                         "tokens": state.tokens_seen, **metrics} for group, metrics in results.items()])
            tables = {QUERY_FACTS: query_table(step, scores, evaluator.templates)}
            if exposures is not None:
                tables[EXPOSURE_FACTS] = exposure_table(step, exposures, state.last_drawn(step))
            write_facts(self.run, step, tables)
        state.accelerator.log({f"eval/{group}/{key}": metrics[key] for group, metrics in results.items()
                               for key in ("attribute_loss", "attribute_accuracy")}, step=step)


class HubPushCallback(Callback):
    """Pushes each permanent checkpoint, once saved, to its own revision (step-000001000) of the run's repo."""

    def __init__(self, pusher: HubPusher | None, steps: list[int], run: RunFolder):
        self.pusher, self.steps, self.run = pusher, set(steps), run

    def on_step(self, state: TrainingState, step: int) -> None:
        if self.pusher is not None and step in self.steps:  # queued once the checkpoint is written
            folder, pusher, message = self.run.checkpoint(step), self.pusher, f"Checkpoint at step {step:,}"
            state.write_in_background(lambda: pusher.push(folder, checkpoint_name(step), message))
