"""Samplers over individuals: frequencies against their formulas, curricula switching on time,
exact replay, exposure accounting, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_gen import RecipeError
from data_gen.samplers import SamplerConfig, find_sequential
from data_gen.stream import shard_rows
from pipeline.evaluation.metrics import by_exposure, by_rank, frequency_rank, unexposed
from pipeline.pretrain import main
from pipeline.run_folder import RunFolder, checkpoint_name

from .conftest import tiny_flags


def _frequencies(sampler, n, draws=200_000, step=0):
    counts = np.bincount(sampler.draw(np.random.default_rng(0), step, draws), minlength=n)
    return counts / draws


@pytest.mark.parametrize("kind, params, expected", [
    ("uniform", {}, np.full(20, 1 / 20)),
    ("power_law", {"alpha": 0.8}, np.arange(1, 21) ** -0.8 / (np.arange(1, 21) ** -0.8).sum()),
    ("celebrities", {"n_celebrities": 5, "celebrity_weight": 4.0}, np.r_[np.full(5, 4.0), np.ones(15)] / 35),
])
def test_frequencies_match_the_formula(kind, params, expected):
    sampler = SamplerConfig(sampler=kind, **params).build(20, batch_size=8, max_steps=100)
    observed = _frequencies(sampler, 20)
    # each frequency within 5 standard errors of a binomial proportion over 200k draws
    assert np.all(np.abs(observed - expected) < 5 * np.sqrt(expected * (1 - expected) / 200_000))
    assert sampler.probabilities(0, 20) == pytest.approx(expected)


def test_warmup_switches_at_the_right_step():
    sampler = SamplerConfig(sampler="warmup", indiv_warmup=20, epochs_warmup=3).build(100, batch_size=10,
                                                                                      max_steps=1000)
    switch = 3 * 20 // 10  # epochs x individuals / batch
    rng = np.random.default_rng(0)
    assert all(sampler.draw(rng, step, 10).max() < 20 for step in range(switch))
    assert max(sampler.draw(rng, switch, 10).max() for _ in range(50)) >= 20


def test_schedule_phases_and_exact_replay(corpus):
    schedule = ["0:uniform:n=10", "5:power_law:alpha=1.0", "9:celebrities:n_celebrities=3,celebrity_weight=50"]
    sampler = SamplerConfig(sampler="schedule", sampler_schedule=list(schedule)).build(200, batch_size=16, max_steps=20)
    first, again = corpus.stream(16, 7, sampler=sampler), corpus.stream(16, 7, sampler=sampler)
    assert first.draw(3)[0].max() < 10
    assert (first.draw(30)[0] < 3).mean() > 0.3  # celebrities dominate the last phase
    for step in (0, 4, 5, 12):  # a resumed stream replays any step
        assert (first.batch(step)["input_ids"] == again.batch(step)["input_ids"]).all()


def test_blocks_of_individuals_drawn_together_by_their_shares():
    schedule = ["0:uniform:first=50,share=3", "0:uniform:n=10", "40:uniform:first=50", "60:uniform:first=10,n=20"]
    sampler = SamplerConfig(sampler="schedule", sampler_schedule=schedule).build(200, batch_size=8, max_steps=100)
    # steps 0-39: a quarter of the rows uniform over individuals 0-9 (1/40 each), the rest over 50-199 (1/200)
    expected = np.r_[np.full(10, 0.25 / 10), np.zeros(40), np.full(150, 0.75 / 150)]
    observed = _frequencies(sampler, 200, step=10)
    assert np.all(np.abs(observed - expected) < 5 * np.sqrt(expected * (1 - expected) / 200_000) + 1e-12)
    assert sampler.probabilities(10, 200) == pytest.approx(expected)
    assert set(np.unique(sampler.draw(np.random.default_rng(1), 45, 5000))) == set(range(50, 200))
    assert set(np.unique(sampler.draw(np.random.default_rng(1), 99, 5000))) == set(range(10, 30))
    assert sampler.probabilities(99, 200)[10:30] == pytest.approx(np.full(20, 0.05))


def test_exposures_add_up_and_match_the_draws(corpus):
    stream = corpus.stream(16, 0, sampler=SamplerConfig(sampler="power_law", alpha=1.0).build(200, 16, 100))
    counts = stream.exposures(25)
    assert counts.sum() == 25 * 16
    assert (stream.exposures(25, 10) + stream.exposures(10) == counts).all()
    assert counts[:10].sum() > counts[-10:].sum()  # the head of a power law is drawn more


@pytest.mark.parametrize("kind, params, message", [
    ("zipf", {}, "sampler 'zipf' is unknown"),
    ("power_law", {"alpha": -1}, "alpha must be between 0 and 10"),
    ("celebrities", {"n_celebrities": 500}, "n_celebrities must be between 1 and the 200 individuals"),
    ("warmup", {"indiv_warmup": 100, "epochs_warmup": 100}, "the warm-up lasts 625 steps, not less than max_steps"),
    ("schedule", {"sampler_schedule": ["5:uniform"]}, "must start at step 0"),
    ("schedule", {"sampler_schedule": ["0:uniform:n=x"]}, "is not 'START:KIND"),
    ("schedule", {"sampler_schedule": ["0:uniform:first=150,n=100"]}, "first \\+ n must be at most the 200"),
    ("schedule", {"sampler_schedule": ["0:uniform:share=0"]}, "share positive"),
    ("schedule", {"sampler_schedule": ["0:sequential:n_groups=2,first=10"]}, "takes neither first nor share"),
])
def test_bad_sampler_values_are_clear_errors(kind, params, message):
    with pytest.raises(RecipeError, match=message):
        SamplerConfig(sampler=kind, **params).build(200, batch_size=16, max_steps=100)


def test_by_exposure_buckets():
    rows = by_exposure(np.array([0, 1, 2, 3, 5, 0]), np.array([1.0, 2.0, 3.0, 4.0, 5.0, 3.0]),
                       np.array([0, 1, 1, 0, 1, 0], dtype=bool))
    assert [r["exposures"] for r in rows] == [[0, 0], [1, 1], [2, 3], [4, 7]]
    assert rows[0] == {"exposures": [0, 0], "queries": 2, "loss": 2.0, "accuracy": 0.0}
    assert rows[2]["accuracy"] == 0.5


def test_the_unexposed_are_the_queries_of_individuals_never_drawn():
    found = unexposed(np.array([0, 1, 0, 4, 0]), np.array([6.0, 1.0, 7.0, 0.5, 8.0]),
                      np.array([0, 1, 1, 1, 0], dtype=bool))
    assert found == {"unexposed_queries": 3, "unexposed_loss": 7.0, "unexposed_accuracy": pytest.approx(1 / 3)}
    assert unexposed(np.array([2, 1]), np.array([1.0, 2.0]), np.array([1, 0], dtype=bool)) == {
        "unexposed_queries": 0, "unexposed_loss": None, "unexposed_accuracy": None}


def test_frequency_rank_groups():
    ranks = frequency_rank(np.array([3, 9, 0, 3, 1]))
    assert ranks.tolist() == [2, 1, 5, 3, 4]  # the tie between individuals 0 and 3 goes to the lower index
    assert frequency_rank(np.zeros(3)).tolist() == [1, 2, 3]
    rows = by_rank(ranks, np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([1, 1, 0, 0, 1], dtype=bool))
    assert rows == [{"rank": [1, 1], "queries": 1, "loss": 2.0, "accuracy": 1.0},
                    {"rank": [2, 3], "queries": 2, "loss": 2.5, "accuracy": 0.5},
                    {"rank": [4, 7], "queries": 2, "loss": 4.0, "accuracy": 0.5}]


def test_training_with_a_sampler_records_exposures(corpus_dir, tmp_path):
    out = tmp_path / "run"
    main(tiny_flags(corpus_dir, out, max_steps=6, eval_points=2, checkpoint_points=1, eval_individuals=50,
                    sampler="celebrities", n_celebrities=10, celebrity_weight=20))
    exposures = np.load(out / "checkpoints" / checkpoint_name(6) / "exposures.npy")
    assert exposures.sum() == 6 * 16 and exposures[:10].sum() > exposures[10:].sum()
    final = [r for r in RunFolder(out).trajectory() if r["step"] == 6 and r["split"] == "seen"][0]
    assert sum(b["queries"] for b in final["by_exposure"]) == 50 * 30
    assert sum(b["queries"] for b in final["by_rank"]) == 50 * 30
    assert json.loads((out / "checkpoints" / checkpoint_name(6) / "trainer_state.json").read_text())[
        "recipe"]["sampler"] == "celebrities"


def test_the_sequential_sampler_visits_each_group_in_order_then_repeats():
    sampler = SamplerConfig(sampler="sequential", n_groups=4, n_repeats=2).build(100, batch_size=16, max_steps=80)
    rng = np.random.default_rng(0)
    for step in range(80):  # 8 segments of 10 steps: groups 0 1 2 3 0 1 2 3, each 25 consecutive individuals
        group = step // 10 % 4
        drawn = sampler.draw(rng, step, 16)
        assert (drawn >= 25 * group).all() and (drawn < 25 * (group + 1)).all()
        assert sampler.probabilities(step, 100)[25 * group: 25 * (group + 1)] == pytest.approx(np.full(25, 1 / 25))
    assert np.unique(np.concatenate([sampler.draw(rng, 0, 16) for _ in range(50)])).size == 25  # uniform in it
    assert find_sequential(sampler).groups()[3].tolist() == list(range(75, 100))


def test_two_alternating_groups_and_a_sequential_phase_of_a_schedule():
    alternating = SamplerConfig(sampler="sequential", n_groups=2, n_repeats=3).build(10, 4, max_steps=60)
    assert [alternating.group_at(s) for s in range(0, 60, 10)] == [0, 1, 0, 1, 0, 1]
    schedule = SamplerConfig(sampler="schedule", sampler_schedule=["0:uniform", "20:sequential:n_groups=2"])
    sampler = schedule.build(10, 4, max_steps=60)  # the phase's 40 steps split between its two groups
    assert sampler.probabilities(10, 10) == pytest.approx(np.full(10, 0.1))
    assert sampler.probabilities(25, 10)[:5].sum() == pytest.approx(1.0)
    assert sampler.probabilities(45, 10)[5:].sum() == pytest.approx(1.0)
    assert len(find_sequential(sampler).groups()) == 2


def test_sequential_streams_shard_and_replay_like_the_others(corpus):
    sampler = SamplerConfig(sampler="sequential", n_groups=4).build(200, batch_size=16, max_steps=40)
    whole, again = corpus.stream(16, 3, sampler=sampler), corpus.stream(16, 3, sampler=sampler)
    length = whole.max_length
    halves = [whole.batch(25, shard_rows(16, rank, 2), length=length)["input_ids"] for rank in range(2)]
    assert (np.concatenate(halves) == whole.batch(25, length=length)["input_ids"]).all()
    assert (whole.batch(33)["input_ids"] == again.batch(33)["input_ids"]).all()  # any step replays (resume)
    assert whole.exposures(40)[:50].sum() == whole.exposures(10).sum() == 160  # 10 steps per group


@pytest.mark.parametrize("params, message", [
    ({"n_groups": 0}, "needs n_groups of at least 1"),
    ({"n_groups": 300}, "need at least 300 individuals"),
    ({"n_groups": 4, "n_repeats": 0}, "n_repeats must be at least 1"),
])
def test_bad_sequential_values_are_clear_errors(params, message):
    with pytest.raises(RecipeError, match=message):
        SamplerConfig(sampler="sequential", **params).build(200, batch_size=16, max_steps=100)
