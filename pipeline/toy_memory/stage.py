"""A toy-memory run, pretraining or (with init_from) fine-tuning: the task's pairs and model, the folder
decision, training with evaluations into the trajectory, the final checkpoint, the summary and figure."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from common.recipe import parse_recipe
from data_gen.samplers import Replay, Uniform

from ..run_folder import FINETUNE, HELDOUT, NEW, OLD, PRETRAIN, SEEN, STATE, RunFolder
from .checkpoint import load_pretrained, save_memory
from .config import MemoryArguments, ToyFinetuneArguments, ToyTrainArguments
from .data import memory_pairs
from .model import build_memory
from .report import write_toy_report
from .train import Groups, evaluate, fit

ARGUMENTS = (MemoryArguments, ToyTrainArguments, ToyFinetuneArguments)


@dataclass
class Task:
    """What a stage trains (the model, on the rows of `train` that `sampler` draws) and evaluates."""

    stage: str
    model: torch.nn.Module
    train: tuple[torch.Tensor, torch.Tensor]
    sampler: object
    groups: Groups


def pretraining_task(memory: MemoryArguments, args: ToyTrainArguments) -> Task:
    keys, classes = memory_pairs(memory, memory.n_pairs + memory.n_heldout)
    seen, heldout = (keys[: memory.n_pairs], classes[: memory.n_pairs]), (keys[memory.n_pairs:],
                                                                         classes[memory.n_pairs:])
    return Task(PRETRAIN, build_memory(memory, args.seed), seen, Uniform(memory.n_pairs),
                {SEEN: seen, HELDOUT: heldout})


def finetuning_task(memory: MemoryArguments, ft: ToyFinetuneArguments) -> Task:
    """New pairs (after the held-out ones) learned from init_from's weights, old ones replayed `replay_weight`
    times per new one: rows [0, n_new) are the new pairs, the next n_pairs the old ones."""
    first_new = memory.n_pairs + memory.n_heldout
    keys, classes = memory_pairs(memory, first_new + ft.n_new)
    old, new = (keys[: memory.n_pairs], classes[: memory.n_pairs]), (keys[first_new:], classes[first_new:])
    heldout = (keys[memory.n_pairs: first_new], classes[memory.n_pairs: first_new])
    train = (torch.cat([new[0], old[0]]), torch.cat([new[1], old[1]]))
    sampler = Replay(Uniform(ft.n_new), ft.n_new, memory.n_pairs, ft.replay_weight)
    return Task(FINETUNE, load_pretrained(ft.init_from, memory), train, sampler, {OLD: old, NEW: new, HELDOUT: heldout})


def run_toy_memory(memory: MemoryArguments, args: ToyTrainArguments, ft: ToyFinetuneArguments) -> Path:
    """Train into args.output_dir unless the same run finished there already (then nothing is done)."""
    recipe = {**asdict(memory), **asdict(args), **asdict(ft)}
    run = RunFolder(args.output_dir)
    action = run.resolve(recipe, args.overwrite_output_dir).action
    if action != "new" and (run.checkpoint(args.max_steps) / STATE).is_file():
        print(f"{run.path}: finished already ({args.max_steps:,} steps); nothing to do", file=sys.stderr)
        return run.path
    task = finetuning_task(memory, ft) if ft.init_from else pretraining_task(memory, args)
    run.start(recipe)
    started = time.perf_counter()
    fit(task.model, *task.train, task.sampler, args,
        lambda step: run.append_trajectory(evaluate(task.model, task.groups, task.stage, step)))
    save_memory(run, task.model, args.max_steps, recipe)
    write_toy_report(run)
    final = ", ".join(f"{r['split']} accuracy {r['attribute_accuracy']:.3f}" for r in run.trajectory()
                      if r["step"] == args.max_steps)
    print(f"{run.path}: {task.stage} {args.max_steps:,} steps in {time.perf_counter() - started:.1f} s: {final}")
    return run.path


def main(argv: list[str] | None = None) -> None:
    run_toy_memory(*parse_recipe(ARGUMENTS, argv))
