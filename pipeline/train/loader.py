"""Batches of the biography stream prepared ahead in a background thread, so the accelerator
never waits for data generation."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from data_gen.stream import BiographyStream, shard_rows

from ..config import Batching

MODEL_INPUTS = ("input_ids", "labels")  # right padding, labels -100 there and causal attention: no mask needed
PACKED_INPUTS = (*MODEL_INPUTS, "position_ids", "document_ids")  # + where each biography starts and ends


@dataclass
class StepBatch:
    """One optimizer step's data on this process: tokens predicted in the global batch (as an int, and as a
    device tensor that needs no host sync), this process's micro-batches, and who the global batch drew."""

    n_tokens: int
    count: torch.Tensor
    micro: list[dict[str, torch.Tensor]]
    who: np.ndarray


class StreamLoader:
    """This process's micro-batches of each step, as tensors on `device`, built `depth` steps ahead; and how
    many times each individual has been drawn, and the step after which it last was, counted as steps are
    taken (`exposures`, `last_drawn`).

    Unpacked, a micro-batch is a row per biography, padded to `length` tokens (fixed shapes) or to its
    longest biography rounded up to `pad_to_multiple_of`. With `pack`, its biographies lie end to end in one
    row (`BiographyStream.packed`), of `length` tokens or of theirs rounded up to `pad_to_multiple_of`."""

    def __init__(self, stream: BiographyStream, rank: int, world_size: int, n_micro: int, device: torch.device,
                 depth: int = 2, pad_to_multiple_of: int = 1, length: int | None = None, pack: bool = False):
        self.stream, self.device, self.depth, self.multiple, self.length = (stream, device, depth, pad_to_multiple_of,
                                                                            length)
        self.pack = pack
        self.rows = [shard_rows(stream.batch_size, rank, world_size, m, n_micro) for m in range(n_micro)]
        self.pin = device.type == "cuda"
        self.pool = ThreadPoolExecutor(max_workers=1) if depth else None
        self.pending: dict[int, Future] = {}
        self.counted_steps, self.counts = 0, np.zeros(len(stream.people), dtype=np.int64)
        self.last = np.zeros(len(stream.people), dtype=np.int64)

    def start_at(self, step: int) -> None:
        """Training resumes after `step` steps: the exposures of those, replayed once."""
        self.counted_steps, (self.counts, self.last) = step, self.stream.history(step)

    def exposures(self, step: int) -> np.ndarray:
        """How many times each individual has been drawn in the first `step` steps."""
        return self.counts.copy() if step == self.counted_steps else self.stream.exposures(step)

    def last_drawn(self, step: int) -> np.ndarray:
        """The step after which each individual was last drawn in the first `step` steps (0: never)."""
        return self.last.copy() if step == self.counted_steps else self.stream.history(step)[1]

    def _micro(self, step: int, rows: slice) -> dict[str, np.ndarray]:
        if self.pack:
            batch = self.stream.packed(step, rows, length=self.length, pad_to_multiple_of=self.multiple)
            return {k: batch[k] for k in PACKED_INPUTS}
        batch = self.stream.batch(step, rows, pad_to_multiple_of=self.multiple, length=self.length, marks=False)
        return {k: batch[k] for k in MODEL_INPUTS}

    def _build(self, step: int) -> StepBatch:
        micro = [{k: torch.from_numpy(v) for k, v in self._micro(step, rows).items()} for rows in self.rows]
        n_tokens = self.stream.num_label_tokens(step)
        count = torch.tensor(float(n_tokens))  # a tensor: no recompiles as it varies
        if self.pin:
            micro = [{k: t.pin_memory() for k, t in m.items()} for m in micro]
            count = count.pin_memory()
        return StepBatch(n_tokens, count, micro, self.stream.draw(step)[0])

    def get(self, step: int) -> StepBatch:
        """The data of `step`, on the device (copies queued without waiting)."""
        if self.pool is None:
            batch = self._build(step)
        else:
            future = self.pending.pop(step, None) or self.pool.submit(self._build, step)
            for ahead in range(step + 1, step + 1 + self.depth):
                if ahead not in self.pending:
                    self.pending[ahead] = self.pool.submit(self._build, ahead)
            batch = future.result()
        if step == self.counted_steps:
            self.counts = self.counts + np.bincount(batch.who, minlength=len(self.counts))
            self.last[batch.who] = step + 1
            self.counted_steps += 1
        batch.count = batch.count.to(self.device, non_blocking=True)
        batch.micro = [{k: t.to(self.device, non_blocking=True) for k, t in m.items()} for m in batch.micro]
        return batch

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def row_length(stream: BiographyStream, batching: Batching, steps: int, rank: int, world_size: int,
               n_micro: int) -> int | None:
    """The fixed length of every row of the run's first `steps` steps (None: each batch its own): the
    longest biography the corpus can draw, or packed, the run's largest micro-batch; rounded up to the
    batching's multiple."""
    multiple = batching.pad_to_multiple_of
    if not batching.fixed_length:
        return None
    if batching.packing:
        return packed_length(stream, steps, rank, world_size, n_micro, multiple)
    return -(-stream.max_length // multiple) * multiple


def packed_length(stream: BiographyStream, steps: int, rank: int, world_size: int, n_micro: int,
                  multiple: int) -> int:
    """The row length that holds any micro-batch of the first `steps` steps end to end, rounded up to
    `multiple`: one shape for the whole run."""
    rows = [shard_rows(stream.batch_size, rank, world_size, m, n_micro) for m in range(n_micro)]
    longest = max(int(stream.lengths(step)[r].sum()) for step in range(steps) for r in rows)
    return -(-longest // multiple) * multiple
