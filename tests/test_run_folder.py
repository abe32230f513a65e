"""The run folder: trajectory reading (a torn last line left out, a damaged one refused), complete
checkpoints, rewinding, runs of earlier key names resuming, and the stage a report is chosen by."""

from __future__ import annotations

import json

import pytest
import yaml

from data_gen import RecipeError
from pipeline.run_folder import (
    RUN_CONFIG,
    STATE,
    TRAJECTORY,
    Resolution,
    RunFolder,
    checkpoint_name,
    publish_checkpoint,
    staging_folder,
)


def _rows(*steps, stage="pretrain"):
    return [{"stage": stage, "step": s, "split": "seen", "attribute_loss": 1.0 / (s + 1)} for s in steps]


def test_a_torn_last_trajectory_line_is_left_out_and_a_damaged_one_refused(tmp_path):
    run = RunFolder(tmp_path)
    run.append_trajectory(_rows(0, 5))
    with (tmp_path / TRAJECTORY).open("a") as f:
        f.write('{"stage": "pretrain", "step": 1')  # a process killed while appending
    assert run.trajectory() == _rows(0, 5)
    (tmp_path / TRAJECTORY).write_text('{"step": 0}\nnot json\n{"step": 1}\n')
    with pytest.raises(RecipeError, match="line 2 is not JSON"):
        run.trajectory()


def test_complete_checkpoints_and_rewind(tmp_path):
    run = RunFolder(tmp_path)
    run.start({"max_steps": 10})
    for step in (0, 4, 8):
        staging = staging_folder(run.checkpoint(step))
        staging.mkdir(parents=True)
        publish_checkpoint(staging, run.checkpoint(step), {"step": step})
    staging_folder(run.checkpoint(9)).mkdir()  # a save killed midway
    run.checkpoint(6).mkdir()  # a checkpoint without its state file
    assert [p.name for p in run.complete_checkpoints()] == [checkpoint_name(s) for s in (0, 4, 8)]
    assert json.loads((run.checkpoint(8) / STATE).read_text()) == {"step": 8}
    run.append_trajectory(_rows(0, 4, 8))
    with (tmp_path / TRAJECTORY).open("a") as f:
        f.write('{"step": 9, "sp')
    run.rewind(4)
    assert run.trajectory() == _rows(0, 4)
    assert [p.name for p in run.complete_checkpoints()] == [checkpoint_name(0), checkpoint_name(4)]


def test_a_run_saved_with_former_key_names_resumes(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.start({"max_steps": 10, "eval_every": 5, "checkpoint_steps": [3]})
    recipe = {"max_steps": 10, "eval_steps": 5, "checkpoint_at": [3]}
    renamed = {"eval_every": "eval_steps", "checkpoint_steps": "checkpoint_at"}
    assert run.resolve(recipe, overwrite=False, renamed=renamed) == Resolution("restart")  # no resume checkpoint yet
    with pytest.raises(RecipeError, match=r"differs in checkpoint_at \(None there, \[3\] here\), checkpoint_steps "
                                          r"\(\[3\] there, None here\), eval_every .*, eval_steps"):
        run.resolve(recipe, overwrite=False)
    with pytest.raises(RecipeError, match="differs in max_steps"):
        run.resolve({**recipe, "max_steps": 20}, overwrite=False, renamed=renamed)
    assert yaml.safe_load((run / RUN_CONFIG).read_text())["eval_every"] == 5  # untouched


def test_the_stage_is_read_from_the_trajectory(tmp_path):
    run = RunFolder(tmp_path)
    run.append_trajectory(_rows(0, stage="finetune"))
    assert run.stage() == "finetune"
    with pytest.raises(RecipeError, match="is not a run folder"):
        RunFolder(tmp_path / "nothing").recipe()


def test_a_run_saved_before_a_key_existed_resumes_while_it_has_its_default(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.start({"max_steps": 10})
    assert run.resolve({"max_steps": 10, "lr_schedule_steps": None}, False, defaults={"lr_schedule_steps": None}
                       ).action == "restart"
    with pytest.raises(RecipeError, match="differs in lr_schedule_steps"):
        run.resolve({"max_steps": 10, "lr_schedule_steps": 99}, False, defaults={"lr_schedule_steps": None})
