"""The compiled evaluation forward: no graph break, one graph per value width (dynamic shapes: not one per
batch length), and the eager scores."""

from __future__ import annotations

import numpy as np
import torch
from accelerate import Accelerator
from torch._dynamo.utils import counters

from pipeline.config import ModelArguments
from pipeline.evaluation import Evaluator, pretraining_groups
from pipeline.model import build_model


def test_compiled_evaluation_has_no_graph_break_and_the_eager_scores(corpus):
    torch.manual_seed(0)
    model = build_model(ModelArguments(model_preset="tiny"), corpus.tokenizer).eval()
    accelerator, splits = Accelerator(cpu=True), pretraining_groups(corpus, 12)
    eager = Evaluator(corpus, splits, batch_size=5)
    compiled = Evaluator(corpus, splits, batch_size=5, compile="eager")
    torch._dynamo.reset()
    counters.clear()
    for split in splits:
        expected, actual = eager.scores(model, accelerator, split), compiled.scores(model, accelerator, split)
        for key in ("value_loss", "top_prob", "entropy"):
            np.testing.assert_allclose(actual[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
        for key in ("correct", "attribute", "individual"):
            np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
    assert not counters["graph_break"], dict(counters["graph_break"])
    batches = [batch for batches in compiled.batches.values() for batch in batches]
    widths, lengths = {batch["width"] for batch in batches}, {batch["input_ids"].shape[1] for batch in batches}
    assert counters["stats"]["unique_graphs"] <= len(widths) < len(lengths), (dict(counters["stats"]), lengths)
