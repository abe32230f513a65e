"""One training stage from start to report, shared by pretraining and fine-tuning: the run folder
(held exclusively; new, restarted, resumed or done), then the run built (model, trackers, evaluation,
checkpoints, Hub pushes, the training loop) and run (resume, fit, report, push)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from transformers import set_seed
from transformers.utils import logging as hf_logging

from common.errors import RecipeError
from common.recipe import renamed_keys
from data_gen import Corpus
from data_gen.folders import exclusive
from data_gen.stream import BiographyStream

from ..config import (
    DataArguments,
    ScheduleArguments,
    TrainArguments,
    describe_extension,
    execution_keys,
    field_defaults,
    recipe_dict,
)
from ..evaluation import Evaluator
from ..hub.client import HubPusher, check_can_push
from ..hub.revisions import push_run_files
from ..model import count_parameters, whole_model_init
from ..run_folder import HUB_LOG, RUN_CONFIG, Resolution, RunFolder, describe_change, read_state
from .callbacks import Callback, EvaluationCallback, HubPushCallback, log_spaced_steps
from .checkpoints import PermanentCheckpoints, ResumeCheckpointer
from .loop import TrainingLoop, make_accelerator

Groups = dict[str, tuple[str, np.ndarray]]  # evaluated group -> (corpus split, indices of its individuals)


@dataclass
class Stage:
    """What differs between stages: the parsed recipe sections (`configs`, a DataArguments among them), the
    corpus and the stream drawn from it, the model, the groups evaluated (and the one whose exposures are
    recorded), the report, what checkpoints record of the data beyond the corpus (`provenance`), and extra
    callbacks."""

    name: str
    configs: tuple
    corpus: Corpus
    stream: BiographyStream
    make_model: Callable[[], torch.nn.Module]
    groups: Callable[[int], Groups]  # individuals per group -> the groups evaluated
    write_report: Callable[[RunFolder, Corpus], Path]
    provenance: dict = field(default_factory=dict)
    exposure_group: str | None = None
    extra_callbacks: Callable[[torch.nn.Module, Accelerator], list[Callback]] = field(default=lambda m, a: [])

    @property
    def recipe(self) -> dict:
        return recipe_dict(*self.configs)

    @property
    def defaults(self) -> dict:
        """The recipe's keys' defaults: a run saved before a key existed had its default."""
        return field_defaults(*map(type, self.configs))

    @property
    def renamed(self) -> dict[str, str]:
        """Former key names -> current ones: a run saved before a rename has the former."""
        return renamed_keys(list(map(type, self.configs)))

    @property
    def execution(self) -> frozenset[str]:
        """The recipe's keys a resumed run may change: how it is executed, not what it learns."""
        return execution_keys(*map(type, self.configs))

    @property
    def data(self) -> DataArguments:
        return next(c for c in self.configs if isinstance(c, DataArguments))

    def records(self) -> dict:
        """What every checkpoint records of the data: the corpus, and the stage's provenance."""
        return {"corpus": self.corpus.provenance(), **self.provenance}

    def evaluator(self, args: TrainArguments, individuals: int | None) -> Evaluator | None:
        """The evaluator of `individuals` per group (None for None)."""
        if individuals is None:
            return None
        return Evaluator(self.corpus, self.groups(individuals), args.eval_batch_size,
                         exposure_group=self.exposure_group, compile=args.compile_backend)


def permanent_checkpoint_steps(args: ScheduleArguments, max_steps: int) -> list[int]:
    """The steps of permanent checkpoints: log-spaced, and those asked for."""
    return sorted(set(log_spaced_steps(max_steps, args.checkpoint_points)) | set(args.checkpoint_at))


def check_same_corpus(run: RunFolder, state: dict, corpus: Corpus) -> None:
    """A run resumes only on the corpus it started on (same fingerprint)."""
    saved = state.get("corpus")
    if saved and saved["fingerprint"] != corpus.fingerprint():
        raise RecipeError(f"output_dir '{run.path}' was trained on corpus '{saved['path']}' (fingerprint "
                          f"{saved['fingerprint']}, seed {saved['seed']}), but '{corpus.path}' now holds another "
                          f"(fingerprint {corpus.fingerprint()}, seed {corpus.config.get('seed')}): rebuild the corpus "
                          f"it was trained on, or start this recipe in a new output_dir")


def run_stage(stage: Stage, args: TrainArguments) -> Path:
    """Train (or resume) `stage` to args.max_steps in args.output_dir, evaluating along the way, then
    write its report. A finished run is not retrained; a folder holding another run, or held by another
    process, is refused."""
    run = RunFolder(args.output_dir)
    if args.push_to_hub:  # before anything is written; the Hub is asked by one process (the launcher stops the rest)
        check_can_push(args.hub_model_id, args.hub_private_repo, create=int(os.environ.get("RANK", "0")) == 0)
    accelerator = make_accelerator(args, run.path)
    with exclusive(run.path, "run") if accelerator.is_main_process else nullcontext():
        decision = [run.resolve(stage.recipe, args.overwrite_output_dir, renamed=stage.renamed,
                                defaults=stage.defaults, fingerprint=stage.corpus.fingerprint(),
                                execution=stage.execution)
                    if accelerator.is_main_process else None]
        resolution = broadcast_object_list(decision)[0]
        state = read_state(resolution.checkpoint) if resolution.checkpoint else {}
        check_same_corpus(run, state, stage.corpus)
        if resolution.changed:
            _record_changes(run, stage, resolution, accelerator.is_main_process)
        if resolution.action == "done":
            if accelerator.is_main_process:
                print(f"{run.path} already holds this run, complete; report: {stage.write_report(run, stage.corpus)}")
            return run.path
        _prepare_folder(run, stage, resolution.action, resolution.checkpoint, accelerator)
        StageRun(stage, args, run, accelerator, state).run(
            resolution.checkpoint if resolution.action == "resume" else None)
    return run.path


def _record_changes(run: RunFolder, stage: Stage, resolution: Resolution, main: bool) -> None:
    """A run going on with a moved corpus, extended, or with execution keys changed: an extension refused (by every
    process) for a sampler whose draws depend on the run's length, else recorded in its run_config.yaml and said
    (by the `main` one)."""
    if resolution.extended_from is not None and stage.data.segments(stage.recipe["max_steps"]):
        raise RecipeError(f"extend_to: the sequential sampler of '{run.path}' spreads its visits over max_steps, so "
                          f"a longer run draws other biographies from the first step: start the longer run in "
                          f"another output_dir with --max_steps {stage.recipe['max_steps']}")
    if not main:
        return
    saved = run.record(stage.recipe, resolution)
    if resolution.execution:
        changes = ", ".join(describe_change(*change) for change in resolution.execution)
        print(f"{run.path}: going on from step {resolution.step:,} with its execution changed ({changes}); what it "
              f"learns is unchanged, and {RUN_CONFIG} records the change")
    if any(key == "mixed_precision" for key, _, _ in resolution.execution):
        print(f"warning: {run.path} changes precision at step {resolution.step:,}: its losses from there on are "
              f"rounded as the new precision rounds them, so they are not bit for bit those of one precision "
              f"throughout", file=sys.stderr)
    if resolution.moved_from is not None:
        print(f"{run.path}: its corpus moved from {resolution.moved_from} to {stage.corpus.path} (same fingerprint "
              f"{stage.corpus.fingerprint()}): resuming, the new path recorded")
    if resolution.extended_from is not None:
        print(f"{run.path}: extended from {resolution.extended_from:,} to {stage.recipe['max_steps']:,} steps. "
              f"{describe_extension(saved)}")


def _prepare_folder(run: RunFolder, stage: Stage, action: str, checkpoint: Path | None,
                    accelerator: Accelerator) -> None:
    """A new run's folder started; a run with no resume checkpoint restarted in place; a resume announced."""
    if accelerator.is_main_process:
        if action == "new":
            run.start(stage.recipe)
        elif action == "restart":
            run.rewind(-1)
            print(f"restarting {run.path} from step 0: it holds no resume checkpoint")
        else:
            print(f"resuming {run.path} from {checkpoint.name}")
    accelerator.wait_for_everyone()


class StageRun:
    """A stage's run, built (seeded model, trackers, Hub pusher, callbacks, training loop) then run."""

    def __init__(self, stage: Stage, args: TrainArguments, run: RunFolder, accelerator: Accelerator, state: dict):
        self.stage, self.args, self.run_folder, self.accelerator = stage, args, run, accelerator
        hf_logging.disable_progress_bar()  # one progress bar: training's
        set_seed(args.seed)
        with whole_model_init():
            model = stage.make_model()
        accelerator.init_trackers(
            stage.name, config={k: v for k, v in stage.recipe.items() if isinstance(v, (int, float, str, bool))},
            init_kwargs={name: {"id": run_id, "resume": "allow"}
                         for name, run_id in state.get("tracker_run_ids", {}).items()})
        self.pusher = (HubPusher(args.hub_model_id, run / HUB_LOG, args.hub_private_repo,
                                 min_interval=args.hub_min_commit_interval)
                       if args.push_to_hub and accelerator.is_main_process else None)
        checkpointer = ResumeCheckpointer(args.save_steps, args.max_steps, run.resume, stage.recipe,
                                          stage.records()) if args.save_steps else None
        if accelerator.is_main_process:
            print(_describe(model, stage, accelerator))
        self.loop = TrainingLoop(args, model, stage.stream, accelerator, self._callbacks(model), checkpointer)

    def _callbacks(self, model: torch.nn.Module) -> list[Callback]:
        """The stage's own callbacks, evaluation, permanent checkpoints and their Hub pushes."""
        stage, args, run = self.stage, self.args, self.run_folder
        saved_at = permanent_checkpoint_steps(args, args.max_steps)
        final = stage.data.final_eval_individuals
        return [
            *stage.extra_callbacks(model, self.accelerator),
            EvaluationCallback(stage.evaluator(args, stage.data.eval_individuals),
                               log_spaced_steps(args.max_steps, args.eval_points, args.eval_steps), run, stage.name,
                               final=stage.evaluator(args, None if final == stage.data.eval_individuals else final)),
            PermanentCheckpoints(saved_at, run, stage.corpus.tokenizer, stage.recipe, stage.records()),
            HubPushCallback(self.pusher, saved_at, run),
        ]

    def run(self, checkpoint: Path | None) -> None:
        """Resume from `checkpoint` (None: from step 0), train, write the report, push the run's files; the
        Hub uploads already queued finish, however training ends."""
        accelerator, run = self.accelerator, self.run_folder
        try:
            start = self._resume(checkpoint) if checkpoint else 0
            self.loop.fit(start)
            accelerator.end_training()
            if accelerator.is_main_process:
                print(self.loop.summary)
                print(f"report: {self.stage.write_report(run, self.stage.corpus)}")
            if self.pusher:
                push_run_files(self.pusher, run, run.checkpoint(self.args.max_steps))
            if torch.distributed.is_initialized():  # gloo's threads must not outlive the group at exit
                accelerator.wait_for_everyone()
                torch.distributed.destroy_process_group()
        finally:
            if self.pusher:
                self._close_pusher()

    def _resume(self, checkpoint: Path) -> int:
        start = self.loop.load(checkpoint)
        if self.accelerator.is_main_process:  # only once the checkpoint has loaded
            self.run_folder.rewind(start)
        self.accelerator.wait_for_everyone()
        return start

    def _close_pusher(self) -> None:
        pushed, failed, unfinished = self.pusher.close(self.args.hub_wait_at_end)
        print(f"hub: {len(pushed)} pushes to {self.args.hub_model_id} done, {len(failed)} failed"
              + (f" ({', '.join(failed)}; see {self.run_folder / HUB_LOG})" if failed else "")
              + (f", {len(unfinished)} not done after {self.args.hub_wait_at_end:g}s ({', '.join(unfinished)})"
                 if unfinished else ""))
        if failed or unfinished:
            print(f"hub: python -m pipeline.hub push --run {self.run_folder.path} pushes what is missing",
                  file=sys.stderr)


def _describe(model: torch.nn.Module, stage: Stage, accelerator: Accelerator) -> str:
    """The model's size, the stream's and the device, in one line."""
    sizes = count_parameters(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    device = accelerator.device
    name = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    if accelerator.num_processes > 1:
        name += f" x {accelerator.num_processes} processes"
    return (f"model: {sizes['non_embedding']:,} non-embedding parameters ({sizes['total']:,} in all, {trainable:,} "
            f"trained); stream: {len(stage.stream.people):,} individuals, {len(stage.corpus.tokenizer):,} tokens; "
            f"device: {name}")
