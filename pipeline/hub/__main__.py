"""Verify a run's Hub revisions against its checkpoints' manifests, or push what is missing or wrong.

    python -m pipeline.hub verify --run runs/x [--repo you/model]   # the run's revisions, exit 1 if any is wrong
    python -m pipeline.hub verify --repo you/model                  # each branch against its own manifest
    python -m pipeline.hub push --run runs/x [--repo you/model]     # upload what verify finds missing or wrong
"""

from __future__ import annotations

import argparse
import sys

from common.errors import RecipeError, RunError, run_cli

from ..run_folder import HUB_LOG, RunFolder
from .revisions import check_repo, check_run, problems, push_run, run_repo, table


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.hub", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["verify", "push"],
                        help="verify: check the revisions against their manifests; push: upload what is missing or "
                             "wrong.")
    parser.add_argument("--run", help="A training run's output_dir (its checkpoints hold the manifests).")
    parser.add_argument("--repo", help="The Hub model repository, owner/name (default: the run's hub_model_id).")
    parser.add_argument("--min_commit_interval", type=float, default=30.0, help="Seconds between two commits.")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.run is None and (args.command == "push" or args.repo is None):
        raise RecipeError(f"{args.command} needs --run <output_dir>" + (" (or --repo owner/name)" if args.command ==
                                                                         "verify" else ""))
    if args.command == "push":
        run = RunFolder(args.run)
        repo = run_repo(run, args.repo)
        before, failed = push_run(run, repo, args.min_commit_interval)
        print(table(repo, before))
        wrong = problems(before)
        if failed:
            raise RunError(f"{len(failed)} of {len(wrong)} revisions could not be pushed ({', '.join(failed)}; see "
                           f"{run / HUB_LOG}): run the same command again")
        print(f"pushed {len(wrong)} revisions to {repo}" if wrong else f"{repo} already holds every revision")
        return
    if args.run:
        run = RunFolder(args.run)
        repo = run_repo(run, args.repo)
        revisions = check_run(run, repo)
    else:
        repo, revisions = args.repo, check_repo(args.repo)
    print(table(repo, revisions))
    wrong = problems(revisions)
    if wrong:
        fix = f": python -m pipeline.hub push --run {args.run} pushes them" if args.run else ""
        raise RunError(f"{len(wrong)} of {len(revisions)} revisions are missing or wrong "
                       f"({', '.join(f'{r.name} {r.status}' for r in wrong)}){fix}")
    print(f"every revision of {repo} matches its manifest")


if __name__ == "__main__":
    sys.exit(run_cli(main))
