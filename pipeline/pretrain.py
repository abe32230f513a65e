"""Pretraining on biographies.

    accelerate launch -m pipeline.pretrain --config recipes/demo/pretrain.yaml [--key value ...]
    python -m pipeline.pretrain --config recipes/demo/pretrain.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate import Accelerator
from transformers import set_seed
from transformers.utils import logging as hf_logging

from data_gen import Corpus
from data_gen.recipe import parse_recipe, run_cli

from .callbacks import CheckpointCallback, EvaluationCallback, log_spaced_steps
from .config import DataArguments, ModelArguments, TrainArguments, recipe_dict
from .evaluation import Evaluator
from .model import build_model, count_parameters
from .report import write_report
from .run_dir import check_output_dir, claim_output_dir
from .trainer import Trainer, micro_batches


def pretrain(model_args: ModelArguments, data_args: DataArguments, args: TrainArguments) -> Path:
    """Train from scratch, evaluate along the way, then write the run's report; returns the run folder."""
    out = Path(args.output_dir)
    check_output_dir(out, args.overwrite_output_dir)
    corpus = Corpus(data_args.corpus)
    accelerator = Accelerator(mixed_precision=args.mixed_precision,
                              log_with=None if args.report_to == "none" else args.report_to, project_dir=str(out))
    accelerator.gradient_accumulation_steps = micro_batches(args, accelerator.num_processes)
    recipe = recipe_dict(model_args, data_args, args)
    if accelerator.is_main_process:
        claim_output_dir(out, recipe)
    accelerator.wait_for_everyone()
    hf_logging.disable_progress_bar()  # one progress bar: training's
    set_seed(args.seed)
    model = build_model(model_args, corpus.tokenizer)
    accelerator.init_trackers("pretrain", config={k: v for k, v in recipe.items()
                                                  if isinstance(v, (int, float, str, bool))})
    callbacks = [
        EvaluationCallback(Evaluator(corpus, data_args.eval_individuals, args.eval_batch_size),
                           log_spaced_steps(args.max_steps, args.eval_points, args.eval_every), out, "pretrain"),
        CheckpointCallback(log_spaced_steps(args.max_steps, args.checkpoint_points), out, corpus.tokenizer, recipe),
    ]
    if accelerator.is_main_process:
        sizes = count_parameters(model)
        print(f"model: {sizes['non_embedding']:,} non-embedding parameters ({sizes['total']:,} in all); "
              f"corpus: {len(corpus.dataset['train']):,} individuals, {len(corpus.tokenizer):,} tokens")
    Trainer(args, model, corpus.stream(args.batch_size, args.data_seed), accelerator, callbacks).fit()
    accelerator.end_training()
    if accelerator.is_main_process:
        report = write_report(out)
        print(f"report: {report}")
    return out


def main(argv: list[str] | None = None) -> None:
    pretrain(*parse_recipe([ModelArguments, DataArguments, TrainArguments], argv))


if __name__ == "__main__":
    sys.exit(run_cli(main))
