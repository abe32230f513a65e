"""Fast whole-column reads from a `datasets.Dataset` (through Arrow, not row by row)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from datasets import Dataset


def as_list(dataset: Dataset, name: str) -> list:
    return dataset.with_format("arrow")[name].to_pylist()


def as_array(dataset: Dataset, name: str) -> np.ndarray:
    """A numeric column, nested fixed-size lists included, as an array [n, ...]."""
    array = dataset.with_format("arrow")[name].combine_chunks()
    shape = [len(array)]
    while pa.types.is_fixed_size_list(array.type):
        shape.append(array.type.list_size)
        array = array.flatten()
    return array.to_numpy(zero_copy_only=False).reshape(shape)
