"""The attention-patching study's report (study.md and study.png), written from its runs' files: the
unpatched reference and every patched run, their learning curves on one figure and phases in a table."""

from __future__ import annotations

from pathlib import Path

from ..analysis.phases import run_phases
from ..run_folder import SEEN, STUDY_FIGURE, STUDY_REPORT, RunFolder, series, write_atomically
from .plots import plot_runs

INTRODUCTION = """# Attention patching

Every patched run starts from the reference's initial weights and uses, in every layer, the attention patterns \
of the named reference checkpoint on its own inputs (gradients stopped through them).

![study]({figure})

| run | plateau start | plateau end | plateau length | emergence (50%) | final accuracy |
|---|---|---|---|---|---|
"""


def _table_row(label: str, rows: list[dict]) -> str:
    """A run's phases and final accuracy (seen individuals), one table row."""
    p = run_phases(rows)
    cells = ["-" if c is None else f"{c:,.0f}" for c in (p.plateau_start, p.plateau_end, p.plateau_length,
                                                          p.emergence)]
    final = series(rows, SEEN, "attribute_accuracy")[1][-1]
    return f"| {label} | " + " | ".join(cells) + f" | {final:.1%} |"


GRID = """
## Start step x reference step

Final loss and plateau length of every patched run; a run patched from the step of its own reference
checkpoint (the outlined diagonal) trains with frozen attention from there.

![grid]({figure})
"""


def write_patching_report(reference: RunFolder, patched: dict[str, RunFolder], out: Path,
                          grid_figure: Path | None = None) -> Path:
    """study.png and study.md in `out` from the unpatched `reference` and the `patched` runs (label -> run),
    with the heatmaps of a start x reference grid when given."""
    runs = {label: run.trajectory() for label, run in {"unpatched": reference, **patched}.items()}
    plot_runs(runs, run_phases(runs["unpatched"]).baseline, out / STUDY_FIGURE)
    return write_atomically(out / STUDY_REPORT, INTRODUCTION.format(figure=STUDY_FIGURE)
                            + "\n".join(_table_row(label, rows) for label, rows in runs.items()) + "\n"
                            + (GRID.format(figure=grid_figure.name) if grid_figure else ""))
