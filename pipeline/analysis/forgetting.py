"""What fine-tuning does to old knowledge: the collapse of old individuals, the acquisition of new
ones, and where the model changed (attention patterns against weights, block by block)."""

from __future__ import annotations

import numpy as np
import torch

from data_gen import Corpus

from ..model import BLOCKS, load_eager
from ..run_folder import FINETUNE, HELDOUT, NEW, OLD, RunFolder, series, step_of
from .circuits import analysis_batch, attention_patterns


def _first_step(steps: np.ndarray, reached: np.ndarray) -> float | None:
    return float(steps[np.argmax(reached)]) if reached.any() else None


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


def drift_table(run: RunFolder, corpus: Corpus, n_biographies: int = 64) -> list[dict]:
    """For each checkpoint of a fine-tuning run, how far it moved from the run's step-0 (pretrained)
    checkpoint: attention distance per layer on old individuals' biographies, and weight change per block."""
    checkpoints = run.complete_checkpoints()
    if not checkpoints or step_of(checkpoints[0]) != 0:
        return []
    batch = analysis_batch(corpus, n_biographies)
    reference = load_eager(checkpoints[0])
    reference_patterns = attention_patterns(reference, batch)
    rows = []
    for checkpoint in checkpoints:
        model = load_eager(checkpoint)
        distance = attention_distance(reference_patterns, attention_patterns(model, batch), batch["attention_mask"])
        rows.append({"step": step_of(checkpoint), "attention_distance": float(distance.mean()),
                     "attention_distance_by_layer": distance.tolist(),
                     **{f"weight_change_{k}": v for k, v in weight_change(reference, model).items()}})
    return rows
