"""Shared fixtures and helpers: small corpora built with the real builder into temporary folders, tiny-run
flags, and entry points run as their command lines do."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate import Accelerator

from common.errors import run_cli
from common.recipe import to_flags
from data_gen import Corpus, CorpusConfig
from data_gen.builder import build
from pipeline.pretrain import main as pretrain_main
from pipeline.train.loop import TrainingLoop

REPO = Path(__file__).resolve().parents[1]

SMALL_POOLS = dict(n_first_names=40, n_last_names=40, n_cities=30, n_universities=20, n_majors=10, n_companies=30)


TINY_RUN = {"model_preset": "tiny", "batch_size": 16, "report_to": "none"}


def tiny_flags(corpus_dir, output_dir, **values) -> list[str]:
    """Command-line flags of a tiny CPU run on `corpus_dir` into `output_dir`: TINY_RUN, then `values`
    (a list gives several words, None leaves the key out, e.g. model_preset=None for fine-tuning)."""
    return ["--corpus", str(corpus_dir), "--output_dir", str(output_dir), *to_flags({**TINY_RUN, **values})]


def tiny20(corpus_dir, out, *extra) -> list[str]:
    """tiny_flags of a 20-step run (two evaluations and checkpoints, a resume checkpoint every 10 steps),
    then the command-line words `extra`."""
    return [*tiny_flags(corpus_dir, out, eval_points=2, checkpoint_points=2, eval_individuals=20, max_steps=20,
                        save_steps=10), *extra]


def tiny30(corpus_dir, out, **values) -> list[str]:
    """tiny_flags of a 30-step run (four evaluations and checkpoints), `values` overriding them."""
    return tiny_flags(corpus_dir, out, **{"max_steps": 30, "eval_individuals": 20, "eval_points": 4, "eval_steps": 0,
                                          "checkpoint_points": 4, **values})


def cli(main, argv, capsys) -> tuple[int, list[str]]:
    """Run an entry point as its command line does; returns the exit status and its stderr lines."""
    capsys.readouterr()  # what ran before
    code = run_cli(lambda: main(argv))
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def one_error_line(err: list[str]) -> bool:
    """The run's last stderr line is its only error line (above it: the progress bar)."""
    return err[-1].startswith("error: ") and sum(line.startswith("error: ") for line in err) == 1


def interrupted_run(corpus_dir, out, at_step: int, monkeypatch, **values) -> None:
    """A tiny30 pretraining run (with `values`) killed by KeyboardInterrupt at step `at_step`."""
    original = TrainingLoop.train_step

    def crash(self, step):
        if step == at_step:
            raise KeyboardInterrupt("killed")
        return original(self, step)

    monkeypatch.setattr(TrainingLoop, "train_step", crash)
    with pytest.raises(KeyboardInterrupt):
        pretrain_main(tiny30(corpus_dir, out, **values))
    monkeypatch.setattr(TrainingLoop, "train_step", original)


def record_losses(monkeypatch) -> list[tuple[int, float]]:
    """(step, training loss) of every `train/loss` the trainer logs through its Accelerator, from now on."""
    losses = []
    original = Accelerator.log

    def log(self, values, step=None, log_kwargs=None):
        if "train/loss" in values:
            losses.append((step, values["train/loss"]))
        return original(self, values, step=step, log_kwargs=log_kwargs or {})

    monkeypatch.setattr(Accelerator, "log", log)
    return losses


def small_config(output_dir, **overrides) -> CorpusConfig:
    values = dict(output_dir=str(output_dir), n_individuals=200, n_heldout=50, n_finetune=50, seed=3, **SMALL_POOLS)
    values.update(overrides)
    return CorpusConfig(**values)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    return build(small_config(tmp_path_factory.mktemp("corpus") / "small"))


@pytest.fixture(scope="session")
def corpus(corpus_dir):
    return Corpus(corpus_dir)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run only where CUDA is available."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
