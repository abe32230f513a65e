"""Every fact's history (facts/ of a run): its rows against the trajectory's aggregates and against the
stream's draws counted here, one step at a time."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from data_gen import ATTRIBUTES, Corpus, RecipeError
from data_gen.samplers import SamplerConfig
from pipeline.analysis.facts import (
    acquisition,
    facts_summary,
    fit_logistic,
    flip_rates,
    forgetting,
    half_knowledge,
    learned_first,
    read_facts,
)
from pipeline.analyze import main as analyze_main
from pipeline.pretrain import main
from pipeline.report.pretraining import write_pretrain_report
from pipeline.run_folder import RunFolder, step_of

from .conftest import interrupted_run, tiny30

CELEBRITIES = dict(sampler="celebrities", n_celebrities=10, celebrity_weight=20)
RUN = dict(max_steps=12, eval_points=3, checkpoint_points=1, eval_individuals=40, save_steps=5, eval_ranges=["5:25"],
           **CELEBRITIES)


@pytest.fixture(scope="module")
def run(corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("facts") / "run"
    main(tiny30(corpus_dir, out, **RUN))
    return RunFolder(out)


def test_query_rows_give_the_trajectory_accuracy_and_loss_of_each_group_and_step(run):
    queries = pd.read_parquet(run.path / "facts" / "queries")
    trajectory = run.trajectory()
    assert sorted(queries["step"].unique()) == sorted({row["step"] for row in trajectory}) and len(trajectory) >= 6
    for row in trajectory:
        rows = queries[(queries["step"] == row["step"]) & (queries["group"] == row["split"])]
        individuals = list(range(5, 25)) if row["split"] == "individuals_5-24" else None  # eval_ranges: all of 5-24
        assert len(rows) == len(individuals or range(40)) * 6 * 5  # 5 held-out templates each
        assert sorted(rows["individual"].unique()) == individuals if individuals else rows["individual"].nunique() == 40
        per_attribute = rows.groupby("attribute", observed=True)
        assert sorted(per_attribute.groups) == sorted(ATTRIBUTES)
        # the trajectory's numbers are means over attributes of per-attribute means
        assert per_attribute["correct"].mean().mean() == pytest.approx(row["attribute_accuracy"], abs=1e-12)
        assert per_attribute["value_loss"].mean().mean() == pytest.approx(row["attribute_loss"], rel=1e-6)
        assert per_attribute["top_prob"].mean().mean() == pytest.approx(row["first_token_top_prob"], rel=1e-6)


def test_every_group_is_evaluated_at_every_step(run):
    groups = {}
    for row in run.trajectory():
        groups.setdefault(row["step"], set()).add(row["split"])
    assert set(map(frozenset, groups.values())) == {frozenset({"seen", "heldout", "individuals_5-24"})}


@pytest.mark.parametrize("ranges, message", [(["10:5"], "0 <= FIRST < END"), (["a:b"], "FIRST:END"),
                                             (["150:250"], "<= the corpus's 200 training individuals")])
def test_bad_eval_ranges_are_clear_errors(corpus_dir, tmp_path, ranges, message):
    with pytest.raises(RecipeError, match=message):
        main(tiny30(corpus_dir, tmp_path / "run", eval_ranges=ranges))
    assert not (tmp_path / "run").exists()


def test_exposure_rows_are_the_draws_of_the_stream_counted_step_by_step(run, corpus_dir):
    corpus = Corpus(corpus_dir)
    recipe = yaml.safe_load((run.path / "run_config.yaml").read_text())
    sampler = SamplerConfig(**CELEBRITIES).build(len(corpus.split("train")), batch_size=16, max_steps=12)
    stream = corpus.stream(16, recipe["data_seed"], sampler=sampler)
    exposures = pd.read_parquet(run.path / "facts" / "exposures")
    counts, last = np.zeros(200, dtype=np.int64), np.zeros(200, dtype=np.int64)
    for step in range(13):
        at = exposures[exposures["step"] == step].sort_values("individual")
        if len(at):
            assert at["individual"].tolist() == list(range(200))
            assert (at["exposures"].to_numpy() == counts).all() and (at["last_drawn"].to_numpy() == last).all()
        who = stream.draw(step)[0]  # the batch trained on by step + 1
        np.add.at(counts, who, 1)
        last[who] = step + 1
    final = exposures[exposures["step"] == 12]
    drawn = final.sort_values("individual")["exposures"].to_numpy()
    assert drawn.sum() == 12 * 16 and drawn[:10].sum() > drawn[10:].sum()  # the celebrities are drawn more
    assert (final["last_drawn"] == 0).sum() == (final["exposures"] == 0).sum() > 0  # never drawn: 0


@pytest.mark.slow
def test_a_killed_and_resumed_run_writes_the_same_facts(run, corpus_dir, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    interrupted_run(corpus_dir, out, 7, monkeypatch, **RUN)
    assert sorted(p.name for p in (out / "facts" / "queries").iterdir())  # the evaluations before the kill
    main(tiny30(corpus_dir, out, **RUN))
    for table in ("queries", "exposures"):
        assert sorted(p.name for p in (out / "facts" / table).iterdir()) == sorted(
            p.name for p in (run.path / "facts" / table).iterdir())
        again, first = pd.read_parquet(out / "facts" / table), pd.read_parquet(run.path / "facts" / table)
        pd.testing.assert_frame_equal(again, first)


def _facts(rows: list[tuple]) -> pd.DataFrame:
    """Hand-made facts: (step, individual, attribute, correct, exposures, last_drawn), template 0, loss 1."""
    frame = pd.DataFrame(rows, columns=["step", "individual", "attribute", "correct", "exposures", "last_drawn"])
    return frame.assign(template=0, value_loss=1.0)


def test_the_half_knowledge_point_of_one_step_of_exposure_is_where_the_two_logits_meet():
    # a single 0/1 regressor: the fit gives logit(1/4) at x = 0 and logit(3/4) at x = 1, so P = 1/2 at x = 1/2,
    # that is 2 ** 0.5 - 1 exposures
    exposures = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    correct = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=bool)
    a, b = fit_logistic(np.log2(1 + exposures), correct.astype(float), np.ones(8))
    assert a == pytest.approx(np.log(1 / 3), abs=1e-4) and b == pytest.approx(2 * np.log(3), abs=1e-4)
    half = half_knowledge(exposures, correct, np.arange(8))
    assert half["exposures"] == pytest.approx(2 ** 0.5 - 1, abs=1e-4) and half["facts"] == 8
    assert half_knowledge(exposures, ~correct, np.arange(8))["exposures"] is None  # falls with exposure
    # 8 facts at each level, 1 known at 0 exposures: with 5 known at 1 exposure the logits -ln 7 and ln(5/3) cross
    # zero at x = ln 7 / (ln 7 + ln(5/3)), inside [0, 1]; with 3 known (ln(3/5)) at ln 7 / (ln 7 - ln(3/5)) > 1,
    # an extrapolation past the exposures observed, so none
    exposures = np.repeat([0, 1], 8)
    for known, crossing in ((5, np.log(7) / (np.log(7) + np.log(5 / 3))), (3, None)):
        correct = np.zeros(16, dtype=bool)
        correct[[0, *range(8, 8 + known)]] = True
        half = half_knowledge(exposures, correct, np.arange(16))["exposures"]
        assert half is None if crossing is None else half == pytest.approx(2 ** crossing - 1, abs=1e-4)


def test_forgetting_counts_only_facts_not_drawn_since_they_were_known():
    facts = _facts([(10, 0, "a", True, 3, 8), (20, 0, "a", True, 3, 8), (40, 0, "a", False, 3, 8),  # forgotten
                    (10, 1, "a", True, 2, 9), (20, 1, "a", True, 3, 15),  # drawn again: left out
                    (10, 2, "a", False, 1, 5), (20, 2, "a", False, 1, 5)])  # never known
    assert forgetting(facts) == [{"steps_since_drawn": [8, 15], "facts": 1, "still_known": 1.0},
                                 {"steps_since_drawn": [32, 63], "facts": 1, "still_known": 0.0}]
    # known only from step 20 on when facts right at step 10 count as guesses: fact 0 is then known at 20 and
    # lost at 40 (32 steps after its last draw); fact 1 was drawn at 15, before 20, so it now counts, known at 20
    # and never evaluated after
    assert forgetting(facts, known_after=10) == [{"steps_since_drawn": [32, 63], "facts": 1, "still_known": 0.0}]


def test_flip_rates_and_the_attribute_learned_first():
    facts = _facts([(s, i, "a", c, 0, 0) for i, seq in enumerate(("TTF", "FTT", "FFF"))
                    for s, c in zip((0, 10, 20), (x == "T" for x in seq), strict=True)]
                   + [(s, 0, "b", False, 0, 0) for s in (0, 10, 20)])
    # known then: TT, TF (fact 0), TT (fact 1): 1 of 3 lost; unknown then: FT, FF, FF and b's FF, FF: 1 of 5
    assert flip_rates(facts) == {"known_then_lost": pytest.approx(1 / 3), "unknown_then_learned": 0.2, "pairs": 8}
    assert learned_first(facts) == {"a": 10.0, "b": None}  # a: 1 of 3 at step 0, 2 of 3 at step 10


def test_acquisition_splits_the_evaluations_at_the_plateau_end():
    facts = _facts([(step, i, "a", step > 50 and i < 2, 2 ** i if step else 0, step) for step in (0, 50, 100)
                    for i in range(4)])
    phases = acquisition(facts, plateau_end=50)
    assert [b["facts"] for b in phases["before_plateau_end"]["by_exposure"]] == [4, 1, 1, 1, 1]  # 0; 1; 2; 4; 8
    assert [b["range"] for b in phases["after_plateau_end"]["by_exposure"]] == [[1, 1], [2, 3], [4, 7], [8, 15]]
    assert [b["correct"] for b in phases["after_plateau_end"]["by_exposure"]] == [1.0, 1.0, 0.0, 0.0]
    assert phases["before_plateau_end"]["half_knowledge"]["exposures"] is None  # nothing known before


def test_read_facts_joins_each_seen_query_to_its_individuals_exposures(run):
    facts = read_facts(run)
    exposures = pd.read_parquet(run.path / "facts" / "exposures")
    assert len(facts) == 40 * 30 * facts["step"].nunique()
    merged = exposures.set_index(["step", "individual"]).loc[list(zip(facts["step"], facts["individual"]))]
    assert (merged["exposures"].to_numpy() == facts["exposures"].to_numpy()).all()


def test_the_report_draws_the_facts_and_a_study_row_gets_the_exposures_to_half_knowledge(run, corpus_dir):
    report = write_pretrain_report(run, Corpus(corpus_dir)).read_text()
    section = " ".join(report.split("## Every fact's history (seen individuals)")[1].split("\n## ")[0].split())
    assert "![facts](facts.png)" in section and (run.path / "facts.png").stat().st_size > 10_000
    evaluations = len({row["step"] for row in run.trajectory()})  # no plateau end in 12 steps: one phase, all
    assert f"| all | {40 * 30 * evaluations:,} |" in section
    assert "of the facts known are lost" in section and "Step at which each attribute is half known" in section
    assert facts_summary(run, None) == {}  # no plateau end: no phases to split
    summary = facts_summary(run, 3)
    assert set(summary) == {"half_knowledge_before", "half_knowledge_after"}
    facts = read_facts(run)  # the summary fits the evaluations on each side of step 3, per fact as the report does
    for key, rows in (("half_knowledge_before", facts[facts["step"] <= 3]), ("half_knowledge_after",
                                                                            facts[facts["step"] > 3])):
        expected = half_knowledge(rows["exposures"].to_numpy(), rows["correct"].to_numpy(),
                                  rows["individual"].to_numpy())["exposures"]
        assert summary[key] == (None if expected is None else pytest.approx(expected, rel=1e-9))


def test_a_run_without_facts_says_so_in_its_report(run, corpus_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run.path, old)
    shutil.rmtree(old / "facts")
    report = write_pretrain_report(RunFolder(old), Corpus(corpus_dir)).read_text()
    assert "This run has no facts/ folder" in report and facts_summary(RunFolder(old), 3) == {}


@pytest.mark.slow
def test_facts_are_recomputed_from_the_checkpoints_of_a_run_that_has_none(run, corpus_dir, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(run.path, old)
    shutil.rmtree(old / "facts")
    analyze_main(["facts", "--run", str(old)])
    checkpoints = sorted(step_of(c) for c in RunFolder(old).complete_checkpoints())
    assert f"facts written at {len(checkpoints)} checkpoints (0 had them already)" in capsys.readouterr().out
    assert len(checkpoints) >= 2 and "This run has no facts/ folder" not in (old / "report.md").read_text()
    for table in ("queries", "exposures"):
        live, again = pd.read_parquet(run.path / "facts" / table), pd.read_parquet(old / "facts" / table)
        live = live[live["step"].isin(checkpoints)].reset_index(drop=True)
        assert sorted(again["step"].unique()) == checkpoints == sorted(live["step"].unique())
        pd.testing.assert_frame_equal(again.drop(columns=["value_loss", "top_prob"], errors="ignore"),
                                      live.drop(columns=["value_loss", "top_prob"], errors="ignore"))
        if table == "queries":
            assert np.allclose(again["value_loss"], live["value_loss"], rtol=1e-5, atol=1e-6)
    analyze_main(["facts", "--run", str(old)])  # again: every checkpoint has its facts, none rewritten
    assert f"facts written at 0 checkpoints ({len(checkpoints)} had them already)" in capsys.readouterr().out
