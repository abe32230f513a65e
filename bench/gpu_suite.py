"""Everything measured on a GPU, in one command: the paper corpus built, the GPU tests, our training step
against the Hugging Face Trainer (same model, same biographies, one process), the paper's default run
end to end, and a full evaluation of every seen individual. Prints one markdown table and writes it,
with every number, as JSON.

    python bench/gpu_suite.py                       # a CUDA machine: about 5 minutes on an H100
    python bench/gpu_suite.py --run_steps 4000      # the default run's recipe cut to 4,000 steps (stated)
    python bench/gpu_suite.py --smoke               # anywhere, in seconds: tiny sizes, same code paths

Prepare a bare GPU image with ../shared/gpu/wheels.sh (datasets, evaluate and deepspeed as wheels).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from train_speed import step_rows

from data_gen import Corpus, CorpusConfig
from data_gen.builder import build
from data_gen.layout import MANIFEST
from pipeline.evaluation import Evaluator, pretraining_splits
from pipeline.model import load_checkpoint
from pipeline.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
PAPER_RECIPE = ROOT / "recipes" / "paper" / "pretrain" / "config_default.yaml"
SMOKE_POOLS = dict(n_first_names=40, n_last_names=40, n_cities=30, n_universities=20, n_majors=10, n_companies=30)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def attempt(name: str, function, *args, **kwargs):
    """A stage's result, or {"failed": its error} so that the other stages still run and report."""
    try:
        return function(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - any failure is reported in the table, the suite goes on
        print(f"{name} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return {"failed": f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:200] if str(err) else ''}"}


def build_corpus(out: Path, smoke: bool) -> tuple[Path, float]:
    """The paper corpus (64k individuals; `smoke`: 2,000 from small pools), built once into `out`."""
    folder = out / "corpus"
    if (folder / MANIFEST).is_file():
        return folder, 0.0
    sizes = dict(n_individuals=500, n_heldout=100, n_finetune=100, **SMOKE_POOLS) if smoke else {}
    _, seconds = timed(build, CorpusConfig(output_dir=str(folder), **sizes))
    return folder, seconds


def gpu_tests() -> dict:
    """pytest -m gpu: how many passed, failed and were skipped."""
    if importlib.util.find_spec("pytest") is None:
        return {"passed": 0, "failed": 0, "skipped": 0, "seconds": 0.0, "tail": ["pytest is not installed"]}
    result, seconds = timed(subprocess.run, [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p",
                                             "no:cacheprovider", "tests"], cwd=ROOT, capture_output=True, text=True)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", result.stdout)}
    return {"passed": counts.get("passed", 0), "failed": counts.get("failed", 0) + counts.get("error", 0),
            "skipped": counts.get("skipped", 0), "seconds": seconds, "tail": result.stdout.strip().splitlines()[-1:]}


def default_run(corpus: Path, out: Path, smoke: bool, steps: int | None) -> dict:
    """The paper's default pretraining recipe end to end (its log-spaced evaluations and checkpoints
    included), as `python -m pipeline.pretrain` runs it; `steps` cuts it (the schedule spans the cut)."""
    run = out / "default_run"
    flags = ["--config", str(PAPER_RECIPE), "--corpus", str(corpus), "--output_dir", str(run),
             "--overwrite_output_dir", "true", "--report_to", "none"]
    if steps:
        flags += ["--max_steps", str(steps), "--save_steps", str(max(steps // 8, 1))]
    if smoke:
        flags += ["--model_preset", "tiny", "--batch_size", "16", "--eval_individuals", "50", "--eval_points", "6",
                  "--checkpoint_points", "3", "--mixed_precision", "no", "--torch_compile", "false"]
    result, seconds = timed(subprocess.run, [sys.executable, "-m", "pipeline.pretrain", *flags], cwd=ROOT,
                            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"the default run failed:\n{result.stderr[-3000:]}")
    summary = re.search(r"trained ([\d,]+) steps in ([\d.]+) s \(([\d.]+) ms/step\); evaluations and checkpoints "
                        r"([\d.]+) s", result.stdout)
    final = RunFolder(run).trajectory()[-2:]
    return {"steps": int(summary[1].replace(",", "")), "wall_seconds": seconds, "train_seconds": float(summary[2]),
            "ms_per_step": float(summary[3]), "callback_seconds": float(summary[4]),
            "final_seen_accuracy": next(r["attribute_accuracy"] for r in final if r["split"] == "seen"),
            "checkpoint": str(RunFolder(run).complete_checkpoints()[-1])}


def full_evaluation(corpus_path: Path, checkpoint: str, smoke: bool) -> dict:
    """Every seen individual's queries evaluated with the final checkpoint: the first call (moving the
    queries to the device, compiling) and the second."""
    corpus = Corpus(corpus_path)
    cuda = torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda)
    model = load_checkpoint(Path(checkpoint)).to(accelerator.device)
    splits = {"seen": pretraining_splits(corpus, 0)["seen"], "heldout": pretraining_splits(corpus, 100)["heldout"]}
    evaluator, build_seconds = timed(Evaluator, corpus, splits, 512 if smoke else 8192, compile=cuda)
    queries = sum(len(b["query"]) for b in evaluator.batches["seen"])
    _, first = timed(evaluator.evaluate, model, accelerator)
    results, second = timed(evaluator.evaluate, model, accelerator)
    return {"queries": queries, "build_seconds": build_seconds, "first_seconds": first, "seconds": second,
            "seen_accuracy": results["seen"]["attribute_accuracy"]}


def markdown(report: dict) -> str:
    steps, run, evaluation, tests = report["steps"], report["default_run"], report["evaluation"], report["tests"]
    failed = {name: report[name]["failed"] for name in ("steps", "default_run", "evaluation")
              if isinstance(report[name], dict) and "failed" in report[name]}
    smoke = " (smoke)" if report["smoke"] else ""
    lines = [f"**{report['device']}**, torch {report['torch']}, {report['date']}{smoke}",
             "", "| measure | value |", "|---|---|",
             f"| corpus build | {report['corpus_seconds']:.1f} s |",
             ("| GPU tests | " + (f"{tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped "
                                  f"({tests['seconds']:.0f} s; {' '.join(tests['tail'])}) |" if tests
                                  else "not run (--smoke or --skip_tests) |"))]
    for row in ([] if "steps" in failed else steps):
        mfu = f", MFU {row['mfu']:.1%}" if row["mfu"] else ""
        memory = f", peak {row['peak_memory_gb']:.1f} GiB" if row["peak_memory_gb"] else ""
        ratio = f"; {row['ours_faster_by']:.2f}x the time of `{steps[-1]['side']}`" if row is not steps[-1] else ""
        lines.append(f"| step, {row['side']} | {row['ms_per_step']:.2f} ms, {row['tokens_per_s']:,.0f} tokens/s"
                     f"{mfu}{memory}{ratio} |")
    if "default_run" not in failed:
        lines += [f"| default run ({run['steps']:,} steps{', cut' if report['run_cut'] else ''}), wall | "
                  f"{run['wall_seconds']:.1f} s (process start to report) |",
                  f"| default run, training | {run['train_seconds']:.1f} s ({run['ms_per_step']:.2f} ms/step) |",
                  f"| default run, evaluations and checkpoints | {run['callback_seconds']:.1f} s |",
                  f"| default run, final seen accuracy | {run['final_seen_accuracy']:.1%} |"]
    if "evaluation" not in failed:
        lines.append(f"| full evaluation ({evaluation['queries']:,} seen queries) | {evaluation['seconds']:.2f} s "
                     f"(first call {evaluation['first_seconds']:.1f} s, batches built in "
                     f"{evaluation['build_seconds']:.1f} s) |")
    lines += [f"| {name} | failed: {error} |" for name, error in failed.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_suite", help="Where everything is written.")
    parser.add_argument("--smoke", action="store_true", help="Tiny sizes and schedules, any device, no GPU tests: "
                                                             "seconds.")
    parser.add_argument("--run_steps", type=int, help="Cut the default run to this many steps (default: all).")
    parser.add_argument("--skip_tests", action="store_true", help="Do not run the GPU tests.")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("error: no CUDA device: run on a GPU machine, or pass --smoke")
    args.out.mkdir(parents=True, exist_ok=True)
    corpus, corpus_seconds = build_corpus(args.out, args.smoke)
    tests = None if args.skip_tests or args.smoke else gpu_tests()
    cuda = torch.cuda.is_available()
    bench = argparse.Namespace(model_preset="tiny" if args.smoke else "44M", batch_size=16 if args.smoke else 128,
                               compile=cuda, compile_mode="reduce-overhead" if cuda else "default",
                               mixed_precision="bf16" if cuda else "no", hf_max_length=0)
    steps = attempt("step timing", step_rows, Corpus(corpus), bench, warmup=3 if args.smoke else 20,
                    steps=5 if args.smoke else 100, our_modes=() if args.smoke else ("default",))
    run = attempt("default run", default_run, corpus, args.out, args.smoke,
                  args.run_steps or (30 if args.smoke else None))
    report = {"device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()})",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "smoke": args.smoke,
              "corpus_seconds": corpus_seconds, "tests": tests, "steps": steps, "default_run": run,
              "run_cut": bool(args.run_steps) or args.smoke,
              "evaluation": attempt("full evaluation", full_evaluation, corpus, run["checkpoint"], args.smoke)
              if "checkpoint" in run else {"failed": "no checkpoint: the default run failed"}}
    table = markdown(report)
    (args.out / "gpu_suite.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "gpu_suite.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
