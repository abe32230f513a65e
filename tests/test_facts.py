"""Every fact's history (facts/ of a run): its rows against the trajectory's aggregates and against the
stream's draws counted here, one step at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from data_gen import ATTRIBUTES, Corpus
from data_gen.samplers import SamplerConfig
from pipeline.pretrain import main
from pipeline.run_folder import RunFolder

from .conftest import interrupted_run, tiny30

CELEBRITIES = dict(sampler="celebrities", n_celebrities=10, celebrity_weight=20)
RUN = dict(max_steps=12, eval_points=3, checkpoint_points=1, eval_individuals=40, save_steps=5, **CELEBRITIES)


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
        assert len(rows) == 40 * 6 * 5 and rows["individual"].nunique() == 40  # 5 held-out templates each
        per_attribute = rows.groupby("attribute", observed=True)
        assert sorted(per_attribute.groups) == sorted(ATTRIBUTES)
        # the trajectory's numbers are means over attributes of per-attribute means
        assert per_attribute["correct"].mean().mean() == pytest.approx(row["attribute_accuracy"], abs=1e-12)
        assert per_attribute["value_loss"].mean().mean() == pytest.approx(row["attribute_loss"], rel=1e-6)
        assert per_attribute["top_prob"].mean().mean() == pytest.approx(row["first_token_top_prob"], rel=1e-6)


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
    assert final["exposures"].sum() == 12 * 16 and final["exposures"].iloc[:10].sum() > final["exposures"].iloc[10:].sum()
    assert (final["last_drawn"] == 0).sum() == (final["exposures"] == 0).sum() > 0  # never drawn: 0


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
