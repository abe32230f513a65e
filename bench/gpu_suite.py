"""Everything measured on a GPU in one command, its report written after each stage.

The paper corpus built, the GPU tests, our training step against the Hugging Face Trainer (same model, same
biographies, one process), the paper's default run (cut, stated), and a full evaluation of every seen
individual. Prints one markdown table and writes it, with every number, as JSON, after each stage: a command
stopped by its time limit keeps the stages done, and the table says which stage it stopped in.

    python bench/gpu_suite.py                       # a CUDA machine: about 535 s on an H100 (estimate below)
    python bench/gpu_suite.py --stages steps        # only the step timing (the corpus is built when needed)
    python bench/gpu_suite.py --stages run,eval --run_steps 0   # the default run in full (16,000 steps), then eval
    python bench/gpu_suite.py --smoke               # anywhere, in tens of seconds: tiny sizes, same code paths

The default fits a 600-second command with time to spare: about 535 s on one H100 by estimate from its parts
(no GPU has run it yet). Bases: a step of the 44M model at batch 128 is 1.74 TFLOP (8,050 label tokens, rows
padded to 88), ~10 ms (18% MFU of 989 TFLOP/s); an inductor compile of the 44M model, ~50 s (40-60).

    start: imports, CUDA context                                                                    10 s
    corpus build, 64k individuals: CPU-bound, 7.6-9.3 s measured on the 2-core development CPU      10 s
    GPU tests, pytest -m gpu: stopped at its budget (tiny-model compiles and runs; counts kept)     75 s
    step timing: 5 compiles (HF: first batch length, then dynamic at the next; ours: default,
      reduce-overhead, a row per biography) 250 s, 4 x 120 steps 6 s, models and data 12 s          268 s
    default run, cut to 2,000 of 16,000 steps: start 10 s, evaluation batches 6 s, training compile
      10 s (the step timing's `default` one, from inductor's cache), evaluator compiles 40 s,
      40 evaluations of 240k queries at ~1 s, checkpoints 10 s, 2,000 steps 20 s                     140 s
      (all 16,000 steps: 140 s more, past the 600 s of one command: `--stages run,eval --run_steps 0`)
    full evaluation, 1.92M queries: checkpoint and batches 10 s, compile 10 s (cached), two passes   30 s
    total                                                                                           533 s

Stages (`--stages`, in this order): tests (pytest -m gpu), steps (step timing), run (the default run), eval
(full evaluation of the run's last checkpoint in --out, from this command or an earlier one).
Prepare a bare GPU image with ../shared/gpu/wheels.sh (datasets, evaluate and deepspeed as wheels).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run as `python bench/gpu_suite.py`: the repo root, whatever the cwd
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import yaml
from accelerate import Accelerator

from bench.train_speed import step_rows
from data_gen import Corpus, CorpusConfig
from data_gen.builder import build
from data_gen.layout import MANIFEST
from pipeline.evaluation import Evaluator, pretraining_groups
from pipeline.model import load_checkpoint
from pipeline.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
PAPER_RECIPE = ROOT / "recipes" / "paper" / "pretrain" / "config_default.yaml"
SMOKE_POOLS = dict(n_first_names=40, n_last_names=40, n_cities=30, n_universities=20, n_majors=10, n_companies=30)
# stage: its name in the table, its key in the report
STAGES = {"tests": ("GPU tests", "tests"), "steps": ("step timing", "steps"), "run": ("default run", "default_run"),
          "eval": ("full evaluation", "evaluation")}
TESTS_BUDGET_S = 75
RUN_STEPS = 2000
SUMMARY = re.compile(r"trained ([\d,]+) steps in ([\d.]+) s \(([\d.]+) ms/step\); (?:compile ([\d.]+) s; )?"
                     r"evaluations and checkpoints ([\d.]+) s")


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def attempt(name: str, function, *args, **kwargs):
    """A stage's result, or {"error": what went wrong} so that the other stages still run and report."""
    try:
        return function(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - any failure is reported in the table, the suite goes on
        print(f"{name} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return {"error": f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:200] if str(err) else ''}"}


def recipe() -> dict:
    return yaml.safe_load(PAPER_RECIPE.read_text())


def build_corpus(out: Path, smoke: bool) -> tuple[Path, float | None]:
    """The paper corpus (64k individuals; `smoke`: 500 from small pools), built once into `out`; the seconds
    it took, None when it was there already."""
    folder = out / "corpus"
    if (folder / MANIFEST).is_file():
        return folder, None
    sizes = dict(n_individuals=500, n_heldout=100, n_finetune=100, **SMOKE_POOLS) if smoke else {}
    _, seconds = timed(build, CorpusConfig(output_dir=str(folder), **sizes))
    return folder, seconds


GPU_TESTS = ("-m", "pytest", "-m", "gpu", "-v", "-p", "no:cacheprovider", "tests")


def gpu_tests(budget: float = TESTS_BUDGET_S, command: tuple[str, ...] = GPU_TESTS) -> dict:
    """pytest -m gpu (`command`): how many passed, failed and were skipped; stopped at `budget` seconds, with the
    counts of the tests done by then."""
    if importlib.util.find_spec("pytest") is None:
        raise RuntimeError("pytest is not installed")
    start = time.perf_counter()
    tests = subprocess.Popen([sys.executable, *command], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             start_new_session=True)
    try:
        output = tests.communicate(timeout=budget)[0]
        tail = [line.strip("= ") for line in output.strip().splitlines()[-1:]]
    except subprocess.TimeoutExpired:
        os.killpg(tests.pid, signal.SIGKILL)  # the runs the tests started too, so that none holds the GPU
        output, tail = tests.communicate()[0], [f"stopped at its {budget:.0f} s budget"]
    seconds = time.perf_counter() - start
    counts = {outcome: len(re.findall(rf"::\S+ {outcome.upper()}", output))
              for outcome in ("passed", "failed", "skipped", "error")}
    return {"passed": counts["passed"], "failed": counts["failed"] + counts["error"], "skipped": counts["skipped"],
            "seconds": seconds, "tail": tail}


def step_timing(corpus: Path, smoke: bool) -> list[dict]:
    """Our step against the HF Trainer: ours first in the paper recipe's compile mode (the headline row), then
    in the other of default and reduce-overhead; uncompiled, one row of ours, on a CPU."""
    cuda = torch.cuda.is_available()
    mode = recipe().get("torch_compile_mode", "default")
    args = argparse.Namespace(model_preset="tiny" if smoke else "44M", batch_size=16 if smoke else 128,
                              compile=cuda, compile_mode=mode, mixed_precision="bf16" if cuda else "no",
                              hf_max_length=0)
    other = "default" if mode == "reduce-overhead" else "reduce-overhead"
    rows = step_rows(Corpus(corpus), args, warmup=3 if smoke else 20, steps=5 if smoke else 100,
                     other_modes=() if smoke else (other,), unpacked=not smoke)
    for row in rows:
        row["paper_recipe_mode"] = row["compile_mode"] == mode
    return rows


def parse_summary(output: str) -> dict:
    """The trainer's summary line (`compile X s; ` optional: None when the trainer does not report it)."""
    found = SUMMARY.search(output)
    if found is None:
        raise RuntimeError("no summary line ('trained N steps in ...') in the run's output")
    return {"steps": int(found[1].replace(",", "")), "train_seconds": float(found[2]),
            "ms_per_step": float(found[3]), "compile_seconds": None if found[4] is None else float(found[4]),
            "callback_seconds": float(found[5])}


def default_run(corpus: Path, out: Path, smoke: bool, steps: int) -> dict:
    """The paper's default pretraining recipe (its log-spaced evaluations and checkpoints included), as
    `python -m pipeline.pretrain` runs it; `steps` (0: all) cuts it (the schedule spans the cut)."""
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
    final = RunFolder(run).trajectory()[-2:]
    return {**parse_summary(result.stdout), "wall_seconds": seconds, "recipe_steps": recipe()["max_steps"],
            "final_seen_accuracy": next(r["attribute_accuracy"] for r in final if r["split"] == "seen")}


def full_evaluation(corpus_path: Path, out: Path, smoke: bool, run: dict | None = None) -> dict:
    """Every seen individual's queries evaluated with the last checkpoint of the default run in `out` (unless
    `run`, this command's, failed), in batches of the recipe's eval_batch_size: the first call (moving the
    queries to the device, compiling) and the second."""
    if run is not None and "error" in run:
        raise RuntimeError("the default run failed")
    folder = out / "default_run"
    checkpoints = RunFolder(folder).complete_checkpoints() if folder.is_dir() else []
    if not checkpoints:
        raise RuntimeError(f"no checkpoint in {folder}: run the `run` stage first (same --out)")
    corpus = Corpus(corpus_path)
    cuda = torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda)
    model = load_checkpoint(checkpoints[-1]).to(accelerator.device)
    splits = {"seen": pretraining_groups(corpus, 0)["seen"], "heldout": pretraining_groups(corpus, 100)["heldout"]}
    evaluator, build_seconds = timed(Evaluator, corpus, splits, 512 if smoke else recipe()["eval_batch_size"],
                                     compile=cuda)
    queries = sum(len(b["query"]) for b in evaluator.batches["seen"])
    _, first = timed(evaluator.evaluate, model, accelerator)
    results, second = timed(evaluator.evaluate, model, accelerator)
    return {"checkpoint": str(checkpoints[-1]), "queries": queries, "build_seconds": build_seconds,
            "first_seconds": first, "seconds": second, "seen_accuracy": results["seen"]["attribute_accuracy"]}


def _not_run(report: dict, stage: str) -> str:
    if stage not in report["stages"]:
        return "not run (not in --stages)"
    if report["running"] == stage:
        return "not finished: running, or the suite was stopped in it (time limit?)"
    return "not run: not reached yet, or the suite was stopped before it"


def _step_lines(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        mfu = f", MFU {row['mfu']:.1%}" if row["mfu"] else ""
        memory = f", peak {row['peak_memory_gb']:.1f} GiB" if row["peak_memory_gb"] else ""
        ratio = f"; {row['ours_faster_by']:.2f}x the time of `{rows[1]['side']}`" if row is not rows[1] else ""
        label = row["side"] + (" (the paper recipe's mode)" if row["paper_recipe_mode"] else "")
        first = "first step (compile)" if row["compiled"] else "first step"
        lines.append(f"| step, {label} | {row['ms_per_step']:.2f} ms, {row['tokens_per_s']:,.0f} tokens/s{mfu}{memory}"
                     f"{ratio}; outside ms/step: {first} {row['compile_seconds']:.1f} s, warmup "
                     f"{row['warmup_seconds']:.1f} s |")
    return lines


def _run_lines(run: dict) -> list[str]:
    steps, of = run["steps"], run["recipe_steps"]
    cut = f"cut to {steps:,} of {of:,} steps" if steps < of else f"all {of:,} steps"
    compile_line = (f"{run['compile_seconds']:.1f} s (the trainer's figure)" if run["compile_seconds"] is not None
                    else "not reported by this trainer")
    return [f"| default run ({cut}), wall | {run['wall_seconds']:.1f} s (process start to report) |",
            f"| default run, training | {run['train_seconds']:.1f} s ({run['ms_per_step']:.2f} ms/step) |",
            f"| default run, compile | {compile_line} |",
            f"| default run, evaluations and checkpoints | {run['callback_seconds']:.1f} s |",
            f"| default run, final seen accuracy | {run['final_seen_accuracy']:.1%} |"]


def markdown(report: dict) -> str:
    """The table: one or more lines a stage, its failure, or why it did not run."""
    smoke = " (smoke)" if report["smoke"] else ""
    seconds = report.get("corpus_seconds")
    corpus = ("not needed" if "corpus_seconds" not in report else "already built in --out" if seconds is None
              else f"{seconds:.1f} s")
    lines = [f"**{report['device']}**, torch {report['torch']}, {report['date']}{smoke}", "",
             "| measure | value |", "|---|---|", f"| corpus build | {corpus} |"]
    for stage, (name, key) in STAGES.items():
        result = report.get(key)
        if result is None:
            lines.append(f"| {name} | {_not_run(report, stage)} |")
        elif isinstance(result, dict) and "error" in result:
            lines.append(f"| {name} | failed: {result['error']} |")
        elif stage == "tests":
            lines.append(f"| GPU tests | {result['passed']} passed, {result['failed']} failed, {result['skipped']} "
                         f"skipped ({result['seconds']:.0f} s; {' '.join(result['tail'])}) |")
        elif stage == "steps":
            lines += _step_lines(result)
        elif stage == "run":
            lines += _run_lines(result)
        else:
            lines.append(f"| full evaluation ({result['queries']:,} seen queries, {Path(result['checkpoint']).name})"
                         f" | {result['seconds']:.2f} s (first call {result['first_seconds']:.1f} s, batches built in "
                         f"{result['build_seconds']:.1f} s) |")
    return "\n".join(lines)


def write(report: dict, out: Path) -> str:
    """gpu_suite.json and gpu_suite.md in `out` as the report stands; returns the table."""
    table = markdown(report)
    (out / "gpu_suite.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "gpu_suite.md").write_text(table + "\n")
    return table


def stages(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(STAGES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown stage(s) {', '.join(unknown) or '(none given)'}: choose from "
                                         f"{','.join(STAGES)}")
    return [name for name in STAGES if name in names]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_suite", help="Where everything is written.")
    parser.add_argument("--smoke", action="store_true", help="Tiny sizes and schedules, any device: tens of seconds "
                                                             "(stages steps,run,eval unless --stages says).")
    parser.add_argument("--stages", type=stages, help=f"Comma-separated subset of {','.join(STAGES)} (default: "
                        "all; --smoke: steps,run,eval): tests = pytest -m gpu, steps = our step against the HF "
                        "Trainer, run = the paper's default run, eval = full evaluation of the run's last "
                        "checkpoint in --out. The corpus is built when steps, run or eval needs it.")
    parser.add_argument("--run_steps", type=int, help=f"Cut the default run to this many steps (default {RUN_STEPS:,}"
                                                      f" of the recipe's {recipe()['max_steps']:,}, to fit 540 s; "
                                                      "--smoke: 30; 0: all).")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()  # the run's subprocess starts in the repo root
    cuda = torch.cuda.is_available()
    if not args.smoke and not cuda:
        sys.exit("error: no CUDA device: run on a GPU machine, or pass --smoke")
    selected = args.stages or (["steps", "run", "eval"] if args.smoke else list(STAGES))
    run_steps = args.run_steps if args.run_steps is not None else 30 if args.smoke else RUN_STEPS
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()})",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "smoke": args.smoke,
              "stages": selected, "running": None}
    corpus = None
    work = {"tests": lambda: gpu_tests(), "steps": lambda: step_timing(corpus, args.smoke),
            "run": lambda: default_run(corpus, args.out, args.smoke, run_steps),
            "eval": lambda: full_evaluation(corpus, args.out, args.smoke, report.get("default_run"))}
    for stage in selected:
        report["running"] = stage
        write(report, args.out)
        if stage != "tests" and corpus is None:
            corpus, report["corpus_seconds"] = build_corpus(args.out, args.smoke)
        name, key = STAGES[stage]
        report[key] = attempt(name, work[stage])
        report["running"] = None
        table = write(report, args.out)
    print(table)


if __name__ == "__main__":
    main()
