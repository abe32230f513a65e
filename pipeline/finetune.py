"""Fine-tuning a pretrained model on new individuals, measuring what happens to the old ones.

    accelerate launch -m pipeline.finetune --config recipes/demo/finetune.yaml [--key value ...]
    python -m pipeline.finetune --config recipes/demo/finetune.yaml

Starts from the weights of `init_from` (a fresh optimizer), trains on `n_individuals_finetune`
individuals of `new_split` (optionally replaying pretraining individuals), and evaluates at
log-spaced steps from step 0 the old (pretraining), new and held-out individuals. Re-running
the same command resumes, as in pretraining.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import PreTrainedTokenizerFast

from common.errors import RecipeError, run_cli
from common.recipe import parse_recipe
from data_gen import Corpus
from data_gen.population import Individuals, spread
from data_gen.samplers import Replay

from .config import (
    FINETUNE_ARGUMENTS,
    DataArguments,
    FinetuneArguments,
    FinetuneTrainArguments,
    other_stage_keys,
)
from .evaluation import pretraining_groups
from .hub.client import resolve_checkpoint
from .model import BLOCKS, check_attention, load_checkpoint, lora_targets
from .report import write_finetune_report
from .run_folder import FINETUNE, HELDOUT, NEW, OLD, RUN_CONFIG, STATE, read_state
from .train.stage import Stage, run_stage

ARGUMENTS = FINETUNE_ARGUMENTS


def new_and_old(corpus: Corpus, ft: FinetuneArguments) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the individuals fine-tuned on (in ft.new_split) and of the old ones (in train)."""
    available = len(corpus.split(ft.new_split))
    stop = ft.new_offset + ft.n_individuals_finetune
    if stop > available:
        raise RecipeError(f"new_offset {ft.new_offset} + n_individuals_finetune {ft.n_individuals_finetune} = {stop} "
                          f"individuals, but split '{ft.new_split}' of corpus '{corpus.path}' has {available}: lower "
                          f"them or build the corpus with more")
    new = np.arange(ft.new_offset, stop)
    old = np.arange(len(corpus.split("train")))
    return new, (np.setdiff1d(old, new) if ft.new_split == "train" else old)


def check_tokenizer(checkpoint: Path, corpus: Corpus) -> None:
    """The checkpoint must have been trained with the corpus's tokenizer: the same tokens and ids (or,
    for weights saved without a tokenizer, the same vocabulary size)."""
    if (checkpoint / "tokenizer.json").is_file():
        same = PreTrainedTokenizerFast.from_pretrained(str(checkpoint)).get_vocab() == corpus.tokenizer.get_vocab()
    else:
        same = json.loads((checkpoint / "config.json").read_text()).get("vocab_size") == len(corpus.tokenizer)
    if not same:
        raise RecipeError(f"init_from '{checkpoint}' was trained with another tokenizer than corpus '{corpus.path}': "
                          f"fine-tune on the corpus it was pretrained on (its {RUN_CONFIG} names it)")


def check_pretraining_corpus(checkpoint: Path, corpus: Corpus, allow_other: bool) -> dict | None:
    """The corpus record of the pretrained checkpoint (None for weights saved without one). Its training
    individuals must be the corpus's, the old individuals whose forgetting is measured, unless `allow_other`."""
    record = read_state(checkpoint).get("corpus") if (checkpoint / STATE).is_file() else None
    if record is None:
        print(f"warning: init_from '{checkpoint}' does not record the corpus it was pretrained on: make sure it is "
              f"'{corpus.path}'", file=sys.stderr)
    elif record["train_fingerprint"] != corpus.fingerprint("train") and not allow_other:
        raise RecipeError(f"init_from '{checkpoint}' was pretrained on corpus '{record['path']}' (seed "
                          f"{record['seed']}, train fingerprint {record['train_fingerprint']}), whose individuals are "
                          f"not those of '{corpus.path}' ({corpus.fingerprint('train')}): fine-tune on the corpus it "
                          f"was pretrained on, or pass --allow_other_corpus true to fine-tune anyway")
    return record


def load_model(checkpoint: Path, ft: FinetuneArguments, attn_implementation: str) -> torch.nn.Module:
    """The pretrained weights, with the parameters ft.freeze names fixed or LoRA adapters added."""
    model = load_checkpoint(checkpoint, attn_implementation=attn_implementation)
    if ft.lora_rank:
        return get_peft_model(model, LoraConfig(r=ft.lora_rank, lora_alpha=ft.lora_alpha, lora_dropout=0.0,
                                                target_modules=lora_targets(model, ft.lora_target_modules)))
    if ft.freeze == "attention":
        check_attention(model, f"init_from '{checkpoint}'", "freeze")
    if ft.freeze != "none":
        for name, parameter in model.named_parameters():
            if BLOCKS[ft.freeze] in name:
                parameter.requires_grad_(False)
    return model


def finetune(data_args: DataArguments, args: FinetuneTrainArguments, ft: FinetuneArguments) -> Path:
    """Fine-tune (or resume), evaluating old, new and held-out individuals, then write the report."""
    corpus = Corpus(data_args.corpus)
    new, old = new_and_old(corpus, ft)
    checkpoint = resolve_checkpoint(ft.init_from, ft.init_revision)
    check_tokenizer(checkpoint, corpus)
    pretrained_on = check_pretraining_corpus(checkpoint, corpus, ft.allow_other_corpus)
    people = Individuals.concatenate([corpus.individuals(ft.new_split).take(new),
                                      corpus.individuals("train").take(old)])
    sampler = Replay(data_args.build(len(new), args.batch_size, args.max_steps), len(new), len(old),
                     ft.replay_weight)
    def groups(n: int) -> dict:
        return {OLD: ("train", spread(old, n)), NEW: (ft.new_split, spread(new, n)),
                HELDOUT: pretraining_groups(corpus, n)[HELDOUT]}

    stage = Stage(
        name=FINETUNE, configs=(data_args, args, ft), corpus=corpus,
        stream=corpus.stream(args.batch_size, args.data_seed, sampler=sampler, people=people,
                             shuffle_sentences=data_args.shuffle_sentences),
        make_model=lambda: load_model(checkpoint, ft, args.attn_implementation), groups=groups,
        write_report=write_finetune_report, provenance={"init_corpus": pretrained_on})
    return run_stage(stage, args)


def main(argv: list[str] | None = None) -> None:
    finetune(*parse_recipe(ARGUMENTS, argv, elsewhere=other_stage_keys(ARGUMENTS)))


if __name__ == "__main__":
    sys.exit(run_cli(main))
