"""Preregistration the ledger can prove: a run records the code commit and the time it first started
(run_start.json, kept across resumes, in every row of a study's summary.csv, no part of the run's identity);
git gives the commit that last changed a claim's rule (parsed, so reformatting is no change); the two give
each rule's status."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import RUN_START, RunFolder, code_commit
from pipeline.studies.prereg import (
    AFTER_RESULTS,
    AFTER_RUNS,
    FIXED,
    FIXED_AFTER_EARLIER,
    NOT_PROVABLE,
    UNCOMMITTED,
    RuleCommit,
    preregistration,
    rule_history,
)
from pipeline.sweep import main as sweep_main
from tests.conftest import REPO, interrupted_run, tiny30

C1_RULE = {"every_run": {"reproduced": [{"value": {"column": "plateau_length"}, "above": 0}]}}
C2_RULE = {"fit": {"name": "plateau_end", "target": [0.7, 0.9]}}


def _git(repo: Path, *args: str, when: str = "2026-12-01T10:00:00+00:00") -> str:
    """git in `repo` as a fixed author, its commits dated `when`."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    return subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=repo, env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def _claims(path: Path, c1: dict, flow: bool = False) -> None:
    claims = [{"id": "C1", "rule": c1, "statement": "s"}, {"id": "C2", "statement": "s", "rule": C2_RULE}]
    path.write_text(yaml.safe_dump({"claims": claims}, default_flow_style=flow, sort_keys=flow))


def _commit(repo: Path, when: str) -> str:
    _git(repo, "commit", "-qam", "c", when=when)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture()
def claims_repo(tmp_path) -> tuple[Path, dict[str, str]]:
    """A git repository whose claims file was committed (first), had C1's rule edited (edit), then was
    reformatted and C1's quantity labelled, no verdict changed (reformat)."""
    repo = tmp_path / "repo"
    (repo / "recipes").mkdir(parents=True)
    _git(repo, "init", "-q")
    path = repo / "recipes" / "claims.yaml"
    _claims(path, C1_RULE)
    _git(repo, "add", str(path))
    commits = {"first": _commit(repo, "2026-12-01T10:00:00+00:00")}
    edited = {"every_run": {"reproduced": [{"value": {"column": "plateau_length"}, "above": 10}]}}
    _claims(path, edited)
    commits["edit"] = _commit(repo, "2026-12-02T12:00:00+01:00")
    labelled = {"every_run": {"reproduced": [{"value": {"column": "plateau_length", "label": "plateau"}, "above": 10}]}}
    _claims(path, labelled, flow=True)
    commits["reformat"] = _commit(repo, "2026-12-03T10:00:00+00:00")
    return path, commits


def test_the_commit_that_last_changed_a_rule_is_found_reformatting_aside(claims_repo):
    path, commits = claims_repo
    assert commits["reformat"] != commits["edit"]
    assert rule_history(str(path), "C1") == RuleCommit(commits["edit"], "2026-12-02T12:00:00+01:00")
    assert rule_history(str(path), "C2") == RuleCommit(commits["first"], "2026-12-01T10:00:00+00:00")
    assert rule_history(str(path), "C9") == RuleCommit(None, None)  # no version holds it


def test_a_rule_changed_in_the_working_tree_is_uncommitted(claims_repo):
    path, commits = claims_repo
    _claims(path, {"every_run": {"reproduced": [{"value": {"column": "plateau_length"}, "above": 10}]}})
    assert not rule_history(str(path), "C1").uncommitted  # its label dropped, reformatted: the same rule
    _claims(path, C1_RULE)
    assert rule_history(str(path), "C1") == RuleCommit(commits["edit"], "2026-12-02T12:00:00+01:00", uncommitted=True)
    assert not rule_history(str(path), "C2").uncommitted


def test_outside_git_there_is_no_history_and_no_code_commit(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    _claims(tmp_path / "claims.yaml", C1_RULE)
    assert rule_history(str(tmp_path / "claims.yaml"), "C1") is None
    assert code_commit(tmp_path) is None


RULE = RuleCommit("0123456789abcdef" * 2 + "01234567", "2026-12-02T13:35:03+00:00")


@pytest.mark.parametrize("rule, runs, reason, status, text", [
    (RULE, ["2026-12-02T15:00:00+01:00", "2026-12-02T17:00:00+00:00"], None, FIXED,
     "fixed before the runs (rule 0123456 2026-12-02 13:35:03 UTC, first run 2026-12-02 14:00:00 UTC)"),
    (RULE, ["2026-12-02T17:00:00+00:00", "2026-12-02T13:00:00Z", None], None, AFTER_RUNS,
     "written after the runs (rule 2026-12-02 13:35:03 UTC, first run 2026-12-02 13:00:00 UTC)"),
    (RULE, ["2026-12-02T13:35:03+00:00"], None, AFTER_RUNS,
     "written after the runs (rule 2026-12-02 13:35:03 UTC, first run 2026-12-02 13:35:03 UTC)"),
    (RULE, ["2026-12-02T13:00:00+00:00"], "seen in the README", AFTER_RESULTS,
     "written after results were seen: seen in the README"),
    (RULE, ["2026-12-02T17:00:00+00:00"], "an earlier run", FIXED_AFTER_EARLIER,
     "fixed before the runs (rule 0123456 2026-12-02 13:35:03 UTC, first run 2026-12-02 17:00:00 UTC); written after "
     "earlier results were seen: an earlier run"),
    (RULE, ["2026-12-02T17:00:00+00:00", None, None], None, NOT_PROVABLE,
     "not provable: 2 runs record no start time"),
    (RULE, [None], None, NOT_PROVABLE, "not provable: 1 run records no start time"),
    (RULE, [], None, NOT_PROVABLE, "not provable: the claim reads no runs"),
    (None, ["2026-12-02T17:00:00+00:00"], None, NOT_PROVABLE, "not provable: git holds no commit of the rule"),
    (RuleCommit(RULE.commit, RULE.time, uncommitted=True), ["2026-12-02T17:00:00+00:00"], "a reason", UNCOMMITTED,
     "uncommitted rule"),
])
def test_each_status_of_a_rule(rule, runs, reason, status, text):
    found = preregistration(rule, runs, reason)
    assert (found.status, found.text) == (status, text)


def test_a_run_records_its_first_start_outside_its_identity_and_keeps_it_when_resumed(corpus_dir, tmp_path,
                                                                                      monkeypatch):
    out = tmp_path / "run"
    short = {"max_steps": 10, "save_steps": 5, "eval_points": 1, "checkpoint_points": 1}
    interrupted_run(corpus_dir, out, 7, monkeypatch, **short)
    start = RunFolder(out).run_start()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert start.code_commit in (head, f"{head}+dirty")
    assert datetime.fromisoformat(start.started_at).utcoffset().total_seconds() == 0
    assert not {"code_commit", "started_at"} & set(RunFolder(out).recipe())
    first = {"code_commit": start.code_commit, "started_at": "2026-01-01T00:00:00+00:00"}
    (out / RUN_START).write_text(json.dumps(first))
    pretrain_main([*tiny30(corpus_dir, out, **short), "--extend_to", "15"])  # resumed from step 5, extended
    assert RunFolder(out).recipe()["extended_from"] == [10]
    assert json.loads((out / RUN_START).read_text()) == first


def test_a_study_row_gives_its_run_s_code_commit_and_start(tmp_path):
    first, base, study = tmp_path / "pretrain.yaml", tmp_path / "finetune.yaml", tmp_path / "study.yaml"
    small = {"n_pairs": 64, "n_heldout": 16, "hidden_size": 32, "batch_size": 16, "eval_points": 2}
    first.write_text(yaml.safe_dump({**small, "max_steps": 20, "output_dir": str(tmp_path / "first")}))
    base.write_text(yaml.safe_dump({**small, "n_new": 8, "max_steps": 10, "output_dir": "x", "init_from": "x"}))
    study.write_text(yaml.safe_dump({"stage": "toy_memory", "base": str(base), "output_dir": str(tmp_path / "s"),
                                     "pretrain": {"recipe": str(first), "output_dir": str(tmp_path / "first")},
                                     "grid": {"n_new": [4, 8]}}))
    sweep_main(["--config", str(study)])
    with (tmp_path / "s" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row in rows:
        start = RunFolder(tmp_path / "s" / row["run"]).run_start()
        assert (row["code_commit"], row["started_at"]) == (start.code_commit, start.started_at)
        assert row["started_at"]
