"""Attribute loss, attribute accuracy and the no-knowledge baseline: the one definition.

- Attribute loss: cross-entropy summed over the tokens of an attribute value (not
  averaged over tokens), averaged over queries of each attribute, then over attributes.
- Attribute accuracy: a value counts only if every one of its tokens is the argmax.
- No-knowledge baseline: the loss of a predictor that knows the distribution of each
  value token in the training population but not the individual, i.e. the sum over
  the value's tokens of the entropy of their empirical distribution; for uniform values
  and a large population this is the paper's log(number of possible values).
- Knowledge stored, in bits: for each evaluated individual and attribute, the baseline minus
  the individual's attribute loss (the mean over its queries), clipped at 0, summed, divided
  by ln 2, and scaled from the evaluated individuals to the whole population. It is what a
  model's predictions save over knowing only the value distribution, the quantity whose sum
  Allen-Zhu & Li (Physics of Language Models 3.3) bound from below as the bits a model must
  store (their N x sum over attributes of log2 |values| - loss, for uniform values); clipping
  keeps a confidently wrong answer from counting against what is known of the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from data_gen import ATTRIBUTES

# What each metric of a trajectory line (one group at one evaluation) means: the reference's table of them
METRIC_COLUMNS = {
    "attribute_loss": "Attribute loss (nats): a value's cross-entropy summed over its tokens, averaged over each "
                      "attribute's queries, then over attributes (toy memory: the pairs' mean cross-entropy).",
    "attribute_accuracy": "Attribute accuracy: the share of queries whose every value token is the argmax, averaged "
                          "per attribute, then over attributes.",
    "baseline_loss": "No-knowledge baseline: the attribute loss of a predictor that knows each value token's "
                     "distribution in the training population, not the individual (toy memory: log of the classes).",
    "first_token_top_prob": "Highest probability of the value's first token (the model's confidence), averaged as "
                            "the loss.",
    "first_token_entropy": "Entropy (nats) of the first value token's distribution, averaged as the loss.",
    "per_attribute": "Per attribute: its loss, accuracy, top_prob, entropy and baseline.",
    "knowledge_bits": "Knowledge stored about the training population, in bits: per individual and attribute, the "
                      "baseline minus its loss, clipped at 0, summed and scaled to the population (seen group only).",
    "knowledge_bits_per_parameter": "knowledge_bits over the model's parameters.",
    "knowledge_bits_per_non_embedding_parameter": "knowledge_bits over the model's non-embedding parameters.",
    "parameters": "The model's parameters (seen group only).",
    "non_embedding_parameters": "The model's parameters outside the embeddings (seen group only).",
    "by_exposure": "Queries grouped by how often their individual was drawn (0, 1, 2-3, 4-7, ...): exposures "
                   "[low, high], queries, loss, accuracy (pretraining's seen group).",
    "by_rank": "Queries grouped by their individual's frequency rank (1: drawn most often; 1, 2-3, 4-7, ...): rank "
               "[low, high], queries, loss, accuracy (pretraining's seen group).",
    "unexposed_queries": "Queries whose individual has not been drawn yet (pretraining's seen group).",
    "unexposed_loss": "Their attribute loss (null when every individual has been drawn).",
    "unexposed_accuracy": "Their attribute accuracy (null when every individual has been drawn).",
    "confidence_auroc": "How well first_token_top_prob separates the first group's queries (known individuals) from "
                        "the held-out ones (0.5: not at all); the same on every line of an evaluation.",
}


@dataclass
class QueryScores:
    """Per query: summed value cross-entropy, exact match, and the confidence of the prediction of
    the value's first token (top probability and entropy of its distribution)."""

    loss: torch.Tensor
    correct: torch.Tensor
    top_prob: torch.Tensor
    entropy: torch.Tensor


def query_scores(logits: torch.Tensor, input_ids: torch.Tensor, value_start: torch.Tensor,
                 value_end: torch.Tensor, width: int | None = None) -> QueryScores:
    """Scores of queries whose value tokens sit at [value_start, value_end) of input_ids;
    logits[:, p] predicts input_ids[:, p + 1]. `width`, the longest value (read from the tensors when
    not given, a host sync), lets a compiled caller pass it without one."""
    if width is None:
        width = int((value_end - value_start).max())
    offsets = torch.arange(width, device=input_ids.device)
    positions = value_start[:, None] + offsets[None, :]
    valid = offsets[None, :] < (value_end - value_start)[:, None]
    positions = torch.where(valid, positions, value_start[:, None])
    rows = torch.arange(len(input_ids), device=input_ids.device)[:, None]
    log_probs = torch.log_softmax(logits[rows, positions - 1].float(), dim=-1)
    targets = input_ids[rows, positions]
    token_loss = -log_probs.gather(-1, targets[..., None]).squeeze(-1)
    first = log_probs[:, 0]
    return QueryScores(loss=(token_loss * valid).sum(dim=1),
                       correct=((log_probs.argmax(dim=-1) == targets) | ~valid).all(dim=1),
                       top_prob=first.max(dim=-1).values.exp(),
                       entropy=-(first.exp() * first).sum(dim=-1))


def _queries_of(attribute: np.ndarray | list[str], baselines: dict[str, float]) -> dict[str, np.ndarray]:
    """Per attribute of `baselines`, the mask of its queries; `attribute` holds each query's attribute
    name, or its code (index in `data_gen.ATTRIBUTES`)."""
    attribute = np.asarray(attribute)
    codes = np.issubdtype(attribute.dtype, np.integer)
    return {name: attribute == (ATTRIBUTES.index(name) if codes else name) for name in baselines}


def summarize(loss: np.ndarray, correct: np.ndarray, top_prob: np.ndarray, entropy: np.ndarray,
              attribute: np.ndarray | list[str], baselines: dict[str, float]) -> dict:
    """Overall metrics (means over attributes of per-attribute means) and per-attribute ones, from
    per-query values and attributes (names or codes); every attribute of `baselines` must have queries."""
    per_attribute = {}
    queries = _queries_of(attribute, baselines)
    for name, baseline in baselines.items():
        rows = queries[name]
        per_attribute[name] = {"loss": float(loss[rows].mean()), "accuracy": float(correct[rows].mean()),
                               "top_prob": float(top_prob[rows].mean()), "entropy": float(entropy[rows].mean()),
                               "baseline": baseline}
    mean = {key: float(np.mean([m[key] for m in per_attribute.values()]))
            for key in ("loss", "accuracy", "top_prob", "entropy", "baseline")}
    return {"attribute_loss": mean["loss"], "attribute_accuracy": mean["accuracy"],
            "baseline_loss": mean["baseline"], "first_token_top_prob": mean["top_prob"],
            "first_token_entropy": mean["entropy"], "per_attribute": per_attribute}


def knowledge_bits(loss: np.ndarray, attribute: np.ndarray | list[str], individual: np.ndarray,
                   baselines: dict[str, float], population: int) -> float:
    """Knowledge stored in bits (see the module's docstring), from per-query value losses and attributes
    (names or codes) of the evaluated individuals, scaled to a population of `population` individuals."""
    individual = np.asarray(individual)
    nats = 0.0
    queries = _queries_of(attribute, baselines)
    for name, baseline in baselines.items():
        rows = queries[name]
        who, inverse = np.unique(individual[rows], return_inverse=True)
        mean_loss = np.bincount(inverse, weights=loss[rows]) / np.bincount(inverse)  # per individual
        nats += np.clip(baseline - mean_loss, 0.0, None).sum()
    evaluated = len(np.unique(individual))
    return float(nats / np.log(2) * population / evaluated)


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half): how
    well a score separates the two groups (0.5 = not at all)."""
    scores = np.concatenate([positive, negative])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inverse, ranks) / counts)[inverse]  # average ranks of ties
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def entropy(samples: np.ndarray) -> float:
    """Entropy in nats of the empirical distribution of `samples`."""
    _, counts = np.unique(samples, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def no_knowledge_baseline(values: dict[str, np.ndarray]) -> dict[str, float]:
    """Per attribute, the baseline loss for value token ids [n_individuals, n_tokens]."""
    return {attribute: sum(entropy(ids[:, k]) for k in range(ids.shape[1])) for attribute, ids in values.items()}


def _power_of_two_groups(values: np.ndarray, loss: np.ndarray, correct: np.ndarray, key: str) -> list[dict]:
    """Loss and accuracy of queries grouped by `values` in 0, 1, 2-3, 4-7, ... (powers of two);
    groups without queries are left out."""
    bucket = np.where(values > 0, np.floor(np.log2(np.maximum(values, 1))).astype(int) + 1, 0)
    rows = []
    for b in np.unique(bucket):
        members = bucket == b
        low, high = (0, 0) if b == 0 else (2 ** (b - 1), 2 ** b - 1)
        rows.append({key: [int(low), int(high)], "queries": int(members.sum()),
                     "loss": float(loss[members].mean()), "accuracy": float(correct[members].mean())})
    return rows


def by_exposure(exposures: np.ndarray, loss: np.ndarray, correct: np.ndarray) -> list[dict]:
    """Loss and accuracy of queries grouped by how often their individual was drawn: 0, 1, 2-3, 4-7, ..."""
    return _power_of_two_groups(exposures, loss, correct, "exposures")


def unexposed(exposures: np.ndarray, loss: np.ndarray, correct: np.ndarray) -> dict:
    """Loss and accuracy of the queries whose individual has not been drawn yet (a warm-up's others; None
    when every individual has been), and how many there are."""
    members = exposures == 0
    return {"unexposed_queries": int(members.sum()),
            "unexposed_loss": float(loss[members].mean()) if members.any() else None,
            "unexposed_accuracy": float(correct[members].mean()) if members.any() else None}


def frequency_rank(exposures: np.ndarray) -> np.ndarray:
    """Each individual's rank (1 = drawn most often) by times drawn; ties go to the lower index, so
    under a power law with no draws yet the rank is the sampling order."""
    ranks = np.empty(len(exposures), dtype=np.int64)
    ranks[np.argsort(-exposures, kind="stable")] = np.arange(1, len(exposures) + 1)
    return ranks


def by_rank(ranks: np.ndarray, loss: np.ndarray, correct: np.ndarray) -> list[dict]:
    """Loss and accuracy of queries grouped by their individual's frequency rank: 1, 2-3, 4-7, ..."""
    return _power_of_two_groups(ranks, loss, correct, "rank")
