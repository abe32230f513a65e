"""The paper, claim by claim, in one command: run the studies the chosen claims need (each once, however
many claims read it), then write the ledger, runs/reproduce/<scale>/claims.md and claims.json, with a
verdict per claim from the rule recipes/claims.yaml fixed for it.

    python -m pipeline.reproduce --scale smoke                   # every claim's code path, tiny, ~a minute
    python -m pipeline.reproduce --scale cpu --jobs 2            # a 2-core machine, under 2 hours
    python -m pipeline.reproduce --scale paper --devices 0,1,2,3 --runs_per_device 2
    python -m pipeline.reproduce --scale cpu --claims C2,C5      # only these claims (and their studies)
    python -m pipeline.reproduce --scale smoke --output_dir /tmp/s  # the ledger and the studies in /tmp/s
    python -m pipeline.reproduce --scale cpu --ledger_only       # the ledger from finished studies
    python -m pipeline.reproduce --scale cpu --jobs 2 --publish docs/claims --readme README.md
    python -m pipeline.reproduce --scale cpu --ledger_only --publish docs/claims --readme README.md
    python -m pipeline.reproduce --scale paper --plan            # runs, steps and estimated GPU-hours; runs nothing

Rerunning continues: finished runs are skipped and interrupted ones resumed. With --jobs or --devices
every run of every study shares one pool (a study's first run before its other runs), with the
sweep's progress table.

With --publish each study publishes its evidence into <publish>/evidence/<study> as soon as its last run
ends (pipeline/studies/evidence.py); a study published there is not run again unless --rerun names it, and
the ledger is built from the published evidence alone.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from common.errors import RecipeError, RunError, run_cli
from common.recipe import parse_recipe
from data_gen.builder import build
from data_gen.config import CorpusConfig
from data_gen.folders import exclusive
from data_gen.layout import MANIFEST

from .run_folder import SUMMARY
from .studies.claims import SCALES, Claims, load_claims
from .studies.evidence import is_published, publish_study, run_files
from .studies.figures import summarize_study
from .studies.ledger import EVIDENCE, LEDGER_JSON, RUN_RECORD, machine, write_ledger, write_readme_table
from .studies.parallel import Pool, add_pool_arguments, pool_from
from .studies.plan import plan_table
from .studies.runner import build_corpora, run_study, study_jobs
from .studies.schema import Study
from .studies.verdicts import check_rules

CLAIMS_FILE = "recipes/claims.yaml"


def build_scale_corpora(corpora: dict[str, str]) -> None:
    """Build the corpora a scale's studies read from fixed folders (folder -> corpus recipe), where missing."""
    for folder, recipe in corpora.items():
        if not (Path(folder) / MANIFEST).is_file():
            print(f"building corpus {folder} from {recipe}", flush=True)
            (config,) = parse_recipe([CorpusConfig], ["--config", recipe, "--output_dir", folder])
            build(config)


def run_studies(studies: dict[str, Study], pool: Pool | None,
                finished: Callable[[str, dict[str, str]], None] | None = None) -> dict[str, dict[str, str]]:
    """Run every study (one after another, or all their runs on one pool); the failed runs of each. `finished`
    is called with each study's name and failed runs as soon as its last run has ended."""
    failed: dict[str, dict[str, str]] = {}

    def ended(name: str, runs: dict[str, str]) -> None:
        failed[name] = runs
        if finished is not None:
            finished(name, runs)

    if pool is None:
        for name, study in studies.items():
            ended(name, run_study(study))
        return failed
    with ExitStack() as held:
        for study in studies.values():
            held.enter_context(exclusive(Path(study.output_dir), "study"))
        for study in studies.values():
            build_corpora(study)
        jobs, by_study = {}, {}
        for name, study in studies.items():
            by_study[name] = study_jobs(study, prefix=f"{name}/")
            for job in by_study[name]:
                jobs.setdefault(job.name, job)  # a first run shared by several studies runs once

        def settled() -> None:
            for name, own in by_study.items():
                if name not in failed and all(jobs[j.name].state in ("done", "failed") for j in own):
                    ended(name, {j.name.removeprefix(f"{name}/"): jobs[j.name].last_line for j in own
                                 if jobs[j.name].state == "failed"})

        pool.run(list(jobs.values()), settled)
        settled()  # studies whose runs failed before they started (waiting for a failed first run)
    return failed


def publish_studies(claims: Claims, studies: dict[str, Study], evidence: Path, rerun: set[str], pool: Pool | None,
                    command: str) -> dict[str, dict[str, str]]:
    """Run the studies not yet published (or named in `rerun`), all on one pool, each publishing its evidence
    into evidence/<study> as soon as its last run has ended. The failed runs of each study run."""
    todo = {}
    for name, study in studies.items():
        if is_published(evidence, name) and name not in rerun:
            print(f"{name}: published in {evidence / name}, not run again (--rerun {name} runs it)", flush=True)
        else:
            todo[name] = study
    start = time.monotonic()

    def publish(name: str, failed: dict[str, str]) -> None:
        summarize_study(todo[name], failed)
        runs = publish_study(Path(todo[name].output_dir), evidence / name, run_files(claims, name), {
            "study": name, "command": command, "wall_s": round(time.monotonic() - start, 1), "machine": machine()})
        print(f"{name}: {runs} runs published in {evidence / name}", flush=True)

    return run_studies(todo, pool, publish)


def publish_finished(claims: Claims, studies: dict[str, Study], evidence: Path) -> None:
    """Publish the studies that finished outside this command (a sweep, another sitting) and are not published."""
    for name, study in studies.items():
        folder = Path(study.output_dir)
        if not is_published(evidence, name) and (folder / SUMMARY).is_file():
            runs = publish_study(folder, evidence / name, run_files(claims, name),
                                 {"study": name, "command": f"published from {folder}", "wall_s": None,
                                  "machine": None})
            print(f"{name}: {runs} finished runs of {folder} published in {evidence / name}", flush=True)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.reproduce",
                                     description="Run the studies of the paper's claims and write their ledger.")
    parser.add_argument("--scale", required=True, choices=SCALES, help="smoke, cpu or paper.")
    parser.add_argument("--claims", help="Claims to reproduce, e.g. C2,C5 (default: all).")
    parser.add_argument("--claims_file", default=CLAIMS_FILE, help=f"The claims (default {CLAIMS_FILE}).")
    parser.add_argument("--output_dir", type=Path,
                        help="Where the ledger goes (default runs/reproduce/<scale>). Given, the studies go there too, "
                             "each to <output_dir>/studies/<study> (its first run to <output_dir>/studies/<its "
                             "folder's name> unless inside the study's folder); else where each study file's "
                             "output_dir says.")
    parser.add_argument("--ledger_only", action="store_true", help="Only write the ledger from finished studies.")
    add_pool_arguments(parser)
    parser.add_argument("--plan", action="store_true", help="Print each study's runs, steps and estimated GPU-hours.")
    parser.add_argument("--publish", type=Path,
                        help="Publish each study's evidence and the ledger here (e.g. docs/claims).")
    parser.add_argument("--rerun", default="", help="With --publish: studies to run again although published "
                                                   "(comma-separated, or all).")
    parser.add_argument("--readme", type=Path, help="Rewrite this README's claims table (needs --publish).")
    return parser


def _checked(args: argparse.Namespace) -> set[str]:
    """The studies `--rerun` names, once the flags that go together are checked."""
    if args.readme and not args.readme.is_file():
        raise RecipeError(f"--readme {args.readme} does not exist: pass the README whose claims table to rewrite")
    if args.readme and not args.publish:
        raise RecipeError("--readme links the table into the published ledger: pass --publish docs/claims too")
    if args.publish and args.publish.exists() and not any((args.publish / f).exists() for f in (LEDGER_JSON, EVIDENCE)):
        raise RecipeError(f"--publish {args.publish} exists and holds no ledger ({LEDGER_JSON}) or evidence: name a "
                          "new folder or one a ledger was published to")
    rerun = {n.strip() for n in args.rerun.split(",") if n.strip()}
    if rerun and not args.publish:
        raise RecipeError("--rerun names published studies to run again: pass --publish too")
    return rerun


def _run(args: argparse.Namespace, claims: Claims, studies: dict, rerun: set[str], out: Path,
         command: str) -> dict[str, dict[str, str]]:
    """Build the scale's corpora, run (and with --publish, publish) the studies, record the command; the failed
    runs of each study."""
    pool = pool_from(args)
    start = time.monotonic()
    build_scale_corpora(claims.corpora.get(args.scale, {}))
    if args.publish:
        failed = publish_studies(claims, studies, args.publish / EVIDENCE, rerun, pool, command)
    else:
        failed = run_studies(studies, pool, lambda name, runs: summarize_study(studies[name], runs))
    (args.publish or out).mkdir(parents=True, exist_ok=True)
    ((args.publish or out) / RUN_RECORD).write_text(json.dumps({
        "command": command, "wall_s": round(time.monotonic() - start, 1), "machine": machine(),
        "studies": list(studies), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1) + "\n")
    return failed


def _ledger(args: argparse.Namespace, claims: Claims, selected: list, ledger: Path) -> None:
    """Write the ledger (every claim studied so far when published) and, with --readme, the README's table."""
    judged = claims.select(None) if args.publish else selected  # published evidence holds every claim studied so far
    entries = write_ledger(claims, judged, args.scale, ledger, args.claims_file,
                           fallback=ledger / EVIDENCE, root=args.output_dir, published=bool(args.publish))
    print(f"{len(entries)} claims in {ledger / 'claims.md'}: " + ", ".join(f"{e.id} {e.verdict}" for e in entries))
    if args.readme:
        command = f"python -m pipeline.reproduce --scale {args.scale} --ledger_only --publish {args.publish} " \
                  f"--readme {args.readme}"
        if not write_readme_table(args.readme, entries, f"{args.publish}/", command):
            raise RecipeError(f"{args.readme} has no claims table markers: add the two marker lines from "
                              "pipeline/studies/ledger.py where the table goes")


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    rerun = _checked(args)
    claims = load_claims(args.claims_file)
    check_rules(claims)
    selected = claims.select([c.strip() for c in args.claims.split(",") if c.strip()] if args.claims else None)
    names = list(dict.fromkeys(n for c in selected for n in c.studies if claims.study_file(n, args.scale)))
    studies = {name: claims.load(name, args.scale, args.output_dir) for name in names}
    if unknown := sorted(rerun - set(names) - {"all"}):
        raise RecipeError(f"--rerun names {unknown}, which the selected claims do not read: use some of "
                          f"{', '.join(names)}, or all")
    rerun = set(names) if "all" in rerun else rerun
    out = args.output_dir or Path("runs/reproduce") / args.scale
    if args.plan:
        table = plan_table(studies, {n: claims.study_file(n, args.scale) for n in names}, args.scale)
        out.mkdir(parents=True, exist_ok=True)
        (out / "plan.md").write_text(table)
        print(table)
        return
    failed = {}
    if not args.ledger_only:
        command = shlex.join(["python", "-m", "pipeline.reproduce", *(sys.argv[1:] if argv is None else argv)])
        failed = _run(args, claims, studies, rerun, out, command)
    elif args.publish:
        publish_finished(claims, studies, args.publish / EVIDENCE)
    _ledger(args, claims, selected, args.publish or out)
    if broken := {name: runs for name, runs in failed.items() if runs}:
        raise RunError("runs failed after a retry (" + "; ".join(f"{n}: {', '.join(r)}" for n, r in broken.items())
                       + "); the ledger says which claims they leave unmeasured; rerun the same command to retry")


if __name__ == "__main__":
    sys.exit(run_cli(main))
