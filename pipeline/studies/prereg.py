"""Whether a claim's rule was fixed before the runs it judges, as git shows it: the commit that last changed
the rule (its parsed mapping less its quantities' labels, so reformatting or relabelling is no change), set
against the runs' start times (run_start.json, summary.csv's `started_at`) and the reason the claims file gives
for a rule written after results were seen (`changed_after_results`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ..run_folder import git

FIXED, FIXED_AFTER_EARLIER, AFTER_RESULTS, AFTER_RUNS, NOT_PROVABLE, UNCOMMITTED = (
    "fixed", "fixed_after_earlier_results", "after_results", "after_runs", "not_provable", "uncommitted")
_ABSENT = object()  # a claim (or a file) a version of the claims file does not hold


@dataclass(frozen=True)
class RuleCommit:
    """The commit that last changed a claim's rule (None: no commit holds the claim), its committer time (ISO),
    and whether the working tree's rule differs from HEAD's."""

    commit: str | None
    time: str | None
    uncommitted: bool = False


@dataclass(frozen=True)
class Preregistration:
    """A status (FIXED, FIXED_AFTER_EARLIER, AFTER_RESULTS, AFTER_RUNS, NOT_PROVABLE or UNCOMMITTED) and its
    one-line text."""

    status: str
    text: str


def _judged(rule: Any) -> Any:
    """A rule less every `label` (the ledger's words for a quantity, which no verdict reads)."""
    if isinstance(rule, dict):
        return {k: _judged(v) for k, v in rule.items() if k != "label"}
    return [_judged(v) for v in rule] if isinstance(rule, list) else rule


def _rules(text: str | None) -> dict[str, Any] | None:
    """Claim id -> rule (`_judged`) of a claims file's text ({} for no file); None where it does not parse."""
    if text is None:
        return {}
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    claims = values.get("claims") if isinstance(values, dict) else None
    if not isinstance(claims, list):
        return None
    return {str(c["id"]): _judged(c.get("rule")) for c in claims if isinstance(c, dict) and "id" in c}


@lru_cache(maxsize=None)
def _rules_at(root: str, commit: str, path: str) -> dict[str, Any] | None:
    """`_rules` of the claims file at `commit` (a commit's files never change, so they are read once)."""
    return _rules(git(Path(root), "show", f"{commit}:{path}"))


def rule_history(claims_file: str, claim_id: str) -> RuleCommit | None:
    """The most recent commit whose rule for `claim_id` differs from the one before it in the file's history
    (or that introduced it), and whether the working tree changed it since; None outside git."""
    root = git(Path(claims_file).resolve().parent, "rev-parse", "--show-toplevel")
    if root is None:
        return None
    path = Path(claims_file).resolve().relative_to(Path(root).resolve()).as_posix()
    log = [line.split() for line in (git(Path(root), "log", "--format=%H %cI", "--", path) or "").splitlines()]
    versions = [(commit, time, rules.get(claim_id, _ABSENT)) for commit, time in log
                if (rules := _rules_at(root, commit, path)) is not None]
    committed = versions[0][2] if versions else _ABSENT
    working = (_rules(Path(claims_file).read_text()) or {}).get(claim_id, _ABSENT)
    older = [rule for _, _, rule in versions[1:]] + [_ABSENT]
    changed = next(((commit, time) for (commit, time, rule), before in zip(versions, older) if rule != before),
                   (None, None))
    return RuleCommit(*changed, uncommitted=working != committed)


def _utc(time: str) -> datetime:
    return datetime.fromisoformat(time).astimezone(timezone.utc)


def _shown(time: str) -> str:
    return _utc(time).strftime("%Y-%m-%d %H:%M:%S UTC")


def preregistration(rule_commit: RuleCommit | None, runs_started: list[str | None],
                    changed_after_results: str | None) -> Preregistration:
    """Whether a rule (`rule_history`) was fixed before the runs it reads, from their start times (ISO; None
    for a run that recorded none) and the claims file's reason for a rule written after results were seen: a
    rule committed before every run it reads but written after earlier runs' results says both."""
    if rule_commit is not None and rule_commit.uncommitted:
        return Preregistration(UNCOMMITTED, "uncommitted rule")
    timing = _timing(rule_commit, runs_started)
    if not changed_after_results:
        return timing
    if timing.status == FIXED:
        return Preregistration(FIXED_AFTER_EARLIER, f"{timing.text}; written after earlier results were seen: "
                                                    f"{changed_after_results}")
    return Preregistration(AFTER_RESULTS, f"written after results were seen: {changed_after_results}")


def _timing(rule_commit: RuleCommit | None, runs_started: list[str | None]) -> Preregistration:
    """The rule's commit against the runs' start times."""
    if rule_commit is None or rule_commit.time is None:
        return Preregistration(NOT_PROVABLE, "not provable: git holds no commit of the rule")
    started = sorted((t for t in runs_started if t), key=_utc)
    rule, first = _shown(rule_commit.time), _shown(started[0]) if started else None
    if started and _utc(rule_commit.time) >= _utc(started[0]):  # not before the first run
        return Preregistration(AFTER_RUNS, f"written after the runs (rule {rule}, first run {first})")
    if not runs_started:
        return Preregistration(NOT_PROVABLE, "not provable: the claim reads no runs")
    if missing := len(runs_started) - len(started):
        runs = "1 run records" if missing == 1 else f"{missing} runs record"
        return Preregistration(NOT_PROVABLE, f"not provable: {runs} no start time")
    return Preregistration(FIXED, f"fixed before the runs (rule {rule_commit.commit[:7]} {rule}, first run {first})")
