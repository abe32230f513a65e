"""The ledger: every claim's verdict at one scale, written as claims.md and claims.json beside copies of
the files each number came from (evidence/<study>/...) and a figure per claim (figures/<id>.png), so the
folder stands without its run folders and every number links to its file. A study whose run folders are
gone is read from a previous ledger's evidence. `readme_table` is the table the README's first screen shows.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from ..run_folder import STUDY_FIT, SUMMARY, write_atomically
from .claim_figure import claim_figure
from .claims import Claim, Claims, StudyFiles
from .evidence import published_record
from .intervals import MIN_RUNS
from .prereg import preregistration, rule_history
from .verdicts import NOT_RUN, VERDICTS, Outcome, describe, verdict

LEDGER, LEDGER_JSON, EVIDENCE, FIGURES = "claims.md", "claims.json", "evidence", "figures"
RUN_RECORD = "run.json"  # the last reproduce run of the scale: its command, jobs and wall time


@dataclass
class Entry:
    """One claim's row: its verdict and where each part of it lives (paths relative to the ledger)."""

    id: str
    statement: str
    paper: str
    read: str
    verdict: str
    says: str
    why: str
    rule: str
    preregistration: str
    seeds: int | None
    seeds_needed: int | None
    bands: dict[str, str]
    sensitive: bool
    scale: str
    studies: dict[str, str | None]  # name -> study file at this scale
    read_from: dict[str, str]  # name -> the folder its files were read from
    sources: list[str]
    figure: str | None  # the claim's figure (figures/<id>.png)
    study_figure: str | None
    command: str
    numbers: dict


def _copy(path: Path, study: str, folder: Path, evidence: Path) -> str:
    """Copy a file of a study's folder into the ledger's evidence; its path relative to the ledger."""
    target = evidence / study / path.relative_to(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    return str(Path(EVIDENCE) / study / path.relative_to(folder))


def study_folder(output_dir: Path, name: str, fallback: Path | None, published: bool = False) -> Path:
    """Where a study's files are read: its output folder, else (its runs gone) a previous ledger's evidence;
    only the evidence when `published`."""
    if published and fallback is not None:
        return fallback / name
    if any((output_dir / f).is_file() for f in (SUMMARY, STUDY_FIT)) or fallback is None:
        return output_dir
    return fallback / name if (fallback / name).is_dir() else output_dir


def _started(files: dict[str, StudyFiles]) -> list[str | None]:
    """The recorded start time of every finished run the claim's studies hold."""
    started = []
    for f in files.values():
        try:
            started += [r.get("started_at") for r in f.rows()]
        except FileNotFoundError:
            continue
    return started


def claim_entry(claims: Claims, claim: Claim, scale: str, staging: Path, fallback: Path | None,
                claims_file: str, root: Path | None = None, published: bool = False) -> Entry:
    """A claim's verdict at `scale` from its studies' folders, with its evidence (copied, unless read from the
    published evidence `fallback` itself) and figure written under `staging` (the ledger folder being written)."""
    folders = {name: study_folder(Path(claims.load(name, scale, root).output_dir), name, fallback, published)
               for name in claim.studies if claims.study_file(name, scale)}
    study_files = {name: StudyFiles(folder) for name, folder in folders.items()}
    missing = [name for name in claim.studies if name not in folders]
    if missing:
        outcome = Outcome(NOT_RUN, "-", f"no {scale}-scale study for {', '.join(missing)}")
    else:
        outcome = verdict(claim.rule, study_files, claim.studies[0])
    failed = {name: runs for name, f in study_files.items() if (runs := f.failed())}
    why = outcome.why + "".join(f"; {len(runs)} runs of {name} failed ({', '.join(runs)})"
                                for name, runs in failed.items())
    copy = (lambda path, name: str(Path(EVIDENCE) / name / path.relative_to(folders[name]))) if published else (
        lambda path, name: _copy(path, name, folders[name], staging / EVIDENCE))
    sources = [copy(path, name) for name, f in study_files.items() for path in sorted(f.read)]
    first = claim.studies[0]
    study_figure = None
    if claim.figure and first in folders and (folders[first] / claim.figure).is_file():
        study_figure = copy(folders[first] / claim.figure, first)
    figure = None
    if outcome.panels:
        (staging / FIGURES).mkdir(exist_ok=True)
        figure = f"{FIGURES}/{claim.id}.png"
        claim_figure(claim.id, outcome.verdict, outcome.panels, claim.paper_range, staging / figure)
    sweeps = " && ".join(f"python -m pipeline.sweep --config {claims.study_file(n, scale)} --jobs 2"
                         for n in claim.studies if claims.study_file(n, scale))
    command = (f"python -m pipeline.reproduce --scale {scale} --claims {claim.id}"
               + (f"  (or: {sweeps}, then --ledger_only)" if sweeps else ""))
    prereg = preregistration(rule_history(claims_file, claim.id), _started(study_files), claim.changed_after_results)
    return Entry(claim.id, claim.statement, claim.paper, claim.read, outcome.verdict, outcome.says, why,
                 describe(claim.rule), prereg.text, outcome.seeds, outcome.seeds_needed, outcome.bands,
                 outcome.sensitive, scale, {n: claims.study_file(n, scale) for n in claim.studies},
                 {n: str(f) for n, f in folders.items()}, sources, figure, study_figure, command, outcome.numbers)


def _anchor(claim_id: str) -> str:
    return claim_id.lower()


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def verdict_text(entry: Entry) -> str:
    """The verdict as the table shows it: bold, with the detector's sensitivity."""
    return f"**{entry.verdict}**" + (" (sensitive to the detector)" if entry.sensitive else "")


def _ours(entry: Entry, prefix: str) -> str:
    """Our result in words, linked to the file it came from."""
    if entry.verdict == NOT_RUN:
        return f"not run: {entry.why}"
    return f"[{entry.says}]({prefix}{entry.sources[0]})" if entry.sources else entry.says


def table(entries: list[Entry], prefix: str = "") -> str:
    """The ledger's table: claim, paper, ours in words, seeds, verdict (links relative to `prefix`)."""
    lines = ["| claim | paper | ours | seeds | verdict |", "|---|---|---|---|---|"]
    lines += [f"| [{e.id}]({prefix}{LEDGER}#{_anchor(e.id)}) {_escape(e.statement)} | {_escape(e.paper)} | "
              f"{_escape(_ours(e, prefix))} | {e.seeds or '-'} | {verdict_text(e)} |" for e in entries]
    return "\n".join(lines)


def counts(entries: list[Entry]) -> str:
    return ", ".join(f"{sum(e.verdict == v for e in entries)} {v}" for v in VERDICTS)


def machine() -> str:
    return f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} cores"


def _section(e: Entry) -> str:
    studies = ", ".join(f"`{f}`" if f else f"{n} (none at this scale)" for n, f in e.studies.items())
    sources = ", ".join(f"[{Path(s).name}]({s})" for s in e.sources) or "none"
    bands = ", ".join(f"band {t}: {v}" for t, v in e.bands.items())
    seeds = f"{e.seeds} seed{'s' if e.seeds != 1 else ''}" if e.seeds else "no runs"
    return "\n".join([
        f'<a id="{_anchor(e.id)}"></a>', f"## {e.id}: {e.statement}", "",
        f"- **Ours** ({e.scale} scale, {seeds}): {e.says}",
        f"- **Paper**: {e.paper} ({e.read})",
        f"- **Verdict**: {verdict_text(e)}: {e.why}",
        *([f"- **Detector bands**: {bands}" + (" — the verdict changes with the band" if e.sensitive else "")]
          if e.bands else []),
        f"- **Rule** ({e.preregistration}): {e.rule}",
        f"- **Files**: {sources}; studies {studies}",
        *([f"- **Figure**: ![{e.id}]({e.figure})"] if e.figure else []),
        *([f"- **Study figure**: ![{e.id} study]({e.study_figure})"] if e.study_figure else []),
        f"- **Regenerate**: `{e.command}`", ""])


def _studies_line(claims: Claims, selected: list[Claim], evidence: Path) -> str:
    """Each published study's runs, when it was done in its command, the machine and the date, from its record."""
    parts = []
    for name in dict.fromkeys(n for c in selected for n in c.studies):
        record = published_record(evidence, name)
        if record and record["wall_s"] is not None:
            parts.append(f"{name} ({record['runs']} runs, done {record['wall_s'] / 60:.0f} min into "
                         f"`{record['command']}` on {record['machine']}, {record['published'][:10]})")
        elif record:
            parts.append(f"{name} ({record['runs']} runs, {record['command']}, {record['published'][:10]})")
    return f"Studies as published: {'; '.join(parts)}." if parts else ""


def write_ledger(claims: Claims, selected: list[Claim], scale: str, out: Path, claims_file: str,
                 fallback: Path | None = None, root: Path | None = None, published: bool = False) -> list[Entry]:
    """claims.md, claims.json, evidence/ and figures/ for the selected claims at `scale`, in `out` (written
    beside, then swapped in, so `fallback` may be `out`'s own evidence). With `published`, every study is read
    from the evidence `fallback` (`out`'s own), which is left as it is."""
    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".ledger.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    entries = [claim_entry(claims, claim, scale, staging, fallback, claims_file, root, published)
               for claim in selected]
    record = json.loads((out / RUN_RECORD).read_text()) if (out / RUN_RECORD).is_file() else {}
    if published:
        timing = _studies_line(claims, selected, fallback)
    else:
        timing = (f"The studies last ran with `{record['command']}` ({record['wall_s'] / 60:.0f} min wall, "
                  f"{record['machine']})." if record else "No run of the studies is recorded here.")
    (staging / LEDGER).write_text("\n".join([
        f"# The paper's claims at {scale} scale", "",
        f"Zucchet et al. (2025), claim by claim: {len(entries)} claims, {counts(entries)}. {timing} "
        f"Ledger written on {machine()}; rebuild it with `python -m pipeline.reproduce --scale {scale} "
        f"--ledger_only{f' --publish {out}' if published else ''}`. Every number links to the file it came from, "
        f"{'published' if published else 'copied'} under `{EVIDENCE}/`.", "",
        f"A verdict is decided by the 95% t-interval over seeds of the number its rule reads: reproduced or not "
        f"reproduced when the whole interval lies on one side of the rule's cut, inconclusive when it straddles "
        f"it (with the runs that would settle it at the observed spread), and below {MIN_RUNS} seeds, where there "
        f"is no interval, the runs' values are shown and the verdict is inconclusive. Each rule says whether git "
        f"shows it was fixed before the runs it reads.", "",
        table(entries), "", *map(_section, entries)]))
    (staging / LEDGER_JSON).write_text(json.dumps({"scale": scale, "run": record,
                                                   "claims": [asdict(e) for e in entries]}, indent=1) + "\n")
    for name in (LEDGER, LEDGER_JSON, FIGURES) if published else (LEDGER, LEDGER_JSON, EVIDENCE, FIGURES):
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        if (staging / name).exists():
            (staging / name).rename(out / name)
    shutil.rmtree(staging)
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
    write_atomically(readme, head + block + README_END + tail)
    return True
