"""Pretraining end to end on a CPU: loss reaches the baseline, checkpoints reload, runs are safe."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM

from common.recipe import parse_recipe
from data_gen import RecipeError
from pipeline.analysis.phases import run_phases
from pipeline.config import DataArguments, ModelArguments, TrainArguments
from pipeline.evaluation import Evaluator, pretraining_groups
from pipeline.pretrain import main, pretrain
from pipeline.run_folder import RunFolder, checkpoint_name

from .conftest import tiny_flags


def _args(corpus_dir, output_dir, *extra):
    return parse_recipe([ModelArguments, DataArguments, TrainArguments], [
        *tiny_flags(corpus_dir, output_dir, learning_rate=3e-3, eval_points=8, eval_steps=25, checkpoint_points=3,
                    eval_individuals=50), *extra])


@pytest.fixture(scope="module")
def short_run(corpus_dir, tmp_path_factory):
    return pretrain(*_args(corpus_dir, tmp_path_factory.mktemp("runs") / "short", "--max_steps", "400"))


@pytest.mark.slow
def test_loss_falls_to_the_baseline(short_run):
    rows = RunFolder(short_run).trajectory()
    seen = [r for r in rows if r["split"] == "seen"]
    baseline = seen[0]["baseline_loss"]
    assert seen[0]["step"] == 0 and seen[0]["attribute_loss"] > 1.2 * baseline
    assert seen[-1]["step"] == 400 and seen[-1]["attribute_loss"] < 1.05 * baseline
    assert run_phases(rows).plateau_start is not None
    assert {r["split"] for r in rows} == {"seen", "heldout"}
    assert set(seen[-1]["per_attribute"]) == {"birth_date", "birth_city", "current_location", "university",
                                              "major", "company"}
    for name in ("report.md", "phases.png", "phases.json", "run_config.yaml", "hallucinations.png", "attention.png",
                 "attention.jsonl"):
        assert (short_run / name).is_file()
    for row in seen:  # hallucination metrics, seen and held-out side by side
        assert 0 < row["first_token_top_prob"] <= 1 and row["first_token_entropy"] >= 0
        assert 0 <= row["confidence_auroc"] <= 1


@pytest.mark.slow
def test_checkpoint_reloads_with_from_pretrained_and_reproduces_evaluation(short_run, corpus):
    checkpoints = sorted(p.name for p in (short_run / "checkpoints").iterdir())
    assert checkpoints[0] == checkpoint_name(0) and checkpoints[-1] == checkpoint_name(400)
    final_checkpoint = short_run / "checkpoints" / checkpoint_name(400)
    model = AutoModelForCausalLM.from_pretrained(final_checkpoint)
    assert json.loads((final_checkpoint / "trainer_state.json").read_text())["step"] == 400
    metrics = Evaluator(corpus, pretraining_groups(corpus, 50), 1024).evaluate(model, Accelerator(cpu=True))
    final = {r["split"]: r for r in RunFolder(short_run).trajectory() if r["step"] == 400}
    for split in ("seen", "heldout"):
        assert metrics[split]["attribute_loss"] == pytest.approx(final[split]["attribute_loss"], rel=1e-5)
        assert metrics[split]["attribute_accuracy"] == final[split]["attribute_accuracy"]


def test_rerun_from_saved_recipe_gives_the_same_trajectory(corpus_dir, tmp_path):
    first = pretrain(*_args(corpus_dir, tmp_path / "a", "--max_steps", "6", "--eval_steps", "3"))
    main(["--config", str(first / "run_config.yaml"), "--output_dir", str(tmp_path / "b")])
    runs = [first, tmp_path / "b"]
    assert RunFolder(runs[0]).trajectory() == RunFolder(runs[1]).trajectory()
    first = AutoModelForCausalLM.from_pretrained(runs[0] / "checkpoints" / checkpoint_name(6))
    second = AutoModelForCausalLM.from_pretrained(runs[1] / "checkpoints" / checkpoint_name(6))
    weights = first.state_dict().values(), second.state_dict().values()
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_gradient_accumulation_matches_one_pass(corpus_dir, tmp_path):
    whole = pretrain(*_args(corpus_dir, tmp_path / "whole", "--max_steps", "4", "--eval_steps", "2"))
    split = pretrain(*_args(corpus_dir, tmp_path / "split", "--max_steps", "4", "--eval_steps", "2",
                            "--micro_batch_size", "4"))
    for a, b in zip(RunFolder(whole).trajectory(), RunFolder(split).trajectory(), strict=True):
        assert a["attribute_loss"] == pytest.approx(b["attribute_loss"], rel=1e-4)


def test_existing_run_is_never_overwritten_without_asking(corpus_dir, tmp_path):
    run = pretrain(*_args(corpus_dir, tmp_path / "run", "--max_steps", "2"))
    before = (run / "trajectory.jsonl").read_text()
    with pytest.raises(RecipeError, match=r"another run .*differs in data_seed \(0 there, 9 here\), seed "
                                          r".*--overwrite_output_dir true"):
        pretrain(*_args(corpus_dir, run, "--max_steps", "2", "--seed", "9"))
    assert (run / "trajectory.jsonl").read_text() == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(RecipeError, match="not a run of this pipeline"):
        pretrain(*_args(corpus_dir, tmp_path / "mine", "--max_steps", "2", "--overwrite_output_dir", "true"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_missing_corpus_and_bad_batch_are_clear_errors(corpus_dir, tmp_path):
    with pytest.raises(RecipeError, match="corpus folder .* does not exist"):
        pretrain(*_args(tmp_path / "nowhere", tmp_path / "out", "--max_steps", "2"))
    with pytest.raises(RecipeError, match="micro_batch_size 5 does not divide the 16"):
        pretrain(*_args(corpus_dir, tmp_path / "out", "--max_steps", "2", "--micro_batch_size", "5"))
    assert not (tmp_path / "out").exists()


def test_fixed_length_batches_give_the_same_losses(corpus_dir, tmp_path, monkeypatch):
    """Padding every batch to the corpus's longest biography (fixed shapes for compilers and CUDA graphs)
    changes nothing but the padding: same losses and evaluations at 1e-5."""
    from accelerate import Accelerator

    logged = {}
    original = Accelerator.log

    def log(self, values, step=None, log_kwargs=None):
        if "train/loss" in values:
            logged.setdefault(self.project_dir, []).append(values["train/loss"])
        return original(self, values, step=step, log_kwargs=log_kwargs or {})

    monkeypatch.setattr(Accelerator, "log", log)
    runs = {}
    for fixed in ("false", "true"):
        runs[fixed] = pretrain(*_args(corpus_dir, tmp_path / fixed, "--max_steps", "12", "--logging_steps", "1",
                                      "--fixed_length", fixed, "--micro_batch_size", "8"))
    longest, fixed = (logged[str(runs[k])] for k in ("false", "true"))
    assert len(longest) == 12 and longest == pytest.approx(fixed, rel=1e-5)
    for a, b in zip(RunFolder(runs["false"]).trajectory(), RunFolder(runs["true"]).trajectory(), strict=True):
        assert a["attribute_loss"] == pytest.approx(b["attribute_loss"], rel=1e-5)


def test_a_longer_schedule_trains_exactly_the_first_steps_of_the_longer_run(corpus_dir, tmp_path):
    common = ("--eval_points", "0", "--eval_steps", "3", "--checkpoint_points", "0")
    long = pretrain(*_args(corpus_dir, tmp_path / "long", "--max_steps", "12", *common))
    start = pretrain(*_args(corpus_dir, tmp_path / "start", "--max_steps", "6", "--lr_schedule_steps", "12", *common))
    assert [r for r in RunFolder(long).trajectory() if r["step"] <= 6] == RunFolder(start).trajectory()
    cut = pretrain(*_args(corpus_dir, tmp_path / "cut", "--max_steps", "6", *common))  # a 6-step cosine differs
    assert ([r for r in RunFolder(cut).trajectory() if r["step"] == 6]
            != [r for r in RunFolder(start).trajectory() if r["step"] == 6])


def test_a_fixed_sentence_order_reaches_the_training_stream(corpus_dir, tmp_path, monkeypatch):
    """--shuffle_sentences false trains on biographies in one sentence order, and the run records it."""
    from pipeline.train import stage

    streams = []

    class Recording(stage.TrainingLoop):
        def __init__(self, args, model, stream, *rest, **kwargs):
            streams.append(stream)
            super().__init__(args, model, stream, *rest, **kwargs)

    monkeypatch.setattr(stage, "TrainingLoop", Recording)
    out = tmp_path / "fixed"
    main(tiny_flags(corpus_dir, out, max_steps=2, eval_points=0, save_steps=0, shuffle_sentences="false"))
    (stream,) = streams
    assert not stream.shuffle_sentences and (stream.draw(1)[1] == range(6)).all()
    assert RunFolder(out).recipe()["shuffle_sentences"] is False
