"""The toy memory's checkpoint: its final weights (torch.save of the state dict) and the run's recipe, written
staged into the run folder's checkpoints/ so that a folder with a checkpoint's name is complete."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from common.errors import RecipeError

from ..run_folder import STATE, TOY_WEIGHTS, RunFolder, read_state, staged_checkpoint
from .config import MemoryArguments
from .model import build_memory


def save_memory(run: RunFolder, model: torch.nn.Module, step: int, recipe: dict) -> None:
    with staged_checkpoint(run.checkpoint(step), {"step": step, "recipe": recipe}) as staging:
        torch.save(model.state_dict(), staging / TOY_WEIGHTS)


def pretrained_checkpoint(init_from: str) -> Path:
    """The checkpoint folder `init_from` names, or the last complete one of the run folder it names."""
    path = Path(init_from)
    if (path / STATE).is_file():
        return path
    found = RunFolder(path).complete_checkpoints()
    if not found:
        raise RecipeError(f"init_from '{init_from}' is neither a checkpoint nor a run folder holding one: point it at "
                          f"a finished toy-memory pretraining run (e.g. runs/toy_memory/pretrain)")
    return found[-1]


def load_pretrained(init_from: str, memory: MemoryArguments) -> torch.nn.Module:
    """The weights of `init_from`, which must have been trained on the task `memory` describes."""
    checkpoint = pretrained_checkpoint(init_from)
    if not (checkpoint / TOY_WEIGHTS).is_file():
        raise RecipeError(f"init_from '{checkpoint}' holds no {TOY_WEIGHTS}: it is not a toy-memory checkpoint")
    saved = read_state(checkpoint)["recipe"]
    differing = {key: value for key, value in asdict(memory).items() if saved.get(key) != value}
    if differing:
        theirs = ", ".join(f"{key} {saved.get(key)} (this recipe: {value})" for key, value in differing.items())
        raise RecipeError(f"init_from '{checkpoint}' was pretrained with {theirs}: give these keys the pretraining's "
                          f"values")
    model = build_memory(memory, seed=0)
    model.load_state_dict(torch.load(checkpoint / TOY_WEIGHTS, weights_only=True))
    return model
