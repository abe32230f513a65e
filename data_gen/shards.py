"""One split written as `Dataset.save_to_disk` writes it (the same files, byte for byte) from tables that arrive
a chunk of rows at a time, so that memory holds one chunk whatever the split's size.

`save_to_disk` fixes a split's shards from its row count and its size in memory (`Table.nbytes`), then writes
each shard in batches counted from the shard's first row; a `SplitWriter` is told both numbers up front and
regroups the incoming rows along the same boundaries."""

from __future__ import annotations

from pathlib import Path

import datasets.config
import pyarrow as pa
from datasets import Dataset, Features
from datasets.arrow_writer import ArrowWriter, get_writer_batch_size_from_data_size
from datasets.utils.py_utils import convert_file_size_to_int

LOOKAHEAD = 64  # rows after a batch that its table still holds: the IPC writer pads a string column to 64 bytes


def shard_batches(n_rows: int, nbytes: int) -> list[list[int]]:
    """The rows of each batch of each shard, as `Dataset.save_to_disk` lays them out (contiguous shards, the
    first `n_rows % shards` one row longer). An empty split keeps one empty shard, so that it loads."""
    shards = max(1, min(n_rows, int(nbytes / convert_file_size_to_int(datasets.config.MAX_SHARD_SIZE)) + 1))
    batch = datasets.config.DEFAULT_MAX_BATCH_SIZE
    if nbytes > 0:
        batch = min(batch, get_writer_batch_size_from_data_size(n_rows, nbytes))
    div, mod = divmod(n_rows, shards)
    return [[batch] * (rows // batch) + ([rows % batch] if rows % batch else [])
            for rows in (div + (1 if index < mod else 0) for index in range(shards))]


class SplitWriter:
    """Writes the `n_rows` rows of a split whose table would take `nbytes` in memory into `folder`."""

    def __init__(self, folder: Path, n_rows: int, nbytes: int, fingerprint: str):
        self.folder, self.n_rows, self.fingerprint = folder, n_rows, fingerprint
        self.shards = shard_batches(n_rows, nbytes)
        self.pending: pa.Table | None = None
        self.written = 0
        self.features: Features | None = None
        self.index = -1  # the shard being written
        self.writer: ArrowWriter | None = None
        self.batches: list[int] = []

    def write(self, table: pa.Table) -> None:
        """Append the next rows of the split."""
        if self.features is None:
            self._start(table)
        self.pending = table if self.pending is None else pa.concat_tables([self.pending, table])
        while self.batches or self.index + 1 < len(self.shards):
            if not self.batches:
                self._next_shard()
                continue
            size = self.batches[0]
            if len(self.pending) < size + LOOKAHEAD and self.written + len(self.pending) < self.n_rows:
                return
            self.writer.write_table(self._head(size))
            self.pending = self.pending.slice(size)
            self.written += size
            self.batches.pop(0)
        if len(self.pending):
            raise ValueError(f"split '{self.folder.name}' was given more than its {self.n_rows:,} rows")

    def _head(self, size: int) -> pa.Table:
        """The next `size` rows, as a slice of one contiguous table that holds the rows after them too: the
        IPC writer pads a sliced column with the bytes that follow it, as in the whole split's table."""
        head = self.pending.slice(0, size + LOOKAHEAD)
        if any(column.num_chunks > 1 for column in head.columns):
            head = head.combine_chunks()
        return head.slice(0, size)

    def close(self) -> None:
        """Finish the last shard; every row must have been written."""
        if self.written != self.n_rows or self.features is None:
            raise ValueError(f"split '{self.folder.name}' got {self.written:,} of its {self.n_rows:,} rows")
        self._next_shard()

    def _start(self, table: pa.Table) -> None:
        """The split's index files (state.json, dataset_info.json), from `datasets` itself: it saves the first
        rows in as many shards, which the full shards then replace."""
        head = Dataset(table.slice(0, len(self.shards)), fingerprint=self.fingerprint)
        head.save_to_disk(str(self.folder), num_shards=len(self.shards))
        self.features = head.features

    def _next_shard(self) -> None:
        if self.writer is not None:
            self.writer.finalize()
            self.writer.close()
            self.writer = None
        self.index += 1
        if self.index < len(self.shards):
            path = self.folder / f"data-{self.index:05d}-of-{len(self.shards):05d}.arrow"
            self.writer = ArrowWriter(features=self.features, path=str(path), embed_local_files=True)
            self.batches = list(self.shards[self.index])
