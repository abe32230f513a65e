"""A study's runs in its files. summary.csv: one row per run with its grid values, phases and final
metrics (for a fine-tuning study, its forgetting summary), the mean and the 95% t-interval of each
headline metric over the runs of its grid point that differ only in seed (blank below three runs:
pipeline/studies/intervals), and the plateau's start, end and length under three bands of the phase
detector; runs that failed are rows with their log's last line.
fit.json and capacity.json: the fits across those rows that the grid calls for."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.errors import RecipeError

from ..analysis.facts import HALF_KNOWLEDGE_COLUMNS, HALF_KNOWLEDGE_KEYS, facts_summary
from ..analysis.forgetting import forgetting_summary
from ..analysis.phases import run_phases
from ..analysis.sequence import SEQUENCE_COLUMNS, SEQUENCE_KEYS, run_segments, sequence_summary
from ..config import ModelArguments, field_names
from ..run_folder import (
    CAPACITY_FIT, HELDOUT, RUN_START, SEEN, STUDY_FIT, SUMMARY, TRAJECTORY, RunFolder, replacing, write_atomically,
)
from .fit import fit_bits_per_parameter, fit_with_interval
from .intervals import over_seeds
from .schema import GridPoint, Study

PRETRAIN_METRICS = ("plateau_length", "emergence", "final_accuracy", "final_loss")
FINETUNE_METRICS = ("old_accuracy_lowest", "old_accuracy_final", "new_accuracy_final", "half_drop_step")
TOLERANCES = (0.025, 0.05, 0.10)  # of the baseline: the band the phase detector calls the plateau
TOLERANCE_KEYS = tuple(f"plateau_length_tol{t:g}" for t in TOLERANCES)
DETECTOR_KEYS = ("plateau_start", "plateau_end", "plateau_length")  # band-dependent: also written per band
CAPACITY_KEYS = ("knowledge_bits", "knowledge_bits_per_parameter", "knowledge_bits_per_non_embedding_parameter",
                 "parameters", "non_embedding_parameters")
# fitted in N beside the plateau length
PLATEAU_STEPS = ("plateau_start", "plateau_end", *(f"{k}_tol{t:g}" for k in DETECTOR_KEYS for t in TOLERANCES))
MODEL_KEYS = field_names(ModelArguments)  # a grid over any of them compares models: bits per parameter
# metrics given a mean and an interval over seeds in summary.csv (INTERVAL_COLUMNS)
PRETRAIN_INTERVALS = PRETRAIN_METRICS + CAPACITY_KEYS[:3] + TOLERANCE_KEYS + SEQUENCE_KEYS + HALF_KNOWLEDGE_KEYS

# What summary.csv's columns mean: every study's (beside one column per grid key), a pretraining run's (a fine-tuning
# run's are analysis.forgetting.FORGETTING_COLUMNS), and <metric>_<suffix> for the metrics given intervals
STUDY_COLUMNS = {
    "run": "The run's folder name, inside the study's output_dir.",
    "baseline": "Whether the run is one of the study's baselines (extra points beside the grid).",
    "code_commit": f"The code commit the run first started from ({RUN_START}; blank where not recorded).",
    "started_at": "When the run first started (UTC, ISO; blank where not recorded).",
    "status": "done, or failed: it failed after a retry, or its trajectory is empty or damaged (no metrics then).",
    "error": "A failed run's error: its log's last line.",
}
PRETRAIN_COLUMNS = {
    "sampler": "The grid point's sampler (blank unless the grid sets it).",
    "last_step": "The last evaluation's step.",
    "plateau_start": "Step at which the seen individuals' loss enters the band within 5% of the baseline (phase 1 "
                     "ends; pipeline/analysis/phases.py).",
    "plateau_end": "Step at which it leaves the band downwards (blank: never).",
    "plateau_length": "Steps from plateau_start to plateau_end (or to the last step).",
    "emergence": "Step at which the seen individuals' accuracy reaches 50% (blank: never).",
    "final_accuracy": "Seen individuals' attribute accuracy at the last evaluation.",
    "final_loss": "Seen individuals' attribute loss at the last evaluation.",
    "heldout_loss": "Held-out individuals' attribute loss at the last evaluation.",
    "baseline_loss": "The no-knowledge baseline loss.",
    **{key: f"The last evaluation's {key} ({TRAJECTORY})." for key in CAPACITY_KEYS},
    **{f"{key}_tol{t:g}": f"{key} with the band within {t * 100:g}% of the baseline." for key in DETECTOR_KEYS
       for t in TOLERANCES},
    **SEQUENCE_COLUMNS, **HALF_KNOWLEDGE_COLUMNS,
}
INTERVAL_COLUMNS = {
    "mean": "Mean of the metric over the runs of the grid point that differ only in seed (a baseline: its own).",
    "low": "Low end of its 95% t-interval over those runs (blank below three).",
    "high": "High end of that interval.",
    "n": "How many of those runs reached the metric.",
}


def group_rows(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    """The rows sharing each tuple of values of `keys` (a missing key reads None), in row order."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    return groups


def group_values(rows: list[dict], by: str | tuple[str, ...], y: str) -> dict:
    """The value of `by` (a tuple of values where `by` is a tuple of keys) -> the values of y of the runs
    sharing it, where y was reached, in row order."""
    keys = by if isinstance(by, tuple) else (by,)
    groups = group_rows([r for r in rows if r.get(y) is not None], keys)
    return {key if isinstance(by, tuple) else key[0]: [r[y] for r in members] for key, members in groups.items()}


def _run_row(study: Study, point: GridPoint, run: RunFolder) -> dict:
    trajectory = run.trajectory()
    if study.fine_tunes:
        return forgetting_summary(trajectory)
    segments = run_segments(run.recipe())
    phases = run_phases(trajectory)
    final = {r["split"]: r for r in trajectory if r["step"] == phases.max_step}
    return {"sampler": point.values.get("sampler"), "last_step": phases.max_step,
            "plateau_start": phases.plateau_start, "plateau_end": phases.plateau_end,
            "plateau_length": phases.plateau_length, "emergence": phases.emergence,
            "final_accuracy": final[SEEN]["attribute_accuracy"], "final_loss": final[SEEN]["attribute_loss"],
            "heldout_loss": final[HELDOUT]["attribute_loss"], "baseline_loss": phases.baseline,
            **{key: final[SEEN].get(key) for key in CAPACITY_KEYS},
            **{f"{key}_tol{t:g}": value for t in TOLERANCES
               for key, value in run_phases(trajectory, tolerance=t).to_dict().items() if key in DETECTOR_KEYS},
            **(sequence_summary(trajectory, segments) if segments else {}), **facts_summary(run, phases.plateau_end)}


def add_intervals(rows: list[dict], group_keys: list[str], metrics: tuple[str, ...]) -> None:
    """Give every row the mean, low and high (95% t-interval over seeds, blank below three runs) of each
    metric over the rows sharing its `group_keys` values (a baseline: its own run, as it may change keys the
    grid does not vary), with `<metric>_n` the runs where it was reached."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["run"],) if row.get("baseline") else tuple(row.get(k) for k in group_keys)
        groups.setdefault(key, []).append(row)
    for members in groups.values():
        for metric in metrics:
            values = [r[metric] for r in members if r.get(metric) is not None]
            interval = over_seeds(values) if values else None
            for r in members:
                r.update({f"{metric}_mean": interval and interval.mean, f"{metric}_low": interval and interval.low,
                          f"{metric}_high": interval and interval.high, f"{metric}_n": len(values)})


def aggregate(study: Study, failed: dict[str, str] | None = None) -> list[dict]:
    """One row per finished run (and per failed one), written to the study's summary.csv; returns the
    finished runs' rows."""
    rows, failures = [], []
    for point in study.points():
        run = RunFolder(study.run_folder(point))
        values = {**{k: point.values.get(k) for k in study.axes}, "run": run.path.name,
                  "baseline": point.baseline is not None, **asdict(run.run_start())}
        if run.path.name in (failed or {}):
            failures.append({**values, "status": "failed", "error": failed[run.path.name]})
        elif (run / TRAJECTORY).is_file():
            try:
                rows.append({**values, **_run_row(study, point, run), "status": "done"})
            except RecipeError as err:  # a trajectory empty or damaged: the study's files are written all the same
                failures.append({**values, "status": "failed", "error": str(err)})
    metrics = FINETUNE_METRICS if study.fine_tunes else PRETRAIN_INTERVALS
    add_intervals(rows, [k for k in study.axes if k != "seed"], metrics)
    out = Path(study.output_dir) / SUMMARY
    out.parent.mkdir(parents=True, exist_ok=True)
    table = rows + failures
    if table:
        fields = list(dict.fromkeys(key for row in table for key in row))
        with replacing(out) as temporary, temporary.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows(table)
    return rows


@dataclass
class StudyFits:
    """A study's fits across its runs, None where its grid (or too few runs) gives none."""

    plateau: dict | None = None  # fit.json
    capacity: dict | None = None  # capacity.json


def fits_plateau(keys: set[str]) -> bool:
    """Whether a grid calls for the plateau's power law in N: over N, not over alpha (it would mix them)."""
    return "n_individuals" in keys and "alpha" not in keys


def positive(rows: list[dict], key: str) -> list[dict]:
    """The rows whose `key` (a phase step or length) was reached and is above 0: what a log axis can show."""
    return [r for r in rows if (r.get(key) or 0) > 0]


def by_seed(rows: list[dict], x: str, y: str) -> dict:
    """seed -> {x: the mean y of that seed's runs at x}, over the rows where y was reached."""
    out: dict = {}
    for (seed, at), members in group_rows([r for r in rows if r.get(y) is not None], ("seed", x)).items():
        out.setdefault(seed, {})[at] = float(np.mean([r[y] for r in members]))
    return out


def plateau_fit(rows: list[dict], key: str = "plateau_length") -> dict | None:
    """The power law of plateau length (or another phase step, `key`) against N, its exponent's interval
    over seeds (needs two N)."""
    seeds = by_seed(positive(rows, key), "n_individuals", key)  # a log-log fit
    return fit_with_interval(seeds) if len({n for v in seeds.values() for n in v}) >= 2 else None


def capacity_fits(rows: list[dict]) -> dict:
    """Bits per parameter fitted over model sizes, counting all parameters or the non-embedding ones."""
    return {key: fit_bits_per_parameter(seeds) for key in ("non_embedding_parameters", "parameters")
            if (seeds := by_seed(rows, key, "knowledge_bits"))}


def write_study_fits(rows: list[dict], study: Study) -> StudyFits:
    """A pretraining grid's fits: bits per parameter over models (capacity.json) where the runs measured
    knowledge, and the plateau's power law in N (fit.json, with the fits of its start and end steps and of
    its length under each band) where two N reach a plateau."""
    out, keys, fits = Path(study.output_dir), set(study.axes), StudyFits()
    if study.fine_tunes or study.patches:  # fine-tuning and attention patching: none
        return fits
    if keys & MODEL_KEYS and any(r.get("knowledge_bits") is not None for r in rows):
        fits.capacity = capacity_fits(rows)
        write_atomically(out / CAPACITY_FIT, json.dumps(fits.capacity, indent=1) + "\n")
    if fits_plateau(keys):
        fit = plateau_fit(rows)
        fits.plateau = {**fit, **{key: plateau_fit(rows, key) for key in PLATEAU_STEPS}} if fit else None
        write_atomically(out / STUDY_FIT, json.dumps(fits.plateau or {"fitted": False, "why": no_fit_reason(rows)},
                                                     indent=1) + "\n")
    return fits


def no_fit_reason(rows: list[dict]) -> str:
    """Why the plateau's power law could not be fitted: which populations reached a plateau."""
    populations = sorted({r["n_individuals"] for r in rows})
    reached = {r["n_individuals"] for r in positive(rows, "plateau_length")}
    return (f"a power law needs a plateau longer than 0 steps at two populations or more; {len(reached)} of the "
            f"{len(populations)} ({', '.join(map(str, populations))}) have one")
