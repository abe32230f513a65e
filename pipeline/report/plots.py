"""Figures drawn from a run's files (never from training state), so they can be redrawn later."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ..analysis.phases import Phases
from ..run_folder import FINETUNE, HELDOUT, NEW, OLD, RANGE_GROUP, SEEN, replacing, sequence_group, series

SPLIT_STYLE = {SEEN: ("seen individuals (held-out templates)", "tab:blue"),
               HELDOUT: ("held-out individuals", "tab:red")}


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Lay out, write (through a temporary name, so a failure keeps the figure that was there) and close a figure."""
    try:
        fig.tight_layout()
        with replacing(path) as temporary:
            fig.savefig(temporary, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def _shade_phases(ax, phases: Phases, labelled: bool = False) -> None:
    """Shade the three phases (with legend labels if `labelled`) and mark knowledge emergence."""
    spans = [(0, phases.plateau_start, "1: learn the distribution", "tab:gray"),
             (phases.plateau_start, phases.plateau_end or phases.max_step, "2: plateau", "gold"),
             (phases.plateau_end, phases.max_step, "3: knowledge emerges", "tab:green")]
    for start, stop, label, color in spans:
        if start is not None and stop is not None and stop > start:
            ax.axvspan(start, stop, color=color, alpha=0.15, label=label if labelled else None)
    if phases.emergence is not None:
        ax.axvline(phases.emergence, color="tab:green", ls=":")


def plot_phases(rows: list[dict], phases: Phases, path: Path) -> Path:
    """Attribute loss and accuracy against steps, with the baseline and the three phases marked."""
    fig, (ax_loss, ax_acc) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for split, (label, color) in SPLIT_STYLE.items():
        steps, loss = series(rows, split, "attribute_loss")
        _, accuracy = series(rows, split, "attribute_accuracy")
        ax_loss.plot(steps, loss, "-o", ms=3, color=color, label=label)
        ax_acc.plot(steps, accuracy, "-o", ms=3, color=color, label=label)
    ax_loss.axhline(phases.baseline, ls="--", color="black", label=f"no-knowledge baseline ({phases.baseline:.2f})")
    _shade_phases(ax_loss, phases, labelled=True)
    _shade_phases(ax_acc, phases)
    if phases.emergence is not None:
        ax_acc.annotate(f"emergence (step {phases.emergence:.0f})", (phases.emergence, 0.5), xytext=(5, 0),
                        textcoords="offset points", color="tab:green", va="center")
    ax_loss.set_ylabel("attribute loss (nats)")
    ax_loss.legend(fontsize=8, loc="upper right")
    ax_acc.set_ylabel("attribute accuracy")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_xlabel("training step")
    ax_acc.legend(fontsize=8, loc="upper left")
    ax_loss.set_title("The three phases of learning facts")
    return save_figure(fig, path, dpi=120)


def plot_hallucinations(rows: list[dict], phases: Phases, path: Path) -> Path:
    """Held-out loss against the baseline, first-token confidence of seen and held-out individuals,
    and how well that confidence tells them apart (AUROC)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for split, (label, color) in SPLIT_STYLE.items():
        steps, loss = series(rows, split, "attribute_loss")
        axes[0].plot(steps, loss, "-o", ms=3, color=color, label=label)
        steps, top_prob = series(rows, split, "first_token_top_prob")
        axes[1].plot(steps, top_prob, "-o", ms=3, color=color, label=f"{label}: top probability")
        steps, entropy = series(rows, split, "first_token_entropy")
        axes[1].plot(steps, entropy / max(entropy.max(), 1e-9), "--", color=color, label=f"{label}: entropy (scaled)")
    axes[0].axhline(phases.baseline, ls="--", color="black", label="no-knowledge baseline")
    if phases.hallucination_onset is not None:
        axes[0].axvline(phases.hallucination_onset, color="tab:red", ls=":", label="held-out loss starts rising")
    steps, separation = series(rows, SEEN, "confidence_auroc")
    axes[2].plot(steps, separation, "-o", ms=3, color="tab:purple")
    axes[2].axhline(0.5, ls="--", color="black")
    titles = ("attribute loss", "confidence in the first value token", "AUROC: top probability, seen vs held-out")
    for ax, title in zip(axes, titles):
        _shade_phases(ax, phases)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    axes[2].set_ylim(0.4, 1.02)
    return save_figure(fig, path)


def plot_attention(rows: list[dict], phases: Phases, path: Path) -> Path:
    """The circuits over checkpoints: name grouping in the first layer, extraction in the last,
    and the normalised attention entropy of every layer."""
    layers = sorted({r["layer"] for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = ((axes[0], layers[0], "name_grouping", f"layer {layers[0] + 1}: last name -> other name tokens"),
              (axes[1], layers[-1], "extraction_ratio",
               f"layer {layers[-1] + 1}: value position -> name / (name+text)"))
    for ax, layer, key, title in panels:
        heads = sorted({r["head"] for r in rows if r["layer"] == layer})
        for head in heads:
            points = sorted((r["step"], r[key]) for r in rows if r["layer"] == layer and r["head"] == head)
            ax.plot(*zip(*points), "-o", ms=2, lw=1, label=f"head {head}")
        chance = rows[0].get(f"{key}_chance")  # absent from tables written before chance levels were measured
        if chance is not None:
            ax.axhline(chance, ls="--", color="black", lw=1, label="chance (uniform attention)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    for layer in layers:
        steps = sorted({r["step"] for r in rows})
        means = [np.mean([r["entropy"] for r in rows if r["layer"] == layer and r["step"] == s]) for s in steps]
        axes[2].plot(steps, means, "-o", ms=2, label=f"layer {layer + 1}")
    axes[2].set_title("attention entropy / log t (mean over heads)", fontsize=10)
    axes[2].legend(fontsize=7)
    for ax in axes:
        _shade_phases(ax, phases)
        ax.set_xlabel("training step (checkpoints)")
    return save_figure(fig, path)


def plot_forgetting(runs: dict[str, list[dict]], path: Path, drift: list[dict] | None = None) -> Path:
    """Fine-tuning: old individuals' accuracy and loss (the collapse) and new individuals' accuracy
    against steps, one line per run; with `drift`, how far attention and weights moved."""
    panels = 4 if drift else 3
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.8))
    for label, rows in runs.items():
        for ax, split, key in zip(axes, (OLD, OLD, NEW), ("attribute_accuracy", "attribute_loss",
                                                           "attribute_accuracy")):
            steps, values = series(rows, split, key, FINETUNE)
            ax.plot(steps, values, "-o", ms=2.5, label=label)
    for ax, title in zip(axes, ("old individuals: accuracy", "old individuals: loss", "new individuals: accuracy")):
        ax.set(xscale="symlog", xlabel="fine-tuning step", title=title)
    axes[0].set_ylim(-0.02, 1.02)
    axes[2].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7)
    if drift:
        steps = [r["step"] for r in drift]
        ax = axes[3]
        ax.plot(steps, [r["attention_distance"] for r in drift], "-o", ms=3, color="black",
                label="attention patterns (total variation)")
        if drift[0].get("reference_attention_distance") is not None:
            ax.axhline(drift[0]["reference_attention_distance"], ls=":", color="black",
                       label="attention's movement while knowledge emerged (pretraining)")
        for block, color in (("attention", "tab:blue"), ("mlp", "tab:orange"), ("embeddings", "tab:gray")):
            ax.plot(steps, [r[f"weight_change_{block}"] for r in drift], "--", color=color,
                    label=f"{block} weights (relative change)")
        ax.set(xscale="symlog", xlabel="fine-tuning step", title="distance to the pretrained model")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_runs(runs: dict[str, list[dict]], baseline: float, path: Path) -> Path:
    """Several pretraining runs (a study's, or patched ones): attribute loss and accuracy of seen individuals
    against steps, one colour per run (the accuracy of its `eval_ranges` blocks dashed), with the no-knowledge
    baseline."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 4.5))
    for (label, rows), color in zip(runs.items(), plt.cm.tab10(np.arange(len(runs)) % 10)):
        ax_loss.plot(*series(rows, SEEN, "attribute_loss"), color=color, label=label)
        ax_acc.plot(*series(rows, SEEN, "attribute_accuracy"), color=color, label=label)
        ranges = sorted({r["split"] for r in rows if r["split"].startswith(RANGE_GROUP)})
        for group, style in zip(ranges, ("--", ":", "-.") * len(ranges)):
            ax_acc.plot(*series(rows, group, "attribute_accuracy"), style, color=color, lw=1,
                        label=f"{label}: {group.replace('_', ' ')}")
    ax_loss.axhline(baseline, ls="--", color="black", label="no-knowledge baseline")
    for ax, name in ((ax_loss, "attribute loss (seen individuals)"), (ax_acc, "attribute accuracy (seen)")):
        ax.set_xlabel("training step")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8 if len(runs) < 10 else 6)
    return save_figure(fig, path)


def plot_sequence(rows: list[dict], segments: list[tuple[int, int, int]], path: Path) -> Path:
    """Each group's attribute loss against step (claim C23), the steps of its visits shaded in its colour."""
    groups = sorted({g for _, _, g in segments})
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(groups)))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for group, color in zip(groups, colors):
        ax.plot(*series(rows, sequence_group(group), "attribute_loss"), color=color, label=f"group {group}")
        for start, end, g in segments:
            if g == group:
                ax.axvspan(start, end, color=color, alpha=0.12)
    ax.axhline(next(r["baseline_loss"] for r in rows if r["split"] == SEEN), ls="--", color="black",
               label="no-knowledge baseline")
    ax.set(xlabel="training step", ylabel="attribute loss", title="groups visited in sequence (shaded: trained)")
    ax.legend(fontsize=8, ncol=2)
    return save_figure(fig, path)


def plot_facts(acquisition: dict[str, dict], forgetting: list[dict], path: Path) -> Path:
    """Share of facts known against their individual's exposures, per phase (`analysis.facts.acquisition`), and
    share of once-known facts still known against steps since their individual was last drawn."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (phase, result), color in zip(acquisition.items(), ("tab:gray", "tab:blue", "tab:green")):
        buckets = result["by_exposure"]
        half = result["half_knowledge"]["exposures"]
        label = phase.replace("_", " ") + (f" (half known at {half:.1f} exposures)" if half is not None else "")
        axes[0].plot([b["range"][0] for b in buckets], [b["correct"] for b in buckets], "-o", ms=3, color=color,
                     label=label)
    if forgetting:
        axes[1].plot([b["steps_since_drawn"][0] for b in forgetting], [b["still_known"] for b in forgetting], "-o",
                     ms=3, color="tab:red")
    titles = ("facts known, by exposures so far (bucket start)", "once-known facts still known, by steps since drawn")
    for ax, title, xlabel in zip(axes, titles, ("exposures of the individual", "steps since last drawn"), strict=True):
        ax.set_xscale("symlog", linthresh=1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)
