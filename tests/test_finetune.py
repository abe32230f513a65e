"""The fine-tuning stage: exact initial weights, old/new separation and replay ratio, step-0
evaluation equal to pretraining's last, the collapse of old individuals, freezing, LoRA, the Hub boundary."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from data_gen import RecipeError
from data_gen.builder import build
from data_gen.samplers import Replay, Uniform
from pipeline.analysis.facts import kept
from pipeline.analysis.forgetting import attention_distance
from pipeline.config import FinetuneArguments
from pipeline.finetune import main as finetune_main
from pipeline.finetune import new_and_old
from pipeline.hub import client as hub
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import FINETUNE_SUMMARY, RunFolder, checkpoint_name
from pipeline.sweep import main as sweep_main

from .conftest import TINY_RUN, small_config, tiny_flags

PRETRAIN_STEPS = 300


@pytest.fixture(scope="module")
def pretrained(corpus_dir, tmp_path_factory):
    """A tiny model pretrained long enough to know part of the small corpus."""
    out = tmp_path_factory.mktemp("pretrained") / "run"
    pretrain_main(tiny_flags(corpus_dir, out, batch_size=32, learning_rate=1e-2, max_steps=PRETRAIN_STEPS,
                             eval_points=2, checkpoint_points=1, save_steps=0, eval_individuals=40,
                             eval_batch_size=512))
    return out


def _finetune_flags(corpus_dir, init_from, out, *extra):
    return [*tiny_flags(corpus_dir, out, model_preset=None, init_from=init_from, n_individuals_finetune=40,
                        learning_rate=3e-3, eval_points=4, checkpoint_points=2, eval_individuals=40,
                        eval_batch_size=512), *extra]


@pytest.fixture(scope="module")
def finetuned(corpus_dir, pretrained, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetuned") / "run"
    finetune_main(_finetune_flags(corpus_dir, pretrained / "checkpoints" / checkpoint_name(PRETRAIN_STEPS), out,
                                  "--max_steps", "60", "--save_steps", "30"))
    return out


def test_replay_draws_old_individuals_at_the_configured_ratio():
    rng = np.random.default_rng(0)
    draws = Replay(Uniform(40), 40, 160, 0.25).draw(rng, 0, 200_000)
    old = draws >= 40
    assert old.mean() == pytest.approx(0.25 / 1.25, abs=0.005)
    assert np.bincount(draws[old] - 40, minlength=160).min() > 0 and draws.max() < 200
    assert (Replay(Uniform(40), 40, 160, 0.0).draw(rng, 0, 10_000) < 40).all()  # no replay: only new
    assert Replay(Uniform(40), 40, 160, 1.0).probabilities(0, 200).sum() == pytest.approx(1.0)


def test_new_and_old_individuals_never_mix(corpus):
    new, old = new_and_old(corpus, FinetuneArguments(init_from="x", n_individuals_finetune=40))
    assert new.tolist() == list(range(40)) and len(old) == 200  # new from the finetune split, old = train
    rare = FinetuneArguments(init_from="x", new_split="train", n_individuals_finetune=30, new_offset=170)
    new, old = new_and_old(corpus, rare)
    assert new.tolist() == list(range(170, 200)) and not set(new) & set(old) and len(old) == 170
    with pytest.raises(RecipeError, match="split 'finetune' of corpus .* has 50"):
        new_and_old(corpus, FinetuneArguments(init_from="x", n_individuals_finetune=40, new_offset=20))


def test_init_from_loads_exactly_the_pretrained_weights(finetuned, pretrained):
    source = AutoModelForCausalLM.from_pretrained(pretrained / "checkpoints" / checkpoint_name(PRETRAIN_STEPS))
    start = AutoModelForCausalLM.from_pretrained(finetuned / "checkpoints" / checkpoint_name(0))
    for (name, a), (_, b) in zip(source.state_dict().items(), start.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    exposures = np.load(finetuned / "checkpoints" / checkpoint_name(60) / "exposures.npy")
    assert exposures.sum() == 60 * 16 and exposures[40:].sum() == 0  # only new individuals without replay


def test_step_zero_evaluation_equals_the_pretrained_models_last(finetuned, pretrained):
    last = {r["split"]: r for r in RunFolder(pretrained).trajectory() if r["step"] == PRETRAIN_STEPS}
    first = {r["split"]: r for r in RunFolder(finetuned).trajectory() if r["step"] == 0}
    assert first["old"]["stage"] == "finetune"
    for ours, theirs in (("old", "seen"), ("heldout", "heldout")):
        for key in ("attribute_loss", "attribute_accuracy"):
            assert first[ours][key] == pytest.approx(last[theirs][key], abs=1e-6)


def test_old_knowledge_collapses_while_new_arrives(finetuned):
    summary = json.loads((finetuned / FINETUNE_SUMMARY).read_text())
    rows = RunFolder(finetuned).trajectory()
    old, new = ([r for r in rows if r["split"] == split] for split in ("old", "new"))
    assert summary["old_accuracy_before"] == old[0]["attribute_accuracy"]  # read off the trajectory by hand
    assert summary["old_accuracy_lowest"] == min(r["attribute_accuracy"] for r in old)
    assert (summary["old_accuracy_final"], summary["old_loss_final"]) == (old[-1]["attribute_accuracy"],
                                                                          old[-1]["attribute_loss"])
    assert (summary["new_accuracy_final"], summary["last_step"]) == (new[-1]["attribute_accuracy"], new[-1]["step"])
    assert summary["old_accuracy_final"] < summary["old_accuracy_before"] / 1.5
    assert summary["old_loss_final"] > summary["old_loss_before"] + 1.0
    assert summary["new_accuracy_final"] > summary["new_accuracy_before"]
    assert summary["half_drop_step"] is not None and summary["half_drop_step"] <= 60
    drift = [json.loads(line) for line in (finetuned / "drift.jsonl").read_text().splitlines()]
    assert drift[0]["attention_distance"] == 0 and drift[-1]["weight_change_mlp"] > 0
    assert (finetuned / "forgetting.png").stat().st_size > 0


def test_the_report_follows_the_old_facts_known_before_one_by_one(finetuned):
    queries = pd.read_parquet(finetuned / "facts" / "queries")
    old = queries[queries["group"] == "old"]
    steps = sorted(old["step"].unique())
    before = old[old["step"] == steps[0]].set_index(["individual", "attribute", "template"])["correct"]
    last = old[old["step"] == steps[-1]].set_index(["individual", "attribute", "template"])["correct"]
    still = last[before[before].index].mean()  # of the facts known at step 0, those known at the end
    report = (finetuned / "report.md").read_text()
    assert f"Of the {int(before.sum()):,} old facts" in report
    assert f"| {int(steps[-1]):,} | {still:.1%} |" in report
    assert f"| {int(steps[0]):,} | 100.0% | 0.0% |" in report  # at step 0, by definition


def test_old_facts_kept_by_hand():
    queries = pd.DataFrame({"step": [0, 0, 0, 0, 10, 10, 10, 10], "individual": [1, 1, 2, 2, 1, 1, 2, 2],
                            "attribute": ["a", "b"] * 4, "template": [0] * 8,
                            "correct": [True, True, True, False, True, False, False, True]})
    # known before: (1,a) (1,b) (2,a); at step 10 only (1,a) of them is known; of (2,b), unknown before, known now
    assert kept(queries) == [{"step": 0, "known_before": 3, "still_known": 1.0, "learned": 0.0},
                             {"step": 10, "known_before": 3, "still_known": pytest.approx(1 / 3), "learned": 1.0}]


def test_attention_distance_by_hand():
    uniform = torch.full((1, 1, 2, 2), 0.5)
    peaked = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    distance = attention_distance([uniform, uniform], [peaked, uniform], torch.ones(1, 2))
    assert distance.tolist() == pytest.approx([0.5, 0.0])


def test_resume_after_a_kill_gives_the_same_finetuning(finetuned, corpus_dir, pretrained, tmp_path, monkeypatch):
    from pipeline.train.loop import TrainingLoop

    original = TrainingLoop.train_step

    def crash(self, step):
        if step == 40:
            raise KeyboardInterrupt("killed")
        return original(self, step)

    out = tmp_path / "run"
    flags = _finetune_flags(corpus_dir, pretrained / "checkpoints" / checkpoint_name(PRETRAIN_STEPS), out,
                            "--max_steps", "60", "--save_steps", "30")
    monkeypatch.setattr(TrainingLoop, "train_step", crash)
    with pytest.raises(KeyboardInterrupt):
        finetune_main(flags)
    monkeypatch.setattr(TrainingLoop, "train_step", original)
    finetune_main(flags)
    assert RunFolder(out).trajectory() == RunFolder(finetuned).trajectory()


@pytest.mark.parametrize("freeze, fixed, trained", [("mlp", ".mlp.", ".self_attn."), ("attention", ".self_attn.",
                                                                                       ".mlp.")])
def test_freezing_keeps_a_block_fixed(corpus_dir, pretrained, tmp_path, freeze, fixed, trained):
    init = pretrained / "checkpoints" / checkpoint_name(PRETRAIN_STEPS)
    out = tmp_path / freeze
    finetune_main(_finetune_flags(corpus_dir, init, out, "--max_steps", "5", "--freeze", freeze, "--eval_points", "0",
                                  "--save_steps", "0"))
    before = AutoModelForCausalLM.from_pretrained(init).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out / "checkpoints" / checkpoint_name(5)).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if fixed in k)
    assert not all(torch.equal(before[k], after[k]) for k in before if trained in k)


def test_lora_checkpoints_are_merged_transformers_models(corpus_dir, pretrained, tmp_path):
    init = pretrained / "checkpoints" / checkpoint_name(PRETRAIN_STEPS)
    out = tmp_path / "lora"
    finetune_main(_finetune_flags(corpus_dir, init, out, "--max_steps", "5", "--lora_rank", "4", "--eval_points", "0",
                                  "--save_steps", "0"))
    before = AutoModelForCausalLM.from_pretrained(init).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out / "checkpoints" / checkpoint_name(5)).state_dict()
    assert set(after) == set(before)  # plain weights, no adapter keys
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])  # not adapted
    assert not torch.equal(before["model.layers.0.mlp.down_proj.weight"], after["model.layers.0.mlp.down_proj.weight"])


def test_a_hub_id_is_resolved_through_huggingface_hub(corpus_dir, pretrained, tmp_path, monkeypatch):
    calls = []
    local = pretrained / "checkpoints" / checkpoint_name(PRETRAIN_STEPS)

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, allow_patterns))
        return str(local)

    monkeypatch.setattr(hub.huggingface_hub, "snapshot_download", snapshot_download)
    out = tmp_path / "from_hub"
    finetune_main(_finetune_flags(corpus_dir, "someone/fact-model", out, "--init_revision", "step-000000300",
                                  "--max_steps", "2", "--eval_points", "0", "--save_steps", "0"))
    assert calls == [("someone/fact-model", "step-000000300", hub.WEIGHT_FILES)]
    assert "*.safetensors" in hub.WEIGHT_FILES and not any("optimizer" in p or "pt" in p for p in hub.WEIGHT_FILES)


def test_bad_init_from_is_a_clear_error(corpus_dir, tmp_path, monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def missing(*args, **kwargs):  # what snapshot_download raises offline for a model not in the cache
        raise LocalEntryNotFoundError("cannot reach the Hub and the files are not in the local cache")

    monkeypatch.setattr(hub.huggingface_hub, "snapshot_download", missing)
    with pytest.raises(RecipeError, match="neither a local folder nor a model fetched from the Hub"):
        finetune_main(_finetune_flags(corpus_dir, "someone/nothing", tmp_path / "a"))
    with pytest.raises(RecipeError, match="neither an existing folder nor a Hub id"):
        finetune_main(_finetune_flags(corpus_dir, "runs/nothing/here", tmp_path / "b"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecipeError, match="holds no model"):
        finetune_main(_finetune_flags(corpus_dir, tmp_path / "empty", tmp_path / "c"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_checkpoint_of_another_tokenizer_is_refused(pretrained, tmp_path):
    other = build(small_config(tmp_path / "other", n_first_names=30))
    with pytest.raises(RecipeError, match="another tokenizer"):
        finetune_main(_finetune_flags(other, pretrained / "checkpoints" / checkpoint_name(PRETRAIN_STEPS),
                                      tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_finetuning_study_pretrains_first(corpus_dir, tmp_path):
    import yaml

    pretrain = tmp_path / "pretrain.yaml"
    pretrain.write_text(yaml.safe_dump({**TINY_RUN, "corpus": str(corpus_dir), "max_steps": 4, "eval_points": 0,
                                        "checkpoint_points": 1, "eval_individuals": 20, "save_steps": 0}))
    base = tmp_path / "finetune.yaml"
    base.write_text(yaml.safe_dump({"corpus": str(corpus_dir), "batch_size": 16, "report_to": "none", "max_steps": 3,
                                    "eval_points": 0, "checkpoint_points": 1, "eval_individuals": 20,
                                    "save_steps": 0, "n_individuals_finetune": 20}))
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"stage": "finetune", "base": str(base), "output_dir": str(tmp_path / "sweep"),
                                     "pretrain": {"recipe": str(pretrain)}, "grid": {"replay_weight": [0.0, 1.0]}}))
    sweep_main(["--config", str(study)])
    sweep = tmp_path / "sweep"
    assert (sweep / "pretrained" / "checkpoints" / checkpoint_name(4)).is_dir()
    lines = (sweep / "summary.csv").read_text().splitlines()
    assert lines[0].startswith("replay_weight,run,baseline,code_commit,started_at,last_step,old_accuracy_before")
    assert len(lines) == 3
    assert (sweep / "forgetting.png").is_file()
