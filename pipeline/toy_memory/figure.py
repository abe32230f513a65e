"""The run's figure, drawn from its trajectory file: accuracy and loss of every group against the step."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from ..report.plots import save_figure  # also sets the Agg backend
from ..run_folder import HELDOUT, NEW, OLD, SEEN, series

GROUP_STYLE = {SEEN: ("pretraining pairs", "tab:blue"), OLD: ("old pairs (pretraining)", "tab:blue"),
               NEW: ("new pairs", "tab:green"), HELDOUT: ("held-out pairs (never trained on)", "tab:red")}


def plot_memory(rows: list[dict], path: Path) -> Path:
    """Two panels (accuracy, loss with the no-knowledge baseline log(classes)), one line per group."""
    stage = rows[0]["stage"]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for group, (label, color) in GROUP_STYLE.items():
        steps, accuracy = series(rows, group, "attribute_accuracy", stage)
        if len(steps):
            ax_acc.plot(steps, accuracy, "-o", ms=3, color=color, label=label)
            ax_loss.plot(*series(rows, group, "attribute_loss", stage), "-o", ms=3, color=color, label=label)
    ax_loss.axhline(rows[0]["baseline_loss"], ls="--", color="black",
                    label=f"no-knowledge baseline ({rows[0]['baseline_loss']:.2f})")
    ax_acc.set_ylim(-0.02, 1.02)
    for ax, name in ((ax_acc, "accuracy"), (ax_loss, "cross-entropy (nats)")):
        ax.set(xscale="symlog", xlim=(0, rows[-1]["step"]), xlabel=f"{stage} step",
               title=f"toy associative memory: {name}")
        ax.legend(fontsize=8)
    return save_figure(fig, path)
