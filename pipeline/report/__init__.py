"""Reports: figures and markdown drawn from a run's files, one module per kind of run."""

from pathlib import Path

from data_gen import Corpus

from ..run_folder import FINETUNE, RunFolder
from .finetuning import write_finetune_report
from .pretraining import write_pretrain_report


def write_run_report(run: RunFolder, corpus: Corpus) -> Path:
    """The report of a pretraining or fine-tuning run, as its trajectory says it is."""
    return (write_finetune_report if run.stage() == FINETUNE else write_pretrain_report)(run, corpus)


__all__ = ["write_finetune_report", "write_pretrain_report", "write_run_report"]
