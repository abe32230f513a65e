"""The toy associative memory (claim C22) at a small size: pairs and batches as pure functions of their seeds,
deterministic runs, memorisation, the collapse of old pairs under fine-tuning and its reduction by replay, the
run folder read by the language-model analyses, no-op reruns, and bad values as one-line errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from common.recipe import to_flags
from data_gen.samplers import Uniform
from pipeline.analysis.phases import run_phases
from pipeline.run_folder import FINETUNE_SUMMARY, HELDOUT, NEW, OLD, PHASES, SEEN, TOY_FIGURE, RunFolder
from pipeline.toy_memory import main
from pipeline.toy_memory.config import MemoryArguments
from pipeline.toy_memory.data import batch_indices, memory_pairs

from .conftest import cli, one_error_line

SMALL = {"n_pairs": 512, "n_heldout": 128, "hidden_size": 64, "batch_size": 64, "eval_points": 8}
PRETRAIN = {**SMALL, "max_steps": 1500}
FINETUNE = {**SMALL, "n_new": 512, "max_steps": 1000, "learning_rate": 3e-3, "lr_scheduler_type": "constant"}


def pretrain(out, **values) -> RunFolder:
    main(to_flags({**PRETRAIN, "output_dir": out, **values}))
    return RunFolder(out)


def finetune(init_from, out, **values) -> RunFolder:
    main(to_flags({**FINETUNE, "init_from": init_from, "output_dir": out, **values}))
    return RunFolder(out)


def final(rows: list[dict], group: str) -> dict:
    return max((r for r in rows if r["split"] == group), key=lambda r: r["step"])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> RunFolder:
    return pretrain(tmp_path_factory.mktemp("toy") / "pretrain")


@pytest.fixture(scope="module")
def finetuned(pretrained, tmp_path_factory) -> dict[float, RunFolder]:
    """Fine-tuning runs on the 512 new pairs without replay (0) and with one old pair per new one (1)."""
    out = tmp_path_factory.mktemp("toy-finetune")
    return {w: finetune(pretrained.path, out / f"replay{w:g}", replay_weight=w) for w in (0.0, 1.0)}


def test_pairs_and_batches_are_pure_functions_of_their_seeds():
    memory = MemoryArguments(n_pairs=100)
    keys, classes = memory_pairs(memory, 300)
    first_keys, first_classes = memory_pairs(memory, 100)
    assert torch.equal(keys[:100], first_keys) and torch.equal(classes[:100], first_classes)
    assert torch.allclose(keys.norm(dim=1), torch.ones(300)) and keys.shape == (300, 64)
    assert 0 <= int(classes.min()) and int(classes.max()) == 29
    assert not torch.equal(memory_pairs(MemoryArguments(pair_seed=1), 100)[0], first_keys)
    batch = batch_indices(Uniform(300), 3, 7, 16)
    assert torch.equal(batch, batch_indices(Uniform(300), 3, 7, 16))
    assert not torch.equal(batch, batch_indices(Uniform(300), 3, 8, 16))


def test_pretraining_memorises_the_pairs_and_not_the_heldout_ones(pretrained):
    rows = pretrained.trajectory()
    assert {r["stage"] for r in rows} == {"pretrain"} and {r["split"] for r in rows} == {SEEN, HELDOUT}
    first = min((r for r in rows if r["split"] == SEEN), key=lambda r: r["step"])
    assert first["step"] == 0 and first["attribute_accuracy"] < 0.1
    assert final(rows, SEEN)["attribute_accuracy"] > 0.99 and final(rows, SEEN)["step"] == 1500
    assert final(rows, HELDOUT)["attribute_accuracy"] < 0.1  # chance is 1/30
    assert final(rows, HELDOUT)["attribute_loss"] > math.log(30)  # confidently wrong
    phases = run_phases(rows)
    assert phases.baseline == pytest.approx(math.log(30)) and 0 < phases.emergence < 1500
    assert json.loads((pretrained / PHASES).read_text()) == phases.to_dict()
    assert (pretrained / TOY_FIGURE).stat().st_size > 10_000
    assert len(pretrained.complete_checkpoints()) == 1


def test_runs_are_deterministic_under_their_seeds(pretrained, tmp_path):
    assert pretrain(tmp_path / "again").trajectory() == pretrained.trajectory()
    other = pretrain(tmp_path / "other", seed=1).trajectory()
    assert final(other, SEEN)["attribute_loss"] != final(pretrained.trajectory(), SEEN)["attribute_loss"]


def test_finetuning_collapses_old_pairs_and_replay_reduces_the_collapse(pretrained, finetuned):
    plain, replayed = (json.loads((finetuned[w] / FINETUNE_SUMMARY).read_text()) for w in (0.0, 1.0))
    old, new = ([r for r in finetuned[0.0].trajectory() if r["split"] == split] for split in (OLD, NEW))
    assert (plain["old_accuracy_before"], plain["old_accuracy_final"]) == (old[0]["attribute_accuracy"],
                                                                          old[-1]["attribute_accuracy"])
    assert (plain["new_accuracy_before"], plain["new_accuracy_final"]) == (new[0]["attribute_accuracy"],
                                                                          new[-1]["attribute_accuracy"])
    assert plain["old_accuracy_before"] == replayed["old_accuracy_before"] > 0.99
    assert plain["new_accuracy_before"] < 0.1 and plain["new_accuracy_final"] > 0.9
    assert plain["old_accuracy_final"] < 0.6
    assert replayed["old_accuracy_final"] > 0.95 > plain["old_accuracy_final"] + 0.3


def test_finetuning_starts_from_the_pretrained_weights_on_the_same_pairs(pretrained, finetuned):
    rows = finetuned[0.0].trajectory()
    assert {r["split"] for r in rows} == {OLD, NEW, HELDOUT} and {r["stage"] for r in rows} == {"finetune"}
    start = {r["split"]: r for r in rows if r["step"] == 0}
    for group, pretraining_group in ((OLD, SEEN), (HELDOUT, HELDOUT)):
        before = final(pretrained.trajectory(), pretraining_group)
        assert start[group]["attribute_loss"] == before["attribute_loss"]
        assert start[group]["attribute_accuracy"] == before["attribute_accuracy"]


def test_rerunning_a_finished_run_does_nothing_and_another_recipe_is_refused(pretrained, capsys):
    trajectory = (pretrained / "trajectory.jsonl").read_bytes()
    code, err = cli(main, to_flags({**PRETRAIN, "output_dir": pretrained.path}), capsys)
    assert code == 0 and "finished already" in err[-1]
    assert (pretrained / "trajectory.jsonl").read_bytes() == trajectory
    code, err = cli(main, to_flags({**PRETRAIN, "output_dir": pretrained.path, "learning_rate": 0.01}), capsys)
    assert code == 2 and one_error_line(err) and "learning_rate" in err[-1]


@pytest.mark.parametrize("values, expected", [
    ({"n_pairs": 0}, "n_pairs must be at least 1"),
    ({"n_classes": 1}, "n_classes must be at least 2"),
    ({"lr_scheduler_type": "linear"}, "lr_scheduler_type 'linear' is unknown"),
    ({"learning_rate": 0.0}, "learning_rate must be positive"),
    ({"replay_weight": -1.0}, "replay_weight must be 0 or more"),
    ({"init_from": "no/such/run"}, "is neither a checkpoint nor a run folder"),
])
def test_bad_values_are_one_line_errors(values, expected, tmp_path, capsys):
    code, err = cli(main, to_flags({**PRETRAIN, "output_dir": tmp_path / "run", **values}), capsys)
    assert code == 2 and one_error_line(err) and expected in err[-1]
    assert not (tmp_path / "run").exists()


def test_finetuning_refuses_another_task_than_the_pretrained_one(pretrained, tmp_path, capsys):
    code, err = cli(main, to_flags({**FINETUNE, "init_from": pretrained.path, "output_dir": tmp_path / "run",
                                    "n_pairs": 256}), capsys)
    assert code == 2 and one_error_line(err) and "n_pairs 512 (this recipe: 256)" in err[-1]
    assert not (tmp_path / "run").exists()



def test_a_toy_memory_study_pretrains_once_and_fine_tunes_each_grid_point(tmp_path):
    """The sweep runs a toy-memory study like a fine-tuning one: its first run, then every point from its final
    checkpoint; summary.csv has each point's forgetting numbers, and the forgetting figure is drawn."""
    import csv

    import yaml

    from pipeline.sweep import main as sweep_main

    first = tmp_path / "pretrain.yaml"
    first.write_text(yaml.safe_dump({**PRETRAIN, "output_dir": str(tmp_path / "first")}))
    base = tmp_path / "finetune.yaml"
    base.write_text(yaml.safe_dump({**FINETUNE, "output_dir": "unused", "init_from": "unused"}))
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"stage": "toy_memory", "pretrain": {"recipe": str(first), "output_dir":
                                     str(tmp_path / "first")}, "base": str(base), "output_dir": str(tmp_path / "s"),
                                     "grid": {"n_new": [16, 512]}}))
    sweep_main(["--config", str(study)])
    with (tmp_path / "s" / "summary.csv").open() as f:
        rows = {int(r["n_new"]): r for r in csv.DictReader(f)}
    assert set(rows) == {16, 512} and all(r["status"] == "done" for r in rows.values())
    assert float(rows[16]["old_accuracy_final"]) > float(rows[512]["old_accuracy_final"])  # more new pairs, more loss
    assert (tmp_path / "s" / "forgetting.png").is_file()
    assert json.loads((tmp_path / "s" / "n_new=16" / FINETUNE_SUMMARY).read_text())["old_accuracy_final"] == \
        pytest.approx(float(rows[16]["old_accuracy_final"]))
