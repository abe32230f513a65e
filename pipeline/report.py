"""The run report (report.md + figure), written from the run's files.

    python -m pipeline.report --run runs/demo
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from data_gen import Corpus
from data_gen.recipe import run_cli

from .analyze import load_trajectory, run_phases
from .circuits import run_attention_table
from .forgetting import drift_table, forgetting_summary
from .plots import plot_attention, plot_forgetting, plot_hallucinations, plot_phases
from .run_dir import ATTENTION_TABLE, DRIFT_TABLE, load_recipe

REPORT = "report.md"
FIGURE = "phases.png"
PHASES = "phases.json"
ATTENTION_FIGURE = "attention.png"
HALLUCINATION_FIGURE = "hallucinations.png"
FINETUNE_SUMMARY = "finetune.json"
FORGETTING_FIGURE = "forgetting.png"


def cached_table(path: Path, compute: Callable[[], list[dict]], recompute: bool = False) -> list[dict]:
    """Rows computed once into a JSON-lines file, then read back from it."""
    if recompute or not path.is_file():
        path.write_text("".join(json.dumps(r) + "\n" for r in compute()))
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def attention_table(run_dir: Path, n_biographies: int = 64, recompute: bool = False) -> list[dict]:
    """The run's attention statistics per checkpoint, layer and head (attention.jsonl)."""
    return cached_table(run_dir / ATTENTION_TABLE, lambda: run_attention_table(
        run_dir, Corpus(load_recipe(run_dir)["corpus"]), n_biographies), recompute)


def _circuit_summary(rows: list[dict]) -> str:
    last_layer = max(r["layer"] for r in rows)
    lines = ["| step | name grouping, layer 1 (best head) | extraction name/(name+text), last layer (best head) "
             "| entropy / log t (mean) |", "|---|---|---|---|"]
    for step in sorted({r["step"] for r in rows}):
        at = [r for r in rows if r["step"] == step]
        grouping = max(r["name_grouping"] for r in at if r["layer"] == 0)
        extraction = max(r["extraction_ratio"] for r in at if r["layer"] == last_layer)
        entropy = sum(r["entropy"] for r in at) / len(at)
        lines.append(f"| {step:,} | {grouping:.3f} | {extraction:.3f} | {entropy:.3f} |")
    return "\n".join(lines)


def _step(value: float | None) -> str:
    return "not reached" if value is None else f"{value:,.0f}"


def _final_table(rows: list[dict]) -> str:
    last = max(r["step"] for r in rows)
    final = {r["split"]: r for r in rows if r["step"] == last}
    first = next(iter(final.values()))
    attributes = list(first["per_attribute"])
    lines = ["| | " + " | ".join(["all"] + attributes) + " |", "|---" * (len(attributes) + 2) + "|"]
    for split, row in final.items():
        for key, label in (("accuracy", "accuracy"), ("loss", "loss")):
            overall = row[f"attribute_{key}"]
            values = [row["per_attribute"][a][key] for a in attributes]
            fmt = "{:.1%}" if key == "accuracy" else "{:.3f}"
            lines.append(f"| {split} {label} | " + " | ".join(fmt.format(v) for v in [overall] + values) + " |")
    baselines = [first["baseline_loss"]] + [first["per_attribute"][a]["baseline"] for a in attributes]
    lines.append("| baseline loss | " + " | ".join(f"{v:.3f}" for v in baselines) + " |")
    return "\n".join(lines)


def write_report(run_dir: str | Path) -> Path:
    """Detect the phases, draw the figure and write report.md; returns the report's path."""
    run_dir = Path(run_dir)
    recipe = load_recipe(run_dir)
    rows = load_trajectory(run_dir)
    phases = run_phases(rows)
    (run_dir / PHASES).write_text(json.dumps(phases.to_dict(), indent=1) + "\n")
    plot_phases(rows, phases, run_dir / FIGURE)
    plot_hallucinations(rows, phases, run_dir / HALLUCINATION_FIGURE)
    circuits = attention_table(run_dir)
    if circuits:
        plot_attention(circuits, phases, run_dir / ATTENTION_FIGURE)
    final = {r["split"]: r for r in rows if r["step"] == phases.max_step}
    length = phases.plateau_length
    share = f" ({length / phases.max_step:.0%} of the run)" if length is not None else ""
    text = f"""# Run report: `{run_dir}`

![three phases]({FIGURE})

## Phases (seen individuals, held-out templates)

| | step |
|---|---|
| end of phase 1 = plateau start (loss within 5% of the baseline) | {_step(phases.phase1_end)} |
| plateau end (loss 5% below the baseline) | {_step(phases.plateau_end)} |
| plateau length | {_step(length)}{share} |
| knowledge emergence (accuracy reaches 50%) | {_step(phases.emergence)} |
| hallucination onset (held-out loss starts rising) | {_step(phases.hallucination_onset)} |
| last step | {phases.max_step:,.0f} |

No-knowledge baseline: {phases.baseline:.3f} nats (entropy of the training population's values).

## Final evaluation (step {phases.max_step:,.0f})

{_final_table(rows)}

## Hallucinations

![hallucinations]({HALLUCINATION_FIGURE})

The held-out individuals' loss starts rising (5% of the baseline above its minimum) at step
{_step(phases.hallucination_onset)}, against knowledge emergence at step {_step(phases.emergence)}. At the end,
the top probability of the first value token is {final["seen"]["first_token_top_prob"]:.3f} for seen and
{final["heldout"]["first_token_top_prob"]:.3f} for held-out individuals (entropy
{final["seen"]["first_token_entropy"]:.3f} against {final["heldout"]["first_token_entropy"]:.3f}); that
probability tells them apart with AUROC {final["seen"]["confidence_auroc"]:.3f} (0.5 is chance).

## Attention circuits (over the checkpoints)

![attention]({ATTENTION_FIGURE})

Recompute with `python -m pipeline.analyze attention --run {run_dir}`.

{_circuit_summary(circuits) if circuits else "No checkpoints were saved."}

## Reproduce

Corpus `{recipe['corpus']}`, model preset `{recipe['model_preset']}`, {recipe['max_steps']:,} steps of
{recipe['batch_size']} biographies, learning rate {recipe['learning_rate']}. The resolved recipe is in
`run_config.yaml`; rerun with

    python -m pipeline.pretrain --config {run_dir}/run_config.yaml --output_dir <new folder>

Redraw this report from the run's files with `python -m pipeline.report --run {run_dir}`.
"""
    path = run_dir / REPORT
    path.write_text(text)
    return path


def _percent(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1%}"


def write_finetune_report(run_dir: str | Path) -> Path:
    """A fine-tuning run's summary (finetune.json), drift table, figure and report.md."""
    run_dir = Path(run_dir)
    recipe = load_recipe(run_dir)
    rows = load_trajectory(run_dir)
    summary = forgetting_summary(rows)
    (run_dir / FINETUNE_SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    drift = cached_table(run_dir / DRIFT_TABLE, lambda: drift_table(run_dir, Corpus(recipe["corpus"])))
    plot_forgetting({f"{recipe['n_individuals_finetune']} new, replay {recipe['replay_weight']}": rows},
                    run_dir / FORGETTING_FIGURE, drift)
    drift_lines = ["| step | attention distance (total variation) | attention weights | MLP weights | embeddings |",
                   "|---|---|---|---|---|"] + [
        f"| {r['step']:,} | {r['attention_distance']:.4f} | {r['weight_change_attention']:.4f} | "
        f"{r['weight_change_mlp']:.4f} | {r['weight_change_embeddings']:.4f} |" for r in drift]
    text = f"""# Fine-tuning report: `{run_dir}`

From `{recipe['init_from']}`{f" (revision {recipe['init_revision']})" if recipe['init_revision'] else ""}:
{recipe['n_individuals_finetune']:,} individuals of split `{recipe['new_split']}` (from index
{recipe['new_offset']}), replay weight {recipe['replay_weight']}, freeze `{recipe['freeze']}`, LoRA rank
{recipe['lora_rank']}; {recipe['max_steps']:,} steps of {recipe['batch_size']} at learning rate
{recipe['learning_rate']} ({recipe['lr_scheduler_type']}).

![forgetting]({FORGETTING_FIGURE})

## Old knowledge against new

| | |
|---|---|
| old accuracy before | {_percent(summary['old_accuracy_before'])} |
| old accuracy at its lowest (step {summary['old_accuracy_lowest_step']:,.0f}) | {_percent(summary[
'old_accuracy_lowest'])} |
| old accuracy at the end | {_percent(summary['old_accuracy_final'])} |
| step at which old accuracy has lost half of its drop | {_step(summary['half_drop_step'])} |
| old loss before / at the end | {summary['old_loss_before']:.3f} / {summary['old_loss_final']:.3f} |
| new accuracy before / at the end | {_percent(summary['new_accuracy_before'])} / {_percent(summary[
'new_accuracy_final'])} |
| step at which new accuracy reaches 50% | {_step(summary['new_half_step'])} |

## Where the model changed (against its step-0, pretrained, weights)

{chr(10).join(drift_lines) if drift else "No step-0 checkpoint was saved."}

## Final evaluation (step {summary['last_step']:,.0f})

{_final_table(rows)}

## Reproduce

The resolved recipe is in `run_config.yaml`; rerun with

    python -m pipeline.finetune --config {run_dir}/run_config.yaml --output_dir <new folder>

Redraw this report with `python -m pipeline.report --run {run_dir}`.
"""
    path = run_dir / REPORT
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a run's report from its files.")
    parser.add_argument("--run", required=True, help="A run's output_dir (pretraining or fine-tuning).")
    run = Path(parser.parse_args(argv).run)
    print(write_finetune_report(run) if "init_from" in load_recipe(run) else write_report(run))


if __name__ == "__main__":
    sys.exit(run_cli(main))
