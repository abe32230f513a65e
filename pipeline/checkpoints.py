"""Checkpoints. Permanent ones (log-spaced steps, all kept, Hugging Face format) are for science;
resume ones (every `save_steps`, latest kept) hold everything needed to continue exactly:
model, optimizer, scheduler and RNG states (Accelerate's `save_state`), the step (which is the
stream's position) and tokens seen, the tracker run ids and the recipe.

Both are written to a temporary folder and renamed, so a folder with a checkpoint's name is
always complete; resume also requires the state file, which is written last.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
from peft import PeftModel

from data_gen.recipe import RunError

from .callbacks import Callback

CHECKPOINTS = "checkpoints"
RESUME = "resume"
STATE = "trainer_state.json"
EXPOSURES = "exposures.npy"  # times each training individual was drawn before the checkpoint


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}"


def step_of(folder: Path) -> int:
    return int(folder.name.split("-")[1])


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint folders holding their state file, by step; temporary folders are ignored."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.glob("step-*") if (p / STATE).is_file()), key=step_of)


def latest_resume_checkpoint(output_dir: Path) -> Path | None:
    found = complete_checkpoints(output_dir / RESUME)
    return found[-1] if found else None


def read_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / STATE).read_text())


def _disk_error(err: OSError, tmp: Path, final: Path) -> RunError:
    shutil.rmtree(tmp, ignore_errors=True)
    return RunError(f"could not write checkpoint {final} ({err.strerror or err}): free disk space or choose another "
                    f"output_dir; the earlier checkpoints are intact and rerunning the command resumes from the last")


def _publish(tmp: Path, final: Path, state: dict) -> None:
    (tmp / STATE).write_text(json.dumps(state, indent=1))
    shutil.rmtree(final, ignore_errors=True)  # a same-step leftover of an interrupted continuation
    tmp.rename(final)


class CheckpointCallback(Callback):
    """Permanent checkpoints loadable with `from_pretrained`: weights gathered on every process
    (full weights under ZeRO-3 and FSDP; LoRA adapters merged), saved by the main one with the tokenizer."""

    def __init__(self, steps: list[int], output_dir: Path, tokenizer, recipe: dict):
        self.steps, self.tokenizer, self.recipe = set(steps), tokenizer, recipe
        self.folder = output_dir / CHECKPOINTS

    def saves_at(self, step: int) -> bool:
        return step in self.steps

    def on_step(self, trainer, step: int) -> None:
        if step not in self.steps:
            return
        accelerator = trainer.accelerator
        state_dict = accelerator.get_state_dict(trainer.model)
        if accelerator.is_main_process:
            final = self.folder / checkpoint_name(step)
            tmp = self.folder / f".tmp-{final.name}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                model = accelerator.unwrap_model(trainer.model)
                if isinstance(model, PeftModel):  # adapters merged into a copy: a plain transformers checkpoint
                    copy.deepcopy(model).merge_and_unload().save_pretrained(tmp)
                else:
                    model.save_pretrained(tmp, state_dict=state_dict)
                self.tokenizer.save_pretrained(tmp)
                np.save(tmp / EXPOSURES, trainer.exposures(step))
                _publish(tmp, final, {"step": step, "recipe": self.recipe})
            except OSError as err:
                raise _disk_error(err, tmp, final) from err
        accelerator.wait_for_everyone()


class ResumeCallback(Callback):
    """A resume checkpoint every `every` steps and at the end; older ones are deleted."""

    def __init__(self, every: int, max_steps: int, output_dir: Path, recipe: dict):
        self.every, self.max_steps, self.recipe = every, max_steps, recipe
        self.folder = output_dir / RESUME

    def saves_at(self, step: int) -> bool:
        return step > 0 and (step % self.every == 0 or step == self.max_steps)

    def on_step(self, trainer, step: int) -> None:
        if self.saves_at(step):
            save(trainer, self.folder, step, self.recipe)


def save(trainer, folder: Path, step: int, recipe: dict) -> Path:
    """Write a resume checkpoint of `trainer` after `step` optimizer steps (every process takes part)."""
    accelerator = trainer.accelerator
    final = folder / checkpoint_name(step)
    tmp = folder / f".tmp-{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _publish(tmp, final, {"step": step, "tokens_seen": trainer.tokens_seen,
                                  "tracker_run_ids": trainer.tracker_run_ids(), "recipe": recipe})
    except OSError as err:
        raise _disk_error(err, tmp, final) from err
    if accelerator.is_main_process:
        for old in complete_checkpoints(folder)[:-1]:  # only once the new one is complete
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final
