"""One training stage from start to report, shared by pretraining and fine-tuning: the run folder
(held exclusively; new, restarted, resumed or done), trackers, evaluation, checkpoints, the training
loop and the report."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from transformers import set_seed
from transformers.utils import logging as hf_logging

from common.errors import RecipeError
from data_gen import Corpus
from data_gen.folders import exclusive
from data_gen.stream import BiographyStream

from ..config import ScheduleArguments, TrainArguments
from ..evaluation import Evaluator
from ..hub import HubPusher, push_run_files
from ..model import count_parameters, whole_model_init
from ..run_folder import HUB_LOG, RunFolder, read_state
from .callbacks import Callback, EvaluationCallback, HubPushCallback, log_spaced_steps
from .checkpoints import PermanentCheckpoints, ResumeCheckpointer
from .trainer import Trainer, make_accelerator


@dataclass
class Stage:
    """What differs between stages: the model, the stream, what is evaluated, extra callbacks, the report, and
    what checkpoints record of the data (`provenance`: the corpus, and for fine-tuning the pretrained one)."""

    name: str
    recipe: dict
    corpus: Corpus
    stream: BiographyStream
    evaluator: Callable[[int], Evaluator]  # individuals per group -> the evaluator
    make_model: Callable[[], torch.nn.Module]
    write_report: Callable[[RunFolder], Path]
    provenance: dict
    eval_individuals: int
    final_eval_individuals: int | None
    defaults: dict  # the recipe's keys' defaults: a run saved before a key existed had its default
    extra_callbacks: Callable[[torch.nn.Module, Accelerator], list[Callback]] = field(default=lambda m, a: [])


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
    accelerator = make_accelerator(args, run.path)
    with exclusive(run.path, "run") if accelerator.is_main_process else nullcontext():
        decision = [run.resolve(stage.recipe, args.overwrite_output_dir, renamed=type(args).renamed_keys,
                                defaults=stage.defaults)
                    if accelerator.is_main_process else None]
        action, checkpoint = broadcast_object_list(decision)[0]
        return _run(stage, args, run, accelerator, action, checkpoint)


def _device_name(accelerator: Accelerator) -> str:
    """The device of this process, with the GPU's name, and how many processes train."""
    device = accelerator.device
    name = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    return f"{name} x {accelerator.num_processes} processes" if accelerator.num_processes > 1 else name


def _run(stage: Stage, args: TrainArguments, run: RunFolder, accelerator: Accelerator, action: str,
         checkpoint: Path | None) -> Path:
    state = read_state(checkpoint) if checkpoint else {}
    check_same_corpus(run, state, stage.corpus)
    if action == "done":
        if accelerator.is_main_process:
            print(f"{run.path} already holds this run, complete; report: {stage.write_report(run)}")
        return run.path
    if accelerator.is_main_process:
        if action == "new":
            run.start(stage.recipe)
        elif action == "restart":
            run.rewind(-1)
            print(f"restarting {run.path} from step 0: it holds no resume checkpoint")
        else:
            print(f"resuming {run.path} from {checkpoint.name}")
    accelerator.wait_for_everyone()
    hf_logging.disable_progress_bar()  # one progress bar: training's
    set_seed(args.seed)
    with whole_model_init():
        model = stage.make_model()
    accelerator.init_trackers(
        stage.name, config={k: v for k, v in stage.recipe.items() if isinstance(v, (int, float, str, bool))},
        init_kwargs={name: {"id": run_id, "resume": "allow"}
                     for name, run_id in state.get("tracker_run_ids", {}).items()})
    saved_at = permanent_checkpoint_steps(args, args.max_steps)
    pusher = (HubPusher(args.hub_model_id, run / HUB_LOG, args.hub_private_repo,
                        min_interval=args.hub_min_commit_interval)
              if args.push_to_hub and accelerator.is_main_process else None)
    callbacks = [
        *stage.extra_callbacks(model, accelerator),
        EvaluationCallback(stage.evaluator(stage.eval_individuals),
                           log_spaced_steps(args.max_steps, args.eval_points, args.eval_steps), run, stage.name,
                           final=None if stage.final_eval_individuals in (None, stage.eval_individuals)
                           else stage.evaluator(stage.final_eval_individuals)),
        PermanentCheckpoints(saved_at, run, stage.corpus.tokenizer, stage.recipe, stage.provenance),
        HubPushCallback(pusher, saved_at, run),
    ]
    checkpointer = ResumeCheckpointer(args.save_steps, args.max_steps, run.resume, stage.recipe, stage.provenance) \
        if args.save_steps else None
    if accelerator.is_main_process:
        sizes = count_parameters(model)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"model: {sizes['non_embedding']:,} non-embedding parameters ({sizes['total']:,} in all, "
              f"{trainable:,} trained); stream: {len(stage.stream.people):,} individuals, "
              f"{len(stage.corpus.tokenizer):,} tokens; device: {_device_name(accelerator)}")
    trainer = Trainer(args, model, stage.stream, accelerator, callbacks, checkpointer)
    try:
        start = 0
        if action == "resume":
            start = trainer.load(checkpoint)
            if accelerator.is_main_process:  # only once the checkpoint has loaded
                run.rewind(start)
            accelerator.wait_for_everyone()
        trainer.fit(start)
        accelerator.end_training()
        if accelerator.is_main_process:
            print(trainer.summary)
            print(f"report: {stage.write_report(run)}")
        if pusher:
            push_run_files(pusher, run, run.checkpoint(args.max_steps))
        if torch.distributed.is_initialized():  # gloo's threads must not outlive the group at exit
            accelerator.wait_for_everyone()
            torch.distributed.destroy_process_group()
    finally:
        if pusher:  # the uploads of the checkpoints already saved finish, even when training stopped
            pushed, failed = pusher.close()
            print(f"hub: {len(pushed)} pushes to {args.hub_model_id} done, {len(failed)} failed"
                  + (f" ({', '.join(failed)}; see {run / HUB_LOG})" if failed else ""))
    return run.path
