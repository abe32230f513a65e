"""What fine-tuning does to old knowledge: the collapse of old individuals, the acquisition of new
ones, and where the model changed (attention patterns against weights, block by block)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data_gen import Corpus

from ..model import BLOCKS, load_eager
from ..run_folder import CHECKPOINTS, FINETUNE, HELDOUT, NEW, OLD, PRETRAIN, STATE, RunFolder, series, step_of
from .circuits import analysis_batch, attention_patterns
from .phases import run_phases


def _first_step(steps: np.ndarray, reached: np.ndarray) -> float | None:
    return float(steps[np.argmax(reached)]) if reached.any() else None


FORGETTING_COLUMNS = {  # forgetting_summary's keys: finetune.json, and summary.csv of a fine-tuning study
    "last_step": "The last evaluation's step.",
    "old_accuracy_before": "Old (pretraining) individuals' attribute accuracy at the first evaluation.",
    "old_accuracy_lowest": "Their lowest accuracy over the run.",
    "old_accuracy_lowest_step": "The step of that lowest accuracy.",
    "old_accuracy_final": "Their accuracy at the last evaluation.",
    "half_drop_step": "First step at which old accuracy has lost half of its drop to the lowest (null: no drop).",
    "old_loss_before": "Old individuals' attribute loss at the first evaluation.",
    "old_loss_final": "Their attribute loss at the last evaluation.",
    "new_accuracy_before": "New (fine-tuned) individuals' attribute accuracy at the first evaluation.",
    "new_accuracy_final": "Their accuracy at the last evaluation.",
    "new_half_step": "First step at which the new individuals' accuracy reaches 50% (null: never).",
    "heldout_loss_final": "Held-out individuals' attribute loss at the last evaluation.",
}


def forgetting_summary(rows: list[dict]) -> dict:
    """Old accuracy before, at its lowest and at the end; the step at which it has lost half of its
    drop (to the lowest point); new accuracy reached and the step it reaches 50%; final losses."""
    steps, old = series(rows, OLD, "attribute_accuracy", FINETUNE)
    _, old_loss = series(rows, OLD, "attribute_loss", FINETUNE)
    _, new = series(rows, NEW, "attribute_accuracy", FINETUNE)
    _, heldout_loss = series(rows, HELDOUT, "attribute_loss", FINETUNE)
    lowest = int(np.argmin(old))
    drop = old[0] - old[lowest]
    return {"last_step": float(steps[-1]),
            "old_accuracy_before": float(old[0]), "old_accuracy_lowest": float(old[lowest]),
            "old_accuracy_lowest_step": float(steps[lowest]), "old_accuracy_final": float(old[-1]),
            "half_drop_step": _first_step(steps, old <= old[0] - drop / 2) if drop > 0 else None,
            "old_loss_before": float(old_loss[0]), "old_loss_final": float(old_loss[-1]),
            "new_accuracy_before": float(new[0]), "new_accuracy_final": float(new[-1]),
            "new_half_step": _first_step(steps, new >= 0.5), "heldout_loss_final": float(heldout_loss[-1])}


@torch.no_grad()
def weight_change(reference: torch.nn.Module, model: torch.nn.Module) -> dict[str, float]:
    """Per block type, ||W - W_ref|| / ||W_ref|| over all its parameters."""
    ref = dict(reference.named_parameters())
    out = {}
    for block, marker in BLOCKS.items():
        pairs = [(p, ref[name]) for name, p in model.named_parameters() if marker in name]
        diff = sum(float((p - r).pow(2).sum()) for p, r in pairs)
        norm = sum(float(r.pow(2).sum()) for _, r in pairs)
        out[block] = (diff / norm) ** 0.5 if norm else 0.0
    return out


def attention_distance(reference: list[torch.Tensor], patterns: list[torch.Tensor],
                       attention_mask: torch.Tensor) -> np.ndarray:
    """Per layer, the total variation distance between two models' attention rows (0: same pattern,
    1: disjoint), averaged over heads and the real query positions."""
    rows = attention_mask.bool()[:, None, :]  # [b, 1, T]
    return np.array([float((0.5 * (a - b).abs().sum(-1) * rows).sum() / (rows.sum() * a.shape[1]))
                     for a, b in zip(reference, patterns)])


def reference_checkpoints(run: RunFolder) -> tuple[Path, int] | str:
    """The pretraining checkpoint a fine-tuning run's reference movement starts from, and the step of the
    checkpoint it was fine-tuned from (`init_from`), where the movement ends; or why there is none. The start is
    the checkpoint of the pretraining run nearest its plateau end (its first after step 0 without one), among
    those before init_from: attention moves that much while knowledge is acquired."""
    init_from = Path(run.recipe()["init_from"])
    pretraining = RunFolder(init_from.parent.parent)
    if init_from.parent.name != CHECKPOINTS or not (init_from / STATE).is_file() or not pretraining.is_run():
        return (f"init_from '{init_from}' is not a checkpoint of a run folder found from the working directory (a Hub "
                f"model, or a relative path from another one)")
    if pretraining.stage() != PRETRAIN:
        return f"init_from '{init_from}' is a checkpoint of a fine-tuning run"
    end = step_of(init_from)
    earlier = [c for c in pretraining.complete_checkpoints() if 0 < step_of(c) < end]
    if not earlier:
        return f"the pretraining run '{pretraining.path}' saved no checkpoint between step 0 and step {end:,}"
    plateau_end = run_phases(pretraining.trajectory()).plateau_end
    start = earlier[0] if plateau_end is None else min(earlier, key=lambda c: abs(step_of(c) - plateau_end))
    return start, end


def _reference_movement(run: RunFolder, batch: dict[str, torch.Tensor], pretrained: list[torch.Tensor]) -> dict:
    """The drift rows' reference: the attention distance of the pretrained model's patterns (`pretrained`) from
    those of the `reference_checkpoints` start, and their steps; None for both where there is no reference."""
    found = reference_checkpoints(run)
    if isinstance(found, str):
        return {"reference_attention_distance": None, "reference_steps": None}
    start, end = found
    distance = attention_distance(attention_patterns(load_eager(start), batch), pretrained, batch["attention_mask"])
    return {"reference_attention_distance": float(distance.mean()), "reference_steps": [step_of(start), end]}


def drift_table(run: RunFolder, corpus: Corpus, n_biographies: int = 64) -> list[dict]:
    """For each checkpoint of a fine-tuning run, how far it moved from the run's step-0 (pretrained)
    checkpoint: attention distance per layer on old individuals' biographies, and weight change per block;
    beside it, the reference movement of attention during pretraining (`_reference_movement`)."""
    checkpoints = run.complete_checkpoints()
    if not checkpoints or step_of(checkpoints[0]) != 0:
        return []
    batch = analysis_batch(corpus, n_biographies)
    pretrained = load_eager(checkpoints[0])
    pretrained_patterns = attention_patterns(pretrained, batch)
    movement = _reference_movement(run, batch, pretrained_patterns)
    rows = []
    for checkpoint in checkpoints:
        model = load_eager(checkpoint)
        distance = attention_distance(pretrained_patterns, attention_patterns(model, batch), batch["attention_mask"])
        rows.append({"step": step_of(checkpoint), "attention_distance": float(distance.mean()),
                     "attention_distance_by_layer": distance.tolist(), **movement,
                     **{f"weight_change_{k}": v for k, v in weight_change(pretrained, model).items()}})
    return rows
