"""A study's runs in one table (summary.csv): one row per run with its grid values, phases and final
metrics (for a fine-tuning study, its forgetting summary), the mean and a 95% bootstrap interval of
each headline metric over the runs of its grid point that differ only in seed, and the plateau length
under three thresholds of the phase detector. Runs that failed are rows with their log's last line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..analysis.forgetting import forgetting_summary
from ..analysis.phases import run_phases
from ..run_folder import FINETUNE, HELDOUT, SEEN, SUMMARY, TRAJECTORY, RunFolder
from .fit import resampled_means
from .schema import GridPoint, Study

PRETRAIN_METRICS = ("plateau_length", "emergence", "final_accuracy", "final_loss")
FINETUNE_METRICS = ("old_accuracy_lowest", "old_accuracy_final", "new_accuracy_final", "half_drop_step")
TOLERANCES = (0.025, 0.05, 0.10)  # of the baseline: the band the phase detector calls the plateau
TOLERANCE_KEYS = tuple(f"plateau_length_tol{t:g}" for t in TOLERANCES)
CAPACITY_KEYS = ("knowledge_bits", "knowledge_bits_per_parameter", "knowledge_bits_per_non_embedding_parameter",
                 "parameters", "non_embedding_parameters")


def bootstrap_interval(values: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of `values` and the 2.5 and 97.5 percentiles of the means of resamples (with replacement)."""
    _, (mean,), resampled = resampled_means({0.0: values}, draws, seed)
    return float(mean), float(np.percentile(resampled, 2.5)), float(np.percentile(resampled, 97.5))


def _run_row(study: Study, point: GridPoint, trajectory: list[dict]) -> dict:
    if study.stage == FINETUNE:
        return forgetting_summary(trajectory)
    phases = run_phases(trajectory)
    final = {r["split"]: r for r in trajectory if r["step"] == phases.max_step}
    return {"sampler": point.values.get("sampler"), "last_step": phases.max_step,
            "plateau_start": phases.phase1_end, "plateau_end": phases.plateau_end,
            "plateau_length": phases.plateau_length, "emergence": phases.emergence,
            "final_accuracy": final[SEEN]["attribute_accuracy"], "final_loss": final[SEEN]["attribute_loss"],
            "heldout_loss": final[HELDOUT]["attribute_loss"], "baseline_loss": phases.baseline,
            **{key: final[SEEN].get(key) for key in CAPACITY_KEYS},
            **{key: run_phases(trajectory, tolerance=t).plateau_length for key, t in zip(TOLERANCE_KEYS, TOLERANCES)}}


def add_intervals(rows: list[dict], group_keys: list[str], metrics: tuple[str, ...]) -> None:
    """Give every row the mean, low and high (95% bootstrap over seeds) of each metric over the rows
    sharing its `group_keys` values, with `<metric>_n` the runs where it was reached."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in group_keys), []).append(row)
    for members in groups.values():
        for metric in metrics:
            values = [r[metric] for r in members if r.get(metric) is not None]
            mean, low, high = bootstrap_interval(values) if values else (None, None, None)
            for r in members:
                r.update({f"{metric}_mean": mean, f"{metric}_low": low, f"{metric}_high": high,
                          f"{metric}_n": len(values)})


def aggregate(study: Study, failed: dict[str, str] | None = None) -> list[dict]:
    """One row per finished run (and per failed one), written to the study's summary.csv; returns the
    finished runs' rows."""
    rows, failures = [], []
    for point in study.points():
        run = RunFolder(study.run_folder(point))
        values = {**{k: point.values.get(k) for k in study.grid}, "run": run.path.name,
                  "baseline": point.baseline is not None}
        if run.path.name in (failed or {}):
            failures.append({**values, "status": "failed", "error": failed[run.path.name]})
        elif (run / TRAJECTORY).is_file():
            rows.append({**values, **_run_row(study, point, run.trajectory()), "status": "done"})
    metrics = FINETUNE_METRICS if study.stage == FINETUNE else PRETRAIN_METRICS + CAPACITY_KEYS[:3] + TOLERANCE_KEYS
    add_intervals(rows, [k for k in study.grid if k != "seed"] + ["baseline"], metrics)
    out = Path(study.output_dir) / SUMMARY
    out.parent.mkdir(parents=True, exist_ok=True)
    table = rows + failures
    if table:
        fields = list(dict.fromkeys(key for row in table for key in row))
        with out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows(table)
    return rows
