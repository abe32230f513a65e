"""Attribute loss, attribute accuracy and the no-knowledge baseline: the one definition.

- Attribute loss: cross-entropy summed over the tokens of an attribute value (not
  averaged over tokens), averaged over queries of each attribute, then over attributes.
- Attribute accuracy: a value counts only if every one of its tokens is the argmax.
- No-knowledge baseline: the loss of a predictor that knows the distribution of each
  value token in the training population but not the individual, i.e. the sum over
  the value's tokens of the entropy of their empirical distribution; for uniform values
  and a large population this is the paper's log(number of possible values).
"""

from __future__ import annotations

import numpy as np
import torch


def query_scores(logits: torch.Tensor, input_ids: torch.Tensor, value_start: torch.Tensor,
                 value_end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed value-token cross-entropy [b] and exact match [b] of queries whose value tokens sit
    at [value_start, value_end) of input_ids; logits[:, p] predicts input_ids[:, p + 1]."""
    width = int((value_end - value_start).max())
    offsets = torch.arange(width, device=input_ids.device)
    positions = value_start[:, None] + offsets[None, :]
    valid = offsets[None, :] < (value_end - value_start)[:, None]
    positions = torch.where(valid, positions, value_start[:, None])
    rows = torch.arange(len(input_ids), device=input_ids.device)[:, None]
    log_probs = torch.log_softmax(logits[rows, positions - 1].float(), dim=-1)
    targets = input_ids[rows, positions]
    token_loss = -log_probs.gather(-1, targets[..., None]).squeeze(-1)
    loss = (token_loss * valid).sum(dim=1)
    correct = ((log_probs.argmax(dim=-1) == targets) | ~valid).all(dim=1)
    return loss, correct


def summarize(loss_sum: np.ndarray, correct_sum: np.ndarray, count: np.ndarray, attributes: list[str],
              baselines: dict[str, float]) -> dict:
    """Overall and per-attribute metrics from per-attribute sums [n_attributes]."""
    loss, accuracy = loss_sum / count, correct_sum / count
    return {
        "attribute_loss": float(loss.mean()),
        "attribute_accuracy": float(accuracy.mean()),
        "baseline_loss": float(np.mean([baselines[a] for a in attributes])),
        "per_attribute": {a: {"loss": float(loss[i]), "accuracy": float(accuracy[i]), "baseline": baselines[a]}
                          for i, a in enumerate(attributes)},
    }


def entropy(samples: np.ndarray) -> float:
    """Entropy in nats of the empirical distribution of `samples`."""
    _, counts = np.unique(samples, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def no_knowledge_baseline(values: dict[str, np.ndarray]) -> dict[str, float]:
    """Per attribute, the baseline loss for value token ids [n_individuals, n_tokens]."""
    return {attribute: sum(entropy(ids[:, k]) for k in range(ids.shape[1])) for attribute, ids in values.items()}
