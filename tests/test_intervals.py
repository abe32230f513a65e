"""Intervals over seeds and the verdicts they decide, against numbers worked out by hand: the 95% t
quantiles below are the textbook table's (t_0.975 with 2, 3 and 6 degrees of freedom)."""

from __future__ import annotations

import math

import pytest

from pipeline.studies.fit import fit_bits_per_parameter, fit_with_interval
from pipeline.studies.intervals import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    PARTLY,
    REPRODUCED,
    at_least,
    at_most,
    decide,
    over_seeds,
    seeds_to_settle,
    window,
)

T2, T3, T6 = 4.302653, 3.182446, 2.446912  # t_0.975 at 2, 3 and 6 degrees of freedom


def test_a_t_interval_over_three_seeds():
    interval = over_seeds([1.0, 2.0, 3.0])  # mean 2, sd 1
    half = T2 * 1.0 / math.sqrt(3)
    assert (interval.mean, interval.low, interval.high) == pytest.approx((2.0, 2.0 - half, 2.0 + half), rel=1e-6)
    assert interval.text() == "2 [-0.484, 4.48] (95% t, n=3)" and interval.method == "95% t-interval, n=3"


def test_two_seeds_give_their_values_and_no_interval():
    interval = over_seeds([1.0, 3.0])  # a bootstrap would give [1, 3]: no wider than the runs
    assert interval.low is None and interval.high is None and interval.mean == 2.0
    assert interval.text() == "1, 3 (2 runs)"
    assert decide(interval, at_least(1.5)).verdict == INCONCLUSIVE


def test_four_seeds():
    interval = over_seeds([2.0, 4.0, 4.0, 6.0])  # mean 4, sd sqrt(8/3)
    half = T3 * math.sqrt(8 / 3) / 2
    assert (interval.low, interval.high) == pytest.approx((4 - half, 4 + half), rel=1e-6)


@pytest.mark.parametrize("values, sd, expected", [
    ([2.1, 2.2, 2.3], 0.1, REPRODUCED),      # [1.95, 2.45]: above 1.5
    ([1.15, 1.2, 1.25], 0.05, PARTLY),       # [1.08, 1.32]: between 1 and 1.5
    ([0.5, 0.6, 0.7], 0.1, NOT_REPRODUCED),  # [0.35, 0.85]: below 1
    ([1.2, 1.3, 1.4], 0.1, INCONCLUSIVE),    # [1.05, 1.55]: straddles 1.5
])
def test_a_verdict_is_the_region_holding_the_whole_interval(values, sd, expected):
    interval, mean = over_seeds(values), sum(values) / 3
    half = T2 * sd / math.sqrt(3)
    assert (interval.low, interval.high) == pytest.approx((mean - half, mean + half))
    assert decide(interval, at_least(1.5, 1.0)).verdict == expected


def test_an_at_most_scale_and_a_target_window():
    assert decide(over_seeds([0.05, 0.06, 0.07]), at_most(0.1, 0.2)).verdict == REPRODUCED
    assert decide(over_seeds([0.15, 0.16, 0.17]), at_most(0.1, 0.2)).verdict == PARTLY
    scale = window((0.7, 0.9), (0.0, None))
    assert [scale.label(x) for x in (-0.1, 0.3, 0.8, 1.2)] == [NOT_REPRODUCED, PARTLY, REPRODUCED, PARTLY]
    assert decide(over_seeds([0.78, 0.8, 0.82]), scale).verdict == REPRODUCED  # [0.75, 0.85]
    assert decide(over_seeds([0.5, 0.8, 1.1]), scale).verdict == INCONCLUSIVE


def test_the_runs_that_would_settle_an_inconclusive_verdict():
    # mean 1.2, sd 0.2, cut at 1.0: the half-width t(n-1) 0.2 / sqrt(n) falls below 0.2 once t(n-1) < sqrt(n):
    # n = 6: 2.571 > 2.449; n = 7: 2.447 < 2.646
    interval = over_seeds([1.0, 1.2, 1.4])
    assert seeds_to_settle(interval, 1.0) == 7
    decision = decide(interval, at_least(1.0))
    assert decision.verdict == INCONCLUSIVE and decision.seeds_needed == 7 and "about 7 runs" in decision.why
    assert T6 * 0.2 / math.sqrt(7) < 0.2 < 2.570582 * 0.2 / math.sqrt(6)
    assert seeds_to_settle(over_seeds([1.0]), 0.5) is None  # one run: no spread


def test_more_seeds_only_make_a_verdict_more_decided():
    """Runs alternating 0.1 around a mean of 1.6 (cut at 1.5) and of 1.4: the verdict is inconclusive until
    enough seeds narrow the interval, then decided, and never on the wrong side."""
    for mean, side in ((1.6, REPRODUCED), (1.4, NOT_REPRODUCED)):
        verdicts = [decide(over_seeds([mean + 0.1 * (-1) ** s for s in range(n)]), at_least(1.5)).verdict
                    for n in range(1, 13)]
        decided = verdicts.index(side)
        assert set(verdicts[:decided]) == {INCONCLUSIVE} and set(verdicts[decided:]) == {side}, verdicts
        assert decided >= 2  # one or two runs never decide


def test_the_exponent_is_fitted_seed_by_seed():
    """Seeds with exact power laws of exponents 0.7, 0.8 and 0.9: the interval is the t-interval of those."""
    by_seed = {s: {n: 2.0 * n ** b for n in (100.0, 1000.0, 10000.0)} for s, b in ((0, 0.7), (1, 0.8), (2, 0.9))}
    fit = fit_with_interval(by_seed)
    half = T2 * 0.1 / math.sqrt(3)
    assert fit["seed_exponents"] == pytest.approx({"0": 0.7, "1": 0.8, "2": 0.9})
    assert (fit["b_low"], fit["b_high"]) == pytest.approx((0.8 - half, 0.8 + half), rel=1e-6)
    assert fit["runs"] == [3, 3, 3] and fit["interval"] == "95% t-interval, n=3"
    one = fit_with_interval({0: by_seed[0]})
    assert one["b"] == pytest.approx(0.7) and one["b_low"] is None  # one seed per N: no interval, not a zero-width one


def test_bits_per_parameter_seed_by_seed():
    by_seed = {0: {1000.0: 1900.0, 4000.0: 8000.0}, 1: {1000.0: 2100.0}}
    fit = fit_bits_per_parameter(by_seed)
    assert fit["bits_per_parameter"] == pytest.approx((2000 * 1000 + 8000 * 4000) / (1000**2 + 4000**2))
    assert fit["seed_slopes"] == pytest.approx([(1900 * 1000 + 8000 * 4000) / (1000**2 + 4000**2), 2.1])
    assert fit["low"] is None  # two seeds


def test_summary_intervals_group_the_seeds_of_one_point_and_keep_each_baseline_apart():
    from pipeline.studies.aggregate import add_intervals

    rows = [{"run": f"lr=1_seed={s}", "lr": 1, "seed": s, "baseline": False, "loss": v}
            for s, v in enumerate((1, 2, 3))]
    rows += [{"run": "baseline_weight_decay=1.0", "lr": 1, "seed": 0, "baseline": True, "loss": 10.0},
             {"run": "baseline_batch_size=128", "lr": 1, "seed": 0, "baseline": True, "loss": 20.0}]
    add_intervals(rows, ["lr"], ("loss",))
    half = T2 / math.sqrt(3)
    assert (rows[0]["loss_mean"], rows[0]["loss_low"], rows[0]["loss_n"]) == pytest.approx((2.0, 2.0 - half, 3))
    assert [(r["loss_mean"], r["loss_low"], r["loss_n"]) for r in rows[3:]] == [(10.0, None, 1), (20.0, None, 1)]
