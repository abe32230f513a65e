"""A run's Hub repository, revision by revision: each permanent checkpoint on its branch (step-000001000),
the final weights with the model card and report on `main`. `verify` compares what the Hub reports of
each revision (files and hashes, no download) with the manifests; `push` uploads what is missing or wrong."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from common.errors import RecipeError, RunError

from ..run_folder import (
    HUB_LOG,
    HUB_STAGING,
    MANIFEST,
    MODEL_CARD,
    REPORT,
    REPORT_FILES,
    RUN_CONFIG,
    RunFolder,
    checkpoint_name,
    step_of,
)
from .client import HubPusher, check_can_push, remote_files, remote_manifest, remote_revisions
from .manifest import RemoteFile, differences, read_manifest, remote_weights_hash, weights_hash

MAIN = "main"
PROBLEMS = ("missing", "differs", "duplicate", "wrong step", "no manifest")


@dataclass
class Revision:
    """One revision's verdict: ok, or one of PROBLEMS (with what is wrong), or `extra` (not this run's)."""

    name: str
    status: str
    detail: str = ""


def run_repo(run: RunFolder, repo: str | None) -> str:
    """The repository of a run: `repo`, else the run's hub_model_id."""
    if not run.is_run():
        raise RecipeError(f"'{run.path}' holds no run: pass the output_dir of a training run")
    repo = repo or run.recipe().get("hub_model_id")
    if not repo:
        raise RecipeError(f"run '{run.path}' names no hub_model_id: pass --repo owner/name")
    return repo


def run_manifests(run: RunFolder) -> dict[str, dict]:
    """Revision -> manifest of a run: each permanent checkpoint, and `main` (the final one) once the run has its
    report."""
    out = {}
    for folder in run.complete_checkpoints():
        manifest = read_manifest(folder)
        if manifest is None:
            raise RunError(f"checkpoint '{folder}' has no {MANIFEST} (written before manifests existed): "
                           f"its revision cannot be verified")
        out[folder.name] = manifest
    if out and (run / REPORT).is_file():
        out[MAIN] = out[max(out, key=lambda name: out[name]["step"])]
    return out


def _check(name: str, manifest: dict, remote: dict[str, RemoteFile], weights: dict[str, str | None]) -> Revision:
    if name != MAIN and manifest["step"] != step_of(Path(name)):
        return Revision(name, "wrong step", f"its manifest is step {manifest['step']:,}'s")
    problems = differences(manifest, remote)
    if not problems:
        return Revision(name, "ok")
    held = remote_weights_hash(remote)
    others = [other for other, digest in weights.items() if digest == held and other not in (name, MAIN)]
    if held != weights_hash(manifest) and others:
        return Revision(name, "duplicate", f"holds the weights of {others[0]}")
    return Revision(name, "differs", "; ".join(problems))


def check_run(run: RunFolder, repo: str) -> list[Revision]:
    """Each revision the run should have on `repo`, against its manifest; branches named like checkpoints
    that the run does not have are listed as extra."""
    expected = run_manifests(run)
    branches = set(remote_revisions(repo))
    weights = {name: weights_hash(m) for name, m in expected.items()}
    out = [_check(name, manifest, remote_files(repo, name), weights) if name in branches
           else Revision(name, "missing") for name, manifest in expected.items()]
    return out + [Revision(name, "extra", "not a checkpoint of this run")
                  for name in sorted(branches - set(expected)) if name.startswith("step-")]


def check_repo(repo: str) -> list[Revision]:
    """Each branch of `repo` against the manifest it holds (a small download each)."""
    manifests = {name: remote_manifest(repo, name) for name in remote_revisions(repo)}
    weights = {name: weights_hash(m) for name, m in manifests.items() if m}
    return [_check(name, m, remote_files(repo, name), weights) if m else Revision(name, "no manifest")
            for name, m in manifests.items()]


def table(repo: str, revisions: list[Revision]) -> str:
    lines = [f"{repo}: {len(revisions)} revisions", *(f"  {r.name:<16} {r.status}" + (f": {r.detail}" if r.detail
                                                                                     else "") for r in revisions)]
    return "\n".join(lines)


def problems(revisions: list[Revision]) -> list[Revision]:
    return [r for r in revisions if r.status in PROBLEMS]


def model_card(run: RunFolder, repo_id: str) -> str:
    """README.md of a run's repository: metadata, step -> revision -> weights hash, the report, the recipe."""
    metadata = {"library_name": "transformers", "tags": ["fact-dynamics", "synthetic-biographies"],
                "pipeline_tag": "text-generation"}
    rows = [f"| {m['step']:,} | `{name}` | {m['tokens_seen']:,} | `{weights_hash(m)}` |"
            for name, m in run_manifests(run).items() if name != MAIN]
    header = ["| step | revision | tokens seen | model.safetensors sha256 |", "|---|---|---|---|"]
    checkpoints = "\n".join([*header, *rows])
    return (f"---\n{yaml.safe_dump(metadata, sort_keys=False)}---\n\n"
            f"Each permanent checkpoint is the branch named after its step: `AutoModelForCausalLM.from_pretrained("
            f"\"{repo_id}\", revision=\"{checkpoint_name(1000)}\")`; `main` holds the final weights. Each revision's "
            f"{MANIFEST} lists its files' hashes; `python -m pipeline.hub verify --repo {repo_id}` checks them "
            f"against what the Hub holds.\n\n{checkpoints}\n\n"
            f"{(run / REPORT).read_text()}\n## Recipe\n\n```yaml\n{(run / RUN_CONFIG).read_text()}```\n")


def push_run_files(pusher: HubPusher, run: RunFolder, final_checkpoint: Path) -> None:
    """Queue the final weights, the model card, the report's figures and tables for `main`."""
    staging = run / HUB_STAGING
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(final_checkpoint, staging)
    for name in REPORT_FILES:
        if (run / name).is_file():
            shutil.copy(run / name, staging / name)
    (staging / MODEL_CARD).write_text(model_card(run, pusher.repo_id))
    pusher.push(staging, MAIN, "Final weights, model card and report")


def push_run(run: RunFolder, repo: str, min_interval: float = 0.0) -> tuple[list[Revision], list[str]]:
    """Upload every revision of the run that the Hub lacks or holds wrong; the revisions before, and those
    that still failed."""
    check_can_push(repo, private=False)
    before = check_run(run, repo)
    pusher = HubPusher(repo, run / HUB_LOG, min_interval=min_interval)
    manifests = run_manifests(run)
    for revision in problems(before):
        if revision.name == MAIN:
            push_run_files(pusher, run, run.checkpoint(manifests[MAIN]["step"]))
        else:
            pusher.push(run.checkpoints / revision.name, revision.name,
                        f"Checkpoint at step {manifests[revision.name]['step']:,}")
    _, failed, _ = pusher.close()
    return before, failed
