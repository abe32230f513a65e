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
from pipeline.analysis.circuits import attention_statistics
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
    assert all(torch.allclose(a, b) for a, b in zip(out.attentions, expected))
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
