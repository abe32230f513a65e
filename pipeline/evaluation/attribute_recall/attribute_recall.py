"""Attribute recall: the pipeline's attribute loss, accuracy and confidence metrics as an `evaluate` module.

    import evaluate
    recall = evaluate.load("pipeline/evaluation/attribute_recall")   # a path in the repo: no network
    recall.compute(value_loss=[...], correct=[...], top_prob=[...], entropy=[...], attribute=[...],
                   baselines={"birth_city": 6.68, ...})

Every input is per query (one sentence asking one attribute of one individual). The numbers
come from `pipeline.evaluation.metrics.summarize`, the same function the trainer's evaluation uses.
"""

import datasets
import evaluate
import numpy as np

from pipeline.evaluation.metrics import summarize

_DESCRIPTION = """Attribute loss (cross-entropy summed over a value's tokens, averaged per attribute, then over
attributes), attribute accuracy (all of a value's tokens are the argmax), the no-knowledge baseline, and
the top probability and entropy of the prediction of each value's first token."""

_KWARGS_DESCRIPTION = """
Args:
    value_loss: summed cross-entropy of each query's value tokens.
    correct: whether every value token of the query was the argmax.
    top_prob: top probability of the distribution predicting the value's first token.
    entropy: entropy of that distribution.
    attribute: the attribute each query asks for.
    baselines: the no-knowledge baseline loss of each attribute (their keys are the attributes reported).
Returns:
    attribute_loss, attribute_accuracy, baseline_loss, first_token_top_prob, first_token_entropy,
    per_attribute (the same per attribute).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AttributeRecall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Zucchet et al., How do language models learn facts? Dynamics, curricula and hallucinations, "
                     "2025.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "value_loss": datasets.Value("float64"),
                "correct": datasets.Value("bool"),
                "top_prob": datasets.Value("float64"),
                "entropy": datasets.Value("float64"),
                "attribute": datasets.Value("string"),
            }),
        )

    def _compute(self, value_loss, correct, top_prob, entropy, attribute, baselines):
        return summarize(np.asarray(value_loss), np.asarray(correct), np.asarray(top_prob), np.asarray(entropy),
                         list(attribute), baselines)
