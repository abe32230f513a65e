"""Redraw a run's report from its files:

    python -m pipeline.report --run runs/demo
"""

from __future__ import annotations

import argparse
import sys

from common.errors import run_cli
from data_gen import Corpus

from ..run_folder import RunFolder
from . import write_run_report


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.report", description="Write a run's report from its "
                                                                                  "files.")
    parser.add_argument("--run", required=True, help="A run's output_dir (pretraining or fine-tuning).")
    return parser


def main(argv: list[str] | None = None) -> None:
    run = RunFolder(parser().parse_args(argv).run)
    print(write_run_report(run, Corpus(run.recipe()["corpus"])))


if __name__ == "__main__":
    sys.exit(run_cli(main))
