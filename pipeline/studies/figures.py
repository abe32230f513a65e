"""The studies' figures, drawn from a study's aggregated rows (summary.csv) and its runs' trajectories."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from ..analysis.phases import run_phases
from ..report.plots import plot_forgetting, save_figure
from ..run_folder import (
    ALPHA_FIGURE,
    CAPACITY_FIGURE,
    CAPACITY_FIT,
    FINETUNE,
    FORGETTING_FIGURE,
    PLATEAU_FIGURE,
    SEEN,
    STUDY_FIGURE,
    STUDY_FIT,
    STUDY_REPORT,
    WARMUP_FIGURE,
    RunFolder,
    series,
)
from .aggregate import TOLERANCE_KEYS, bootstrap_interval
from .fit import PAPER_PLATEAU_FIT, fit_bits_per_parameter, fit_with_interval
from .schema import Study


def _intervals(rows: list[dict], x_key: str, y_key: str) -> tuple[np.ndarray, ...]:
    """Per x: the mean of y over the runs (seeds) sharing it where y was reached, and its 95% bootstrap
    interval."""
    xs = sorted({r[x_key] for r in rows if r[y_key] is not None})
    stats = np.array([bootstrap_interval([r[y_key] for r in rows if r[x_key] == x and r[y_key] is not None])
                      for x in xs]).reshape(-1, 3)
    return np.array(xs, dtype=float), stats[:, 0], stats[:, 1], stats[:, 2]


def _errorbar(ax, x, mean, low, high, **kwargs):
    ax.errorbar(x, mean, yerr=[mean - low, high - mean], capsize=3, **kwargs)


def _groups(rows: list[dict], x_key: str, y_key: str) -> dict:
    """x -> the values of y of the runs (seeds) sharing it, where y was reached."""
    groups = {}
    for r in rows:
        if r.get(y_key) is not None:
            groups.setdefault(r[x_key], []).append(r[y_key])
    return groups


def plateau_fit(rows: list[dict], key: str = "plateau_length") -> dict | None:
    """The power law of plateau length (or another phase step, `key`) against N, its exponent's interval
    over seeds (needs two N)."""
    groups = _groups([r for r in rows if (r.get(key) or 0) > 0], "n_individuals", key)  # a log-log fit
    return fit_with_interval(groups) if len(groups) >= 2 else None


def plateau_vs_population(rows: list[dict], fit: dict | None, path: Path) -> Path:
    x, mean, low, high = _intervals(rows, "n_individuals", "plateau_length")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter([r["n_individuals"] for r in rows if r["plateau_length"]],
               [r["plateau_length"] for r in rows if r["plateau_length"]], color="tab:blue", alpha=0.3, s=12,
               label="runs")
    _errorbar(ax, x, mean, low, high, fmt="o", color="tab:blue", label="mean, 95% interval over seeds")
    if fit:
        grid = np.geomspace(x.min(), x.max(), 50)
        ax.plot(grid, fit["a"] * grid ** fit["b"], color="tab:blue",
                label=f"fit: {fit['a']:.3g} N^{fit['b']:.2f} [{fit['b_low']:.2f}, {fit['b_high']:.2f}] "
                      f"(R² {fit['r2']:.3f})")
    grid = np.geomspace(max(x.min(), 1), x.max(), 50) if len(x) else np.array([])
    ax.plot(grid, PAPER_PLATEAU_FIT[0] * grid ** PAPER_PLATEAU_FIT[1], "--", color="gray",
            label="paper: 0.43 N^0.81")
    ax.set(xscale="log", yscale="log", xlabel="individuals N", ylabel="plateau length (steps)")
    ax.set_xticks(x, [f"{n:,.0f}" for n in x])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def alpha_curves(rows: list[dict], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    groups = sorted({r.get("n_individuals") for r in rows}, key=lambda v: (v is None, v))
    for group in groups:
        members = [r for r in rows if r.get("n_individuals") == group]
        label = f"N = {group}" if group is not None else "runs"
        for ax, key in zip(axes, ("plateau_length", "final_loss")):
            _errorbar(ax, *_intervals(members, "alpha", key), fmt="-o", label=label)
    for ax, name in zip(axes, ("plateau length (steps)", "final attribute loss")):
        ax.set(xlabel="alpha (power-law exponent)", ylabel=name)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def warmup_heatmap(rows: list[dict], path: Path) -> Path:
    warm = [r for r in rows if not r["baseline"]]
    individuals = sorted({r["indiv_warmup"] for r in warm})
    epochs = sorted({r["epochs_warmup"] for r in warm})
    grid = np.full((len(individuals), len(epochs)), np.nan)
    spread = np.zeros_like(grid)
    for i, n in enumerate(individuals):
        for j, e in enumerate(epochs):
            values = [r["final_accuracy"] for r in warm if r["indiv_warmup"] == n and r["epochs_warmup"] == e]
            if values:
                mean, low, high = bootstrap_interval(values)
                grid[i, j], spread[i, j] = mean, (high - low) / 2
    uniform = [r["final_accuracy"] for r in rows if r["baseline"]]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    image = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            text = f"{value:.0%}" + (f"\n±{spread[i, j]:.0%}" if spread[i, j] else "")
            ax.text(j, i, text, ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks(range(len(epochs)), [str(e) for e in epochs])
    ax.set_yticks(range(len(individuals)), [str(n) for n in individuals])
    ax.set(xlabel="epochs_warmup", ylabel="indiv_warmup")
    title = "final accuracy after warm-up (mean ± half its 95% interval over seeds)"
    if uniform:
        title += f"\n(baseline run: {np.mean(uniform):.0%})"
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    return save_figure(fig, path)


MODEL_KEYS = {"model_preset", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads"}
ANCHORS = ((1.0, "1 bit/parameter (Allen-Zhu & Li, 100 exposures)"),
           (2.0, "2 bits/parameter (Allen-Zhu & Li, 1,000 exposures)"))


def capacity_fits(rows: list[dict]) -> dict:
    """Bits per parameter fitted over model sizes, counting all parameters or the non-embedding ones."""
    return {key: fit_bits_per_parameter(groups) for key in ("non_embedding_parameters", "parameters")
            if (groups := _groups(rows, key, "knowledge_bits"))}


def capacity_figure(rows: list[dict], fits: dict, path: Path) -> Path:
    """Bits stored against parameters (non-embedding, and all), every run and each size's mean with its
    interval over seeds, the fitted bits per parameter and the anchors' lines."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, name in zip(axes, ("non_embedding_parameters", "parameters"), ("non-embedding parameters",
                                                                                  "parameters (all)")):
        ax.scatter([r[key] for r in rows], [r["knowledge_bits"] for r in rows], color="tab:blue", alpha=0.3, s=14,
                   label="runs")
        _errorbar(ax, *_intervals(rows, key, "knowledge_bits"), fmt="o", color="tab:blue",
                  label="mean, 95% interval over seeds")
        grid = np.geomspace(min(r[key] for r in rows) / 1.5, max(r[key] for r in rows) * 1.5, 20)
        for bits, label in ANCHORS:
            ax.plot(grid, bits * grid, "--", color="gray", alpha=0.5 * bits, label=label)
        fit = fits[key]
        ax.plot(grid, fit["bits_per_parameter"] * grid, color="tab:blue",
                label=f"fit: {fit['bits_per_parameter']:.2f} [{fit['low']:.2f}, {fit['high']:.2f}] bits/parameter")
        ax.set(xscale="log", yscale="log", xlabel=name, ylabel="knowledge stored (bits)")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def patching_report(study: Study) -> Path:
    """An attention-patching study: the first (unpatched) run and every patched run's learning curves on one
    figure, and their phases in a table (study.md)."""
    out = Path(study.output_dir)
    runs = {"unpatched": RunFolder(study.pretrain.output_dir)}
    runs.update({f"patched with step {p.values['reference_checkpoint']}": RunFolder(study.run_folder(p))
                 for p in study.points()})
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 4.5))
    lines = ["| run | plateau start | plateau end | plateau length | emergence (50%) | final accuracy |",
             "|---|---|---|---|---|---|"]
    for label, run in runs.items():
        rows = run.trajectory()
        ax_loss.plot(*series(rows, SEEN, "attribute_loss"), label=label)
        ax_acc.plot(*series(rows, SEEN, "attribute_accuracy"), label=label)
        p = run_phases(rows)
        cells = [p.phase1_end, p.plateau_end, p.plateau_length, p.emergence]
        text = ["-" if c is None else f"{c:,.0f}" for c in cells]
        final = series(rows, SEEN, "attribute_accuracy")[1][-1]
        lines.append(f"| {label} | " + " | ".join(text) + f" | {final:.1%} |")
    ax_loss.axhline(run_phases(runs["unpatched"].trajectory()).baseline, ls="--", color="black",
                    label="no-knowledge baseline")
    for ax, name in ((ax_loss, "attribute loss (seen individuals)"), (ax_acc, "attribute accuracy (seen)")):
        ax.set_xlabel("training step")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8)
    save_figure(fig, out / STUDY_FIGURE)
    report = out / STUDY_REPORT
    report.write_text("# Attention patching\n\nEvery patched run starts from the reference's initial weights and "
                      "uses, in every layer, the attention patterns of the named reference checkpoint on its own "
                      f"inputs (gradients stopped through them).\n\n![study]({STUDY_FIGURE})\n\n"
                      + "\n".join(lines) + "\n")
    return report


def draw_study_figures(rows: list[dict], study: Study) -> list[Path]:
    """The figures the grid's keys call for: plateau against N, curves against alpha, the warm-up heatmap;
    for a fine-tuning study, every run's collapse and acquisition curves on one figure; for an attention
    patching study (a pretraining study with a first run), its report."""
    out, keys, figures = Path(study.output_dir), set(study.grid), []
    if not rows:
        return figures
    if study.stage == FINETUNE:
        return [plot_forgetting({r["run"]: RunFolder(out / r["run"]).trajectory() for r in rows},
                                out / FORGETTING_FIGURE)]
    if study.pretrain is not None:
        return [patching_report(study)]
    if keys & MODEL_KEYS and any(r.get("knowledge_bits") is not None for r in rows):
        fits = capacity_fits(rows)
        (out / CAPACITY_FIT).write_text(json.dumps(fits, indent=1) + "\n")
        figures.append(capacity_figure(rows, fits, out / CAPACITY_FIGURE))
    if "n_individuals" in keys and "alpha" not in keys:
        fit = plateau_fit(rows)
        figures.append(plateau_vs_population(rows, fit, out / PLATEAU_FIGURE))
        if fit:  # with the fits of the plateau's start and end steps and of its length under each band
            fit = {**fit, **{key: plateau_fit(rows, key) for key in ("plateau_start", "plateau_end", *TOLERANCE_KEYS)}}
            (out / STUDY_FIT).write_text(json.dumps(fit, indent=1) + "\n")
    if "alpha" in keys:
        figures.append(alpha_curves(rows, out / ALPHA_FIGURE))
    if {"indiv_warmup", "epochs_warmup"} <= keys:
        figures.append(warmup_heatmap(rows, out / WARMUP_FIGURE))
    return figures
