"""Checkpoints. Permanent ones (log-spaced steps, all kept, Hugging Face format) are for science;
resume ones (every `save_steps`, latest kept) hold everything needed to continue exactly:
model, optimizer, scheduler and RNG states (Accelerate's `save_state` layout), the step (which is the
stream's position) and tokens seen, the tracker run ids and the recipe. Both record the corpus the model
learned from (`corpus`: path, fingerprints, seed; and for fine-tuning `init_corpus`, that of its
pretrained weights), so that a run never resumes, and a model is never fine-tuned, on another one.

Training does not wait for the disk: the states are copied to host memory on the training thread, then
written by a background writer, to a staging folder renamed when complete
(`run_folder.staged_checkpoint`), so a folder with a checkpoint's name is always complete, even after a
SIGKILL during a write. Resume checkpoints over several processes are written by Accelerate, in step.
"""

from __future__ import annotations

import copy
import random
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.checkpointing import save_accelerator_state, save_custom_state
from accelerate.utils import DistributedType, is_compiled_module
from accelerate.utils.constants import RNG_STATE_NAME
from peft import PeftModel

from ..hub.manifest import write_manifest
from ..model import check_model_keys, model_keys
from ..run_folder import EXPOSURES, RunFolder, checkpoint_name, complete_checkpoints, staged_checkpoint
from .callbacks import Callback, TrainingState


def uncompiled(model: torch.nn.Module) -> torch.nn.Module:
    """`model` without torch.compile's wrapper, whose state dict prefixes every key with `_orig_mod.`."""
    return model._orig_mod if is_compiled_module(model) else model


def host_copy(tree):
    """A copy of a (nested) state in host memory, which training can no longer change."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone() if tree.device.type == "cpu" else tree.detach().to("cpu")
    if isinstance(tree, dict):
        return {key: host_copy(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(host_copy(value) for value in tree)
    return copy.deepcopy(tree)


class BackgroundWriter:
    """Runs writes one after another, in order, in a background thread. A failed write is raised on the
    training thread (at the next submit, or at `close`), and the writes queued after it are dropped, so
    nothing newer than a missing checkpoint is ever published."""

    def __init__(self):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self.pending: list[Future] = []
        self.failed = False

    def _run(self, write: Callable[[], None]) -> None:
        if self.failed:
            return
        try:
            write()
        except BaseException:
            self.failed = True
            raise

    def submit(self, write: Callable[[], None]) -> None:
        for future in [f for f in self.pending if f.done()]:
            self.pending.remove(future)
            future.result()
        self.pending.append(self.pool.submit(self._run, write))

    def close(self) -> None:
        """Wait for every pending write; raise the first that failed."""
        try:
            while self.pending:
                self.pending.pop(0).result()
        finally:
            self.pool.shutdown(wait=True)


class PermanentCheckpoints(Callback):
    """Permanent checkpoints loadable with `from_pretrained`: weights gathered on every process
    (full weights under ZeRO-3 and FSDP; LoRA adapters merged), saved by the main one with the
    tokenizer, the exposures so far and a manifest of the files' hashes (pipeline/hub/manifest.py)."""

    def __init__(self, steps: list[int], run: RunFolder, tokenizer, recipe: dict, provenance: dict):
        self.steps, self.run, self.tokenizer, self.recipe = set(steps), run, tokenizer, recipe
        self.provenance = provenance
        self.keys: set[str] | None = None

    def writes_at(self, step: int) -> bool:
        return step in self.steps

    def on_step(self, state: TrainingState, step: int) -> None:
        if step not in self.steps:
            return
        accelerator = state.accelerator
        # every process takes part (gathered under ZeRO-3, FSDP); keys without torch.compile's `_orig_mod.`
        weights = accelerator.get_state_dict(uncompiled(state.model))
        if accelerator.is_main_process:
            model = accelerator.unwrap_model(state.model, keep_torch_compile=False)
            if isinstance(model, PeftModel):  # adapters merged into a copy: a plain transformers checkpoint
                model = copy.deepcopy(model).merge_and_unload()
                weights = model.state_dict()
            self.keys = self.keys or model_keys(model)  # the class's, once per run
            check_model_keys(self.keys, weights, self.run.checkpoint(step), type(model).__name__)
            weights, exposures, tokens = host_copy(weights), state.exposures(step), state.tokens_seen
            state.write_in_background(lambda: self._write(step, model, weights, exposures, tokens))
        accelerator.wait_for_everyone()

    def _write(self, step: int, model, weights: dict, exposures: np.ndarray, tokens_seen: int) -> None:
        state = {"step": step, "recipe": self.recipe, **self.provenance}
        with staged_checkpoint(self.run.checkpoint(step), state) as staging:
            model.save_pretrained(staging, state_dict=weights)
            self.tokenizer.save_pretrained(staging)
            np.save(staging / EXPOSURES, exposures)
            write_manifest(staging, step, tokens_seen, self.provenance["corpus"]["fingerprint"])


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

    def save(self, accelerator: Accelerator, step: int, state: dict, writer: BackgroundWriter) -> None:
        """Write the accelerator's state after `step` optimizer steps, with `state` (tokens seen, tracker
        run ids) and the recipe in its state file: on a single device, snapshotted here and written by
        `writer`; over several processes, by all of them now."""
        record = {"step": step, **state, "recipe": self.recipe, **self.provenance}
        if accelerator.distributed_type == DistributedType.NO:
            snapshot = _snapshot(accelerator)
            writer.submit(lambda: self._write(snapshot, record))
            return
        with staged_checkpoint(self.path(step), record, accelerator.is_main_process,
                               accelerator.wait_for_everyone) as staging:
            accelerator.save_state(str(staging))
        if accelerator.is_main_process:
            self._drop_older()
        accelerator.wait_for_everyone()

    def _write(self, snapshot: dict, record: dict) -> None:
        with staged_checkpoint(self.path(record["step"]), record) as staging:
            _write_snapshot(snapshot, staging)
        self._drop_older()

    def _drop_older(self) -> None:
        for old in complete_checkpoints(self.folder)[:-1]:  # only once the new one is complete
            shutil.rmtree(old)


class _Frozen:
    """A saved state standing in for the object it was taken from (Accelerate's savers call state_dict())."""

    def __init__(self, state: dict):
        self.state = state

    def state_dict(self) -> dict:
        return self.state


def _snapshot(accelerator: Accelerator) -> dict:
    """What `Accelerator.save_state` writes on a single device, copied to host memory now: the prepared
    models' weights, optimizers, schedulers and registered objects, and the RNG states."""
    rng = {"step": accelerator.step, "random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
           "torch_manual_seed": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["torch_cuda_manual_seed"] = torch.cuda.get_rng_state_all()
    return {"weights": [host_copy(accelerator.get_state_dict(m, unwrap=False)) for m in accelerator._models],
            "optimizers": [_Frozen(host_copy(o.state_dict())) for o in accelerator._optimizers],
            "schedulers": [_Frozen(host_copy(s.state_dict())) for s in accelerator._schedulers],
            "objects": [_Frozen(host_copy(o.state_dict())) for o in accelerator._custom_objects], "rng": rng,
            "scaler": _Frozen(host_copy(accelerator.scaler.state_dict())) if accelerator.scaler else None}


def _write_snapshot(snapshot: dict, folder: Path) -> None:
    """The files of `Accelerator.save_state` (which `load_state` reads), from a snapshot."""
    save_accelerator_state(str(folder), snapshot["weights"], snapshot["optimizers"], snapshot["schedulers"], [], 0,
                           snapshot["rng"]["step"], snapshot["scaler"])
    torch.save(snapshot["rng"], folder / f"{RNG_STATE_NAME}_0.pkl")  # the RNG states of the snapshot's time
    for index, obj in enumerate(snapshot["objects"]):
        save_custom_state(obj, str(folder), index)
