"""Attention statistics on hand-built patterns, attention patching, and a patched run."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from data_gen import RecipeError
from pipeline.analysis.circuits import analysis_batch, attention_statistics, chance_statistics
from pipeline.analysis.phases import run_phases
from pipeline.analyze import main as analyze_main
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import RunFolder, series
from pipeline.train.patching import AttentionPatcher

from .conftest import tiny_flags


def test_attention_statistics_on_a_hand_built_pattern():
    # <bos> First Middle Last was in VALUE .   (one sentence; the value follows "in" at position 5)
    batch = {"name_part": torch.tensor([[-1, 0, 1, 2, -1, -1, -1, -1]]),
             "sentence": torch.tensor([[-1, 0, 0, 0, 0, 0, 0, 0]]),
             "value_attribute": torch.tensor([[-1, -1, -1, -1, -1, -1, 1, -1]]),
             "attention_mask": torch.ones(1, 8, dtype=torch.long)}
    pattern = torch.zeros(8, 8)
    for t in range(8):
        pattern[t, : t + 1] = 1.0 / (t + 1)  # uniform rows: normalised entropy 1
    pattern[3, :4] = torch.tensor([0.0, 0.3, 0.2, 0.5])  # last name: 0.5 on the other name tokens
    pattern[5, :6] = torch.tensor([0.25, 0.1, 0.1, 0.2, 0.2, 0.15])  # before the value: 0.4 names, 0.35 text
    stats = attention_statistics([pattern[None, None]], batch)
    assert stats["name_grouping"][0, 0] == pytest.approx(0.5)
    assert stats["extraction_name"][0, 0] == pytest.approx(0.4)
    assert stats["extraction_text"][0, 0] == pytest.approx(0.35)
    assert stats["extraction_ratio"][0, 0] == pytest.approx(0.4 / 0.75)

    def normalised_entropy(row, t):
        p = row[row > 0]
        return float(-(p * p.log()).sum() / math.log(t + 1))

    expected = np.mean([normalised_entropy(pattern[t, : t + 1], t) for t in range(1, 8)])
    assert stats["entropy"][0, 0] == pytest.approx(expected, rel=1e-5)


# Two biographies of two sentences, the second right-padded by two positions (as corpus batches are):
#   0: <bos> F M L lives in V0 | F M L is V1 .  <eos>
#   1: <bos> F M L at V2       | F M L in V3 <eos> <pad> <pad>
TWO_BIOGRAPHIES = {
    "name_part": torch.tensor([[-1, 0, 1, 2, -1, -1, -1, 0, 1, 2, -1, -1, -1, -1],
                               [-1, 0, 1, 2, -1, -1, 0, 1, 2, -1, -1, -1, -1, -1]]),
    "sentence": torch.tensor([[-1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, -1],
                              [-1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, -1, -1, -1]]),
    "value_attribute": torch.tensor([[-1, -1, -1, -1, -1, -1, 0, -1, -1, -1, -1, 1, -1, -1],
                                     [-1, -1, -1, -1, -1, 2, -1, -1, -1, -1, 3, -1, -1, -1]]),
    "attention_mask": torch.tensor([[1] * 14, [1] * 12 + [0] * 2])}
LENGTHS = (14, 12)


def _uniform_by_hand(lengths, width: int) -> torch.Tensor:
    """Uniform causal attention [b, 1, T, T] over each row's real positions; padded queries attend to all
    positions (garbage that no statistic may read)."""
    pattern = torch.full((len(lengths), 1, width, width), 1.0 / width)
    for row, length in enumerate(lengths):
        for t in range(length):
            pattern[row, 0, t] = torch.tensor([1.0 / (t + 1) if k <= t else 0.0 for k in range(width)])
    return pattern


def _hand_built_pattern() -> torch.Tensor:
    pattern = _uniform_by_hand(LENGTHS, 14)

    def put(row, t, masses):
        pattern[row, 0, t] = torch.tensor(masses + [0.0] * (14 - len(masses)))

    put(0, 3, [0.0, 0.3, 0.2, 0.5])  # last names: 0.5, 0.8, 0.2 and (uniform) 2/9 on their first and middle name
    put(0, 9, [0.0] * 7 + [0.4, 0.4, 0.2])
    put(1, 3, [0.1, 0.1, 0.1, 0.7])
    put(0, 5, [0.25, 0.1, 0.1, 0.2, 0.2, 0.15])  # before a value: names 0.4, text 0.35 ("lives in")
    put(0, 10, [0.0] * 9 + [0.9, 0.1])  # names 0.9, text 0.1
    put(1, 9, [1.0])  # all on <bos>: names 0, text 0; (1, 4) stays uniform: names 3/5, text 1/5
    return pattern


def _entropy_by_hand(pattern: torch.Tensor, lengths) -> float:
    """Mean over real queries seeing more than one position of entropy / log(positions seen)."""
    values = []
    for row, length in enumerate(lengths):
        for t in range(1, length):
            p = pattern[row, 0, t, : t + 1]
            p = p[p > 0]
            values.append(float(-(p * p.log()).sum()) / math.log(t + 1))
    return float(np.mean(values))


def _hand_built_statistics() -> dict[str, float]:
    name, text = (0.4 + 0.9 + 3 / 5 + 0) / 4, (0.35 + 0.1 + 1 / 5 + 0) / 4
    return {"name_grouping": (0.5 + 0.8 + 0.2 + 2 / 9) / 4, "extraction_name": name, "extraction_text": text,
            "extraction_ratio": name / (name + text), "entropy": _entropy_by_hand(_hand_built_pattern(), LENGTHS)}


def _chance_by_hand() -> dict[str, float]:
    """Uniform attention: the last names at positions 3 and 9 (row 0), 3 and 8 (row 1) see 4, 10, 4, 9 positions,
    two of them their own first and middle names; the positions before a value see 6, 11, 5, 10 positions, three
    of them names and 2, 1, 1, 1 other tokens of their sentence; every row's entropy is log t."""
    name, text = (3 / 6 + 3 / 11 + 3 / 5 + 3 / 10) / 4, (2 / 6 + 1 / 11 + 1 / 5 + 1 / 10) / 4
    return {"name_grouping": (2 / 4 + 2 / 10 + 2 / 4 + 2 / 9) / 4, "extraction_name": name, "extraction_text": text,
            "extraction_ratio": name / (name + text), "entropy": 1.0}


def _check(stats: dict, expected: dict[str, float]) -> None:
    assert set(stats) == set(expected)
    for key, value in expected.items():
        assert float(np.asarray(stats[key]).flat[0]) == pytest.approx(value, rel=1e-5), key


def test_attention_statistics_and_their_chance_on_two_padded_biographies():
    _check(attention_statistics([_hand_built_pattern()], TWO_BIOGRAPHIES), _hand_built_statistics())
    _check(attention_statistics([_uniform_by_hand(LENGTHS, 14)], TWO_BIOGRAPHIES), _chance_by_hand())
    _check(chance_statistics(TWO_BIOGRAPHIES), _chance_by_hand())


def _left_padded(tensor: torch.Tensor, fill: int) -> torch.Tensor:
    """Row 1 of a [2, T] batch tensor moved right by its two padding positions."""
    out = tensor.clone()
    out[1] = torch.cat([torch.full((2,), fill), tensor[1, :12]])
    return out


def test_left_padding_gives_the_same_statistics_and_chance():
    batch = {key: _left_padded(value, 0 if key == "attention_mask" else -1) for key, value in TWO_BIOGRAPHIES.items()}
    pattern = torch.full((2, 1, 14, 14), 1.0 / 14)  # padded queries: garbage
    pattern[0] = _hand_built_pattern()[0]
    pattern[1, 0, 2:] = torch.cat([torch.zeros(12, 2), _hand_built_pattern()[1, 0, :12, :12]], dim=1)
    _check(attention_statistics([pattern], batch), _hand_built_statistics())
    _check(chance_statistics(batch), _chance_by_hand())


def test_patching_replaces_the_pattern_and_blocks_its_gradient():
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4)
    torch.manual_seed(0)
    reference = LlamaForCausalLM(copy.deepcopy(config))
    reference.set_attn_implementation("eager")
    torch.manual_seed(1)
    model = LlamaForCausalLM(copy.deepcopy(config))
    inputs = torch.randint(0, 50, (3, 9))
    mask = torch.ones_like(inputs)
    mask[0, 7:] = 0
    expected = reference(input_ids=inputs, attention_mask=mask, output_attentions=True).attentions
    AttentionPatcher(reference).attach(model)
    out = model(input_ids=inputs, attention_mask=mask, labels=inputs, output_attentions=True)
    assert all(torch.allclose(a, b) for a, b in zip(out.attentions, expected, strict=True))
    out.loss.backward()
    for layer in model.model.layers:
        assert layer.self_attn.q_proj.weight.grad is None and layer.self_attn.k_proj.weight.grad is None
        assert layer.self_attn.v_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in reference.parameters())


def _flags(corpus_dir, output_dir, max_steps, *extra):
    return [*tiny_flags(corpus_dir, output_dir, learning_rate=3e-3, eval_points=0, eval_steps=50, checkpoint_points=2,
                        eval_individuals=50, max_steps=max_steps), *extra]


@pytest.fixture(scope="module")
def reference(corpus_dir, tmp_path_factory):
    """A tiny run that has learned its facts (knowledge emerges around step 500 of 1000)."""
    run = tmp_path_factory.mktemp("patching") / "reference"
    pretrain_main(_flags(corpus_dir, run, 1000))
    return run


@pytest.mark.slow
def test_every_attention_row_carries_the_chance_levels_of_its_biographies(reference, corpus):
    rows = [json.loads(line) for line in (reference / "attention.jsonl").read_text().splitlines()]
    chance = chance_statistics(analysis_batch(corpus, 512))  # the report's table: 512 biographies, as the paper
    assert list(rows[0])[3:5] == ["name_grouping", "name_grouping_chance"]
    assert all(row[f"{name}_chance"] == pytest.approx(value) for row in rows for name, value in chance.items())
    assert chance["entropy"] == pytest.approx(1.0) and 0 < chance["name_grouping"] < 0.3
    assert f"(chance {chance['name_grouping']:.3f})" in (reference / "report.md").read_text()


@pytest.mark.slow
def test_patching_with_a_converged_reference_skips_the_plateau(corpus_dir, reference, tmp_path):
    plain, patched = tmp_path / "plain", tmp_path / "patched"
    assert run_phases(RunFolder(reference).trajectory()).emergence is not None  # the reference has learned
    pretrain_main(_flags(corpus_dir, plain, 300))
    pretrain_main(_flags(corpus_dir, patched, 300, "--reference_run", str(reference),
                         "--reference_checkpoint", "1000"))
    plain_phases, patched_phases = (run_phases(RunFolder(plain).trajectory()),
                                    run_phases(RunFolder(patched).trajectory()))
    assert patched_phases.plateau_end < plain_phases.plateau_end
    accuracy = {run: dict(zip(*series(RunFolder(run).trajectory(), "seen", "attribute_accuracy")))
                for run in (plain, patched)}
    assert accuracy[patched][300] > accuracy[plain][300] + 0.1

    analyze_main(["attention", "--run", str(reference), "--n_biographies", "8"])
    rows = [json.loads(line) for line in (reference / "attention.jsonl").read_text().splitlines()]
    assert {r["step"] for r in rows} == {0, 1, 1000} and len(rows) == 3 * 2 * 2  # checkpoints x layers x heads


@pytest.mark.slow
def test_patching_starts_at_start_patching(corpus_dir, reference, tmp_path):
    plain, patched = tmp_path / "plain", tmp_path / "patched"
    pretrain_main(_flags(corpus_dir, plain, 40, "--eval_steps", "10"))
    pretrain_main(_flags(corpus_dir, patched, 40, "--eval_steps", "10", "--reference_run", str(reference),
                         "--reference_checkpoint", "1000", "--start_patching", "20"))
    before = [r for r in RunFolder(plain).trajectory() if r["step"] < 20]
    assert before == [r for r in RunFolder(patched).trajectory() if r["step"] < 20]  # identical until patching starts
    after = {r["step"]: r["attribute_loss"] for r in RunFolder(patched).trajectory() if r["split"] == "seen"}
    plain_after = {r["step"]: r["attribute_loss"] for r in RunFolder(plain).trajectory() if r["split"] == "seen"}
    assert after[20] != plain_after[20] and after[40] != plain_after[40]


def test_patching_needs_a_saved_reference_step(corpus_dir, reference, tmp_path):
    with pytest.raises(RecipeError, match="has no checkpoint at step 500 .*checkpoint_steps"):
        pretrain_main(_flags(corpus_dir, tmp_path / "x", 10, "--reference_run", str(reference),
                             "--reference_checkpoint", "500"))
    assert not (tmp_path / "x").exists()  # nothing written
    with pytest.raises(RecipeError, match="reference_checkpoint is not"):
        pretrain_main(_flags(corpus_dir, tmp_path / "x", 10, "--reference_run", str(reference)))
