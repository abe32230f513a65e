"""The rows of a corpus's splits as Arrow tables, built a chunk of individuals at a time, and the size a whole
split's table takes in memory (`Table.nbytes`, by which `datasets` shards it), counted without building it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .population import Individuals
from .resources import ATTRIBUTES, Pools
from .tokens import TemplateTokens

OFFSET_BYTES = 4  # an int32 offset per row of a string or list column (pyarrow counts one per row, not the last)


def _nested(array: np.ndarray) -> pa.Array:
    """A numpy array [n, a, b, ...] as nested fixed-size Arrow lists."""
    out = pa.array(array.ravel())
    for size in reversed(array.shape[1:]):
        out = pa.FixedSizeListArray.from_arrays(out, size)
    return out


def _strings(values) -> pa.Array:
    return pa.array(values, type=pa.string())  # typed, so that an empty chunk has the same schema


def individuals_table(people: Individuals, pools: Pools, offset: int) -> pa.Table:
    """One row per individual (`id` counts from `offset`): names, values and template indices."""
    first = np.array(pools.first_names, dtype=object)
    last = np.array(pools.last_names, dtype=object)
    parts = [first[people.names[:, 0]], first[people.names[:, 1]], last[people.names[:, 2]]]
    columns = {
        "id": pa.array(np.arange(offset, offset + len(people))),
        "name": _strings([f"{a} {b} {c}" for a, b, c in zip(*parts)]),
        "first_name": _strings(parts[0]),
        "middle_name": _strings(parts[1]),
        "last_name": _strings(parts[2]),
    }
    for attribute in ATTRIBUTES:
        slot_strings = [np.array(slot, dtype=object)[people.values[attribute][:, k]]
                        for k, slot in enumerate(pools.slots[attribute])]
        columns[attribute] = _strings([" ".join(v) for v in zip(*slot_strings)])
    columns["train_templates"] = _nested(people.train_templates.astype(np.int8))
    columns["eval_templates"] = _nested(people.eval_templates.astype(np.int8))
    return pa.table(columns)


def queries_table(people: Individuals, individuals: pa.Table, templates: TemplateTokens, texts: dict[str, list[str]],
                  bos_id: int, offset: int) -> pa.Table:
    """One query per (individual, attribute, held-out template), ordered that way; each is ``<bos> sentence``
    with the value tokens at ``[value_start, value_end)``. `people` holds token ids, `individuals` the same
    individuals' rows (for the text), and `individual` counts from `offset`."""
    n, n_attr, n_eval = people.eval_templates.shape
    names = individuals["name"].to_pylist()
    values = {a: individuals[a].to_pylist() for a in ATTRIBUTES}
    template = people.eval_templates.astype(np.int64)
    attribute = np.broadcast_to(np.arange(n_attr)[None, :, None], template.shape)
    n_slots = np.array([people.values[a].shape[1] for a in ATTRIBUTES])
    prefix_len = np.array([[len(p) for p in row] for row in templates.prefix])
    middle_len = np.array([[len(m) for m in row] for row in templates.middle])
    lengths = (1 + templates.word_lengths()[attribute, template] + 3 + n_slots[attribute]).ravel()
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    value_start = (1 + prefix_len[attribute, template] + 3 + middle_len[attribute, template]).ravel()
    flat = np.empty(offsets[-1], dtype=np.int32)
    individual = np.broadcast_to(np.arange(n)[:, None, None], template.shape)
    for a, name in enumerate(ATTRIBUTES):
        for t in range(len(templates.prefix[a])):
            rows = np.flatnonzero((attribute == a) & (template == t))
            if not len(rows):
                continue
            who = individual.ravel()[rows]
            pieces = [np.full((len(rows), 1), bos_id), np.tile(templates.prefix[a][t], (len(rows), 1)),
                      people.names[who], np.tile(templates.middle[a][t], (len(rows), 1)), people.values[name][who],
                      np.tile(templates.suffix[a][t], (len(rows), 1))]
            ids = np.concatenate([p.reshape(len(rows), -1) for p in pieces], axis=1)
            flat[offsets[rows][:, None] + np.arange(ids.shape[1])] = ids
    text = [texts[ATTRIBUTES[a]][t].format(name=names[i], value=values[ATTRIBUTES[a]][i])
            for i, a, t in zip(individual.ravel(), attribute.ravel(), template.ravel())]
    return pa.table({
        "individual": pa.array(offset + individual.ravel()),
        "attribute": _strings(np.array(ATTRIBUTES, dtype=object)[attribute.ravel()]),
        "template": pa.array(template.ravel().astype(np.int8)),
        "text": _strings(text),
        "input_ids": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat)),
        "value_start": pa.array(value_start.astype(np.int32)),
        "value_end": pa.array((value_start + n_slots[attribute].ravel()).astype(np.int32)),
    })


def _utf8(words: list[str]) -> np.ndarray:
    return np.array([len(w.encode()) for w in words], dtype=np.int64)


def _text_bytes(people: Individuals, pools: Pools) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """UTF-8 bytes of each individual's full name, and of its value of each attribute."""
    first, last = _utf8(pools.first_names), _utf8(pools.last_names)
    name = first[people.names[:, 0]] + first[people.names[:, 1]] + last[people.names[:, 2]] + 2
    value = {a: sum(_utf8(slot)[people.values[a][:, k]] for k, slot in enumerate(pools.slots[a]))
            + len(pools.slots[a]) - 1 for a in ATTRIBUTES}
    return name, value


def individuals_nbytes(people: Individuals, pools: Pools) -> int:
    """`individuals_table(people, ...).nbytes`: 8 bytes per id; per string column an offset per row and its
    UTF-8 bytes; one byte per template index."""
    n = len(people)
    name, value = _text_bytes(people, pools)
    strings = 2 * int(name.sum()) - 2 * n + sum(int(v.sum()) for v in value.values())  # name, its parts, values
    templates = sum(int(np.prod(t.shape)) for t in (people.train_templates, people.eval_templates))
    return 8 * n + (4 + len(ATTRIBUTES)) * OFFSET_BYTES * n + strings + templates


def queries_nbytes(people: Individuals, pools: Pools, templates: TemplateTokens) -> int:
    """`queries_table(...).nbytes` for the queries of `people` (pool indices): per query 8 bytes of individual,
    1 of template and 8 of value bounds; offsets of the attribute, text and input_ids columns; the attribute's
    and the text's UTF-8 bytes, and 4 bytes per token."""
    n, n_attr, n_eval = people.eval_templates.shape
    rows = n * n_attr * n_eval
    name, value = _text_bytes(people, pools)
    words = templates.word_lengths()
    variable = 0
    for a, attribute in enumerate(ATTRIBUTES):
        template = people.eval_templates[:, a].astype(np.int64)
        bare = _utf8([text.format(name="", value="") for text in pools.templates[attribute]])
        tokens = 1 + words[a] + 3 + len(pools.slots[attribute])
        variable += n * n_eval * len(attribute.encode()) + int(bare[template].sum())
        variable += n_eval * int((name + value[attribute]).sum()) + 4 * int(tokens[template].sum())
    return 17 * rows + 3 * OFFSET_BYTES * rows + variable
