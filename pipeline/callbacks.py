"""Trainer callbacks: the base class, evaluation into the trajectory, and log-spaced schedules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .evaluation import Evaluator

TRAJECTORY = "trajectory.jsonl"


def log_spaced_steps(max_steps: int, n_points: int, every: int = 0) -> list[int]:
    """Step 0, `n_points` steps spaced evenly in log between 1 and max_steps, every `every`-th
    step, and max_steps."""
    steps = {0, max_steps}
    if n_points:
        steps |= set(np.unique(np.round(np.logspace(0, np.log10(max_steps), n_points))).astype(int).tolist())
    if every:
        steps |= set(range(every, max_steps + 1, every))
    return sorted(steps)


class Callback:
    """Called with the number of optimizer steps done: `on_train_begin` once with the step training
    starts from (0, or a resumed step), `on_step` at 0 before training and after each step."""

    def on_train_begin(self, trainer, step: int) -> None:
        pass

    def on_step(self, trainer, step: int) -> None:
        pass

    def saves_at(self, step: int) -> bool:
        """Whether on_step writes weights at `step` (the trainer checks the loss is finite first)."""
        return False


class EvaluationCallback(Callback):
    """Evaluates at scheduled steps; the main process appends one JSON line per split."""

    def __init__(self, evaluator: Evaluator, steps: list[int], output_dir: Path, stage: str):
        self.evaluator, self.steps, self.stage = evaluator, set(steps), stage
        self.path = output_dir / TRAJECTORY

    def on_step(self, trainer, step: int) -> None:
        if step not in self.steps:
            return
        exposures = trainer.exposures(step) if self.evaluator.exposure_split else None
        results = self.evaluator.evaluate(trainer.model, trainer.accelerator, exposures)
        tokens = trainer.tokens_seen
        if trainer.accelerator.is_main_process:
            with self.path.open("a") as f:
                for split, metrics in results.items():
                    f.write(json.dumps({"stage": self.stage, "step": step, "split": split, "tokens": tokens,
                                        **metrics}) + "\n")
        trainer.accelerator.log({f"eval/{split}/{key}": metrics[key] for split, metrics in results.items()
                                 for key in ("attribute_loss", "attribute_accuracy")}, step=step)
