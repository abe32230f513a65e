"""A claim's figure: each interval its verdict was decided on, with the runs' values, the rule's regions
(reproduced, partly, not reproduced) shaded, and the paper's number where the paper gives one."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..report.plots import save_figure  # noqa: E402
from .intervals import NOT_REPRODUCED, PARTLY, REPRODUCED  # noqa: E402
from .verdicts import Panel  # noqa: E402

REGION_COLOURS = {REPRODUCED: "#cdebc5", PARTLY: "#fbeaa6", NOT_REPRODUCED: "#f5c6c0"}


def _limits(panel: Panel, paper: tuple[float, float] | None) -> tuple[float, float]:
    points = [*panel.interval.values, *(x for x in (panel.interval.low, panel.interval.high) if x is not None),
              *panel.scale.edges, *(paper or ())]
    lo, hi = min(points), max(points)
    pad = (hi - lo) * 0.15 or abs(hi) * 0.15 or 1.0
    return lo - pad, hi + pad


def claim_figure(claim_id: str, verdict: str, panels: list[Panel], paper: tuple[float, float] | None,
                 path: Path) -> Path:
    """One row per panel; `paper` ([lo, hi] in the first panel's units) drawn on the first."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(6.4, 0.5 + 1.1 * len(panels)), squeeze=False)
    for i, (ax, panel) in enumerate(zip(axes[:, 0], panels)):
        lo, hi = _limits(panel, paper if i == 0 else None)
        cuts = [lo, *[e for e in panel.scale.edges if lo < e < hi], hi]
        regions = [panel.scale.label((a + b) / 2) for a, b in zip(cuts, cuts[1:])]
        for (a, b), region in zip(zip(cuts, cuts[1:]), regions):
            ax.axvspan(a, b, color=REGION_COLOURS[region], lw=0)
        ax.plot(panel.interval.values, [0] * panel.interval.n, "o", color="tab:blue", ms=5, alpha=0.7,
                label="runs")
        if panel.interval.low is not None:
            ax.errorbar([panel.interval.mean], [0], xerr=[[panel.interval.mean - panel.interval.low],
                                                        [panel.interval.high - panel.interval.mean]],
                        fmt="s", color="black", capsize=4, label="mean, 95% t-interval")
        if i == 0 and paper:
            ax.axvspan(paper[0], paper[1], ymin=0.7, ymax=0.95, color="tab:purple", alpha=0.6, label="paper")
            ax.plot([sum(paper) / 2], [0.35], "v", color="tab:purple")
        ax.set_xlim(lo, hi)
        ax.set_ylim(-0.5, 0.5)
        ax.set_yticks([])
        ax.set_title(panel.label, fontsize=9, loc="left")
    axes[0, 0].legend(fontsize=7, loc="upper right", ncol=3)
    fig.suptitle(f"{claim_id}: {verdict} (shaded: green reproduced, yellow partly, red not)", fontsize=10)
    return save_figure(fig, path)
