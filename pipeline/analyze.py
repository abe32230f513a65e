"""Analyses of a run, written into its folder:

    python -m pipeline.analyze phases --run runs/demo
    python -m pipeline.analyze attention --run runs/demo [--n_biographies 512]

`phases` prints the three learning phases of the trajectory (see pipeline/analysis/phases.py);
`attention` recomputes the attention circuits over the checkpoints and redraws the report.
"""

from __future__ import annotations

import argparse
import json
import sys

from common.errors import run_cli
from data_gen import Corpus

from .analysis.phases import run_phases
from .analysis.circuits import ATTENTION_BIOGRAPHIES
from .analysis.tables import attention_table
from .report import write_pretrain_report
from .run_folder import RunFolder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.analyze", description="Analyses of a run, written "
                                                                                   "into its folder.")
    parser.add_argument("analysis", choices=["phases", "attention"])
    parser.add_argument("--run", required=True, help="A run's output_dir.")
    parser.add_argument("--n_biographies", type=int, default=ATTENTION_BIOGRAPHIES,
                        help=f"Biographies the attention is measured on (default {ATTENTION_BIOGRAPHIES}, as the paper).")
    args = parser.parse_args(argv)
    run = RunFolder(args.run)
    if args.analysis == "phases":
        print(json.dumps(run_phases(run.trajectory()).to_dict(), indent=1))
        return
    corpus = Corpus(run.recipe()["corpus"])
    rows = attention_table(run, corpus, args.n_biographies, recompute=True)
    report = write_pretrain_report(run, corpus)
    print(f"{len(rows)} rows over {len({r['step'] for r in rows})} checkpoints; report: {report}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
