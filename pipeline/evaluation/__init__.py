"""Evaluation of attribute recall: the metric definitions, the `attribute_recall` evaluate module,
and the evaluator run during training."""

from .evaluator import METRIC_PATH, Evaluator, pretraining_groups

__all__ = ["METRIC_PATH", "Evaluator", "pretraining_groups"]
