"""What a finished toy-memory run writes beside its trajectory, from its files: the summary the language-model
runs have (phases.json in pretraining, finetune.json in fine-tuning) and the figure."""

from __future__ import annotations

import json

from ..analysis.forgetting import forgetting_summary
from ..analysis.phases import run_phases
from ..run_folder import FINETUNE, FINETUNE_SUMMARY, PHASES, TOY_FIGURE, RunFolder, write_atomically
from .figure import plot_memory


def write_toy_report(run: RunFolder) -> dict:
    """Write the run's summary and figure; returns the summary."""
    rows = run.trajectory()
    if rows[0]["stage"] == FINETUNE:
        name, summary = FINETUNE_SUMMARY, forgetting_summary(rows)
    else:
        name, summary = PHASES, run_phases(rows).to_dict()
    write_atomically(run / name, json.dumps(summary, indent=1) + "\n")
    plot_memory(rows, run / TOY_FIGURE)
    return summary
