"""`python -m data_gen build --config recipes/demo/data.yaml [--key value ...]`
`python -m data_gen push --corpus corpora/demo --repo_id you/biographies [--private]`
`python -m data_gen export-lm-eval --corpus corpora/demo --output_dir lm_eval_tasks/demo [--individuals N]`"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common.errors import RecipeError, run_cli
from common.recipe import parse_recipe

from .builder import build
from .config import CorpusConfig
from .corpus import Corpus
from .hub import push_corpus
from .lm_eval_tasks import export_tasks

USAGE = ("usage: python -m data_gen build --config <data.yaml> [--key value ...] | "
         "python -m data_gen push --corpus <folder> --repo_id <owner/name> [--private] [--revision R] | "
         "python -m data_gen export-lm-eval --corpus <folder> --output_dir <folder> [--individuals N] [--overwrite]")


def push_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_gen push")
    parser.add_argument("--corpus", required=True, help="A corpus folder written by `python -m data_gen build`.")
    parser.add_argument("--repo_id", required=True, help="Dataset repository, owner/name.")
    parser.add_argument("--private", action="store_true", help="Create the dataset repository private.")
    parser.add_argument("--revision", default=None, help="Branch to push to (default: main).")
    return parser


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_gen export-lm-eval")
    parser.add_argument("--corpus", required=True, help="A corpus folder written by `python -m data_gen build`.")
    parser.add_argument("--output_dir", required=True, help="Task folder to write (new or empty unless --overwrite).")
    parser.add_argument("--individuals", type=int, default=0,
                        help="Individuals per group, spread evenly over their indices (default 0: all).")
    parser.add_argument("--overwrite", action="store_true", help="Replace an earlier export at output_dir.")
    return parser


def push(argv: list[str]) -> None:
    """Push a complete corpus to a Hub dataset repository."""
    args = push_parser().parse_args(argv)
    Corpus(args.corpus)  # complete and uncorrupted, or a clear error
    push_corpus(Path(args.corpus), args.repo_id, args.private, args.revision)
    print(f"pushed {args.corpus} to https://huggingface.co/datasets/{args.repo_id}")


def export_lm_eval(argv: list[str]) -> None:
    """Write a corpus's queries as lm-evaluation-harness tasks, and say how to run them."""
    args = export_parser().parse_args(argv)
    record = export_tasks(args.corpus, args.output_dir, args.individuals, args.overwrite)
    for name, task in record["tasks"].items():
        print(f"{name}: {task['docs']:,} queries about {task['individuals']:,} individuals of split '{task['split']}'")
    print(f"wrote {args.output_dir}: lm_eval --model hf --model_args pretrained=<checkpoint> "
          f"--include_path {args.output_dir} --tasks {record['group']}")


# the subcommands with flags (build reads a recipe): their parser, and what runs them on the words after the name
SUBCOMMANDS = {"push": (push_parser, push), "export-lm-eval": (export_parser, export_lm_eval)}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] in SUBCOMMANDS:
        SUBCOMMANDS[argv[0]][1](argv[1:])
        return
    if argv[0] != "build":
        raise RecipeError(f"unknown command '{argv[0]}': {USAGE}")
    (config,) = parse_recipe([CorpusConfig], argv[1:])
    start = time.perf_counter()
    out = build(config)
    print(f"wrote {config.n_total:,} individuals to {out} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    sys.exit(run_cli(main))
