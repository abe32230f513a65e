"""Figures drawn from a run's files (never from training state), so they can be redrawn later."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .analyze import Phases, series  # noqa: E402

SPLIT_STYLE = {"seen": ("seen individuals (held-out templates)", "tab:blue"),
               "heldout": ("held-out individuals", "tab:red")}


def plot_phases(rows: list[dict], phases: Phases, path: Path) -> Path:
    """Attribute loss and accuracy against steps, with the baseline and the three phases marked."""
    fig, (ax_loss, ax_acc) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for split, (label, color) in SPLIT_STYLE.items():
        steps, loss = series(rows, split, "attribute_loss")
        _, accuracy = series(rows, split, "attribute_accuracy")
        ax_loss.plot(steps, loss, "-o", ms=3, color=color, label=label)
        ax_acc.plot(steps, accuracy, "-o", ms=3, color=color, label=label)
    ax_loss.axhline(phases.baseline, ls="--", color="black", label=f"no-knowledge baseline ({phases.baseline:.2f})")
    spans = [(0, phases.phase1_end, "1: learn the distribution", "tab:gray"),
             (phases.phase1_end, phases.plateau_end or phases.max_step, "2: plateau", "gold"),
             (phases.plateau_end, phases.max_step, "3: knowledge emerges", "tab:green")]
    for ax in (ax_loss, ax_acc):
        for start, stop, label, color in spans:
            if start is not None and stop is not None and stop > start:
                ax.axvspan(start, stop, color=color, alpha=0.15, label=label if ax is ax_loss else None)
        if phases.emergence is not None:
            ax.axvline(phases.emergence, color="tab:green", ls=":")
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
