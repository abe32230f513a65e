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


@dataclass
class BiographyStream:
    """Biographies of `people`: six sentences in random order, a random training template each."""

    people: Individuals
    templates: TemplateTokens
    bos_id: int
    eos_id: int
    pad_id: int
    batch_size: int
    seed: int = 0
    sampler: object = None  # which individuals each step draws (data_gen.samplers); None: uniform
    _tables: tuple = field(init=False, repr=False)
    _last_draw: tuple = field(init=False, repr=False, default=(None, None))

    def __post_init__(self):
        if self.sampler is None:
            self.sampler = Uniform(len(self.people))
        values = [self.people.values[a].tolist() for a in ATTRIBUTES]
        slots = [self.people.values[a].shape[1] for a in ATTRIBUTES]
        prefix, middle, suffix = self.templates.prefix, self.templates.middle, self.templates.suffix
        # per attribute and template: a sentence's value marks, name marks and length, whoever it is about
        marks = [[([-1] * (len(p) + 3 + len(m)) + [a] * slots[a] + [-1] * len(s),
                   [-1] * len(p) + [0, 1, 2] + [-1] * (len(m) + slots[a] + len(s)),
                   len(p) + 3 + len(m) + slots[a] + len(s))
                  for p, m, s in zip(prefix[a], middle[a], suffix[a])] for a in range(len(ATTRIBUTES))]
        lengths = self.templates.word_lengths() + 3 + np.array(slots)[:, None]
        self._tables = (self.people.names.tolist(), values, lengths, marks)

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
        choice = rng.integers(0, self.people.train_templates.shape[-1], size=(self.batch_size, n_attr))
        template = self.people.train_templates[who[:, None], np.arange(n_attr)[None, :], choice].astype(np.int64)
        self._last_draw = (step, (who, order, template))
        return who, order, template

    def exposures(self, stop: int, start: int = 0) -> np.ndarray:
        """How many times each individual is drawn in steps [start, stop)."""
        counts = np.zeros(len(self.people), dtype=np.int64)
        for step in range(start, stop):
            counts += np.bincount(self.draw(step)[0], minlength=len(self.people))
        return counts

    def num_label_tokens(self, step: int) -> int:
        """Tokens predicted in the whole global batch of `step` (each biography predicts all but <bos>)."""
        _, _, template = self.draw(step)
        sentence_lengths = self._tables[2][np.arange(len(ATTRIBUTES))[None, :], template]  # [B, 6]
        return int(sentence_lengths.sum() + self.batch_size)  # + <eos> per biography

    def batch(self, step: int, rows: slice = slice(None), pad_to_multiple_of: int = 1) -> dict[str, np.ndarray]:
        """Rows of the global batch of `step`, padded to their longest biography (rounded up to a
        multiple of `pad_to_multiple_of`, which keeps the number of shapes a compiler sees small).

        Returns input_ids, attention_mask, labels (-100 on padding), value_attribute (the
        attribute index on each value token), name_part (0, 1, 2 on the first, middle and last
        name tokens) and sentence (the sentence index of each token), all [b, T], -1 elsewhere.
        """
        who, order, template = (x[rows] for x in self.draw(step))
        names, values, _, marks = self._tables
        prefix, middle, suffix = self.templates.prefix, self.templates.middle, self.templates.suffix
        rows_out = []
        for i, sentence_order, chosen in zip(who.tolist(), order.tolist(), template.tolist()):
            ids, value_marks, name_marks, sentence_marks = [self.bos_id], [-1], [-1], [-1]
            for s, a in enumerate(sentence_order):
                t = chosen[a]
                ids += prefix[a][t] + names[i] + middle[a][t] + values[a][i] + suffix[a][t]
                sentence_value_marks, sentence_name_marks, length = marks[a][t]
                value_marks += sentence_value_marks
                name_marks += sentence_name_marks
                sentence_marks += [s] * length
            ids.append(self.eos_id)
            rows_out.append((ids, value_marks + [-1], name_marks + [-1], sentence_marks + [-1]))
        length = -(-max(len(r[0]) for r in rows_out) // pad_to_multiple_of) * pad_to_multiple_of
        arrays = [np.full((len(rows_out), length), fill, dtype=np.int64) for fill in (self.pad_id, -1, -1, -1)]
        for r, row in enumerate(rows_out):
            for array, marks in zip(arrays, row):
                array[r, : len(marks)] = marks
        input_ids, value_attribute, name_part, sentence = arrays
        lengths = np.array([len(r[0]) for r in rows_out])
        attention_mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
        labels = np.where(attention_mask == 1, input_ids, IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                "value_attribute": value_attribute, "name_part": name_part, "sentence": sentence}
