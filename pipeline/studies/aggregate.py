"""A study's finished runs in one table (summary.csv): grid values, phases and final metrics."""

from __future__ import annotations

import csv
from pathlib import Path

from ..analysis.forgetting import forgetting_summary
from ..analysis.phases import run_phases
from ..run_folder import FINETUNE, HELDOUT, SEEN, SUMMARY, TRAJECTORY, RunFolder
from .schema import Study


def aggregate(study: Study) -> list[dict]:
    """One row per finished run: its grid values, phases, and final seen and held-out metrics (for a
    fine-tuning study, its forgetting summary); written to the study's summary.csv."""
    rows = []
    for point in study.points():
        run = RunFolder(study.run_folder(point))
        if not (run / TRAJECTORY).is_file():
            continue
        trajectory = run.trajectory()
        values = {**{k: point.values.get(k) for k in study.grid}, "run": run.path.name,
                  "baseline": point.baseline is not None}
        if study.stage == FINETUNE:
            rows.append({**values, **forgetting_summary(trajectory)})
            continue
        phases = run_phases(trajectory)
        final = {r["split"]: r for r in trajectory if r["step"] == phases.max_step}
        rows.append({**values, "sampler": point.values.get("sampler"), "last_step": phases.max_step,
                     "plateau_start": phases.phase1_end, "plateau_end": phases.plateau_end,
                     "plateau_length": phases.plateau_length, "emergence": phases.emergence,
                     "final_accuracy": final[SEEN]["attribute_accuracy"],
                     "final_loss": final[SEEN]["attribute_loss"],
                     "heldout_loss": final[HELDOUT]["attribute_loss"], "baseline_loss": phases.baseline})
    out = Path(study.output_dir) / SUMMARY
    out.parent.mkdir(parents=True, exist_ok=True)
    if rows:
        with out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows
