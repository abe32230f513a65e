"""Pretraining on biographies.

    accelerate launch -m pipeline.pretrain --config recipes/demo/pretrain.yaml [--key value ...]
    python -m pipeline.pretrain --config recipes/demo/pretrain.yaml

Re-running the same command on an existing output_dir resumes it from its latest resume checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

from data_gen import Corpus
from data_gen.recipe import parse_recipe, run_cli
from data_gen.samplers import build_sampler

from .config import DataArguments, ModelArguments, PatchingArguments, TrainArguments, recipe_dict
from .evaluation import Evaluator, pretraining_splits
from .model import build_model
from .patching import check_reference, patching_callback
from .report import write_report
from .stage import Stage, run_stage


def make_sampler(data_args: DataArguments, n: int, args: TrainArguments):
    """The recipe's sampler over `n` individuals."""
    return build_sampler(data_args.sampler, n, args.batch_size, args.max_steps, alpha=data_args.alpha,
                         n_celebrities=data_args.n_celebrities, celebrity_weight=data_args.celebrity_weight,
                         indiv_warmup=data_args.indiv_warmup, epochs_warmup=data_args.epochs_warmup,
                         schedule=data_args.sampler_schedule)


def pretrain(model_args: ModelArguments, data_args: DataArguments, args: TrainArguments,
             patching: PatchingArguments | None = None) -> Path:
    """Train from scratch (or resume), evaluate along the way, then write the run's report."""
    patching = patching or PatchingArguments()
    if patching.reference_run:
        check_reference(patching, args)
    corpus = Corpus(data_args.corpus)
    sampler = make_sampler(data_args, len(corpus.dataset["train"]), args)

    def extra_callbacks(model, accelerator):
        return [patching_callback(patching, model, accelerator.device)] if patching.reference_run else []

    stage = Stage(
        name="pretrain", recipe=recipe_dict(model_args, data_args, args, patching), corpus=corpus,
        stream=corpus.stream(args.batch_size, args.data_seed, sampler=sampler),
        evaluator=lambda: Evaluator(corpus, pretraining_splits(corpus, data_args.eval_individuals),
                                    args.eval_batch_size, exposure_split="seen"),
        make_model=lambda: build_model(model_args, corpus.tokenizer), write_report=write_report,
        extra_callbacks=extra_callbacks)
    return run_stage(stage, args)


def main(argv: list[str] | None = None) -> None:
    pretrain(*parse_recipe([ModelArguments, DataArguments, TrainArguments, PatchingArguments], argv))


if __name__ == "__main__":
    sys.exit(run_cli(main))
