"""A study's evidence: the small files the claims' rules read from it (summary.csv, its fits and figures, and
each run's files a rule names, with the run's start record), published into <ledger>/evidence/<study> when
the study finishes, so that a ledger is built from published evidence alone, study by study, across sittings
and machines. A published study is not run again unless asked.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path
from typing import Any

from ..run_folder import CAPACITY_FIT, RUN_START, STUDY_FIT, SUMMARY, code_commit
from .claims import Claims

RECORD = "published.json"  # a study's record: its command, the command's wall time until the study's last run
# ended (wall_s; studies of one command share its pool), the machine, the code commit and the date
STUDY_FILES = (SUMMARY, STUDY_FIT, CAPACITY_FIT)


def _named_files(rule: Any, default: str, name: str) -> set[str]:
    """The run files (`file:`) a rule's quantities read from study `name` (`default`: the claim's first study)."""
    if isinstance(rule, dict):
        found = set()
        if "file" in rule and "column" in rule and rule.get("study", default) == name:
            found.add(rule["file"])
        for value in rule.values():
            found |= _named_files(value, default, name)
        return found
    if isinstance(rule, list):
        return set().union(*(_named_files(item, default, name) for item in rule))
    return set()


def run_files(claims: Claims, name: str) -> set[str]:
    """Each run's files that some claim's rule reads from study `name`."""
    return set().union(*(_named_files(c.rule, c.studies[0], name) for c in claims.claims if name in c.studies))


def is_published(evidence: Path, name: str) -> bool:
    return (evidence / name / RECORD).is_file()


def published_record(evidence: Path, name: str) -> dict | None:
    path = evidence / name / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def publish_study(folder: Path, target: Path, files: set[str], record: dict) -> int:
    """Copy a finished study's evidence from its folder into `target` (written beside, then renamed over a
    previous one) with its record; returns how many runs it holds."""
    staging = target.with_name(target.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for path in [*(folder / f for f in STUDY_FILES), *sorted(folder.glob("*.png"))]:
        if path.is_file():
            shutil.copyfile(path, staging / path.name)
    with (folder / SUMMARY).open() as f:
        runs = [folder / row["run"] for row in csv.DictReader(f)]
    for run in runs:
        for name in (RUN_START, *sorted(files)):
            if (run / name).is_file():
                (staging / run.name).mkdir(exist_ok=True)
                shutil.copyfile(run / name, staging / run.name / name)
    (staging / RECORD).write_text(json.dumps({**record, "runs": len(runs), "code_commit": code_commit(),
                                              "published": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1) + "\n")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return len(runs)
