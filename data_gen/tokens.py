"""Token-id tables from which sentences are assembled without running the tokenizer.

A sentence is ``prefix + name + middle + value + suffix``: the template's own words
are tokenized once, and names and values are single tokens, so assembling ids gives
exactly what the tokenizer gives on the rendered text (a test checks this).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from .columns import as_array, as_list
from .population import Individuals
from .resources import ATTRIBUTES

VALUE_SLOTS = {"birth_date": 3}  # tokens of a value: day, month and year; one for every other attribute


def value_tokens(attribute: str, value: str) -> list[str]:
    """The token strings of one attribute value ("14 March 1990" -> day, month, year)."""
    return value.split(" ") if attribute == "birth_date" else [value]


@dataclass
class TemplateTokens:
    """Per attribute and template: the ids before the name, between name and value, and after."""

    prefix: list[list[list[int]]]
    middle: list[list[list[int]]]
    suffix: list[list[list[int]]]

    @classmethod
    def from_texts(cls, templates: dict[str, list[str]], tokenizer: PreTrainedTokenizerBase) -> TemplateTokens:
        def ids(text: str) -> list[int]:
            return tokenizer(text, add_special_tokens=False)["input_ids"] if text.strip() else []

        parts = {"prefix": [], "middle": [], "suffix": []}
        for attribute in ATTRIBUTES:
            split = [t.replace("{value}", "{name}").split("{name}") for t in templates[attribute]]
            for key, index in (("prefix", 0), ("middle", 1), ("suffix", 2)):
                parts[key].append([ids(pieces[index]) for pieces in split])
        return cls(**parts)

    def word_lengths(self) -> np.ndarray:
        """[6, n_templates] number of template-word tokens of each template."""
        return np.array([[len(p) + len(m) + len(s) for p, m, s in zip(*parts)]
                         for parts in zip(self.prefix, self.middle, self.suffix)])


def individual_tokens(individuals: Dataset, tokenizer: PreTrainedTokenizerBase) -> Individuals:
    """One split's individuals with names and values as token ids."""
    vocab = tokenizer.get_vocab()
    names = np.array([[vocab[s] for s in as_list(individuals, c)] for c in ("first_name", "middle_name", "last_name")],
                     dtype=np.int64).T
    values = {a: np.array([[vocab[t] for t in value_tokens(a, v)] for v in as_list(individuals, a)],
                          dtype=np.int64).reshape(len(individuals), VALUE_SLOTS.get(a, 1)) for a in ATTRIBUTES}
    return Individuals(names, values, as_array(individuals, "train_templates"), as_array(individuals, "eval_templates"))
