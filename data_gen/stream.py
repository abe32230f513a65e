"""Training biographies drawn on the fly, as a pure function of (seed, step, rows).

Every step draws a global batch: which individuals, the order of their six sentences
and a training template for each sentence. A process takes its own rows of that
global batch, so the biographies seen do not depend on the number of processes, and
any step can be replayed (or resumed) from the seed alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .population import Individuals
from .resources import ATTRIBUTES
from .samplers import Uniform
from .tokens import TemplateTokens

IGNORE_INDEX = -100


def shard_rows(batch_size: int, rank: int, world_size: int, micro: int = 0, n_micro: int = 1) -> slice:
    """Rows of a global batch that one process feeds in one of its micro-batches."""
    if batch_size % (world_size * n_micro):
        raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes x {n_micro} "
                         f"micro-batches")
    size = batch_size // (world_size * n_micro)
    start = (rank * n_micro + micro) * size
    return slice(start, start + size)


NO_TOKEN = -10_000  # beyond a sentence's end in the sentence table

@dataclass
class BiographyStream:
    """Biographies of `people`: six sentences in random order (with `shuffle_sentences`; else always in the
    order of ATTRIBUTES), a random training template each.

    Batches are assembled with array operations, no loop over rows: each (attribute, template) sentence is
    a row of a table holding its template words' ids and, as negative codes, placeholders for the name and
    value tokens; code -1 - k reads column k of an individual's `fill` row (3 name tokens, then each
    attribute's value tokens)."""

    people: Individuals
    templates: TemplateTokens
    bos_id: int
    eos_id: int
    pad_id: int
    batch_size: int
    seed: int = 0
    sampler: object = None  # which individuals each step draws (data_gen.samplers); None: uniform
    shuffle_sentences: bool = True
    _sentences: np.ndarray = field(init=False, repr=False)  # [attributes, templates, longest sentence]
    _lengths: np.ndarray = field(init=False, repr=False)  # [attributes, templates]
    _fill: np.ndarray = field(init=False, repr=False)  # [people, 3 + value tokens of every attribute]
    _fill_attribute: np.ndarray = field(init=False, repr=False)  # attribute of each fill column (-1: name)
    _last_draw: tuple = field(init=False, repr=False, default=(None, None))

    def __post_init__(self):
        if self.sampler is None:
            self.sampler = Uniform(len(self.people))
        values = [self.people.values[a] for a in ATTRIBUTES]
        self._fill = np.concatenate([self.people.names, *values], axis=1).astype(np.int64)
        self._fill_attribute = np.concatenate([np.full(3, -1)] + [np.full(v.shape[1], a) for a, v in enumerate(values)])
        first_value = 3 + np.concatenate([[0], np.cumsum([v.shape[1] for v in values])])
        rows = [[p + [-1, -2, -3] + m + [-1 - k for k in range(first_value[a], first_value[a + 1])] + x
                 for p, m, x in zip(self.templates.prefix[a], self.templates.middle[a], self.templates.suffix[a])]
                for a in range(len(ATTRIBUTES))]
        self._lengths = np.array([[len(row) for row in per_attribute] for per_attribute in rows])
        self._sentences = np.full((*self._lengths.shape, self._lengths.max()), NO_TOKEN, dtype=np.int64)
        for a, per_attribute in enumerate(rows):
            for t, row in enumerate(per_attribute):
                self._sentences[a, t, : len(row)] = row

    @property
    def max_length(self) -> int:
        """The longest biography any step can draw: <bos>, each attribute's longest sentence, <eos>."""
        return int(self._lengths.max(axis=1).sum()) + 2

    def draw(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The global batch of `step`: individuals [B], sentence order [B, 6], template per attribute [B, 6]
        (the last one is kept: every micro-batch of a step reads it)."""
        last_step, last = self._last_draw
        if last_step == step:
            return last
        rng = np.random.default_rng([self.seed, step])
        n_attr = len(ATTRIBUTES)
        who = self.sampler.draw(rng, step, self.batch_size)
        order = np.argsort(rng.random((self.batch_size, n_attr)), axis=1)
        if not self.shuffle_sentences:  # drawn all the same: both orders draw the same people and templates
            order = np.broadcast_to(np.arange(n_attr), order.shape)
        choice = rng.integers(0, self.people.train_templates.shape[-1], size=(self.batch_size, n_attr))
        template = self.people.train_templates[who[:, None], np.arange(n_attr)[None, :], choice].astype(np.int64)
        self._last_draw = (step, (who, order, template))
        return who, order, template

    def exposures(self, stop: int, start: int = 0) -> np.ndarray:
        """How many times each individual is drawn in steps [start, stop)."""
        return self.history(stop, start)[0]

    def history(self, stop: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """How many times each individual is drawn in steps [start, stop), and the step after which it last was
        (step s's batch is trained on by step s + 1; 0 for one not drawn there)."""
        counts = np.zeros(len(self.people), dtype=np.int64)
        last = np.zeros(len(self.people), dtype=np.int64)
        for step in range(start, stop):
            who = self.draw(step)[0]
            counts += np.bincount(who, minlength=len(self.people))
            last[who] = step + 1
        return counts, last

    def lengths(self, step: int, rows: slice = slice(None)) -> np.ndarray:
        """Tokens of each biography of the global batch of `step` (its `rows`), <bos> and <eos> included."""
        _, _, template = (x[rows] for x in self.draw(step))
        return self._lengths[np.arange(len(ATTRIBUTES))[None, :], template].sum(axis=1) + 2

    def num_label_tokens(self, step: int) -> int:
        """Tokens predicted in the whole global batch of `step` (each biography predicts all but <bos>)."""
        return int(self.lengths(step).sum()) - self.batch_size

    def batch(self, step: int, rows: slice = slice(None), pad_to_multiple_of: int = 1, length: int | None = None,
              marks: bool = True) -> dict[str, np.ndarray]:
        """Rows of the global batch of `step`, padded to `length` (default: their longest biography, rounded
        up to a multiple of `pad_to_multiple_of`, which keeps the number of shapes a compiler sees small).

        Returns input_ids, attention_mask and labels (-100 on padding), and with `marks` value_attribute
        (the attribute index on each value token), name_part (0, 1, 2 on the first, middle and last name
        tokens) and sentence (the sentence index of each token), all [b, T], -1 elsewhere.
        """
        who, order, template = (x[rows] for x in self.draw(step))
        b, fill_width = len(who), self._fill.shape[1]
        chosen = np.take_along_axis(template, order, axis=1)  # the template of each sentence, in biography order
        sentence_lengths = self._lengths[order, chosen]  # [b, 6]
        ends = np.cumsum(sentence_lengths, axis=1) + 1  # where each sentence ends, after <bos>
        lengths = ends[:, -1] + 1
        width = length or -(-int(lengths.max()) // pad_to_multiple_of) * pad_to_multiple_of
        position = np.arange(width)[None, :]
        attention_mask = (position < lengths[:, None]).astype(np.int64)
        inside = (position >= 1) & (position < lengths[:, None] - 1)  # the sentences' tokens
        boundary = np.zeros((b, width), dtype=np.int64)
        boundary[np.arange(b)[:, None], ends[:, :-1]] = 1
        sentence = np.cumsum(boundary, axis=1)  # [b, T]: the sentence each position is in
        # position p of sentence s reads its table row at p - (the sentence's start); outside, any index (clipped)
        row_start = (order * self._lengths.shape[1] + chosen) * self._sentences.shape[-1] - ends + sentence_lengths
        code = self._sentences.take(np.take_along_axis(row_start, sentence, axis=1) + position, mode="clip")
        placeholder = code < 0
        column = -1 - code
        filled = self._fill.take(who[:, None] * fill_width + column, mode="clip")
        input_ids = np.where(inside, np.where(placeholder, filled, code), self.pad_id)
        input_ids[:, 0] = self.bos_id
        input_ids[np.arange(b), lengths - 1] = self.eos_id
        out = {"input_ids": input_ids, "attention_mask": attention_mask,
               "labels": np.where(attention_mask == 1, input_ids, IGNORE_INDEX)}
        if marks:
            attribute = np.where(inside & placeholder, self._fill_attribute.take(column, mode="clip"), -2)
            out["value_attribute"] = np.where(attribute >= 0, attribute, -1)
            out["name_part"] = np.where(attribute == -1, column, -1)
            out["sentence"] = np.where(inside, sentence, -1)
        return out

    def packed(self, step: int, rows: slice = slice(None), length: int | None = None,
               pad_to_multiple_of: int = 1) -> dict[str, np.ndarray]:
        """The biographies of `batch(step, rows)`, in order, end to end in one row of `length` tokens (default:
        theirs, rounded up to a multiple of `pad_to_multiple_of`): no padding between them.

        Returns [1, length] arrays: input_ids; labels (-100 on each <bos>, which nothing predicts, as in a
        row of its own, and on the padding at the end); position_ids, from 0 in each biography; document_ids,
        the biography's index (-1 on padding), for attention that stays within a biography.
        """
        unpacked = self.batch(step, rows, marks=False)
        real = unpacked["attention_mask"] == 1
        lengths = real.sum(axis=1)
        total = int(lengths.sum())
        width = length or -(-total // pad_to_multiple_of) * pad_to_multiple_of
        if width < total:
            raise ValueError(f"the biographies of step {step} take {total} tokens, more than the row's {width}")
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        document = np.repeat(np.arange(len(lengths)), lengths)
        input_ids = np.full(width, self.pad_id, dtype=np.int64)
        input_ids[:total] = unpacked["input_ids"][real]
        labels = np.full(width, IGNORE_INDEX, dtype=np.int64)
        labels[:total] = np.where(np.arange(total) == starts, IGNORE_INDEX, input_ids[:total])
        position_ids = np.zeros(width, dtype=np.int64)
        position_ids[:total] = np.arange(total) - starts
        document_ids = np.full(width, -1, dtype=np.int64)
        document_ids[:total] = document
        return {"input_ids": input_ids[None], "labels": labels[None], "position_ids": position_ids[None],
                "document_ids": document_ids[None]}
