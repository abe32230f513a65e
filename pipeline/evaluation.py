"""Evaluation of attribute recall on the corpus's query splits, shared by every process."""

from __future__ import annotations

import numpy as np
import torch
from accelerate import Accelerator
from datasets import Dataset

from data_gen import ATTRIBUTES, Corpus
from data_gen.columns import as_array

from .metrics import no_knowledge_baseline, query_scores, summarize

EVAL_SPLITS = {"seen": "eval_seen", "heldout": "eval_heldout"}


def _batches(queries: Dataset, batch_size: int, pad_id: int) -> list[dict[str, torch.Tensor]]:
    columns = queries.with_format("numpy", columns=["input_ids", "value_start", "value_end", "attribute"])
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
        })
    return batches


class Evaluator:
    """Attribute loss and accuracy of seen individuals (held-out templates) and held-out individuals.

    Evaluates the first `n_individuals` individuals of each split (all when 0); batches are
    spread over processes and per-attribute sums reduced, so every process gets the numbers.
    """

    def __init__(self, corpus: Corpus, n_individuals: int, batch_size: int):
        self.baselines = no_knowledge_baseline(corpus.individuals("train").values)
        self.batches = {}
        for name, split in EVAL_SPLITS.items():
            queries = corpus.dataset[split]
            if n_individuals:
                queries = queries.select(np.flatnonzero(as_array(queries, "individual") < n_individuals))
            self.batches[name] = _batches(queries, batch_size, corpus.tokenizer.pad_token_id)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, accelerator: Accelerator) -> dict[str, dict]:
        """Metrics per split name ("seen", "heldout")."""
        unwrapped = accelerator.unwrap_model(model)
        decoder, head = unwrapped.get_decoder(), unwrapped.get_output_embeddings()
        was_training = model.training
        model.eval()
        results = {}
        for name, batches in self.batches.items():
            sums = torch.zeros(3, len(ATTRIBUTES), device=accelerator.device, dtype=torch.float64)
            per_process = -(-len(batches) // accelerator.num_processes)
            for k in range(per_process):  # every process runs the same number of forward passes
                index = accelerator.process_index + k * accelerator.num_processes
                batch = {key: t.to(accelerator.device) for key, t in batches[index % len(batches)].items()}
                with accelerator.autocast():  # bf16 matmuls when training in bf16
                    hidden = decoder(input_ids=batch["input_ids"],
                                     attention_mask=batch["attention_mask"]).last_hidden_state
                    loss, correct = query_scores(_ValueLogits(hidden, head), batch["input_ids"],
                                                 batch["value_start"], batch["value_end"])
                if index < len(batches):
                    sums[0].index_add_(0, batch["attribute"], loss.double())
                    sums[1].index_add_(0, batch["attribute"], correct.double())
                    sums[2].index_add_(0, batch["attribute"], torch.ones_like(loss, dtype=torch.float64))
            sums = accelerator.reduce(sums, reduction="sum").cpu().numpy()
            results[name] = summarize(sums[0], sums[1], sums[2], list(ATTRIBUTES), self.baselines)
        model.train(was_training)
        return results


class _ValueLogits:
    """Indexable stand-in for [b, T, V] logits that only computes the rows it is indexed at."""

    def __init__(self, hidden: torch.Tensor, head: torch.nn.Module):
        self.hidden, self.head = hidden, head

    def __getitem__(self, index) -> torch.Tensor:
        return self.head(self.hidden[index])
