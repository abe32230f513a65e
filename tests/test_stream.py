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


_LANDED_TABLES: dict[int, tuple] = {}


def _landed_batch(stream, step: int, rows=slice(None), pad_to_multiple_of: int = 1) -> dict[str, np.ndarray]:
    """The stream's batch as the per-row Python loop of the landed tree assembled it (the oracle of the
    vectorised stream)."""
    who, order, template = (x[rows] for x in stream.draw(step))
    prefix, middle, suffix = stream.templates.prefix, stream.templates.middle, stream.templates.suffix
    if id(stream) not in _LANDED_TABLES:  # built once per stream, as the landed stream did
        _LANDED_TABLES[id(stream)] = (stream.people.names.tolist(), [stream.people.values[a].tolist()
                                                                     for a in ATTRIBUTES])
    names, values = _LANDED_TABLES[id(stream)]
    rows_out = []
    for i, sentence_order, chosen in zip(who.tolist(), order.tolist(), template.tolist()):
        ids, value_marks, name_marks, sentence_marks = [stream.bos_id], [-1], [-1], [-1]
        for s, a in enumerate(sentence_order):
            p, m, x = prefix[a][chosen[a]], middle[a][chosen[a]], suffix[a][chosen[a]]
            ids += p + names[i] + m + values[a][i] + x
            value_marks += [-1] * (len(p) + 3 + len(m)) + [a] * len(values[a][i]) + [-1] * len(x)
            name_marks += [-1] * len(p) + [0, 1, 2] + [-1] * (len(m) + len(values[a][i]) + len(x))
            sentence_marks += [s] * (len(p) + 3 + len(m) + len(values[a][i]) + len(x))
        ids.append(stream.eos_id)
        rows_out.append((ids, value_marks + [-1], name_marks + [-1], sentence_marks + [-1]))
    length = -(-max(len(r[0]) for r in rows_out) // pad_to_multiple_of) * pad_to_multiple_of
    arrays = [np.full((len(rows_out), length), fill, dtype=np.int64) for fill in (stream.pad_id, -1, -1, -1)]
    for r, row in enumerate(rows_out):
        for array, marks in zip(arrays, row):
            array[r, : len(marks)] = marks
    input_ids, value_attribute, name_part, sentence = arrays
    lengths = np.array([len(r[0]) for r in rows_out])
    attention_mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "labels": np.where(attention_mask == 1, input_ids, IGNORE_INDEX), "value_attribute": value_attribute,
            "name_part": name_part, "sentence": sentence}


@pytest.mark.parametrize("seed, batch_size", [(0, 16), (5, 12), (11, 128)])
def test_the_vectorised_stream_equals_the_landed_loop(corpus, seed, batch_size):
    from data_gen.samplers import SamplerConfig

    sampler = SamplerConfig(sampler="power_law", alpha=1.0).build(len(corpus.split("train")), batch_size, 100)
    for stream in (corpus.stream(batch_size, seed), corpus.stream(batch_size, seed, sampler=sampler)):
        for step in (0, 1, 7, 123):
            for rows, multiple in ((slice(None), 1), (slice(2, 6), 8), (shard_rows(batch_size, 1, 2), 1)):
                expected, actual = _landed_batch(stream, step, rows, multiple), stream.batch(step, rows, multiple)
                assert list(actual) == list(expected)
                for key in expected:
                    np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
            unmarked = stream.batch(step, length=stream.max_length, marks=False)
            assert set(unmarked) == {"input_ids", "attention_mask", "labels"}
            assert unmarked["input_ids"].shape[1] == stream.max_length
            full = stream.batch(step)
            np.testing.assert_array_equal(unmarked["input_ids"][:, : full["input_ids"].shape[1]], full["input_ids"])
            assert (unmarked["labels"][:, full["input_ids"].shape[1]:] == IGNORE_INDEX).all()


def test_packed_rows_hold_the_same_biographies_end_to_end(corpus):
    stream = corpus.stream(12, seed=4)
    for step, rows in ((0, slice(None)), (9, slice(6, 12))):
        unpacked, packed = stream.batch(step, rows, marks=False), stream.packed(step, rows, pad_to_multiple_of=64)
        real = unpacked["attention_mask"] == 1
        lengths, total = real.sum(axis=1), int(real.sum())
        assert packed["input_ids"].shape == (1, -(-total // 64) * 64)
        ids, labels = packed["input_ids"][0], packed["labels"][0]
        assert (ids[:total] == unpacked["input_ids"][real]).all() and (ids[total:] == stream.pad_id).all()
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        assert (ids[starts] == stream.bos_id).all() and (labels[starts] == IGNORE_INDEX).all()
        # every other token is predicted, as in the unpacked rows, whose <bos> the loss's shift drops
        assert (labels != IGNORE_INDEX).sum() == (unpacked["labels"][:, 1:] != IGNORE_INDEX).sum()
        for k, (start, length) in enumerate(zip(starts, lengths)):
            assert (packed["position_ids"][0, start: start + length] == np.arange(length)).all()
            assert (packed["document_ids"][0, start: start + length] == k).all()
        assert (packed["document_ids"][0, total:] == -1).all()
    assert stream.packed(0, length=2000)["input_ids"].shape == (1, 2000)
    with pytest.raises(ValueError, match="more than the row's 100"):
        stream.packed(0, length=100)


def test_lengths_count_each_biography(corpus):
    stream = corpus.stream(10, seed=2)
    for step in (0, 3):
        assert (stream.lengths(step) == stream.batch(step)["attention_mask"].sum(axis=1)).all()
        assert stream.num_label_tokens(step) == int(stream.lengths(step).sum()) - 10


def test_fixed_sentence_order_keeps_the_people_and_templates_and_one_order(corpus):
    """shuffle_sentences false (claim C4): every biography's six sentences in ATTRIBUTES' order; the same
    individuals and templates as the shuffled stream of the same seed, so the two differ only in order."""
    shuffled, fixed = corpus.stream(16, seed=4), corpus.stream(16, seed=4, shuffle_sentences=False)
    for step in (0, 7):
        who, order, template = shuffled.draw(step)
        fixed_who, fixed_order, fixed_template = fixed.draw(step)
        assert (who == fixed_who).all() and (template == fixed_template).all()
        assert (fixed_order == np.arange(len(ATTRIBUTES))).all() and not (order == fixed_order).all()
        batch = fixed.batch(step)
        for r in range(16):  # the values appear in ATTRIBUTES' order in the tokens themselves
            marks = batch["value_attribute"][r]
            firsts = [np.flatnonzero(marks == a)[0] for a in range(len(ATTRIBUTES))]
            assert firsts == sorted(firsts)
        assert (fixed.lengths(step) == shuffled.lengths(step)).all()
