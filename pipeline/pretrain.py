"""Pretraining on biographies.

    accelerate launch -m pipeline.pretrain --config recipes/demo/pretrain.yaml [--key value ...]
    python -m pipeline.pretrain --config recipes/demo/pretrain.yaml

Re-running the same command on an existing output_dir resumes it from its latest resume checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

from transformers import set_seed
from transformers.utils import logging as hf_logging

from data_gen import Corpus
from data_gen.recipe import parse_recipe, run_cli
from data_gen.samplers import build_sampler

from .callbacks import EvaluationCallback, log_spaced_steps
from .checkpoints import CheckpointCallback, ResumeCallback, read_state
from .config import DataArguments, ModelArguments, PatchingArguments, TrainArguments, recipe_dict
from .evaluation import Evaluator
from .model import build_model, count_parameters, whole_model_init
from .patching import check_reference, patching_callback
from .report import write_report
from .run_dir import resolve_output_dir, rewind_output_dir, start_output_dir
from .trainer import Trainer, make_accelerator


def pretrain(model_args: ModelArguments, data_args: DataArguments, args: TrainArguments,
             patching: PatchingArguments | None = None) -> Path:
    """Train from scratch (or resume), evaluate along the way, then write the run's report."""
    out = Path(args.output_dir)
    patching = patching or PatchingArguments()
    recipe = recipe_dict(model_args, data_args, args, patching)
    action, checkpoint = resolve_output_dir(out, recipe, args.overwrite_output_dir)
    state = read_state(checkpoint) if checkpoint else {}
    if patching.reference_run:
        check_reference(patching, args)
    corpus = Corpus(data_args.corpus)
    sampler = build_sampler(data_args.sampler, len(corpus.dataset["train"]), args.batch_size, args.max_steps,
                            alpha=data_args.alpha, n_celebrities=data_args.n_celebrities,
                            celebrity_weight=data_args.celebrity_weight, indiv_warmup=data_args.indiv_warmup,
                            epochs_warmup=data_args.epochs_warmup, schedule=data_args.sampler_schedule)
    accelerator = make_accelerator(args, out)
    if action == "done":
        if accelerator.is_main_process:
            print(f"{out} already holds this run, complete; report: {write_report(out)}")
        return out
    if accelerator.is_main_process:
        if action == "new":
            start_output_dir(out, recipe)
        else:
            rewind_output_dir(out, state["step"])
            print(f"resuming {out} from {checkpoint.name}")
    accelerator.wait_for_everyone()
    hf_logging.disable_progress_bar()  # one progress bar: training's
    set_seed(args.seed)
    with whole_model_init():
        model = build_model(model_args, corpus.tokenizer)
    run_ids = state.get("tracker_run_ids", {})
    accelerator.init_trackers(
        "pretrain", config={k: v for k, v in recipe.items() if isinstance(v, (int, float, str, bool))},
        init_kwargs={name: {"id": run_id, "resume": "allow"} for name, run_id in run_ids.items()})
    callbacks = [
        EvaluationCallback(Evaluator(corpus, data_args.eval_individuals, args.eval_batch_size),
                           log_spaced_steps(args.max_steps, args.eval_points, args.eval_every), out, "pretrain"),
        CheckpointCallback(sorted(set(log_spaced_steps(args.max_steps, args.checkpoint_points))
                                  | set(args.checkpoint_steps)), out, corpus.tokenizer, recipe),
    ]
    if patching.reference_run:
        callbacks.insert(0, patching_callback(patching, model, accelerator.device))
    if args.save_steps:
        callbacks.append(ResumeCallback(args.save_steps, args.max_steps, out, recipe))
    if accelerator.is_main_process:
        sizes = count_parameters(model)
        print(f"model: {sizes['non_embedding']:,} non-embedding parameters ({sizes['total']:,} in all); "
              f"corpus: {len(corpus.dataset['train']):,} individuals, {len(corpus.tokenizer):,} tokens")
    trainer = Trainer(args, model, corpus.stream(args.batch_size, args.data_seed, sampler=sampler), accelerator,
                      callbacks)
    trainer.fit(trainer.load(checkpoint) if action == "resume" else 0)
    accelerator.end_training()
    if accelerator.is_main_process:
        print(f"report: {write_report(out)}")
    return out


def main(argv: list[str] | None = None) -> None:
    pretrain(*parse_recipe([ModelArguments, DataArguments, TrainArguments, PatchingArguments], argv))


if __name__ == "__main__":
    sys.exit(run_cli(main))
