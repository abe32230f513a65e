"""The ledger: every claim's verdict at one scale, written as claims.md and claims.json beside copies of
the files each number came from (evidence/<study>/...), so the folder stands without its run folders and
every number links to its file. `readme_table` is the table the README's first screen shows."""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from .claims import Claim, Claims, StudyFiles
from .verdicts import NOT_REPRODUCED, NOT_RUN, PARTLY, REPRODUCED, Outcome, describe, verdict

LEDGER, LEDGER_JSON, EVIDENCE = "claims.md", "claims.json", "evidence"
RUN_RECORD = "run.json"  # the last reproduce run of the scale: its command, jobs and wall time
PUBLISHED = (LEDGER, LEDGER_JSON, RUN_RECORD, EVIDENCE)  # a ledger folder's own files (its studies may share it)


def publish_ledger(out: Path, target: Path) -> None:
    """Replace `target` with the ledger of `out`: its pages, run record and evidence, never the run folders."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in PUBLISHED:
        if (out / name).is_dir():
            shutil.copytree(out / name, target / name)
        elif (out / name).is_file():
            shutil.copy(out / name, target / name)
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_RUN)


@dataclass
class Entry:
    """One claim's row: its verdict and where each part of it lives (paths relative to the ledger)."""

    id: str
    statement: str
    paper: str
    read: str
    verdict: str
    ours: str
    why: str
    rule: str
    seeds: int | None
    scale: str
    studies: dict[str, str | None]  # name -> study file at this scale
    sources: list[str]
    figure: str | None
    command: str
    numbers: dict


def _copy(path: Path, study: str, folder: Path, out: Path) -> str:
    """Copy a file of a study's folder into the ledger's evidence; its path relative to the ledger."""
    target = out / EVIDENCE / study / path.relative_to(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    return str(target.relative_to(out))


def claim_entry(claims: Claims, claim: Claim, scale: str, out: Path) -> Entry:
    """A claim's verdict at `scale` from its studies' folders, with its evidence copied under `out`."""
    folders = {name: Path(claims.load(name, scale).output_dir) for name in claim.studies
               if claims.study_file(name, scale)}
    study_files = {name: StudyFiles(folder) for name, folder in folders.items()}
    missing = [name for name in claim.studies if name not in folders]
    if missing:
        outcome = Outcome(NOT_RUN, "-", f"no {scale}-scale study for {', '.join(missing)}")
    else:
        outcome = verdict(claim.rule, study_files, claim.studies[0])
    failed = {name: runs for name, f in study_files.items() if (runs := f.failed())}
    why = outcome.why + "".join(f"; {len(runs)} runs of {name} failed ({', '.join(runs)})"
                                for name, runs in failed.items())
    sources = [_copy(path, name, folders[name], out) for name, f in study_files.items() for path in sorted(f.read)]
    figure = None
    if claim.figure and claim.studies[0] in folders and (folders[claim.studies[0]] / claim.figure).is_file():
        first = claim.studies[0]
        figure = _copy(folders[first] / claim.figure, first, folders[first], out)
    sweeps = " && ".join(f"python -m pipeline.sweep --config {claims.study_file(n, scale)} --jobs 2"
                         for n in claim.studies if claims.study_file(n, scale))
    command = (f"python -m pipeline.reproduce --scale {scale} --claims {claim.id}"
               + (f"  (or: {sweeps}, then --ledger_only)" if sweeps else ""))
    return Entry(claim.id, claim.statement, claim.paper, claim.read, outcome.verdict, outcome.ours, why,
                 describe(claim.rule), outcome.seeds, scale,
                 {n: claims.study_file(n, scale) for n in claim.studies}, sources, figure, command, outcome.numbers)


def _anchor(claim_id: str) -> str:
    return claim_id.lower()


def _ours_cell(entry: Entry, prefix: str = "") -> str:
    if entry.verdict == NOT_RUN or not entry.sources:
        return entry.ours
    seeds = f", {entry.seeds} seed{'s' if entry.seeds != 1 else ''}" if entry.seeds else ""
    return f"[{entry.ours}]({prefix}{entry.sources[0]}){seeds}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(entries: list[Entry], prefix: str = "") -> str:
    """The ledger's table: claim, paper, ours, verdict (links relative to `prefix`)."""
    lines = ["| claim | paper | ours | verdict |", "|---|---|---|---|"]
    lines += [f"| [{e.id}]({prefix}{LEDGER}#{_anchor(e.id)}) {_escape(e.statement)} | {_escape(e.paper)} | "
              f"{_escape(_ours_cell(e, prefix))} | **{e.verdict}** |" for e in entries]
    return "\n".join(lines)


def counts(entries: list[Entry]) -> str:
    return ", ".join(f"{sum(e.verdict == v for e in entries)} {v}" for v in VERDICTS)


def machine() -> str:
    return f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} cores"


def write_ledger(claims: Claims, selected: list[Claim], scale: str, out: Path) -> list[Entry]:
    """claims.md and claims.json for the selected claims at `scale`, in `out` (its evidence rewritten)."""
    if (out / EVIDENCE).is_dir():
        shutil.rmtree(out / EVIDENCE)
    out.mkdir(parents=True, exist_ok=True)
    entries = [claim_entry(claims, claim, scale, out) for claim in selected]
    record = json.loads((out / RUN_RECORD).read_text()) if (out / RUN_RECORD).is_file() else {}
    timing = (f"The studies last ran with `{record['command']}` ({record['wall_s'] / 60:.0f} min wall, "
              f"{record['machine']})." if record else "No run of the studies is recorded here.")
    sections = []
    for e in entries:
        studies = ", ".join(f"`{f}`" if f else f"{n} (none at this scale)" for n, f in e.studies.items())
        sources = ", ".join(f"[{Path(s).name}]({s})" for s in e.sources) or "none"
        sections.append("\n".join([
            f'<a id="{_anchor(e.id)}"></a>', f"## {e.id}: {e.statement}", "",
            f"- **Paper**: {e.paper} ({e.read})",
            f"- **Ours** ({scale} scale{f', {e.seeds} seeds' if e.seeds else ''}): {e.ours}; from {sources}",
            f"- **Verdict**: **{e.verdict}** ({e.why})",
            f"- **Rule** (fixed before the run): {e.rule}",
            f"- **Studies**: {studies}",
            *([f"- **Figure**: ![{e.id}]({e.figure})"] if e.figure else []),
            f"- **Regenerate**: `{e.command}`", ""]))
    (out / LEDGER).write_text("\n".join([
        f"# The paper's claims at {scale} scale", "",
        f"Zucchet et al. (2025), claim by claim: {len(entries)} claims, {counts(entries)}. {timing} "
        f"Ledger written on {machine()}; rebuild it with `python -m pipeline.reproduce --scale {scale} "
        f"--ledger_only`. Every number links to the file it came from, copied under `{EVIDENCE}/`.", "",
        table(entries), "", *sections]))
    (out / LEDGER_JSON).write_text(json.dumps({"scale": scale, "run": record,
                                               "claims": [asdict(e) for e in entries]}, indent=1) + "\n")
    return entries


README_BEGIN = "<!-- claims table: generated by pipeline.reproduce --readme; do not edit by hand -->"
README_END = "<!-- end of the claims table -->"


def write_readme_table(readme: Path, entries: list[Entry], prefix: str, command: str) -> bool:
    """Replace the README's claims table (between its two markers) with the ledger's; False if the markers
    are missing."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        return False
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    block = f"{README_BEGIN}\n{counts(entries)}; regenerate with `{command}`.\n\n{table(entries, prefix)}\n"
    readme.write_text(head + block + README_END + tail)
    return True
