"""Attention circuits of the paper's mechanism, measured over a run's checkpoints.

- name grouping: attention mass from each last-name token to the first and middle name tokens
  of its own sentence (forms in the first layer);
- extraction: attention mass, from the position that predicts an attribute's first value token,
  to the name tokens of its sentence against the sentence's other (template) tokens, reported as
  name / (name + text) (rises in the last layer through the plateau);
- entropy: entropy of each attention row divided by log t, t the number of visible positions (the query
  and the earlier positions of attention_mask 1).
All are [layers, heads] arrays averaged over the queries of a fixed set of biographies. Each has a chance
level: its value under uniform causal attention on the same biographies (`chance_statistics`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data_gen import Corpus

from ..model import check_attention, load_eager
from ..run_folder import RunFolder, step_of

ANALYSIS_SEED = 20250327  # biographies drawn for analysis, never a training draw's seed
STATISTICS = ("name_grouping", "extraction_name", "extraction_text", "extraction_ratio", "entropy")


def _mean_mass(attention: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Mean over query positions of the attention mass on their keys: attention [L, b, H, T, T],
    queries [b, T], keys [b, T, T] -> [L, H]."""
    mass = (attention * keys[None, :, None].float()).sum(-1)  # [L, b, H, T]
    return (mass * queries[None, :, None].float()).sum((1, 3)) / queries.sum().clamp(min=1)


def visible_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions each query can attend to [b, T]: itself and the earlier positions of attention_mask 1
    (padding, on either side, left out)."""
    return attention_mask.cumsum(-1).float()


def uniform_attention(attention_mask: torch.Tensor) -> torch.Tensor:
    """Uniform causal attention [b, 1, T, T]: each query's mass spread evenly over the positions it sees."""
    seen = torch.ones(attention_mask.shape[-1], attention_mask.shape[-1], dtype=torch.bool).tril()[None] \
        & attention_mask.bool()[:, None, :]
    return (seen / seen.sum(-1, keepdim=True).clamp(min=1))[:, None]


def attention_statistics(attentions: list[torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The circuit statistics [layers, heads] of one batch's attention patterns [b, H, T, T] per layer."""
    attention = torch.stack([a.float() for a in attentions])
    name_part, sentence, value = batch["name_part"], batch["sentence"], batch["value_attribute"]
    same_sentence = (sentence[:, :, None] == sentence[:, None, :]) & (sentence[:, :, None] >= 0)
    first_name_tokens = ((name_part == 0) | (name_part == 1))[:, None, :]
    grouping = _mean_mass(attention, name_part == 2, same_sentence & first_name_tokens)
    before_value = torch.zeros_like(value, dtype=torch.bool)
    before_value[:, :-1] = (value[:, 1:] >= 0) & (value[:, :-1] < 0)
    names = same_sentence & (name_part >= 0)[:, None, :]
    text = same_sentence & ((name_part < 0) & (value < 0))[:, None, :]
    extraction_name = _mean_mass(attention, before_value, names)
    extraction_text = _mean_mass(attention, before_value, text)
    visible = visible_positions(batch["attention_mask"])
    entropy = -(attention * attention.clamp(min=1e-30).log()).sum(-1) / visible.log().clamp(min=1e-30)[:, None]
    rows = (batch["attention_mask"] == 1) & (visible > 1)
    entropy = (entropy * rows[None, :, None]).sum((1, 3)) / rows.sum()
    ratio = extraction_name / (extraction_name + extraction_text).clamp(min=1e-30)
    values = (grouping, extraction_name, extraction_text, ratio, entropy)
    return {name: v.cpu().numpy() for name, v in zip(STATISTICS, values)}


def chance_statistics(batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each statistic's chance level: its value under uniform causal attention on `batch`."""
    stats = attention_statistics([uniform_attention(batch["attention_mask"])], batch)
    return {name: float(value[0, 0]) for name, value in stats.items()}


@torch.no_grad()
def attention_patterns(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Attention patterns [b, H, T, T] of every layer on a batch."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_attentions=True)
    return list(out.attentions)


def checkpoint_statistics(checkpoint: Path, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return attention_statistics(attention_patterns(load_eager(checkpoint), batch), batch)


ATTENTION_BIOGRAPHIES = 512  # biographies the circuits are measured on, as the paper


def analysis_batch(corpus: Corpus, n_biographies: int) -> dict[str, torch.Tensor]:
    """A fixed set of training individuals' biographies, the same for every checkpoint."""
    return {k: torch.from_numpy(v) for k, v in corpus.stream(n_biographies, ANALYSIS_SEED).batch(0).items()}


def _beside_chance(stats: dict[str, np.ndarray], layer: int, head: int, chance: dict[str, float]) -> dict[str, float]:
    """One head's statistics, each followed by its chance level (`<statistic>_chance`)."""
    row = {}
    for name in STATISTICS:
        row[name] = float(stats[name][layer, head])
        row[f"{name}_chance"] = chance[name]
    return row


def run_attention_table(run: RunFolder, corpus: Corpus, n_biographies: int = ATTENTION_BIOGRAPHIES) -> list[dict]:
    """One row per checkpoint, layer and head of a run, each statistic beside its chance level; refused in one line
    for a model without attention."""
    checkpoints = run.complete_checkpoints()
    if checkpoints:
        check_attention(checkpoints[0], f"run '{run.path}'", "measure circuits on")
    batch = analysis_batch(corpus, n_biographies)
    chance = chance_statistics(batch)
    rows = []
    for checkpoint in checkpoints:
        stats = checkpoint_statistics(checkpoint, batch)
        layers, heads = stats["entropy"].shape
        rows += [{"step": step_of(checkpoint), "layer": layer, "head": head,
                  **_beside_chance(stats, layer, head, chance)} for layer in range(layers) for head in range(heads)]
    return rows
