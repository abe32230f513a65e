"""The pretraining report (report.md, phases.json and the phases, hallucination and attention figures),
written from the run's files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from data_gen import Corpus

from ..analysis.facts import acquisition, flip_rates, forgetting, has_facts, learned_first, read_facts
from ..analysis.phases import run_phases
from ..analysis.sequence import run_segments, sequence_summary, visit_rates
from ..analysis.tables import attention_table
from ..config import describe_execution_changes, describe_extension
from ..model import has_attention
from ..run_folder import (
    ATTENTION_FIGURE,
    FACTS_FIGURE,
    HALLUCINATION_FIGURE,
    HELDOUT,
    PHASES,
    PHASES_FIGURE,
    REPORT,
    RUN_CONFIG,
    SEEN,
    SEQUENCE_FIGURE,
    RunFolder,
    write_atomically,
)
from .markdown import final_table, step_text
from .plots import plot_attention, plot_facts, plot_hallucinations, plot_phases, plot_sequence

CHANCE_NOTE = ("\n\nChance: the statistic under uniform causal attention on the same biographies (each query's mass "
               "spread evenly over itself and the earlier tokens); a value at chance measures no circuit.")


def _beside_chance(value: float, chance: float | None) -> str:
    """A statistic and its chance level (absent from tables written before chance levels were measured)."""
    return f"{value:.3f}" if chance is None else f"{value:.3f} (chance {chance:.3f})"


def _best(rows: list[dict], layer: int, key: str) -> str:
    """The statistic `key` of the best head of `layer`, beside its chance level."""
    best = max((r for r in rows if r["layer"] == layer), key=lambda r: r[key])
    return _beside_chance(best[key], best.get(f"{key}_chance"))


def _circuit_summary(rows: list[dict]) -> str:
    last_layer = max(r["layer"] for r in rows)
    lines = ["| step | name grouping, layer 1 (best head) | extraction name/(name+text), last layer (best head) "
             "| entropy / log t (mean) |", "|---|---|---|---|"]
    for step in sorted({r["step"] for r in rows}):
        at = [r for r in rows if r["step"] == step]
        entropy = sum(r["entropy"] for r in at) / len(at)
        lines.append(f"| {step:,} | {_best(at, 0, 'name_grouping')} | {_best(at, last_layer, 'extraction_ratio')} "
                     f"| {_beside_chance(entropy, at[0].get('entropy_chance'))} |")
    return "\n".join(lines) + CHANCE_NOTE


def _sequence_section(run: RunFolder, rows: list[dict], segments: list[tuple[int, int, int]]) -> str:
    """The groups of a sequential sampler: their figure, and each visit's learning and forgetting rates."""
    plot_sequence(rows, segments, run / SEQUENCE_FIGURE)
    visits = visit_rates(rows, segments)
    lines = ["| group | visit (steps) | loss at start -> end | learning (nats / 1k steps) | forgetting after it, "
             "until step | (nats / 1k steps) | half of the learning, of the forgetting (steps) |",
             "|---|---|---|---|---|---|---|"]
    for v in visits:
        forgetting = "-" if v["forgetting_per_1k"] is None else f"{v['forgetting_per_1k']:.3f}"
        lines.append(f"| {v['group']} | {v['start']:,}-{v['end']:,} | {v['loss_start']:.3f} -> {v['loss_end']:.3f} "
                     f"| {v['learning_per_1k']:.3f} | {v['left_until']:,} | {forgetting} "
                     f"| {step_text(v['learning_half_steps'])}, {step_text(v['forgetting_half_steps'])} |")
    mean = sequence_summary(rows, segments)
    means = (f"Mean learning rate {mean['learning_per_1k']:.3f}, mean forgetting rate {mean['forgetting_per_1k']:.3f} "
             f"nats per 1k steps; half of a visit's learning takes {mean['learning_half_steps']:.0f} steps, half of "
             f"the forgetting after it {mean['forgetting_half_steps']:.0f}." if None not in mean.values() else "")
    return f"## Groups visited in sequence\n\n![sequence]({SEQUENCE_FIGURE})\n\n" + "\n".join(lines) + f"\n\n{means}\n"


def _interval(half: dict) -> str:
    if half["exposures"] is None:
        return "not reached within the exposures observed"
    low = "-" if half["low"] is None else f"{half['low']:.1f}"
    high = "-" if half["high"] is None else f"{half['high']:.1f}"
    return f"{half['exposures']:.1f} [{low}, {high}]"


def _facts_section(run: RunFolder, plateau_end: float | None) -> str:
    """Every fact's history (facts/): acquisition and forgetting figure, exposures to half knowledge per phase,
    flip rates and the step each attribute is half known."""
    if not has_facts(run):
        return "This run has no facts/ folder (it was trained before runs wrote every fact's history)."
    facts = read_facts(run)
    phases = acquisition(facts, plateau_end)
    plot_facts(phases, forgetting(facts, plateau_end), run / FACTS_FIGURE)
    flips = flip_rates(facts)
    rows = "\n".join(f"| {phase.replace('_', ' ')} | {r['half_knowledge']['facts']:,} | "
                     f"{_interval(r['half_knowledge'])} |" for phase, r in phases.items())
    order = sorted(learned_first(facts).items(), key=lambda item: math.inf if item[1] is None else item[1])
    first = ", ".join(f"{attribute} {step_text(step)}" for attribute, step in order)
    rate = "-" if flips["known_then_lost"] is None else f"{flips['known_then_lost']:.1%}"
    return f"""![facts]({FACTS_FIGURE})

| evaluations | facts | exposures to half knowledge [95% interval over individuals] |
|---|---|---|
{rows}

Between consecutive evaluations, {rate} of the facts known are lost ({flips['pairs']:,} pairs). Step at which
each attribute is half known: {first}. The per-fact rows are in `facts/` (Parquet: `pandas.read_parquet`)."""


def _circuits_section(run: RunFolder, corpus: Corpus, phases) -> str:
    """The attention circuits over the checkpoints (table and figure), or one line for a model without attention."""
    checkpoints = run.complete_checkpoints()
    if checkpoints and not has_attention(checkpoints[0]):
        return "None: this run trains a Hawk model, which has no attention (its blocks are RG-LRU recurrences)."
    circuits = attention_table(run, corpus)
    if circuits:
        plot_attention(circuits, phases, run / ATTENTION_FIGURE)
    return f"""![attention]({ATTENTION_FIGURE})

Recompute with `python -m pipeline.analyze attention --run {run.path}`.

{_circuit_summary(circuits) if circuits else "No checkpoints were saved."}"""


def write_pretrain_report(run: RunFolder, corpus: Corpus) -> Path:
    """Detect the phases, draw the figures and write report.md; returns the report's path. `corpus` is the
    run's, whose biographies the attention circuits are measured on."""
    recipe = run.recipe()
    rows = run.trajectory()
    phases = run_phases(rows)
    write_atomically(run / PHASES, json.dumps(phases.to_dict(), indent=1) + "\n")
    plot_phases(rows, phases, run / PHASES_FIGURE)
    plot_hallucinations(rows, phases, run / HALLUCINATION_FIGURE)
    segments = run_segments(recipe)
    sequence = _sequence_section(run, rows, segments) if segments else ""
    final = {r["split"]: r for r in rows if r["step"] == phases.max_step}
    length = phases.plateau_length
    share = f" ({length / phases.max_step:.0%} of the run)" if length is not None else ""
    text = f"""# Run report: `{run.path}`

![three phases]({PHASES_FIGURE})

## Phases (seen individuals, held-out templates)

| | step |
|---|---|
| end of phase 1 = plateau start (loss within 5% of the baseline) | {step_text(phases.plateau_start)} |
| plateau end (loss 5% below the baseline) | {step_text(phases.plateau_end)} |
| plateau length | {step_text(length)}{share} |
| knowledge emergence (accuracy reaches 50%) | {step_text(phases.emergence)} |
| hallucination onset (held-out loss starts rising) | {step_text(phases.hallucination_onset)} |
| last step | {phases.max_step:,.0f} |

No-knowledge baseline: {phases.baseline:.3f} nats (entropy of the training population's values).

## Final evaluation (step {phases.max_step:,.0f})

{final_table(rows)}

{sequence}
## Hallucinations

![hallucinations]({HALLUCINATION_FIGURE})

The held-out individuals' loss starts rising (5% of the baseline above its minimum) at step
{step_text(phases.hallucination_onset)}, against knowledge emergence at step {step_text(phases.emergence)}. At the end,
the top probability of the first value token is {final[SEEN]["first_token_top_prob"]:.3f} for seen and
{final[HELDOUT]["first_token_top_prob"]:.3f} for held-out individuals (entropy
{final[SEEN]["first_token_entropy"]:.3f} against {final[HELDOUT]["first_token_entropy"]:.3f}); that
probability tells them apart with AUROC {final[SEEN]["confidence_auroc"]:.3f} (0.5 is chance).

## Every fact's history (seen individuals)

{_facts_section(run, phases.plateau_end)}

## Attention circuits (over the checkpoints)

{_circuits_section(run, corpus, phases)}

## Reproduce

Corpus `{recipe['corpus']}`, model preset `{recipe['model_preset']}`, {recipe['max_steps']:,} steps of
{recipe['batch_size']} biographies, learning rate {recipe['learning_rate']}. {describe_extension(recipe) or ""} {describe_execution_changes(recipe) or ""}
The resolved recipe is in `{RUN_CONFIG}`; rerun with

    python -m pipeline.pretrain --config {run / RUN_CONFIG} --output_dir <new folder>

Redraw this report from the run's files with `python -m pipeline.report --run {run.path}`.
"""
    return write_atomically(run / REPORT, text)
