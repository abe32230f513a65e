"""The studies' figures, drawn from a study's aggregated rows (summary.csv), its fits and its runs' trajectories."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from ..report.patching import write_patching_report
from ..report.plots import plot_forgetting, plot_runs, save_figure
from ..run_folder import (
    ALPHA_FIGURE,
    CAPACITY_FIGURE,
    FORGETTING_FIGURE,
    PATCHING_GRID_FIGURE,
    PLATEAU_FIGURE,
    STUDY_FIGURE,
    WARMUP_FIGURE,
    RunFolder,
)
from .aggregate import (
    MODEL_KEYS,
    StudyFits,
    aggregate,
    fits_plateau,
    group_rows,
    group_values,
    positive,
    write_study_fits,
)
from .fit import PAPER_PLATEAU_FIT
from .intervals import over_seeds
from .schema import Study


def curve_keys(study: Study, drawn: set[str]) -> tuple[str, ...]:
    """The keys a figure drawn along `drawn` must tell apart: every key the study varies but seed, `drawn` and,
    where one of `drawn` is paired, the keys paired with it (they vary with it)."""
    along = drawn | (set(study.paired) if drawn & set(study.paired) else set())
    return tuple(k for k in study.axes if k != "seed" and k not in along)


def _curves(rows: list[dict], by: tuple[str, ...]) -> list[tuple[str, list[dict]]]:
    """The rows split by their values of `by` (from `curve_keys`), in order of those values, each with its label:
    one curve, panel or heatmap per combination, so that a figure pools only seeds."""
    groups = group_rows(rows, by)
    order = sorted(groups, key=lambda values: [(v is None, v) for v in values])
    return [(", ".join(f"{k} = {v}" for k, v in zip(by, values)) or "runs", groups[values]) for values in order]


def _intervals(rows: list[dict], x_key: str, y_key: str) -> tuple[np.ndarray, ...]:
    """Per x: the mean of y over the runs (seeds) sharing it where y was reached, and its 95% t-interval
    (the mean itself below three runs: no bar)."""
    groups = group_values(rows, x_key, y_key)
    xs = sorted(groups)
    stats = np.array([_mean_low_high(groups[x]) for x in xs]).reshape(-1, 3)
    return np.array(xs, dtype=float), stats[:, 0], stats[:, 1], stats[:, 2]


def _mean_low_high(values: list[float]) -> tuple[float, float, float]:
    """The mean and its interval's ends, the mean itself at both ends below three runs."""
    interval = over_seeds(values)
    return interval.mean, interval.low if interval.low is not None else interval.mean, \
        interval.high if interval.high is not None else interval.mean


def _errorbar(ax, x, mean, low, high, **kwargs):
    ax.errorbar(x, mean, yerr=[mean - low, high - mean], capsize=3, **kwargs)


def _exponent_interval(fit: dict) -> str:
    """' [low, high] over n seeds', or the seeds' exponents where there are too few for an interval."""
    if fit.get("b_low") is not None:
        return f" [{fit['b_low']:.2f}, {fit['b_high']:.2f}] over {len(fit['seed_exponents'])} seeds"
    exponents = fit.get("seed_exponents", {})
    return f" (seeds: {', '.join(f'{b:.2f}' for b in exponents.values())})" if exponents else ""


def _power_law_panel(ax, rows: list[dict], key: str, fit: dict | None, ylabel: str, paper: bool,
                     by: tuple[str, ...]) -> None:
    """One step (`key`) against N on log-log axes: every run, each N's mean with its interval over seeds (a
    curve per combination of `by`), the fit, and with `paper` the paper's fit of the same quantity."""
    reached = positive(rows, key)
    if not reached:
        raise ValueError(f"no run has a {key.replace('_', ' ')} above 0 to draw on log axes")
    for color, (label, members) in enumerate(_curves(reached, by)):
        ax.scatter([r["n_individuals"] for r in members], [r[key] for r in members], color=f"C{color}", alpha=0.3,
                   s=12, label=None if color else "runs")
        _errorbar(ax, *_intervals(members, "n_individuals", key), fmt="o", color=f"C{color}",
                  label=f"{label}: mean, 95% interval over seeds")
    x = np.array(sorted({float(r["n_individuals"]) for r in reached}))
    if fit:
        grid = np.geomspace(x.min(), x.max(), 50)
        ax.plot(grid, fit["a"] * grid ** fit["b"], color="black",
                label=f"fit: {fit['a']:.3g} N^{fit['b']:.2f}{_exponent_interval(fit)} (R² {fit['r2']:.3f})")
    if paper:
        grid = np.geomspace(max(x.min(), 1), x.max(), 50)
        ax.plot(grid, PAPER_PLATEAU_FIT[0] * grid ** PAPER_PLATEAU_FIT[1], "--", color="gray",
                label="paper (plateau end): 0.43 N^0.81")
    ax.set(xscale="log", yscale="log", xlabel="individuals N", ylabel=ylabel)
    ax.set_xticks(x, [f"{n:,.0f}" for n in x])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7)


def plateau_vs_population(rows: list[dict], fit: dict | None, path: Path, by: tuple[str, ...]) -> Path:
    """The plateau's end step against N beside the paper's fit of the same (its Fig. 2), and the plateau's
    length (end minus start, our additional number), a curve per combination of `by`."""
    fig, (ax_end, ax_length) = plt.subplots(1, 2, figsize=(12, 4.5))
    _power_law_panel(ax_end, rows, "plateau_end", (fit or {}).get("plateau_end"), "plateau end (step)", True, by)
    _power_law_panel(ax_length, rows, "plateau_length", fit, "plateau length (steps)", False, by)
    return save_figure(fig, path)


def alpha_curves(rows: list[dict], path: Path, by: tuple[str, ...]) -> Path:
    """Plateau length and final loss against alpha, one line per combination of `by`, with intervals over
    seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, members in _curves(rows, by):
        for ax, key in zip(axes, ("plateau_length", "final_loss")):
            _errorbar(ax, *_intervals(members, "alpha", key), fmt="-o", label=label)
    for ax, name in zip(axes, ("plateau length (steps)", "final attribute loss")):
        ax.set(xlabel="alpha (power-law exponent)", ylabel=name)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def _grid_means(rows: list[dict], keys: tuple[str, str], y: str) -> tuple[list, list, np.ndarray, np.ndarray]:
    """y's mean over seeds and half its 95% interval on the grid of two keys: (row values, column values,
    means, half-widths), NaN where no run reached y."""
    rows_of, columns = sorted({r[keys[0]] for r in rows}), sorted({r[keys[1]] for r in rows})
    means = np.full((len(rows_of), len(columns)), np.nan)
    spread = np.zeros_like(means)
    for (a, b), values in group_values(rows, keys, y).items():
        mean, low, high = _mean_low_high(values)
        cell = rows_of.index(a), columns.index(b)
        means[cell], spread[cell] = mean, (high - low) / 2
    return rows_of, columns, means, spread


def _heatmap(ax, fig, rows: list[dict], keys: tuple[str, str], y: str, text) -> tuple[list, list]:
    """A heatmap of y over two keys (the first on the vertical axis), each cell written with `text`; returns
    the values of the two keys along its axes."""
    rows_of, columns, means, spread = _grid_means(rows, keys, y)
    image = ax.imshow(means, cmap="viridis", origin="lower", aspect="auto")
    for (i, j), value in np.ndenumerate(means):
        if np.isfinite(value):
            ax.text(j, i, text(value, spread[i, j]), ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks(range(len(columns)), [str(c) for c in columns])
    ax.set_yticks(range(len(rows_of)), [str(r) for r in rows_of])
    ax.set(xlabel=keys[1], ylabel=keys[0])
    fig.colorbar(image, ax=ax)
    return rows_of, columns


def warmup_heatmap(rows: list[dict], path: Path, by: tuple[str, ...]) -> Path:
    """Final accuracy over the warm-up grid (individuals x epochs), a panel per combination of `by`, with its
    baseline run's in the title."""
    panels = _curves(rows, by)
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (label, members) in zip(axes[0], panels):
        _heatmap(ax, fig, [r for r in members if not r["baseline"]], ("indiv_warmup", "epochs_warmup"),
                 "final_accuracy", lambda value, spread: f"{value:.0%}" + (f"\n±{spread:.0%}" if spread else ""))
        uniform = [r["final_accuracy"] for r in members if r["baseline"]]
        detail = (label if by else "") + (f" (baseline run: {np.mean(uniform):.0%})" if uniform else "")
        ax.set_title("final accuracy after warm-up (mean ± half its 95% interval over seeds)"
                     + (f"\n{detail.strip()}" if detail else ""), fontsize=9)
    return save_figure(fig, path)


def patching_grid(rows: list[dict], path: Path, by: tuple[str, ...]) -> Path:
    """Attention patching over start step x reference step (claim C6): final loss and plateau length, a row
    of panels per combination of `by`, the diagonal (patched from the reference's own step: frozen attention)
    outlined."""
    panels = _curves(rows, by)
    fig, axes = plt.subplots(len(panels), 2, figsize=(12, 4.5 * len(panels)), squeeze=False)
    keys = ("start_patching", "reference_checkpoint")
    for row_axes, (label, members) in zip(axes, panels):
        for ax, y, text in ((row_axes[0], "final_loss", lambda v, s: f"{v:.2f}"),
                            (row_axes[1], "plateau_length", lambda v, s: f"{v:,.0f}")):
            starts, references = _heatmap(ax, fig, members, keys, y, text)
            for i, start in enumerate(starts):
                if start in references:
                    ax.add_patch(plt.Rectangle((references.index(start) - 0.5, i - 0.5), 1, 1, fill=False, lw=2,
                                               edgecolor="white"))
            ax.set_title((f"{label}: " if by else "")
                         + f"{y.replace('_', ' ')} (outlined: frozen attention, start = reference)", fontsize=9)
    return save_figure(fig, path)


ANCHORS = ((1.0, "1 bit/parameter (Allen-Zhu & Li, 100 exposures)"),
           (2.0, "2 bits/parameter (Allen-Zhu & Li, 1,000 exposures)"))


def capacity_figure(rows: list[dict], fits: dict, path: Path, by: tuple[str, ...]) -> Path:
    """Bits stored against parameters (non-embedding, and all), every run and each size's mean with its
    interval over seeds (a curve per combination of `by`), the fitted bits per parameter and the anchors'
    lines."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, name in zip(axes, ("non_embedding_parameters", "parameters"), ("non-embedding parameters",
                                                                                  "parameters (all)")):
        for color, (label, members) in enumerate(_curves(rows, by)):
            ax.scatter([r[key] for r in members], [r["knowledge_bits"] for r in members], color=f"C{color}",
                       alpha=0.3, s=14, label=None if color else "runs")
            _errorbar(ax, *_intervals(members, key, "knowledge_bits"), fmt="o", color=f"C{color}",
                      label=f"{label}: mean, 95% interval over seeds")
        grid = np.geomspace(min(r[key] for r in rows) / 1.5, max(r[key] for r in rows) * 1.5, 20)
        for bits, label in ANCHORS:
            ax.plot(grid, bits * grid, "--", color="gray", alpha=0.5 * bits, label=label)
        fit = fits[key]
        ax.plot(grid, fit["bits_per_parameter"] * grid, color="black",
                label=f"fit: {fit['bits_per_parameter']:.2f}"
                      + (f" [{fit['low']:.2f}, {fit['high']:.2f}]" if fit["low"] is not None else "")
                      + f" bits/parameter ({fit['interval']})")
        ax.set(xscale="log", yscale="log", xlabel=name, ylabel="knowledge stored (bits)")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def summarize_study(study: Study, failed: dict[str, str] | None = None) -> tuple[list[dict], list[Path]]:
    """A study's files from its runs: summary.csv, its fits and its figures; returns the finished runs'
    rows and the figures."""
    rows = aggregate(study, failed)
    return rows, draw_study_figures(rows, write_study_fits(rows, study), study)


def draw_study_figures(rows: list[dict], fits: StudyFits, study: Study) -> list[Path]:
    """The figures the grid's keys call for: bits against parameters (with `fits.capacity`), plateau against N
    (with `fits.plateau`), curves against alpha, the warm-up heatmap, and for every pretraining grid each run's
    loss and accuracy on one figure; for a fine-tuning study, every run's collapse and acquisition curves on
    one figure; for an attention patching study (a pretraining study with a first run), its report."""
    out, keys, figures = Path(study.output_dir), set(study.axes), []
    if not rows:
        return figures
    if study.fine_tunes:
        return _drawn([(out / FORGETTING_FIGURE, lambda: plot_forgetting(
            {r["run"]: RunFolder(out / r["run"]).trajectory() for r in rows}, out / FORGETTING_FIGURE))])
    if study.patches:
        return _patching_figures(rows, study)
    if fits.capacity is not None:
        figures.append((out / CAPACITY_FIGURE, lambda: capacity_figure(rows, fits.capacity, out / CAPACITY_FIGURE,
                                                                       curve_keys(study, MODEL_KEYS))))
    if fits_plateau(keys):
        figures.append((out / PLATEAU_FIGURE, lambda: plateau_vs_population(
            rows, fits.plateau, out / PLATEAU_FIGURE, curve_keys(study, {"n_individuals"}))))
    if "alpha" in keys:
        figures.append((out / ALPHA_FIGURE, lambda: alpha_curves(rows, out / ALPHA_FIGURE,
                                                                 curve_keys(study, {"alpha"}))))
    if {"indiv_warmup", "epochs_warmup"} <= keys:
        figures.append((out / WARMUP_FIGURE, lambda: warmup_heatmap(
            rows, out / WARMUP_FIGURE, curve_keys(study, {"indiv_warmup", "epochs_warmup"}))))
    if all("run" in r for r in rows):  # rows of finished runs (not hand-made ones)
        runs = {r["run"]: RunFolder(out / r["run"]).trajectory() for r in rows}
        baseline = float(np.mean([r["baseline_loss"] for r in rows]))
        figures.append((out / STUDY_FIGURE, lambda: plot_runs(runs, baseline, out / STUDY_FIGURE)))
    return _drawn(figures)


def _drawn(figures: list[tuple[Path, Callable[[], Path]]]) -> list[Path]:
    """Each figure drawn; one that cannot be (its rows give a log axis no positive value, or anything else
    fails while drawing it) is skipped with one line, and an older copy of it removed, so the study's other
    files are always written."""
    drawn = []
    for path, draw in figures:
        try:
            drawn.append(draw())
        except Exception as err:  # noqa: BLE001 - a figure never costs a study its other files
            plt.close("all")
            path.unlink(missing_ok=True)
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(f"skipped {path}: {reason}", file=sys.stderr)
    return drawn


def _patching_figures(rows: list[dict], study: Study) -> list[Path]:
    """An attention-patching study's report and, over several start steps, its grid's heatmaps."""
    out, grid = Path(study.output_dir), "start_patching" in study.grid and len(study.grid["start_patching"]) > 1
    patched = {f"patched with step {p.values['reference_checkpoint']}"
               + (f" from step {p.values['start_patching']}" if grid else ""): RunFolder(study.run_folder(p))
               for p in study.points()}
    heatmap = None
    if grid:
        by = curve_keys(study, {"start_patching", "reference_checkpoint"})
        drawn = _drawn([(out / PATCHING_GRID_FIGURE, lambda: patching_grid(rows, out / PATCHING_GRID_FIGURE, by))])
        heatmap = drawn[0] if drawn else None
    report = write_patching_report(RunFolder(study.pretrain.output_dir), patched, out, heatmap)
    return [report, heatmap] if heatmap else [report]
