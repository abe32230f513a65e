"""The paper's claims as data (recipes/claims.yaml), and the quantities a claim's rule reads from its
studies' files.

The claims file holds `corpora` (per scale, folder -> corpus recipe: built before any study when
missing), `studies` (name -> scale -> study file: each study runs once, however many claims read it)
and `claims`, a list of: `id`, `statement`, `paper` (the paper's number, with units), `read` (where
and how it was read), `study` (one name or a list: the studies it reads), `figure` (a file of its first
study's folder), `rule` (pipeline/studies/verdicts.py), and optionally `paper_range` (the paper's value
of the rule's first number, drawn on the claim's figure) and `changed_after_results` (why the rule was
written or changed after results were seen: pipeline/studies/prereg.py).

A quantity names one number per run: a column of a study's summary.csv (`column`), or a reduction of
one of each run's files (`file`: trajectory.jsonl, attention.jsonl, drift.jsonl). A file's rows are
filtered by `match` (`last` for a key: its largest value) and `steps` (a window, as fractions of the
run's last step); `column` is divided row by row by `divide_by`, then reduced by `at`: the mean of the
rows at the last or first step, or their max, min or mean. `where` keeps the runs whose summary values
match; a study's baseline points are left out unless `where` names `baseline`. A value of `where` may be
`min`, `max` or `{rank: k}`, for the study's smallest, largest or k-th smallest value of that key (k from
0; negative from the largest), so that one rule reads every scale's grid; `{equals: other key}`, for the
runs where the two keys hold one value (the patching grid's diagonal); a list, any of its values;
`{lowest: column, per: [keys]}`, the value whose runs have the lowest mean of that column, chosen for each
combination of the `per` keys (the best learning rate of each configuration: a choice made on the runs
judged, which favours the claim); or `any`, every value. `study`
picks one of the claim's studies (default: the first). `label` names the quantity in the ledger's words.

A run that finished but leaves a summary value empty (no plateau detected, knowledge never emerged) has
an undefined value: a result the rules judge, not a missing run.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import RecipeError
from common.recipe import load_yaml

from ..run_folder import STUDY_FIT, SUMMARY
from .schema import Study, load_study

SCALES = ("smoke", "cpu", "paper")
REDUCTIONS = ("last", "first", "max", "min", "mean")
QUANTITY_KEYS = ("column", "where", "study", "file", "match", "steps", "divide_by", "at", "label")
UNDEFINED = {"plateau_start": "no plateau detected", "plateau_end": "the plateau never ended",
             "plateau_length": "no plateau detected", "emergence": "knowledge never emerged",
             "half_drop_step": "no drop"}  # what an empty summary cell of a finished run means


@dataclass(frozen=True)
class Quantity:
    """One number per run of a study (see the module's docstring)."""

    column: str
    where: dict[str, Any] = field(default_factory=dict)
    study: str | None = None
    file: str | None = None
    match: dict[str, Any] = field(default_factory=dict)
    steps: tuple[float, float] | None = None
    divide_by: str | None = None
    at: str = "last"
    label: str | None = None

    @property
    def name(self) -> str:
        """The quantity in the ledger's words: its label, else its column."""
        return self.label or self.column.replace("_", " ")

    def describe(self) -> str:
        what = self.column + (f" / {self.divide_by}" if self.divide_by else "")
        if self.file:
            window = f" over {self.steps[0]:g}-{self.steps[1]:g} of the run's steps" if self.steps else ""
            match = "".join(f", {k} {v}" for k, v in self.match.items())
            what = f"{self.at} {what} of {self.file}{match}{window}"
        where = ", ".join(f"{k} " + (" ".join(f"{a} {b}" for a, b in v.items()) if isinstance(v, dict) else str(v))
                          for k, v in self.where.items())
        return what + (f" ({where})" if where else "") + (f" in {self.study}" if self.study else "")


@dataclass
class Claim:
    id: str
    statement: str
    paper: str
    read: str
    studies: list[str]
    rule: dict[str, Any]
    figure: str | None = None
    changed_after_results: str | None = None  # why the rule was written or changed after results were seen
    paper_range: tuple[float, float] | None = None  # the paper's value of the rule's first number, [lo, hi]


@dataclass
class Claims:
    corpora: dict[str, dict[str, str]]
    studies: dict[str, dict[str, str]]
    claims: list[Claim]

    def select(self, ids: list[str] | None) -> list[Claim]:
        """The claims named in `ids` (all when None), in the file's order."""
        known = [c.id for c in self.claims]
        unknown = sorted(set(ids or []) - set(known))
        if unknown:
            raise RecipeError(f"--claims names unknown claims {unknown}: use some of {', '.join(known)}")
        return [c for c in self.claims if ids is None or c.id in ids]

    def study_file(self, name: str, scale: str) -> str | None:
        return self.studies[name].get(scale)

    def load(self, name: str, scale: str, root: Path | None = None) -> Study:
        """The study `name` at `scale`. With `root`, its folder is root/studies/<name>: a first run inside the
        study file's folder stays inside it, one elsewhere (shared by studies) goes to root/studies/<its name>."""
        study = load_study(self.studies[name][scale])
        if root is not None:
            folder, first = Path(root) / "studies" / name, study.pretrain
            if first is not None:
                inside = Path(first.output_dir).is_relative_to(study.output_dir)
                first.output_dir = str(folder / Path(first.output_dir).relative_to(study.output_dir) if inside
                                       else folder.parent / Path(first.output_dir).name)
            study.output_dir = str(folder)
        return study


def quantity(spec: Any, where: str) -> Quantity:
    """A quantity from its mapping in the claims file (`where` names it in errors)."""
    if not isinstance(spec, dict) or "column" not in spec or set(spec) - set(QUANTITY_KEYS):
        raise RecipeError(f"claims file: {where} needs a quantity: a mapping with 'column' and some of "
                          f"{', '.join(QUANTITY_KEYS[1:])}")
    if spec.get("at", "last") not in REDUCTIONS:
        raise RecipeError(f"claims file: {where} has at '{spec['at']}': use one of {', '.join(REDUCTIONS)}")
    steps = spec.get("steps")
    return Quantity(spec["column"], dict(spec.get("where", {})), spec.get("study"), spec.get("file"),
                    dict(spec.get("match", {})), tuple(steps) if steps else None, spec.get("divide_by"),
                    spec.get("at", "last"), spec.get("label"))


def load_claims(path: str) -> Claims:
    """The claims file, checked: every claim names its studies and they are listed (its rule is checked by
    verdicts.check_rules)."""
    values = load_yaml(path)
    if not isinstance(values, dict) or set(values) - {"corpora", "studies", "claims"} or "claims" not in values:
        raise RecipeError(f"claims file '{path}' needs 'claims' (and 'studies', 'corpora'), nothing else")
    studies = values.get("studies", {})
    claims = []
    for entry in values["claims"]:
        missing = {"id", "statement", "paper", "read", "study", "rule"} - set(entry)
        if missing:
            raise RecipeError(f"claims file '{path}': claim {entry.get('id', '?')} has no {sorted(missing)}")
        names = entry["study"] if isinstance(entry["study"], list) else [entry["study"]]
        unknown = [n for n in names if n not in studies]
        if unknown:
            raise RecipeError(f"claims file '{path}': claim {entry['id']} reads studies {unknown} that "
                              f"'studies' does not list")
        claim = Claim(str(entry["id"]), entry["statement"], str(entry["paper"]), entry["read"], names,
                      entry["rule"], entry.get("figure"), entry.get("changed_after_results"),
                      tuple(entry["paper_range"]) if entry.get("paper_range") else None)
        claims.append(claim)
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise RecipeError(f"claims file '{path}' lists a claim twice: {ids}")
    return Claims(values.get("corpora", {}), studies, claims)


def cell(text: str) -> Any:
    """A summary.csv cell as the value it was: None, a bool, a number or text."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return float(text)
    except ValueError:
        return text


def matches(row: dict, where: dict[str, Any]) -> bool:
    """Whether a row holds every value of `where` (numbers compared as numbers)."""
    for key, value in where.items():
        got = row.get(key)
        if value == "any":
            continue
        if isinstance(value, list):
            if not any(matches(row, {key: v}) for v in value):
                return False
            continue
        if isinstance(value, dict) and "equals" in value:
            if got is None or got != row.get(value["equals"]):
                return False
        elif isinstance(value, bool) or isinstance(got, bool):
            if bool(got) != bool(value) or got is None:
                return False
        elif isinstance(value, (int, float)) and isinstance(got, (int, float)):
            if not np.isclose(float(got), float(value)):
                return False
        elif str(got) != str(value):
            return False
    return True


class Undefined(LookupError):
    """The finished runs leave a quantity undefined in every run (no plateau detected, so no fit): a result."""


class StudyFiles:
    """What a claim reads from one study's folder, and the files it read."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.read: set[Path] = set()
        self._summary: list[dict] | None = None

    def _all_rows(self) -> list[dict]:
        """summary.csv's rows, read once (FileNotFoundError if the study has not run)."""
        path = self.folder / SUMMARY
        if self._summary is None:
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: the study has not run")
            with path.open() as f:
                self._summary = [{k: cell(v) for k, v in row.items()} for row in csv.DictReader(f)]
        return self._summary

    def rows(self) -> list[dict]:
        """summary.csv's rows of finished runs."""
        rows = self._all_rows()
        self.read.add(self.folder / SUMMARY)
        return [r for r in rows if r.get("status") in (None, "done")]

    def failed(self) -> list[str]:
        """The runs summary.csv lists as failed (none if the study has not run)."""
        try:
            return [str(r["run"]) for r in self._all_rows() if r.get("status") == "failed"]
        except FileNotFoundError:
            return []

    def fit(self, name: str) -> dict:
        """A fit of fit.json: the plateau length's (name 'plateau_length') or one of its steps'."""
        path = self.folder / STUDY_FIT
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the study has no fit (too few runs reached a plateau)")
        self.read.add(path)
        fits = json.loads(path.read_text())
        if fits.get("fitted") is False:
            raise Undefined(f"{path} holds no fit: {fits['why']}")
        fit = fits if name == "plateau_length" else fits.get(name)
        if not fit:
            raise FileNotFoundError(f"{path} has no fit of {name}")
        return fit

    def run_value(self, run: str, q: Quantity) -> float | None:
        """A quantity of one run read from its file, None where no row matches."""
        path = self.folder / run / q.file
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing")
        self.read.add(path)
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        absent = [c for c in (q.column, q.divide_by) if c and not any(c in r for r in rows)]
        if absent:
            raise LookupError(f"{path} has no {', '.join(absent)} (written before the code that records it): "
                              f"rerun the study")
        last = {k: max(r[k] for r in rows if k in r) for k, v in q.match.items() if v == "last"}
        rows = [r for r in rows if matches(r, {**q.match, **last}) and q.column in r]
        if q.steps and rows:
            end = max(r["step"] for r in rows)
            rows = [r for r in rows if q.steps[0] * end <= r["step"] <= q.steps[1] * end]
        if not rows:
            return None
        values = np.array([r[q.column] / (r[q.divide_by] if q.divide_by else 1.0) for r in rows], dtype=float)
        if q.at in ("last", "first"):
            edge = max(r["step"] for r in rows) if q.at == "last" else min(r["step"] for r in rows)
            return float(values[[r["step"] == edge for r in rows]].mean())
        return float(getattr(values, q.at)())


@dataclass
class Values:
    """A quantity's values, one per run (None where the finished run leaves it undefined), with the summary
    rows they came from."""

    quantity: Quantity
    rows: list[dict]
    values: list[float | None]

    @property
    def seeds(self) -> int:
        return len({r.get("seed") for r in self.rows})

    @property
    def undefined(self) -> str:
        """What an undefined value of this quantity means."""
        return UNDEFINED.get(self.quantity.column, f"no {self.quantity.name}")

    def by_seed(self, row_filter=None) -> dict[Any, float | None]:
        """seed -> value over the runs `row_filter` keeps (all by default): one run per seed."""
        return {r.get("seed"): v for r, v in zip(self.rows, self.values) if row_filter is None or row_filter(r)}


def resolve(where: dict[str, Any], rows: list[dict]) -> dict[str, Any]:
    """`where` with its `min`, `max` and `{rank: k}` values replaced by the rows' values of their keys."""
    out = {}
    for key, value in where.items():
        rank = {"min": 0, "max": -1}.get(value) if isinstance(value, str) else (
            value.get("rank") if isinstance(value, dict) and "rank" in value else None)
        if rank is None:
            out[key] = value
            continue
        values = sorted({r[key] for r in rows if r.get(key) is not None})
        if not values:
            raise LookupError(f"{SUMMARY} has no values of {key}: the study's grid does not vary it (keys that only "
                              f"baselines change get no column)")
        if not -len(values) <= rank < len(values):
            raise LookupError(f"the study has {len(values)} values of {key}, none of rank {rank}")
        out[key] = values[rank]
    return out


def lowest(rows: list[dict], key: str, column: str, per: list[str]) -> list[dict]:
    """The rows at the value of `key` whose runs have the lowest mean `column`, chosen apart for each
    combination of the `per` keys (a configuration's best learning rate of a grid)."""
    kept = []
    for config in dict.fromkeys(tuple(r.get(k) for k in per) for r in rows):
        group = [r for r in rows if tuple(r.get(k) for k in per) == config]
        means = {v: np.mean([r[column] for r in group if r.get(key) == v and r.get(column) is not None] or [np.inf])
                 for v in dict.fromkeys(r.get(key) for r in group)}
        best = min(means, key=means.get)
        kept += [r for r in group if r.get(key) == best]
    return kept


def read_values(q: Quantity, files: dict[str, StudyFiles], default: str) -> Values:
    """The quantity's value for every finished run its `where` keeps (baselines only where it names
    `baseline`); LookupError where the study does not record the quantity or no run matches."""
    study = files[q.study or default]
    rows = study.rows() if "baseline" in q.where else [r for r in study.rows() if not r.get("baseline")]
    if not q.file and rows and q.column not in rows[0]:
        raise LookupError(f"{study.folder / SUMMARY} has no column {q.column} (written before the code that "
                          f"records it): rerun the study")
    best = {k: v for k, v in q.where.items() if isinstance(v, dict) and "lowest" in v}
    where = resolve({k: v for k, v in q.where.items() if k not in best}, rows)
    rows = [r for r in rows if matches(r, where)]
    for key, spec in best.items():
        rows = lowest(rows, key, spec["lowest"], spec.get("per", []))
    if not rows:
        raise LookupError(f"no finished run of {study.folder} matches {where or 'the study'}")
    values = []
    for row in rows:
        value = study.run_value(str(row["run"]), q) if q.file else row.get(q.column)
        if q.divide_by and not q.file and value is not None:
            value = value / row[q.divide_by]
        values.append(None if value is None else float(value))
    return Values(q, rows, values)
