"""Reading a run's trajectory, finding the three learning phases in it, and measuring its
attention circuits over checkpoints:

    python -m pipeline.analyze phases --run runs/demo
    python -m pipeline.analyze attention --run runs/demo [--n_biographies 64]

Phases, on the attribute loss of seen individuals against the no-knowledge baseline B:
1. the loss falls to the baseline: phase 1 ends when it first enters [B(1-tol), B(1+tol)];
2. the plateau lasts until the loss leaves that band downwards;
3. knowledge emerges: the step at which accuracy first reaches `emergence_accuracy`.
Crossing steps are interpolated linearly between evaluations.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from data_gen.recipe import RecipeError, run_cli

from .callbacks import TRAJECTORY


def load_trajectory(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / TRAJECTORY
    if not path.is_file():
        raise RecipeError(f"'{path}' does not exist: point at the output_dir of a run that has evaluated")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def series(rows: list[dict], split: str, key: str, stage: str = "pretrain") -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of one metric of one split, sorted by step."""
    points = sorted((r["step"], r[key]) for r in rows if r["split"] == split and r.get("stage", stage) == stage)
    steps, values = zip(*points) if points else ((), ())
    return np.array(steps, dtype=float), np.array(values, dtype=float)


def _crossing(steps: np.ndarray, values: np.ndarray, level: float, start: int = 0) -> tuple[float | None, int]:
    """First step at or after index `start` where `values` falls to `level`, and its index."""
    below = np.flatnonzero(values[start:] <= level)
    if not len(below):
        return None, len(values)
    i = start + below[0]
    if i == 0 or values[i - 1] == values[i]:
        return float(steps[i]), i
    fraction = (values[i - 1] - level) / (values[i - 1] - values[i])
    return float(steps[i - 1] + fraction * (steps[i] - steps[i - 1])), i


@dataclass
class Phases:
    baseline: float
    phase1_end: float | None
    plateau_end: float | None
    emergence: float | None
    max_step: float
    hallucination_onset: float | None = None

    @property
    def plateau_length(self) -> float | None:
        if self.phase1_end is None:
            return None
        return (self.plateau_end if self.plateau_end is not None else self.max_step) - self.phase1_end

    def to_dict(self) -> dict:
        return {**asdict(self), "plateau_start": self.phase1_end, "plateau_length": self.plateau_length}


def detect_phases(steps: np.ndarray, loss: np.ndarray, accuracy: np.ndarray, baseline: float,
                  tolerance: float = 0.05, emergence_accuracy: float = 0.5) -> Phases:
    phase1_end, i = _crossing(steps, loss, baseline * (1 + tolerance))
    plateau_end = _crossing(steps, loss, baseline * (1 - tolerance), i)[0] if phase1_end is not None else None
    emergence = _crossing(steps, -accuracy, -emergence_accuracy)[0]
    return Phases(baseline, phase1_end, plateau_end, emergence, float(steps.max()) if len(steps) else 0.0)


def hallucination_onset(steps: np.ndarray, heldout_loss: np.ndarray, baseline: float,
                        tolerance: float = 0.05) -> float | None:
    """The step at which the held-out loss starts to rise: `tolerance` x baseline above its minimum."""
    lowest = int(np.argmin(heldout_loss))
    return _crossing(steps, -heldout_loss, -(heldout_loss[lowest] + tolerance * baseline), lowest)[0]


def run_phases(rows: list[dict], tolerance: float = 0.05, **kwargs) -> Phases:
    """The phases of a run's seen-individual trajectory, and the onset of its hallucinations."""
    steps, loss = series(rows, "seen", "attribute_loss")
    _, accuracy = series(rows, "seen", "attribute_accuracy")
    baseline = next(r["baseline_loss"] for r in rows if r["split"] == "seen")
    phases = detect_phases(steps, loss, accuracy, baseline, tolerance=tolerance, **kwargs)
    heldout_steps, heldout_loss = series(rows, "heldout", "attribute_loss")
    if len(heldout_steps):
        phases.hallucination_onset = hallucination_onset(heldout_steps, heldout_loss, baseline, tolerance)
    return phases


def main(argv: list[str] | None = None) -> None:
    from .report import attention_table, write_report  # the report draws what the analyses write

    parser = argparse.ArgumentParser(description="Analyses of a run, written into its folder.")
    parser.add_argument("analysis", choices=["phases", "attention"])
    parser.add_argument("--run", required=True, help="A run's output_dir.")
    parser.add_argument("--n_biographies", type=int, default=64, help="Biographies the attention is measured on.")
    args = parser.parse_args(argv)
    if args.analysis == "phases":
        print(json.dumps(run_phases(load_trajectory(args.run)).to_dict(), indent=1))
    else:
        rows = attention_table(Path(args.run), args.n_biographies, recompute=True)
        print(f"{len(rows)} rows over {len({r['step'] for r in rows})} checkpoints; report: {write_report(args.run)}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
