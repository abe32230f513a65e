"""Checkpoints. Permanent ones (log-spaced steps, all kept, Hugging Face format) are for science;
resume ones (every `save_steps`, latest kept) hold everything needed to continue exactly:
model, optimizer, scheduler and RNG states (Accelerate's `save_state`), the step (which is the
stream's position) and tokens seen, the tracker run ids and the recipe. Both record the corpus the model
learned from (`corpus`: path, fingerprints, seed; and for fine-tuning `init_corpus`, that of its
pretrained weights), so that a run never resumes, and a model is never fine-tuned, on another one.

Both are written to a staging folder and renamed (`run_folder.publish_checkpoint`), so a folder with
a checkpoint's name is always complete.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
from accelerate import Accelerator
from peft import PeftModel

from data_gen.recipe import RunError

from ..run_folder import EXPOSURES, RunFolder, checkpoint_name, complete_checkpoints, publish_checkpoint, staging_folder
from .callbacks import Callback, TrainingState


def _disk_error(err: OSError, staging: Path, final: Path) -> RunError:
    shutil.rmtree(staging, ignore_errors=True)
    return RunError(f"could not write checkpoint {final} ({err.strerror or err}): free disk space or choose another "
                    f"output_dir; the earlier checkpoints are intact and rerunning the command resumes from the last")


class PermanentCheckpoints(Callback):
    """Permanent checkpoints loadable with `from_pretrained`: weights gathered on every process
    (full weights under ZeRO-3 and FSDP; LoRA adapters merged), saved by the main one with the
    tokenizer and the exposures so far."""

    def __init__(self, steps: list[int], run: RunFolder, tokenizer, recipe: dict, provenance: dict):
        self.steps, self.run, self.tokenizer, self.recipe = set(steps), run, tokenizer, recipe
        self.provenance = provenance

    def writes_at(self, step: int) -> bool:
        return step in self.steps

    def on_step(self, state: TrainingState, step: int) -> None:
        if step not in self.steps:
            return
        accelerator = state.accelerator
        state_dict = accelerator.get_state_dict(state.model)
        if accelerator.is_main_process:
            final = self.run.checkpoint(step)
            staging = staging_folder(final)
            shutil.rmtree(staging, ignore_errors=True)
            try:
                model = accelerator.unwrap_model(state.model)
                if isinstance(model, PeftModel):  # adapters merged into a copy: a plain transformers checkpoint
                    copy.deepcopy(model).merge_and_unload().save_pretrained(staging)
                else:
                    model.save_pretrained(staging, state_dict=state_dict)
                self.tokenizer.save_pretrained(staging)
                np.save(staging / EXPOSURES, state.exposures(step))
                publish_checkpoint(staging, final, {"step": step, "recipe": self.recipe, **self.provenance})
            except OSError as err:
                raise _disk_error(err, staging, final) from err
        accelerator.wait_for_everyone()


class ResumeCheckpointer:
    """Resume checkpoints every `every` steps and at `max_steps`, into `folder`; older ones are deleted
    once a newer one is complete."""

    def __init__(self, every: int, max_steps: int, folder: Path, recipe: dict, provenance: dict):
        self.every, self.max_steps, self.folder, self.recipe = every, max_steps, folder, recipe
        self.provenance = provenance

    def due(self, step: int) -> bool:
        return step > 0 and (step % self.every == 0 or step == self.max_steps)

    def path(self, step: int) -> Path:
        return self.folder / checkpoint_name(step)

    def save(self, accelerator: Accelerator, step: int, state: dict) -> Path:
        """Write the accelerator's state after `step` optimizer steps, with `state` (tokens seen, tracker
        run ids) and the recipe in its state file; every process takes part."""
        final = self.path(step)
        staging = staging_folder(final)
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        accelerator.wait_for_everyone()
        try:
            accelerator.save_state(str(staging))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                publish_checkpoint(staging, final, {"step": step, **state, "recipe": self.recipe, **self.provenance})
        except OSError as err:
            raise _disk_error(err, staging, final) from err
        if accelerator.is_main_process:
            for old in complete_checkpoints(self.folder)[:-1]:  # only once the new one is complete
                shutil.rmtree(old)
        accelerator.wait_for_everyone()
        return final
