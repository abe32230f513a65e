"""The claims ledger: each rule's verdicts on hand-made study files (one that passes, one that fails, one
partly), quantities read from summary.csv and run files, the ledger's files and links, the pool's order,
bad claims files, and the smoke tier end to end."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from pipeline.reproduce import main as reproduce_main
from pipeline.studies.claims import StudyFiles, load_claims, quantity, read_values, resolve
from pipeline.studies.parallel import Job, Pool, slots
from pipeline.studies.verdicts import NOT_REPRODUCED, NOT_RUN, PARTLY, REPRODUCED, check_rules, verdict

from .conftest import cli, one_error_line

REPO = Path(__file__).resolve().parents[1]


def write_study(folder: Path, rows: list[dict], fit: dict | None = None) -> dict[str, StudyFiles]:
    """A study folder with summary.csv of `rows` (status done unless given) and an optional fit.json."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"status": "done", **r} for r in rows]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with (folder / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    if fit is not None:
        (folder / "fit.json").write_text(json.dumps(fit))
    return {"s": StudyFiles(folder)}


def judge(rule: dict, files: dict[str, StudyFiles]) -> str:
    return verdict(rule, files, "s").verdict


def fit(b: float, low: float, high: float) -> dict:
    return {"a": 1.0, "b": 0.5, "r2": 0.9, "x": [100, 1000], "mean": [1, 2], "runs": [3, 3],
            "plateau_end": {"a": 0.4, "b": b, "b_low": low, "b_high": high, "r2": 0.99, "x": [100, 1000],
                            "mean": [10, 60], "runs": [3, 3]}}


@pytest.mark.parametrize("b, low, high, expected", [
    (0.77, 0.74, 0.80, REPRODUCED),      # the interval overlaps [0.7, 0.9]
    (0.67, 0.65, 0.69, PARTLY),          # misses it, still growing with N
    (-0.2, -0.3, -0.1, NOT_REPRODUCED),  # shrinking with N
])
def test_a_fit_rule_reads_the_exponent_and_its_interval(tmp_path, b, low, high, expected):
    files = write_study(tmp_path / "s", [{"run": "a"}], fit(b, low, high))
    rule = {"fit": {"name": "plateau_end", "target": [0.7, 0.9], "direction": [0, None]}}
    outcome = verdict(rule, files, "s")
    assert outcome.verdict == expected and outcome.seeds == 3 and outcome.numbers["exponent"] == b


@pytest.mark.parametrize("accuracies, expected", [([0.95, 0.92], REPRODUCED), ([0.95, 0.6], PARTLY),
                                                 ([0.95, 0.2], NOT_REPRODUCED)])
def test_every_run_must_meet_the_conditions(tmp_path, accuracies, expected):
    rows = [{"run": f"seed={i}", "seed": i, "plateau_length": 50, "final_accuracy": a, "final_loss": 0.1,
             "baseline_loss": 5.0} for i, a in enumerate(accuracies)]
    rule = {"every_run": {
        "reproduced": [{"value": {"column": "plateau_length"}, "above": 0},
                       {"value": {"column": "final_accuracy"}, "at_least": 0.9},
                       {"value": {"column": "final_loss"}, "below": {"column": "baseline_loss"}, "times": 0.1}],
        "partly": [{"value": {"column": "final_accuracy"}, "at_least": 0.5}]}}
    outcome = verdict(rule, write_study(tmp_path / "s", rows), "s")
    assert outcome.verdict == expected and outcome.seeds == 2
    assert outcome.numbers["final_accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)


def test_a_condition_against_another_column_of_the_same_run(tmp_path):
    rows = [{"run": r, "heldout_loss": h, "baseline_loss": 5.0} for r, h in (("a", 8.0), ("b", 7.0))]
    files = write_study(tmp_path / "s", rows)
    condition = {"value": {"column": "heldout_loss"}, "at_least": {"column": "baseline_loss"}, "times": 1.5}
    assert judge({"every_run": {"reproduced": [condition]}}, files) == NOT_REPRODUCED  # 7 < 7.5
    assert judge({"every_run": {"reproduced": [{**condition, "times": 1.4}]}}, files) == REPRODUCED  # 7 >= 7


@pytest.mark.parametrize("uniform, expected", [(6.0, REPRODUCED), (3.5, PARTLY), (1.5, NOT_REPRODUCED)])
def test_a_ratio_of_two_groups_means(tmp_path, uniform, expected):
    rows = [{"run": "u", "baseline": True, "final_loss": uniform},
            {"run": "w1", "baseline": False, "warm": 1, "final_loss": 1.0},
            {"run": "w2", "baseline": False, "warm": 1, "final_loss": 3.0}]
    rule = {"ratio": {"of": {"column": "final_loss", "where": {"baseline": True}},
                      "to": {"column": "final_loss", "where": {"warm": 1}},
                      "reproduced_at_least": 3.0, "partly_at_least": 1.0}}
    outcome = verdict(rule, write_study(tmp_path / "s", rows), "s")
    assert outcome.verdict == expected and outcome.numbers["ratio"] == pytest.approx(uniform / 2.0)


@pytest.mark.parametrize("old, expected", [([0.6, 0.5, 0.3], REPRODUCED), ([0.6, 0.62, 0.3], PARTLY),
                                          ([0.3, 0.5, 0.6], NOT_REPRODUCED)])
def test_a_trend_over_the_means_of_a_key(tmp_path, old, expected):
    rows = [{"run": f"n={n}_seed={s}", "n": n, "seed": s, "old": value + (0.01 if s else -0.01)}
            for n, value in zip((10, 20, 40), old) for s in (0, 1)]  # two seeds around each mean
    outcome = verdict({"trend": {"value": {"column": "old"}, "along": "n", "direction": "decreasing"}},
                      write_study(tmp_path / "s", rows), "s")
    assert outcome.verdict == expected
    assert outcome.numbers["means"] == pytest.approx(dict(zip((10.0, 20.0, 40.0), old)))


@pytest.mark.parametrize("plateaus, expected", [([90, 60, 40, 70], REPRODUCED), ([90, 40, 60, 70], PARTLY),
                                               ([30, 40, 60, 70], NOT_REPRODUCED)])
def test_the_best_value_of_a_key(tmp_path, plateaus, expected):
    rows = [{"run": f"alpha={a}", "alpha": a, "plateau_length": p} for a, p in zip((0.0, 0.4, 0.7, 1.0), plateaus)]
    rule = {"best": {"value": {"column": "plateau_length"}, "along": "alpha", "lowest": True, "target": [0.6, 0.8]}}
    assert judge(rule, write_study(tmp_path / "s", rows)) == expected


@pytest.mark.parametrize("losses, expected", [
    ({750: [3, 2, 1], 1500: [3, 1, 2]}, REPRODUCED),      # best alpha 1.0 at 750 steps, 0.5 at 1,500
    ({750: [3, 1, 2], 1500: [3, 1, 2]}, NOT_REPRODUCED),  # the same best alpha for both budgets
])
def test_the_best_value_moving_with_another_key(tmp_path, losses, expected):
    rows = [{"run": f"{a}-{steps}", "alpha": a, "max_steps": steps, "final_loss": loss}
            for steps, values in losses.items() for a, loss in zip((0.0, 0.5, 1.0), values)]
    rule = {"best_shift": {"value": {"column": "final_loss"}, "along": "alpha", "lowest": True, "by": "max_steps",
                           "direction": "decreasing"}}
    assert judge(rule, write_study(tmp_path / "s", rows)) == expected


def test_all_of_is_partly_when_its_parts_disagree(tmp_path):
    files = write_study(tmp_path / "s", [{"run": "a", "x": 1.0}])
    yes = {"every_run": {"reproduced": [{"value": {"column": "x"}, "above": 0}]}}
    no = {"every_run": {"reproduced": [{"value": {"column": "x"}, "above": 2}]}}
    assert [judge({"all_of": parts}, files) for parts in ([yes, yes], [yes, no], [no, no])] == [
        REPRODUCED, PARTLY, NOT_REPRODUCED]


def test_a_run_file_quantity_is_filtered_windowed_divided_and_reduced(tmp_path):
    files = write_study(tmp_path / "s", [{"run": "r", "seed": 0}])
    lines = [{"step": s, "split": split, "attribute_loss": loss, "baseline_loss": 5.0}
             for s, split, loss in [(0, "seen", 9.0), (10, "seen", 5.5), (20, "seen", 6.0), (20, "heldout", 9.0),
                                    (100, "seen", 1.0)]]
    (tmp_path / "s" / "r").mkdir()
    (tmp_path / "s" / "r" / "trajectory.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    spec = {"column": "attribute_loss", "divide_by": "baseline_loss", "file": "trajectory.jsonl",
            "match": {"split": "seen"}, "steps": [0.05, 0.5], "at": "max"}
    assert read_values(quantity(spec, "test"), files, "s").values == [pytest.approx(6.0 / 5.0)]  # steps 10, 20
    assert read_values(quantity({**spec, "steps": None, "at": "last"}, "test"), files, "s").values == [0.2]
    heads = [{"step": s, "layer": layer, "head": h, "g": layer + h + s / 100} for s in (0, 100) for layer in (0, 1)
             for h in (0, 1)]
    (tmp_path / "s" / "r" / "attention.jsonl").write_text("".join(json.dumps(x) + "\n" for x in heads))
    last_layer = quantity({"column": "g", "file": "attention.jsonl", "match": {"layer": "last"}}, "test")
    assert read_values(last_layer, files, "s").values == [pytest.approx(2.5)]  # layer 1, heads 0 and 1, step 100


def test_where_picks_by_rank_and_the_diagonal(tmp_path):
    rows = [{"run": f"{s}-{r}", "start": s, "ref": r, "loss": 10 * s + r} for s in (0, 4) for r in (0, 4, 9)]
    files = write_study(tmp_path / "s", rows)

    def loss(where: dict) -> list[float]:
        return read_values(quantity({"column": "loss", "where": where}, "test"), files, "s").values

    assert loss({"start": "min", "ref": "max"}) == [9]
    assert loss({"start": "max", "ref": {"rank": 1}}) == [44]
    assert loss({"start": "max", "ref": {"equals": "start"}}) == [44]
    assert loss({"ref": {"rank": -1}}) == [9, 49]
    with pytest.raises(LookupError):
        loss({"ref": {"rank": 5}})


def test_a_missing_study_or_value_is_not_run(tmp_path):
    rule = {"trend": {"value": {"column": "x"}, "along": "n", "direction": "increasing"}}
    assert verdict(rule, {"s": StudyFiles(tmp_path / "nothing")}, "s").verdict == NOT_RUN
    files = write_study(tmp_path / "s", [{"run": "a", "n": 1, "y": 2.0}])
    outcome = verdict(rule, files, "s")
    assert outcome.verdict == NOT_RUN and outcome.why.endswith("has x")


def write_ledger_inputs(tmp_path: Path) -> Path:
    """A claims file of two claims over one hand-made pretraining study (one claim reproduced, one not) and
    one claim whose study has no folder."""
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"base": "b.yaml", "output_dir": str(tmp_path / "runs" / "s"),
                                     "grid": {"seed": [0, 1]}}))
    ghost = tmp_path / "ghost.yaml"
    ghost.write_text(yaml.safe_dump({"base": "b.yaml", "output_dir": str(tmp_path / "runs" / "ghost"),
                                     "grid": {"seed": [0]}}))
    rows = [{"seed": s, "run": f"seed={s}", "baseline": False, "heldout_loss": h, "baseline_loss": 5.0,
             "final_accuracy": 0.9} for s, h in ((0, 9.0), (1, 8.0))]
    write_study(tmp_path / "runs" / "s", rows + [{"seed": 2, "run": "seed=2", "baseline": False, "status": "failed",
                                                  "error": "boom"}])
    (tmp_path / "runs" / "s" / "study.png").write_bytes(b"png")
    claims = {"studies": {"s": {"cpu": str(study)}, "ghost": {"cpu": str(ghost)}, "paper_only": {"paper": str(study)}},
              "claims": [
                  {"id": "C17", "statement": "held-out loss above the baseline", "paper": "~13-15 against ~6.8",
                   "read": "Fig. 5", "study": "s", "figure": "study.png",
                   "rule": {"every_run": {"reproduced": [{"value": {"column": "heldout_loss"},
                                                          "at_least": {"column": "baseline_loss"}, "times": 1.5}]}}},
                  {"id": "C1", "statement": "accuracy ~1", "paper": "~1", "read": "Fig. 2", "study": "s",
                   "rule": {"every_run": {"reproduced": [{"value": {"column": "final_accuracy"}, "at_least": 0.99}]}}},
                  {"id": "C9", "statement": "never run", "paper": "-", "read": "-", "study": "ghost",
                   "rule": {"every_run": {"reproduced": [{"value": {"column": "x"}, "above": 0}]}}},
                  {"id": "C8", "statement": "paper scale only", "paper": "-", "read": "-", "study": "paper_only",
                   "rule": {"every_run": {"reproduced": [{"value": {"column": "x"}, "above": 0}]}}}]}
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(claims, sort_keys=False))
    return path


def test_the_ledger_gives_every_claim_a_row_and_links_every_number_to_its_file(tmp_path, capsys):
    claims = write_ledger_inputs(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- claims table: generated by pipeline.reproduce --readme; do not edit by hand -->\n"
                      "old\n<!-- end of the claims table -->\nrest\n")
    out, published = tmp_path / "ledger", tmp_path / "docs" / "claims"
    (out / "studies" / "s").mkdir(parents=True)  # a study's run folders inside the ledger's folder
    code, err = cli(reproduce_main, ["--scale", "cpu", "--claims_file", str(claims), "--ledger_only", "--output_dir",
                                     str(out), "--publish", str(published), "--readme", str(readme)], capsys)
    assert code == 0, err
    ledger = json.loads((out / "claims.json").read_text())
    verdicts = {c["id"]: c["verdict"] for c in ledger["claims"]}
    assert verdicts == {"C17": REPRODUCED, "C1": NOT_REPRODUCED, "C9": NOT_RUN, "C8": NOT_RUN}
    c17 = ledger["claims"][0]
    assert c17["seeds"] == 2 and c17["numbers"]["heldout_loss"]["mean"] == 8.5 and "1 runs of s failed" in c17["why"]
    assert "no cpu-scale study for paper_only" in ledger["claims"][3]["why"]
    text = (out / "claims.md").read_text()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert links and all((out / link).is_file() for link in links)  # evidence copies, figure included
    assert "evidence/s/summary.csv" in links and "evidence/s/study.png" in links
    assert (published / "claims.md").read_text() == text
    assert sorted(p.name for p in published.iterdir()) == ["claims.json", "claims.md", "evidence"]  # no run folders
    table = readme.read_text()
    assert "old" not in table and table.endswith("<!-- end of the claims table -->\nrest\n")
    assert "| [C17](" in table and "docs/claims/claims.md#c17" in table and "**not reproduced**" in table


def test_bad_claims_files_and_options_are_one_line(tmp_path, capsys):
    claims = write_ledger_inputs(tmp_path)
    code, err = cli(reproduce_main, ["--scale", "cpu", "--claims_file", str(claims), "--claims", "C1,C99",
                                     "--ledger_only"], capsys)
    assert code == 2 and one_error_line(err) and "unknown claims ['C99']" in err[0]
    values = yaml.safe_load(claims.read_text())
    values["claims"][0]["rule"] = {"vibes": {}}
    claims.write_text(yaml.safe_dump(values))
    code, err = cli(reproduce_main, ["--scale", "cpu", "--claims_file", str(claims), "--ledger_only"], capsys)
    assert code == 2 and one_error_line(err) and "one mapping of one kind" in err[0]
    (tmp_path / "docs").mkdir()
    code, err = cli(reproduce_main, ["--scale", "cpu", "--claims_file", str(write_ledger_inputs(tmp_path)),
                                     "--ledger_only", "--output_dir", str(tmp_path / "l"), "--publish",
                                     str(tmp_path / "docs")], capsys)
    assert code == 2 and "holds no ledger" in err[0] and (tmp_path / "docs").is_dir()


def test_the_repository_claims_file_parses_and_names_a_study_for_every_claim():
    claims = load_claims(str(REPO / "recipes" / "claims.yaml"))
    check_rules(claims)
    ids = [c.id for c in claims.claims]
    assert ids == ["C1", "C2", "C3", "C4", "C5", "C6", "C7", *[f"C{i}" for i in range(10, 24)]]
    for claim in claims.claims:
        for scale in ("smoke", "cpu"):
            assert all(claims.study_file(n, scale) for n in claim.studies), (claim.id, scale)


def test_a_job_waits_for_the_jobs_it_names(tmp_path):
    def job(name: str, code: str, after: tuple = ()) -> Job:
        return Job(name, ["-c", code], tmp_path / f"{name}.log", after=after)

    first = job("first", f"import time; time.sleep(0.5); open({str(tmp_path / 'flag')!r}, 'w')")
    then = job("then", f"import os, sys; sys.exit(0 if os.path.exists({str(tmp_path / 'flag')!r}) else 3)", ("first",))
    broken = job("broken", "raise SystemExit(1)")
    orphan = job("orphan", "pass", ("broken",))
    done = Pool(slots(2, None, 1), retries=0, refresh=60).run([then, orphan, first, broken])
    states = {j.name: j.state for j in done}
    assert states == {"first": "done", "then": "done", "broken": "failed", "orphan": "failed"}
    assert orphan.last_line == "not run: broken failed" and not orphan.log.exists()


def test_a_plan_counts_every_run_and_its_training_flops(tmp_path):
    from types import SimpleNamespace

    from pipeline.config import ModelArguments
    from pipeline.studies.plan import BIOGRAPHY_TOKENS, PAPER_VOCABULARY, study_plan
    from pipeline.studies.schema import parse_study
    from pipeline.train.flops import flops_per_token

    base = tmp_path / "base.yaml"
    base.write_text("model_preset: tiny\ncorpus: c\nmax_steps: 100\nbatch_size: 8\nreport_to: none\n")
    study = parse_study({"base": str(base), "output_dir": str(tmp_path / "s"), "grid": {"seed": [0, 1]},
                         "baselines": [{"max_steps": 50, "batch_size": 16}]}, "study.yaml")
    plan = study_plan(study)
    sizes = SimpleNamespace(**ModelArguments(model_preset="tiny").sizes(), vocab_size=PAPER_VOCABULARY)
    assert (plan.runs, plan.steps, plan.biographies) == (3, 250, 2 * 800 + 800)
    assert plan.flops == pytest.approx(2400 * BIOGRAPHY_TOKENS * flops_per_token(sizes, BIOGRAPHY_TOKENS))


@pytest.mark.slow
def test_the_smoke_tier_runs_every_claim_and_writes_its_ledger(tmp_path, monkeypatch):
    """The smoke tier from a folder of its own (the recipes linked in), as a user runs it."""
    (tmp_path / "recipes").symlink_to(REPO / "recipes")
    monkeypatch.chdir(tmp_path)
    reproduce_main(["--scale", "smoke"])
    ledger = json.loads(Path("runs/reproduce/smoke/claims.json").read_text())
    expected = [c.id for c in load_claims("recipes/claims.yaml").claims]
    assert [c["id"] for c in ledger["claims"]] == expected
    unread = [(c["id"], c["why"]) for c in ledger["claims"] if "has not run" in c["why"]]
    assert not unread  # every study ran and wrote its files (a tiny run may still lack a value, e.g. a plateau)
    assert ledger["run"]["wall_s"] > 0 and Path("runs/reproduce/smoke/claims.md").is_file()


def test_selecting_by_a_key_the_grid_does_not_vary_names_the_fix():
    rows = [{"alpha": 0.0, "max_steps": None}, {"alpha": 0.7, "max_steps": None}]
    assert resolve({"alpha": "max"}, rows) == {"alpha": 0.7}
    with pytest.raises(LookupError, match="summary.csv has no values of max_steps: the study's grid does not vary"):
        resolve({"max_steps": "max"}, rows)
