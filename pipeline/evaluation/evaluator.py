"""Evaluation of attribute recall on the corpus's query splits, shared by every process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from datasets import Dataset

from data_gen import ATTRIBUTES, Corpus
from data_gen.columns import as_array
from data_gen.population import spread

from ..model import count_parameters
from ..run_folder import HELDOUT, SEEN
from .metrics import (
    auroc,
    by_exposure,
    by_rank,
    frequency_rank,
    knowledge_bits,
    no_knowledge_baseline,
    query_scores,
    summarize,
    unexposed,
)

METRIC_PATH = Path(__file__).parent / "attribute_recall"


def _batches(queries: Dataset, batch_size: int, pad_id: int) -> list[dict[str, torch.Tensor | int]]:
    """Queries cut after their value's last token (what follows is not scored), in order of value width
    (tokens), then of that length, in batches of at most `batch_size` padded on the right to their
    longest (little padding; causal attention needs no mask); `query` holds each one's index in
    `queries`, `width` (an int, for a compiled forward) the batch's widest value: the head runs there."""
    ids = queries.with_format("arrow")["input_ids"].combine_chunks()
    flat, offsets = ids.flatten().to_numpy(), ids.offsets.to_numpy()[:-1]
    value_start, value_end = as_array(queries, "value_start").astype(np.int64), as_array(queries, "value_end")
    value_end = value_end.astype(np.int64)
    names = as_array(queries, "attribute")
    attribute = np.zeros(len(names), dtype=np.int64)
    for index, name in enumerate(ATTRIBUTES):
        attribute[names == name] = index
    individual = as_array(queries, "individual").astype(np.int64)
    width = value_end - value_start
    order = np.lexsort((value_end, width))
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start: start + batch_size]
        position = np.arange(value_end[rows].max())[None, :]
        input_ids = np.where(position < value_end[rows, None],
                             flat[np.minimum(offsets[rows, None] + position, len(flat) - 1)], pad_id)
        batch = {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in (
            ("input_ids", input_ids.astype(np.int64)), ("value_start", value_start[rows]),
            ("value_end", value_end[rows]), ("attribute", attribute[rows]), ("individual", individual[rows]),
            ("query", rows.astype(np.int64)))}
        batches.append({**batch, "width": int(width[rows].max())})
    return batches


def pretraining_groups(corpus: Corpus, n_individuals: int) -> dict[str, tuple[str, np.ndarray]]:
    """What pretraining evaluates: n seen (trained) and n held-out individuals, spread over each split."""
    return {group: (split, spread(np.arange(len(corpus.split(split))), n_individuals))
            for group, split in ((SEEN, "train"), (HELDOUT, "heldout"))}


class Evaluator:
    """Attribute recall (on held-out templates) of named groups of individuals.

    `groups` maps a group's name to (its corpus split, indices of its individuals evaluated), e.g. pretraining's
    seen and held-out individuals. Batches (built once, then kept on the device) are spread over
    processes, per-query scores gathered, and the numbers computed by `metrics.summarize`, the function
    behind the `attribute_recall` evaluate module; every process gets them. Also reports how well the
    first value token's top probability separates the first group (known individuals) from "heldout"
    (`confidence_auroc`). With `exposure_group`, that group's metrics are also given by exposure and
    frequency rank of the training stream's individuals, and the knowledge the model stores about the
    training population (`knowledge_bits`, and per parameter). With `compile` (True for inductor, or a
    backend's name), the forward is compiled with dynamic shapes: one graph for every batch length and size.
    """

    def __init__(self, corpus: Corpus, groups: dict[str, tuple[str, np.ndarray]], batch_size: int,
                 exposure_group: str | None = None, compile: bool | str = False):
        self.baselines = no_knowledge_baseline(corpus.individuals("train").values)
        self.exposure_group, self.compile = exposure_group, compile
        self.population = len(corpus.split("train"))
        self.batches, self.templates, self.on_device, self._forward_of = {}, {}, {}, (None, None)
        for name, (split, individuals) in groups.items():
            queries = corpus.queries(split, individuals)
            self.batches[name] = _batches(queries, batch_size, corpus.tokenizer.pad_token_id)
            self.templates[name] = as_array(queries, "template").astype(np.int64)  # of each query, in order

    def _device_batches(self, group: str, device: torch.device) -> list[dict[str, torch.Tensor | int]]:
        """A group's batches on `device`, moved there once."""
        if (group, device) not in self.on_device:
            self.on_device[(group, device)] = [{k: t.to(device) if torch.is_tensor(t) else t for k, t in batch.items()}
                                               for batch in self.batches[group]]
        return self.on_device[(group, device)]

    def _forward(self, model: torch.nn.Module):
        """The scores of one batch of queries under `model`, compiled once per model when asked."""
        if self._forward_of[0] is not model:
            decoder, head = model.get_decoder(), model.get_output_embeddings()

            def forward(input_ids, value_start, value_end, width):
                hidden = decoder(input_ids=input_ids, use_cache=False).last_hidden_state
                return query_scores(_ValueLogits(hidden, head), input_ids, value_start, value_end, width)

            if self.compile:
                backend = "inductor" if self.compile is True else self.compile
                forward = torch.compile(forward, backend=backend, dynamic=True)
            self._forward_of = (model, forward)
        return self._forward_of[1]

    @torch.no_grad()
    def scores(self, model: torch.nn.Module, accelerator: Accelerator, group: str) -> dict[str, np.ndarray]:
        """Per-query scores of one group, from every process, in query order (attributes as codes, indices
        in `data_gen.ATTRIBUTES`)."""
        forward = self._forward(accelerator.unwrap_model(model, keep_torch_compile=False))
        batches = self._device_batches(group, accelerator.device)
        per_process = -(-len(batches) // accelerator.num_processes)
        local = []
        for k in range(per_process):  # every process runs the same number of forward passes
            index = k * accelerator.num_processes + accelerator.process_index
            batch = batches[index % len(batches)]
            with accelerator.autocast():  # bf16 matmuls when training in bf16
                scores = forward(batch["input_ids"], batch["value_start"], batch["value_end"], batch["width"])
            query = batch["query"] if index < len(batches) else torch.full_like(batch["query"], -1)
            columns = [scores.loss, scores.correct, scores.top_prob, scores.entropy, batch["attribute"],
                       batch["individual"], query]
            local.append(torch.stack([c.double() for c in columns], dim=1))
        table = accelerator.pad_across_processes(torch.cat(local), pad_index=-1)  # [queries, 7] per process
        table = accelerator.gather(table).cpu().numpy()
        table = table[table[:, 6] >= 0]
        table = table[np.argsort(table[:, 6], kind="stable")]  # queries back in order
        return {"value_loss": table[:, 0], "correct": table[:, 1].astype(bool), "top_prob": table[:, 2],
                "entropy": table[:, 3], "attribute": table[:, 4].astype(np.int64),
                "individual": table[:, 5].astype(np.int64)}

    def evaluate(self, model: torch.nn.Module, accelerator: Accelerator,
                 exposures: np.ndarray | None = None) -> dict[str, dict]:
        """Metrics per group name; `exposures` (times each training individual was drawn so far)
        gives the exposure group's metrics by exposure bucket and by frequency rank."""
        return self.metrics(self.score_groups(model, accelerator), model, accelerator, exposures)

    def score_groups(self, model: torch.nn.Module, accelerator: Accelerator) -> dict[str, dict[str, np.ndarray]]:
        """Per-query scores of every group (`scores`), the model left in the mode it was in."""
        was_training = model.training
        model.eval()
        scores = {group: self.scores(model, accelerator, group) for group in self.batches}
        model.train(was_training)
        return scores

    def metrics(self, scores: dict[str, dict[str, np.ndarray]], model: torch.nn.Module, accelerator: Accelerator,
                exposures: np.ndarray | None = None) -> dict[str, dict]:
        """The metrics of `evaluate` from the groups' per-query scores."""
        results = {group: summarize(s["value_loss"], s["correct"], s["top_prob"], s["entropy"], s["attribute"],
                                    self.baselines) for group, s in scores.items()}
        if self.exposure_group:
            known, who = scores[self.exposure_group], scores[self.exposure_group]["individual"]
            bits = knowledge_bits(known["value_loss"], known["attribute"], who, self.baselines, self.population)
            sizes = count_parameters(accelerator.unwrap_model(model, keep_torch_compile=False))
            results[self.exposure_group].update({
                "knowledge_bits": bits, "knowledge_bits_per_parameter": bits / sizes["total"],
                "knowledge_bits_per_non_embedding_parameter": bits / sizes["non_embedding"],
                "parameters": sizes["total"], "non_embedding_parameters": sizes["non_embedding"]})
        if exposures is not None and self.exposure_group:
            results[self.exposure_group]["by_exposure"] = by_exposure(exposures[who], known["value_loss"],
                                                                      known["correct"])
            results[self.exposure_group]["by_rank"] = by_rank(frequency_rank(exposures)[who], known["value_loss"],
                                                              known["correct"])
            results[self.exposure_group].update(unexposed(exposures[who], known["value_loss"], known["correct"]))
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
