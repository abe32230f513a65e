"""Attribute loss, accuracy, confidence, baseline and AUROC against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from data_gen import ATTRIBUTES
from pipeline.evaluation import METRIC_PATH
from pipeline.evaluation.metrics import auroc, knowledge_bits, no_knowledge_baseline, query_scores, summarize


def test_query_scores_on_hand_built_logits():
    # vocabulary of 4; query 0 has a one-token value at position 2, query 1 a two-token value at 1..2
    input_ids = torch.tensor([[0, 1, 2, 3], [0, 3, 1, 2]])
    logits = torch.zeros(2, 4, 4)
    logits[0, 1] = torch.log(torch.tensor([0.1, 0.2, 0.6, 0.1]))  # predicts token 2 at position 2: p=0.6, argmax
    logits[1, 0] = torch.log(torch.tensor([0.1, 0.1, 0.3, 0.5]))  # predicts token 3 at position 1: p=0.5, argmax
    logits[1, 1] = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1]))  # predicts token 1 at position 2: p=0.3, not argmax
    scores = query_scores(logits, input_ids, torch.tensor([2, 1]), torch.tensor([3, 3]))
    assert scores.loss.tolist() == pytest.approx([-math.log(0.6), -math.log(0.5) - math.log(0.3)], rel=1e-5)
    assert scores.correct.tolist() == [True, False]
    assert scores.top_prob.tolist() == pytest.approx([0.6, 0.5], rel=1e-5)  # of the first value token
    entropy = [-sum(p * math.log(p) for p in ps) for ps in ([0.1, 0.2, 0.6, 0.1], [0.1, 0.1, 0.3, 0.5])]
    assert scores.entropy.tolist() == pytest.approx(entropy, rel=1e-5)
    given = query_scores(logits, input_ids, torch.tensor([2, 1]), torch.tensor([3, 3]), width=2)  # no host sync
    assert all(torch.equal(getattr(given, k), getattr(scores, k)) for k in ("loss", "correct", "top_prob", "entropy"))


def test_summarize_averages_attributes():
    metrics = summarize(np.array([1.0, 1.0, 2.0, 4.0, 3.0]), np.array([1, 0, 0, 0, 0], dtype=bool),
                        np.array([0.5, 0.5, 0.1, 0.2, 0.3]), np.zeros(5), ["a", "a", "b", "b", "b"],
                        {"a": 1.0, "b": 3.0})
    assert metrics["attribute_loss"] == pytest.approx((1.0 + 3.0) / 2)
    assert metrics["attribute_accuracy"] == pytest.approx((0.5 + 0.0) / 2)
    assert metrics["first_token_top_prob"] == pytest.approx((0.5 + 0.2) / 2)
    assert metrics["baseline_loss"] == 2.0
    assert metrics["per_attribute"]["b"] == pytest.approx(
        {"loss": 3.0, "accuracy": 0.0, "top_prob": 0.2, "entropy": 0.0, "baseline": 3.0})


def test_attribute_codes_give_the_numbers_of_names():
    rng = np.random.default_rng(0)
    n = 300
    loss, correct, top_prob, entropy = rng.random(n) * 5, rng.random(n) > 0.5, rng.random(n), rng.random(n)
    codes, individual = rng.integers(0, len(ATTRIBUTES), n), rng.integers(0, 20, n)
    names = [ATTRIBUTES[c] for c in codes]
    baselines = {name: 1.0 + k for k, name in enumerate(reversed(ATTRIBUTES))}  # another order than the codes'
    assert summarize(loss, correct, top_prob, entropy, codes, baselines) == summarize(
        loss, correct, top_prob, entropy, names, baselines)
    assert knowledge_bits(loss, codes, individual, baselines, 100) == knowledge_bits(
        loss, names, individual, baselines, 100)


def test_evaluate_module_loads_offline_and_matches_summarize(monkeypatch):
    evaluate = pytest.importorskip("evaluate", reason="the attribute_recall module runs in the evaluate package")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    rng = np.random.default_rng(0)
    n = 600
    inputs = {"value_loss": rng.random(n) * 5, "correct": rng.random(n) > 0.7, "top_prob": rng.random(n),
              "entropy": rng.random(n), "attribute": list(np.array(["city", "major", "date"])[rng.integers(0, 3, n)])}
    baselines = {"city": 6.0, "major": 4.0, "date": 11.0}
    from_module = evaluate.load(str(METRIC_PATH)).compute(**inputs, baselines=baselines)
    direct = summarize(inputs["value_loss"], inputs["correct"], inputs["top_prob"], inputs["entropy"],
                       inputs["attribute"], baselines)
    assert from_module == direct  # float64 through Arrow: the very same numbers


def test_auroc_by_hand():
    assert auroc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert auroc(np.array([0.1]), np.array([0.9])) == 0.0
    assert auroc(np.array([0.5, 0.9]), np.array([0.5, 0.1])) == pytest.approx((0.5 + 1 + 1 + 1) / 4)  # one tie
    rng = np.random.default_rng(0)
    assert auroc(rng.random(5000), rng.random(5000)) == pytest.approx(0.5, abs=0.02)


def test_baseline_is_entropy_of_values_summed_over_tokens():
    values = {"city": np.array([[5], [5], [7], [7]]),  # two values, equally often: log 2
              "date": np.array([[1, 1, 9], [2, 1, 9], [3, 1, 9], [4, 1, 9]])}  # log 4 + 0 + 0
    baseline = no_knowledge_baseline(values)
    assert baseline["city"] == pytest.approx(math.log(2))
    assert baseline["date"] == pytest.approx(math.log(4))
    uniform = np.random.default_rng(0).integers(0, 50, size=(200_000, 1))
    assert no_knowledge_baseline({"x": uniform})["x"] == pytest.approx(math.log(50), abs=1e-3)


def test_the_evaluator_equals_scoring_each_whole_query(corpus):
    """Queries cut after their value and grouped by length, without a mask, give the numbers of scoring each
    whole query on its own."""
    from accelerate import Accelerator

    from pipeline.config import ModelArguments
    from pipeline.evaluation import Evaluator, pretraining_groups
    from pipeline.model import build_model

    torch.manual_seed(0)
    model = build_model(ModelArguments(model_preset="tiny"), corpus.tokenizer).eval()
    splits = pretraining_groups(corpus, 12)
    results = Evaluator(corpus, splits, batch_size=7).evaluate(model, Accelerator(cpu=True))
    baselines = no_knowledge_baseline(corpus.individuals("train").values)
    for group, (split, individuals) in splits.items():
        queries = corpus.queries(split)
        queries = queries.select([i for i, who in enumerate(queries["individual"]) if who in set(individuals)])
        scores = []
        with torch.no_grad():
            for query in queries:
                ids = torch.tensor(query["input_ids"])[None]
                scores.append(query_scores(model(input_ids=ids).logits, ids, torch.tensor([query["value_start"]]),
                                           torch.tensor([query["value_end"]])))
        expected = summarize(*(torch.cat([getattr(s, k) for s in scores]).double().numpy()
                               for k in ("loss", "correct", "top_prob", "entropy")), queries["attribute"], baselines)
        for key in ("attribute_loss", "attribute_accuracy", "first_token_top_prob", "first_token_entropy"):
            assert results[group][key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), (group, key)


def test_knowledge_bits_by_hand():
    from pipeline.evaluation.metrics import knowledge_bits

    # two individuals, two attributes (baselines 2 and 1 nats), two queries each
    loss = np.array([0.5, 1.5,   3.0, 3.0,   0.0, 0.0,   0.4, 0.8])
    attribute = ["a", "a", "a", "a", "b", "b", "b", "b"]
    individual = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    # individual 0: a 2 - 1.0 = 1, b 1 - 0 = 1; individual 1: a 2 - 3 < 0 -> 0, b 1 - 0.6 = 0.4
    bits = knowledge_bits(loss, attribute, individual, {"a": 2.0, "b": 1.0}, population=10)
    assert bits == pytest.approx((1 + 1 + 0 + 0.4) / math.log(2) * 10 / 2)
