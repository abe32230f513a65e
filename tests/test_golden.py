"""Golden numbers: a tiny deterministic CPU run (fp32), pretraining then fine-tuning, whose training
losses and trajectory lines are stored in tests/assets/golden/ and compared at 1e-6 (losses) and 1e-5
(evaluation metrics).

No refactor or speed-up may move them. A change that must (a new metric, a fixed bug) regenerates
them with `GOLDEN_UPDATE=1 python -m pytest tests/test_golden.py` and says why in its commit.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from pipeline.finetune import main as finetune_main
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import RunFolder

from .conftest import record_losses, tiny_flags

GOLDEN = Path(__file__).parent / "assets" / "golden"
# Training losses at 1e-6. Evaluation metrics, means over a few hundred queries of fp32 scores whose kernels
# differ by CPU type (AVX-512 or AVX2), at 1e-5, measured at most 3.3e-6 between an Intel Xeon and the AMD EPYC
# the numbers were made on; and the confidence AUROC, a rank statistic in which a 1e-7 change of a score near
# a tie moves one pair (1 / (900 x 900) = 1.2e-6 here), within 2e-5 (a few pairs).
TOLERANCE = {"losses": 1e-6, "trajectory": 1e-5, "confidence_auroc": 2e-5}
PRETRAIN_STEPS, FINETUNE_STEPS = 40, 12


def _run(stage_main, flags, monkeypatch) -> dict:
    losses = record_losses(monkeypatch)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")  # CPU numbers, on a GPU machine too
    torch.set_num_threads(1)  # one reduction order, whatever the machine's cores
    out = Path(flags[flags.index("--output_dir") + 1])
    stage_main(flags)
    return {"losses": losses, "trajectory": RunFolder(out).trajectory()}


def _close(expected, actual, where: str, tolerance: float = 0.0) -> None:
    """Equal structure, equal ints and strings, floats within their TOLERANCE (relative, or absolute near 0)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and list(expected) == list(actual), where
        for key in expected:
            _close(expected[key], actual[key], f"{where}.{key}", TOLERANCE.get(key, tolerance))
    elif isinstance(expected, list):
        assert isinstance(actual, (list, tuple)) and len(expected) == len(actual), where
        for i, (a, b) in enumerate(zip(expected, actual, strict=True)):
            _close(a, b, f"{where}[{i}]", tolerance)
    elif isinstance(expected, float):
        assert isinstance(actual, (int, float)) and math.isclose(actual, expected, rel_tol=tolerance,
                                                                 abs_tol=tolerance), f"{where}: {actual} != {expected}"
    else:
        assert expected == actual, f"{where}: {actual} != {expected}"


def _check(name: str, result: dict) -> None:
    path = GOLDEN / f"{name}.json"
    result = json.loads(json.dumps(result))  # tuples as lists, as stored
    if os.environ.get("GOLDEN_UPDATE"):
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = {key: ",\n  ".join(json.dumps(item) for item in items) for key, items in result.items()}
        path.write_text("{\n" + ",\n".join(f' "{key}": [\n  {text}\n ]' for key, text in lines.items()) + "\n}\n")
    _close(json.loads(path.read_text()), result, name)


@pytest.fixture(scope="module")
def golden_runs(corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("golden")
    monkeypatch = pytest.MonkeyPatch()
    threads = torch.get_num_threads()
    try:
        pretrain = _run(pretrain_main, tiny_flags(corpus_dir, out / "pretrain", max_steps=PRETRAIN_STEPS,
                                                  learning_rate=3e-3, logging_steps=1, eval_points=4, eval_steps=10,
                                                  checkpoint_points=2, save_steps=20, eval_individuals=30),
                        monkeypatch)
        monkeypatch.undo()
        init = out / "pretrain" / "checkpoints" / f"step-{PRETRAIN_STEPS:09d}"
        finetune = _run(finetune_main, tiny_flags(corpus_dir, out / "finetune", model_preset=None, init_from=init,
                                                  n_individuals_finetune=20, replay_weight=0.5,
                                                  max_steps=FINETUNE_STEPS, learning_rate=1e-3, logging_steps=1,
                                                  eval_points=3, checkpoint_points=1, save_steps=0,
                                                  eval_individuals=20), monkeypatch)
    finally:
        monkeypatch.undo()
        torch.set_num_threads(threads)
    return {"pretrain": pretrain, "finetune": finetune}


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_golden_losses_and_trajectory(golden_runs, stage):
    result = golden_runs[stage]
    assert len(result["losses"]) == (PRETRAIN_STEPS if stage == "pretrain" else FINETUNE_STEPS)
    _check(stage, result)
