"""Evaluation speed: the evaluator against the one it replaced (whose source is read from git at
`--baseline_rev`), on the same model and queries, in the same process. Prints seconds per evaluation
(the first, which builds and moves the batches, and the next), queries per second, and the ratio.

    python bench/eval_speed.py --corpus corpora/demo --model_preset demo [--individuals 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as `python bench/eval_speed.py`: the repo root, whatever the cwd
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from accelerate import Accelerator

from data_gen import Corpus
from pipeline.config import ModelArguments
from pipeline.evaluation import Evaluator, pretraining_groups
from pipeline.model import build_model

ROOT = Path(__file__).resolve().parents[1]
BASELINE_REV = "9d8a6a1"  # the tree before the evaluator was rewritten (pipeline/evaluation.py)


def baseline_evaluator(rev: str):
    """The Evaluator class of pipeline/evaluation.py at `rev`, its relative imports pointed at today's
    modules of the same content (metrics, the evaluate module)."""
    source = subprocess.run(["git", "show", f"{rev}:pipeline/evaluation.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    source = source.replace("from .metrics import", "from pipeline.evaluation.metrics import")
    source = source.replace('METRIC_PATH = Path(__file__).parent / "attribute_recall"',
                            f'METRIC_PATH = Path({str(ROOT / "pipeline" / "evaluation" / "attribute_recall")!r})')
    source = source.replace("QUERY_SPLITS[split]", "{'train': 'eval_seen', 'heldout': 'eval_heldout', "
                                                   "'finetune': 'eval_finetune'}[split]")
    path = Path(tempfile.mkdtemp()) / "baseline_evaluation.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_evaluation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Evaluator


def timed(function) -> tuple[object, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="corpora/demo")
    parser.add_argument("--model_preset", default="demo")
    parser.add_argument("--individuals", type=int, default=0, help="Per group (seen, held-out); 0: all.")
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--baseline_rev", default=BASELINE_REV)
    args = parser.parse_args()
    corpus = Corpus(args.corpus)
    cuda = torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda)
    torch.manual_seed(0)
    model = build_model(ModelArguments(model_preset=args.model_preset), corpus.tokenizer).to(accelerator.device)
    splits = pretraining_groups(corpus, args.individuals)
    landed = baseline_evaluator(args.baseline_rev)
    rows = {}
    for name, make in (("landed evaluator", lambda: landed(corpus, splits, args.batch_size)),
                       ("evaluator", lambda: Evaluator(corpus, splits, args.batch_size, compile=cuda))):
        evaluator, build = timed(make)
        evaluate = evaluator.evaluate
        _, first = timed(lambda evaluate=evaluate: evaluate(model, accelerator))
        results, second = timed(lambda evaluate=evaluate: evaluate(model, accelerator))
        rows[name] = (build, first, second, results)
    queries = sum(len(batch["query"]) for batches in evaluator.batches.values() for batch in batches)
    print(f"{'':<18}{'build s':>9}{'first s':>9}{'next s':>9}{'queries/s':>12}")
    for name, (build, first, second, _) in rows.items():
        print(f"{name:<18}{build:>9.2f}{first:>9.2f}{second:>9.2f}{queries / second:>12,.0f}")
    landed, ours = rows["landed evaluator"], rows["evaluator"]
    difference = max(abs(landed[3][g][k] - ours[3][g][k]) for g in ours[3] for k in ("attribute_loss",
                                                                                      "attribute_accuracy"))
    print(f"speed-up: {landed[2] / ours[2]:.1f}x per evaluation ({queries:,} queries, "
          f"{'CUDA' if cuda else 'CPU'}); largest metric difference {difference:.1e}")


if __name__ == "__main__":
    sys.exit(main())
