"""Batches of the biography stream prepared ahead in a background thread, so the accelerator
never waits for data generation."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import torch

from data_gen.stream import BiographyStream, shard_rows

MODEL_INPUTS = ("input_ids", "attention_mask", "labels")


class StreamLoader:
    """This process's micro-batches of each step, as tensors on `device`, built `depth` steps ahead."""

    def __init__(self, stream: BiographyStream, rank: int, world_size: int, n_micro: int, device: torch.device,
                 depth: int = 2, pad_to_multiple_of: int = 1):
        self.stream, self.device, self.depth, self.multiple = stream, device, depth, pad_to_multiple_of
        self.rows = [shard_rows(stream.batch_size, rank, world_size, m, n_micro) for m in range(n_micro)]
        self.pin = device.type == "cuda"
        self.pool = ThreadPoolExecutor(max_workers=1) if depth else None
        self.pending: dict[int, Future] = {}

    def _build(self, step: int) -> tuple[int, list[dict[str, torch.Tensor]]]:
        micro = []
        for rows in self.rows:
            batch = self.stream.batch(step, rows, pad_to_multiple_of=self.multiple)
            tensors = {k: torch.from_numpy(batch[k]) for k in MODEL_INPUTS}
            micro.append({k: t.pin_memory() if self.pin else t for k, t in tensors.items()})
        return self.stream.num_label_tokens(step), micro

    def get(self, step: int) -> tuple[int, list[dict[str, torch.Tensor]]]:
        """Tokens predicted in the global batch of `step`, and this process's micro-batches on the device."""
        if self.pool is None:
            n_tokens, micro = self._build(step)
        else:
            future = self.pending.pop(step, None) or self.pool.submit(self._build, step)
            for ahead in range(step + 1, step + 1 + self.depth):
                if ahead not in self.pending:
                    self.pending[ahead] = self.pool.submit(self._build, ahead)
            n_tokens, micro = future.result()
        return n_tokens, [{k: t.to(self.device, non_blocking=True) for k, t in m.items()} for m in micro]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
