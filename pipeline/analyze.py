"""Analyses of a run, written into its folder:

    python -m pipeline.analyze phases --run runs/demo
    python -m pipeline.analyze attention --run runs/demo [--n_biographies 512]
    python -m pipeline.analyze facts --run runs/demo

`phases` prints the three learning phases of the trajectory (see pipeline/analysis/phases.py);
`attention` recomputes the attention circuits over the checkpoints and redraws the report; `facts` writes
every fact's history (facts/) at each permanent checkpoint that has none, for runs trained before runs wrote
it, and redraws the report.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from accelerate import Accelerator

from common.errors import RecipeError, run_cli
from common.recipe import parse_recipe
from data_gen import Corpus

from .analysis.circuits import ATTENTION_BIOGRAPHIES
from .analysis.phases import run_phases
from .analysis.tables import attention_table
from .evaluation import Evaluator
from .evaluation.facts import exposure_table, query_table, write_facts
from .model import load_checkpoint
from .pretrain import ARGUMENTS, pretraining_stage
from .report import write_pretrain_report
from .run_folder import EXPOSURE_FACTS, PRETRAIN, QUERY_FACTS, RUN_CONFIG, SEEN, RunFolder, step_of


def recompute_facts(run: RunFolder) -> tuple[int, int]:
    """Every fact's history at each permanent checkpoint of a pretraining run that has none: the checkpoint
    scored on the run's evaluation groups, the exposures and last draws replayed from its stream. Returns the
    checkpoints written and those kept (they had facts already)."""
    if run.stage() != PRETRAIN:
        raise RecipeError(f"'{run.path}' is a {run.stage()} run: facts are recomputed for pretraining runs")
    model_args, data_args, args, patching = parse_recipe(ARGUMENTS, ["--config", str(run / RUN_CONFIG)])
    stage = pretraining_stage(model_args, data_args, args, patching)
    final = stage.data.final_eval_individuals  # the last evaluation's, when the recipe sets it

    def evaluator(step: int) -> Evaluator:
        individuals = final if final is not None and step == args.max_steps else stage.data.eval_individuals
        return Evaluator(stage.corpus, stage.groups(individuals), args.eval_batch_size, exposure_group=SEEN)

    accelerator = Accelerator()
    counts, last = np.zeros((2, len(stage.stream.people)), dtype=np.int64)  # up to the last checkpoint replayed
    written, kept, replayed = 0, 0, 0
    for checkpoint in run.complete_checkpoints():
        step = step_of(checkpoint)
        drawn, window = stage.stream.history(step, replayed)
        counts, last, replayed = counts + drawn, np.where(window > 0, window, last), step
        if run.facts_file(QUERY_FACTS, step).is_file():
            kept += 1
            continue
        evaluate = evaluator(step)
        scores = evaluate.score_groups(load_checkpoint(checkpoint).to(accelerator.device), accelerator)
        write_facts(run, step, {QUERY_FACTS: query_table(step, scores, evaluate.templates),
                                EXPOSURE_FACTS: exposure_table(step, counts, last)})
        written += 1
    return written, kept


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.analyze", description="Analyses of a run, written "
                                                                                   "into its folder.")
    parser.add_argument("analysis", choices=["phases", "attention", "facts"],
                        help="phases: print the three phases; attention: recompute the attention circuits; facts: "
                             "write facts/ at the checkpoints without it (both redraw the report).")
    parser.add_argument("--run", required=True, help="A run's output_dir.")
    parser.add_argument("--n_biographies", type=int, default=ATTENTION_BIOGRAPHIES,
                        help=f"Biographies the attention is measured on (default {ATTENTION_BIOGRAPHIES}, as the paper).")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    run = RunFolder(args.run)
    if args.analysis == "phases":
        print(json.dumps(run_phases(run.trajectory()).to_dict(), indent=1))
        return
    corpus = Corpus(run.recipe()["corpus"])
    if args.analysis == "facts":
        written, kept = recompute_facts(run)
        report = write_pretrain_report(run, corpus)
        print(f"facts written at {written} checkpoints ({kept} had them already); report: {report}")
        return
    rows = attention_table(run, corpus, args.n_biographies, recompute=True)
    report = write_pretrain_report(run, corpus)
    print(f"{len(rows)} rows over {len({r['step'] for r in rows})} checkpoints; report: {report}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
