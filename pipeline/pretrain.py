"""Pretraining on biographies.

    accelerate launch -m pipeline.pretrain --config recipes/demo/pretrain.yaml [--key value ...]
    python -m pipeline.pretrain --config recipes/demo/pretrain.yaml

Re-running the same command on an existing output_dir resumes it from its latest resume checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from common.errors import run_cli
from common.recipe import parse_recipe
from data_gen import Corpus
from data_gen.population import spread
from data_gen.samplers import find_sequential

from .config import (
    PRETRAIN_ARGUMENTS,
    DataArguments,
    ModelArguments,
    PatchingArguments,
    TrainArguments,
    other_stage_keys,
)
from .evaluation import pretraining_groups
from .model import build_model
from .report import write_pretrain_report
from .run_folder import PRETRAIN, SEEN, range_group, sequence_group
from .train.patching import check_reference, patching_callback
from .train.stage import Stage, run_stage

ARGUMENTS = PRETRAIN_ARGUMENTS


def pretrain(model_args: ModelArguments, data_args: DataArguments, args: TrainArguments,
             patching: PatchingArguments | None = None) -> Path:
    """Train from scratch (or resume), evaluate along the way, then write the run's report."""
    patching = patching or PatchingArguments()
    if patching.reference_run:
        check_reference(patching, args)
    return run_stage(pretraining_stage(model_args, data_args, args, patching), args)


def pretraining_stage(model_args: ModelArguments, data_args: DataArguments, args: TrainArguments,
                      patching: PatchingArguments) -> Stage:
    """What pretraining trains on, evaluates and writes: its corpus, stream, groups, model and report."""
    corpus = Corpus(data_args.corpus)
    sampler = data_args.build(len(corpus.split("train")), args.batch_size, args.max_steps)
    sequence = find_sequential(sampler)

    ranges = data_args.ranges(len(corpus.split("train")))

    def groups(n: int) -> dict:  # seen and held-out individuals, each group of a sequential sampler, each range
        members = sequence.groups() if sequence else []
        return {**pretraining_groups(corpus, n), **{sequence_group(k): ("train", spread(m, n))
                                                    for k, m in enumerate(members)},
                **{range_group(first, end): ("train", np.arange(first, end)) for first, end in ranges}}

    def extra_callbacks(model, accelerator):
        return [patching_callback(patching, model, accelerator.device)] if patching.reference_run else []

    return Stage(
        name=PRETRAIN, configs=(model_args, data_args, args, patching), corpus=corpus,
        stream=corpus.stream(args.batch_size, args.data_seed, sampler=sampler,
                             shuffle_sentences=data_args.shuffle_sentences),
        make_model=lambda: build_model(model_args, corpus.tokenizer, args.attn_implementation),
        groups=groups, write_report=write_pretrain_report, exposure_group=SEEN,
        extra_callbacks=extra_callbacks)


def main(argv: list[str] | None = None) -> None:
    pretrain(*parse_recipe(ARGUMENTS, argv, elsewhere=other_stage_keys(ARGUMENTS)))


if __name__ == "__main__":
    sys.exit(run_cli(main))
