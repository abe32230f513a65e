"""The fine-tuning report (report.md, finetune.json, forgetting.png and the drift table), written from
the run's files."""

from __future__ import annotations

import json
from pathlib import Path

from data_gen import Corpus

from ..analysis.facts import has_facts, kept, read_queries
from ..analysis.forgetting import forgetting_summary, reference_checkpoints
from ..analysis.tables import weight_drift_table
from ..config import describe_execution_changes, describe_extension
from ..run_folder import (
    DRIFT_TABLE, FINETUNE_SUMMARY, FORGETTING_FIGURE, OLD, REPORT, RUN_CONFIG, RunFolder, read_state, write_atomically,
)
from .markdown import final_table, percent_text, step_text
from .plots import plot_forgetting


def _other_corpus_note(run: RunFolder) -> str:
    """A warning when the model was pretrained on another corpus than the one it is fine-tuned on."""
    checkpoints = run.complete_checkpoints()
    state = read_state(checkpoints[0]) if checkpoints else {}
    pretrained, corpus = state.get("init_corpus"), state.get("corpus")
    if not pretrained or not corpus or pretrained["train_fingerprint"] == corpus["train_fingerprint"]:
        return ""
    return (f"\n**Another corpus** (`--allow_other_corpus true`): the model was pretrained on `{pretrained['path']}` "
            f"(seed {pretrained['seed']}) and is fine-tuned on `{corpus['path']}` (seed {corpus['seed']}), whose "
            f"training individuals differ: the old individuals below are people the model never saw, so their "
            f"numbers do not measure forgetting.\n")


def _share_of_reference(row: dict) -> str:
    """A drift row's attention distance as a share of the reference movement, where there is one."""
    reference = row.get("reference_attention_distance")
    return f"{row['attention_distance'] / reference:.2f}" if reference else "-"


def _reference_text(run: RunFolder, drift: list[dict]) -> str:
    """The reference movement the attention distance is read against, or why there is none."""
    reference, steps = drift[0].get("reference_attention_distance"), drift[0].get("reference_steps")
    if reference is None:
        why = reference_checkpoints(run)
        return f"Reference movement: none ({why if isinstance(why, str) else f'{DRIFT_TABLE} is older than it'})."
    return (f"Reference movement: attention moved {reference:.4f} (total variation, on the same biographies) in "
            f"pretraining, from step {steps[0]:,} (its checkpoint nearest the plateau end, or its first without one) "
            f"to step {steps[1]:,} (the model fine-tuned here), while the knowledge was acquired.")


def _drift_section(run: RunFolder, drift: list[dict]) -> str:
    """The drift table, each attention distance also as a share of the reference movement, then that reference."""
    if not drift:
        return "No step-0 checkpoint was saved."
    lines = ["| step | attention distance (total variation) | / reference movement | attention weights "
             "| MLP weights | embeddings |", "|---|---|---|---|---|---|"] + [
        f"| {r['step']:,} | {r['attention_distance']:.4f} | {_share_of_reference(r)} | "
        f"{r['weight_change_attention']:.4f} | {r['weight_change_mlp']:.4f} | {r['weight_change_embeddings']:.4f} |"
        for r in drift]
    return "\n".join(lines) + f"\n\n{_reference_text(run, drift)}"


def _old_facts_section(run: RunFolder) -> str:
    """The old facts one by one (facts/): how many of those the pretrained model knew are still known."""
    if not has_facts(run, exposures=False):
        return "This run has no facts/ folder (it was trained before runs wrote every fact's history)."
    rows = kept(read_queries(run, OLD))
    lines = "\n".join(f"| {r['step']:,} | {percent_text(r['still_known'], '-')} | {percent_text(r['learned'], '-')} |"
                      for r in rows)
    return f"""Of the {rows[0]['known_before']:,} old facts (individual, attribute, held-out template) the pretrained
model knew, the share still known at each evaluation, and of those it did not know, the share known (facts/,
group `{OLD}`; with no replay, none of these individuals is drawn during fine-tuning):

| step | still known | unknown before, known now |
|---|---|---|
{lines}"""


def write_finetune_report(run: RunFolder, corpus: Corpus) -> Path:
    """A fine-tuning run's summary (finetune.json), drift table, figure and report.md. `corpus` is the
    run's, whose biographies the attention drift is measured on."""
    recipe = run.recipe()
    rows = run.trajectory()
    summary = forgetting_summary(rows)
    write_atomically(run / FINETUNE_SUMMARY, json.dumps(summary, indent=1) + "\n")
    drift = weight_drift_table(run, corpus)
    plot_forgetting({f"{recipe['n_individuals_finetune']} new, replay {recipe['replay_weight']}": rows},
                    run / FORGETTING_FIGURE, drift)
    text = f"""# Fine-tuning report: `{run.path}`

From `{recipe['init_from']}`{f" (revision {recipe['init_revision']})" if recipe['init_revision'] else ""}:
{recipe['n_individuals_finetune']:,} individuals of split `{recipe['new_split']}` (from index
{recipe['new_offset']}), replay weight {recipe['replay_weight']}, freeze `{recipe['freeze']}`, LoRA rank
{recipe['lora_rank']}; {recipe['max_steps']:,} steps of {recipe['batch_size']} at learning rate
{recipe['learning_rate']} ({recipe['lr_scheduler_type']}). {describe_extension(recipe) or ""} {describe_execution_changes(recipe) or ""}
{_other_corpus_note(run)}
![forgetting]({FORGETTING_FIGURE})

## Old knowledge against new

| | |
|---|---|
| old accuracy before | {percent_text(summary['old_accuracy_before'])} |
| old accuracy at its lowest (step {summary['old_accuracy_lowest_step']:,.0f}) | {percent_text(summary[
'old_accuracy_lowest'])} |
| old accuracy at the end | {percent_text(summary['old_accuracy_final'])} |
| step at which old accuracy has lost half of its drop | {step_text(summary['half_drop_step'])} |
| old loss before / at the end | {summary['old_loss_before']:.3f} / {summary['old_loss_final']:.3f} |
| new accuracy before / at the end | {percent_text(summary['new_accuracy_before'])} / {percent_text(summary[
'new_accuracy_final'])} |
| step at which new accuracy reaches 50% | {step_text(summary['new_half_step'])} |

## Old facts, one by one

{_old_facts_section(run)}

## Where the model changed (against its step-0, pretrained, weights)

{_drift_section(run, drift)}

## Final evaluation (step {summary['last_step']:,.0f})

{final_table(rows)}

## Reproduce

The resolved recipe is in `{RUN_CONFIG}`; rerun with

    python -m pipeline.finetune --config {run / RUN_CONFIG} --output_dir <new folder>

Redraw this report with `python -m pipeline.report --run {run.path}`.
"""
    return write_atomically(run / REPORT, text)
