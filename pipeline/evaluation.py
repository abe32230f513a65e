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

from .metrics import auroc, by_exposure, by_rank, frequency_rank, no_knowledge_baseline, query_scores

EVAL_SPLITS = {"seen": "eval_seen", "heldout": "eval_heldout"}
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


class Evaluator:
    """Attribute recall of seen individuals (held-out templates) and held-out individuals.

    Evaluates the first `n_individuals` individuals of each split (all when 0). Batches are spread
    over processes, per-query scores gathered, and the numbers computed by the `attribute_recall`
    evaluate module; every process gets them. Also reports how well the first value token's top
    probability separates seen from held-out individuals (`confidence_auroc`).
    """

    def __init__(self, corpus: Corpus, n_individuals: int, batch_size: int):
        self.baselines = no_knowledge_baseline(corpus.individuals("train").values)
        self.metric = evaluate.load(str(METRIC_PATH))
        self.batches = {}
        for name, split in EVAL_SPLITS.items():
            queries = corpus.dataset[split]
            if n_individuals:
                queries = queries.select(np.flatnonzero(as_array(queries, "individual") < n_individuals))
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
        """Metrics per split name ("seen", "heldout"); with the training individuals' `exposures`
        (times drawn so far), seen metrics are also given by exposure bucket and by frequency rank."""
        was_training = model.training
        model.eval()
        scores = {split: self.scores(model, accelerator, split) for split in self.batches}
        model.train(was_training)
        individuals = {split: s.pop("individual") for split, s in scores.items()}
        results = {split: self.metric.compute(**s, baselines=self.baselines) for split, s in scores.items()}
        if exposures is not None:
            seen = scores["seen"]
            seen_individuals = individuals["seen"]
            results["seen"]["by_exposure"] = by_exposure(exposures[seen_individuals], seen["value_loss"],
                                                         seen["correct"])
            results["seen"]["by_rank"] = by_rank(frequency_rank(exposures)[seen_individuals], seen["value_loss"],
                                                 seen["correct"])
        separation = auroc(scores["seen"]["top_prob"], scores["heldout"]["top_prob"])
        for metrics in results.values():
            metrics["confidence_auroc"] = separation
        return results


class _ValueLogits:
    """Indexable stand-in for [b, T, V] logits that only computes the rows it is indexed at."""

    def __init__(self, hidden: torch.Tensor, head: torch.nn.Module):
        self.hidden, self.head = hidden, head

    def __getitem__(self, index) -> torch.Tensor:
        return self.head(self.hidden[index])
