"""The biography stream: replayable, shardable, six named sentences, value tokens marked."""

from __future__ import annotations

import numpy as np
import pytest

from data_gen import ATTRIBUTES
from data_gen.stream import IGNORE_INDEX, shard_rows
from data_gen.tokens import value_tokens


def test_same_seed_and_step_replays_exactly(corpus):
    a, b = corpus.stream(16, seed=1), corpus.stream(16, seed=1)
    for step in (0, 7, 1234):
        first, second = a.batch(step), b.batch(step)
        assert all((first[k] == second[k]).all() for k in first)
    assert not np.array_equal(a.batch(0)["input_ids"], a.batch(1)["input_ids"])
    assert not np.array_equal(a.batch(0)["input_ids"], corpus.stream(16, seed=2).batch(0)["input_ids"])


def test_process_shards_reassemble_the_global_batch(corpus):
    stream = corpus.stream(12, seed=0)
    whole = stream.batch(5)
    for world, n_micro in ((1, 1), (2, 1), (3, 2), (2, 3)):
        parts = [stream.batch(5, shard_rows(12, r, world, m, n_micro)) for r in range(world) for m in range(n_micro)]
        for part, start in zip(parts, range(0, 12, 12 // (world * n_micro))):
            rows = whole["input_ids"][start: start + len(part["input_ids"])]
            width = part["input_ids"].shape[1]
            assert (rows[:, :width] == part["input_ids"]).all()
            assert (rows[:, width:] == corpus.tokenizer.pad_token_id).all()
    with pytest.raises(ValueError, match="not divisible"):
        shard_rows(12, 0, 5)


def test_biography_is_six_sentences_with_full_name_and_marked_values(corpus):
    stream = corpus.stream(8, seed=0)
    batch = stream.batch(3)
    who, order, template = stream.draw(3)
    people = corpus.dataset["train"]
    tokenizer = corpus.tokenizer
    for r in range(8):
        person = people[int(who[r])]
        length = int(batch["attention_mask"][r].sum())
        tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][r, :length])
        assert tokens[0] == "<bos>" and tokens[-1] == "<eos>"
        assert tokens.count(".") >= 6
        text = " ".join(tokens)
        assert text.count(f"{person['first_name']} {person['middle_name']} {person['last_name']}") >= 6
        marks = batch["value_attribute"][r, :length]
        seen_order = []
        for a in range(6):
            positions = np.flatnonzero(marks == a)
            assert [tokens[p] for p in positions] == value_tokens(ATTRIBUTES[a], person[ATTRIBUTES[a]])
            seen_order.append(positions[0])
        assert list(np.argsort(seen_order)) == list(order[r])  # sentences in the drawn order
        for a in range(6):  # every sentence uses one of the individual's training templates
            assert template[r, a] in person["train_templates"][a]
        names = batch["name_part"][r, :length]
        sentence = batch["sentence"][r, :length]
        for s in range(6):  # each sentence holds the three name tokens once, before its value
            in_sentence = np.flatnonzero(sentence == s)
            name_positions = in_sentence[names[in_sentence] >= 0]
            assert [tokens[p] for p in name_positions] == [person["first_name"], person["middle_name"],
                                                           person["last_name"]]
            assert list(names[name_positions]) == [0, 1, 2]
            assert name_positions.max() < in_sentence[marks[in_sentence] >= 0].min()
        assert sentence[0] == -1 and sentence[-1] == -1 and (sentence[1:-1] >= 0).all()
        assert (batch["labels"][r, length:] == IGNORE_INDEX).all()


def test_token_count_matches_labels(corpus):
    stream = corpus.stream(10, seed=0)
    for step in range(5):
        labels = stream.batch(step)["labels"]
        assert stream.num_label_tokens(step) == int((labels != IGNORE_INDEX).sum()) - 10  # <bos> predicts nothing
