"""Evaluation of attribute recall on the corpus's query splits, shared by every process."""

from __future__ import annotations

from pathlib import Path

import evaluate
import numpy as np
import torch
from accelerate import Accelerator
from datasets import Dataset

from data_gen import ATTRIBUTES, Corpus
from data_gen.columns import as_array

from ..run_folder import HELDOUT, SEEN
from .metrics import auroc, by_exposure, by_rank, frequency_rank, no_knowledge_baseline, query_scores

METRIC_PATH = Path(__file__).parent / "attribute_recall"


def _batches(queries: Dataset, batch_size: int, pad_id: int) -> list[dict[str, torch.Tensor]]:
    columns = queries.with_format("numpy", columns=["input_ids", "value_start", "value_end", "attribute",
                                                    "individual"])
    attribute_index = {a: i for i, a in enumerate(ATTRIBUTES)}
    batches = []
    for start in range(0, len(queries), batch_size):
        rows = columns[start: start + batch_size]
        ids = list(rows["input_ids"])
        lengths = np.array([len(x) for x in ids])
        input_ids = np.full((len(ids), lengths.max()), pad_id, dtype=np.int64)
        for r, x in enumerate(ids):
            input_ids[r, : len(x)] = x
        batches.append({
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy((np.arange(lengths.max()) < lengths[:, None]).astype(np.int64)),
            "value_start": torch.from_numpy(rows["value_start"].astype(np.int64)),
            "value_end": torch.from_numpy(rows["value_end"].astype(np.int64)),
            "attribute": torch.tensor([attribute_index[a] for a in rows["attribute"]]),
            "individual": torch.from_numpy(rows["individual"].astype(np.int64)),
        })
    return batches


def spread(individuals: np.ndarray, n: int) -> np.ndarray:
    """`n` of `individuals` spread evenly over them (all when n is 0). Samplers weight individuals by
    index (power law, celebrities, warm-up), so the first n would all be the frequent ones."""
    if not n or n >= len(individuals):
        return individuals
    return individuals[np.unique(np.linspace(0, len(individuals) - 1, n).round().astype(np.int64))]


def pretraining_splits(corpus: Corpus, n_individuals: int) -> dict[str, tuple[str, np.ndarray]]:
    """What pretraining evaluates: n seen (trained) and n held-out individuals, spread over each split."""
    return {group: (split, spread(np.arange(len(corpus.split(split))), n_individuals))
            for group, split in ((SEEN, "train"), (HELDOUT, "heldout"))}


class Evaluator:
    """Attribute recall (on held-out templates) of named groups of individuals.

    `splits` maps a name to (individual split, indices of its individuals evaluated), e.g. pretraining's
    seen and held-out individuals. Batches are spread over processes, per-query scores gathered, and
    the numbers computed by the `attribute_recall` evaluate module; every process gets them. Also
    reports how well the first value token's top probability separates the first group (known
    individuals) from "heldout" (`confidence_auroc`). With `exposure_split`, that group's metrics
    are also given by exposure and frequency rank of the training stream's individuals.
    """

    def __init__(self, corpus: Corpus, splits: dict[str, tuple[str, np.ndarray]], batch_size: int,
                 exposure_split: str | None = None):
        self.baselines = no_knowledge_baseline(corpus.individuals("train").values)
        self.metric = evaluate.load(str(METRIC_PATH))
        self.exposure_split = exposure_split
        self.batches = {}
        for name, (split, individuals) in splits.items():
            queries = corpus.queries(split)
            queries = queries.select(np.flatnonzero(np.isin(as_array(queries, "individual"), individuals)))
            self.batches[name] = _batches(queries, batch_size, corpus.tokenizer.pad_token_id)

    @torch.no_grad()
    def scores(self, model: torch.nn.Module, accelerator: Accelerator, split: str) -> dict[str, np.ndarray]:
        """Per-query scores of one split, from every process, in query order."""
        unwrapped = accelerator.unwrap_model(model)
        decoder, head = unwrapped.get_decoder(), unwrapped.get_output_embeddings()
        batches = self.batches[split]
        per_process = -(-len(batches) // accelerator.num_processes)
        local = []
        for k in range(per_process):  # every process runs the same number of forward passes
            index = k * accelerator.num_processes + accelerator.process_index
            batch = {key: t.to(accelerator.device) for key, t in batches[index % len(batches)].items()}
            with accelerator.autocast():  # bf16 matmuls when training in bf16
                hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
                scores = query_scores(_ValueLogits(hidden, head), batch["input_ids"], batch["value_start"],
                                      batch["value_end"])
            columns = [scores.loss, scores.correct, scores.top_prob, scores.entropy, batch["attribute"],
                       batch["individual"], torch.full_like(scores.loss, index if index < len(batches) else -1)]
            local.append(torch.stack([c.double() for c in columns], dim=1))
        table = accelerator.pad_across_processes(torch.cat(local), pad_index=-1)  # [queries, 7] per process
        table = accelerator.gather(table).cpu().numpy()
        table = table[table[:, 6] >= 0]
        table = table[np.argsort(table[:, 6], kind="stable")]  # batches back in order
        return {"value_loss": table[:, 0], "correct": table[:, 1].astype(bool), "top_prob": table[:, 2],
                "entropy": table[:, 3], "attribute": [ATTRIBUTES[int(a)] for a in table[:, 4]],
                "individual": table[:, 5].astype(np.int64)}

    def evaluate(self, model: torch.nn.Module, accelerator: Accelerator,
                 exposures: np.ndarray | None = None) -> dict[str, dict]:
        """Metrics per group name; `exposures` (times each training individual was drawn so far)
        gives the exposure split's metrics by exposure bucket and by frequency rank."""
        was_training = model.training
        model.eval()
        scores = {split: self.scores(model, accelerator, split) for split in self.batches}
        model.train(was_training)
        individuals = {split: s.pop("individual") for split, s in scores.items()}
        results = {split: self.metric.compute(**s, baselines=self.baselines) for split, s in scores.items()}
        if exposures is not None and self.exposure_split:
            known, who = scores[self.exposure_split], individuals[self.exposure_split]
            results[self.exposure_split]["by_exposure"] = by_exposure(exposures[who], known["value_loss"],
                                                                      known["correct"])
            results[self.exposure_split]["by_rank"] = by_rank(frequency_rank(exposures)[who], known["value_loss"],
                                                              known["correct"])
        separation = auroc(next(iter(scores.values()))["top_prob"], scores[HELDOUT]["top_prob"])
        for metrics in results.values():
            metrics["confidence_auroc"] = separation
        return results


class _ValueLogits:
    """Indexable stand-in for [b, T, V] logits that only computes the rows it is indexed at."""

    def __init__(self, hidden: torch.Tensor, head: torch.nn.Module):
        self.hidden, self.head = hidden, head

    def __getitem__(self, index) -> torch.Tensor:
        return self.head(self.hidden[index])
