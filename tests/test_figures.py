"""The studies' figures pool only seeds: one curve, panel or heatmap per combination of the other keys a study
varies."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.studies import figures
from pipeline.studies.aggregate import StudyFits
from pipeline.studies.schema import Study

# plateau length and final loss of each (alpha, max_steps, seed): the 750-step runs are no seeds of the 1,500-step ones
RUNS = {(0.0, 1500, 0): (440, 2.0), (0.0, 1500, 1): (448, 2.2), (0.0, 750, 0): (380, 3.0), (0.0, 750, 1): (392, 3.4),
        (0.7, 1500, 0): (300, 1.0), (0.7, 1500, 1): (310, 1.4), (0.7, 750, 0): (250, 2.5), (0.7, 750, 1): (262, 2.9)}


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures the study figures draw, kept open instead of saved."""
    kept = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: kept.append(fig) or path)
    return kept


def _curves(ax) -> dict[str, dict[float, float]]:
    """An axis's error-bar curves: label (without its note on the interval) -> {x: the plotted mean, rounded}."""
    return {c.get_label().removesuffix(": mean, 95% interval over seeds"):
            {float(x): round(float(y), 9) for x, y in c.lines[0].get_xydata()} for c in ax.containers}


def test_alpha_curves_draw_one_curve_per_budget_with_the_means_over_seeds(tmp_path, drawn):
    rows = [{"alpha": a, "max_steps": m, "seed": s, "plateau_length": length, "final_loss": loss,
             "baseline": m == 750} for (a, m, s), (length, loss) in RUNS.items()]
    study = Study("b.yaml", str(tmp_path), {"alpha": [0.0, 0.7], "max_steps": [1500], "seed": [0, 1]},
                  baselines=[{"alpha": 0.0, "max_steps": 750}, {"alpha": 0.7, "max_steps": 750}])
    assert [p.name for p in figures.draw_study_figures(rows, StudyFits(), study)] == ["alpha.png"]
    (fig,) = drawn
    length, loss = fig.axes[:2]
    assert _curves(length) == {"max_steps = 750": {0.0: (380 + 392) / 2, 0.7: (250 + 262) / 2},
                               "max_steps = 1500": {0.0: (440 + 448) / 2, 0.7: (300 + 310) / 2}}
    assert _curves(loss) == {"max_steps = 750": {0.0: round((3.0 + 3.4) / 2, 9), 0.7: round((2.5 + 2.9) / 2, 9)},
                             "max_steps = 1500": {0.0: round((2.0 + 2.2) / 2, 9), 0.7: round((1.0 + 1.4) / 2, 9)}}


def test_the_plateau_panels_tell_apart_other_keys_but_not_the_keys_paired_with_n(tmp_path, drawn):
    rows = [{"n_individuals": n, "sampler": sampler, "max_steps": 4 * n, "seed": s, "baseline": False,
             "plateau_end": n + shift + s, "plateau_length": n + shift + 2 * s}
            for n in (100, 400) for sampler, shift in (("uniform", 0), ("power_law", 50)) for s in (0, 1)]
    study = Study("b.yaml", str(tmp_path), {"sampler": ["uniform", "power_law"], "seed": [0, 1]},
                  paired={"n_individuals": [100, 400], "max_steps": [400, 1600]})
    assert [p.name for p in figures.draw_study_figures(rows, StudyFits(), study)] == ["plateau_vs_population.png"]
    end, length = drawn[0].axes
    assert _curves(end) == {"sampler = power_law": {100.0: 150.5, 400.0: 450.5},
                            "sampler = uniform": {100.0: 100.5, 400.0: 400.5}}
    assert _curves(length) == {"sampler = power_law": {100.0: 151.0, 400.0: 451.0},
                               "sampler = uniform": {100.0: 101.0, 400.0: 401.0}}


def test_the_warmup_heatmap_draws_one_panel_per_population_with_its_baseline(tmp_path, drawn):
    rows = [{"n_individuals": n, "indiv_warmup": w, "epochs_warmup": e, "seed": s, "baseline": False,
             "final_accuracy": n / 1000 + w / 100 + e / 10 + s / 100} for n in (100, 200) for w in (1, 2)
            for e in (1, 2) for s in (0, 1)]
    rows += [{"n_individuals": n, "indiv_warmup": 1, "epochs_warmup": 1, "seed": 0, "baseline": True,
              "final_accuracy": n / 1000} for n in (100, 200)]
    study = Study("b.yaml", str(tmp_path), {"n_individuals": [100, 200], "indiv_warmup": [1, 2],
                                            "epochs_warmup": [1, 2], "seed": [0, 1]},
                  baselines=[{"sampler": "uniform"}])
    assert [p.name for p in figures.draw_study_figures(rows, StudyFits(), study)] == ["warmup.png"]
    panels = [ax for ax in drawn[0].axes if ax.images]
    assert [ax.get_title().splitlines()[-1] for ax in panels] == ["n_individuals = 100 (baseline run: 10%)",
                                                                  "n_individuals = 200 (baseline run: 20%)"]
    for ax, n in zip(panels, (100, 200)):
        means = ax.images[0].get_array()
        expected = [[n / 1000 + w / 100 + e / 10 + (0 + 0.01) / 2 for e in (1, 2)] for w in (1, 2)]
        assert np.allclose(means, expected)


def test_the_patching_grid_keeps_its_baselines_in_the_one_heatmap(tmp_path, drawn):
    rows = [{"start_patching": start, "reference_checkpoint": ref, "seed": s, "baseline": start == 400,
             "final_loss": start / 100 + ref / 1000 + s, "plateau_length": 10.0} for start, ref in
            ((0, 0), (0, 100), (400, 400), (400, 100)) for s in (0, 1)]
    study = Study("b.yaml", str(tmp_path), {"start_patching": [0], "reference_checkpoint": [0, 100], "seed": [0, 1]},
                  baselines=[{"start_patching": 400, "reference_checkpoint": 400},
                             {"start_patching": 400, "reference_checkpoint": 100}])
    figures.patching_grid(rows, tmp_path / "grid.png", figures.curve_keys(study, {"start_patching",
                                                                                 "reference_checkpoint"}))
    loss, _ = [ax for ax in drawn[0].axes if ax.images]
    assert np.allclose(loss.images[0].get_array().filled(-1), [[0.5, 0.6, -1], [-1, 4.6, 4.9]])
