"""Analyses of every fact's history (the run's facts/ tables, `pipeline.evaluation.facts`): how many exposures
a fact takes to be known, before and after the plateau ends; how fast a known fact is lost once its individual
stops being drawn (in pretraining, and fine-tuning's old facts); and whether a fact once correct stays correct.

A fact here is one query (individual, attribute, held-out template) of the exposure group, at one evaluation,
with its individual's exposures and last draw at that step (`read_facts`). The other functions take arrays
and are pure."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..run_folder import EXPOSURE_FACTS, FACTS, QUERY_FACTS, SEEN, RunFolder

BOOTSTRAP = 200  # resamples of individuals behind each interval
HALF_KNOWLEDGE_COLUMNS = {  # summary.csv: exposures to half knowledge (runs with facts/)
    "half_knowledge_before": "Exposures at which half of the seen individuals' facts are known (a logistic fit "
                             "against log2(1 + exposures)), over the evaluations up to the plateau's end.",
    "half_knowledge_after": "The same over the evaluations after the plateau's end.",
}
HALF_KNOWLEDGE_KEYS = tuple(HALF_KNOWLEDGE_COLUMNS)


def read_queries(run: RunFolder, group: str) -> pd.DataFrame:
    """The group's queries at every evaluation (fine-tuning writes no exposures: its stream's individuals are
    not the groups' indices)."""
    queries = pd.read_parquet(run.path / FACTS / QUERY_FACTS)
    return queries[queries["group"] == group].drop(columns="group")


def read_facts(run: RunFolder, group: str = SEEN) -> pd.DataFrame:
    """The group's queries at every evaluation, each with its individual's `exposures` and `last_drawn` then."""
    exposures = pd.read_parquet(run.path / FACTS / EXPOSURE_FACTS)
    return read_queries(run, group).merge(exposures, on=["step", "individual"], how="inner").sort_values(
        ["step", "individual", "attribute", "template"], ignore_index=True)


def by_powers_of_two(values: np.ndarray, correct: np.ndarray) -> list[dict]:
    """The share correct of facts grouped by `values` in 0, 1, 2-3, 4-7, ... (the evaluator's exposure buckets,
    `metrics.by_exposure`, which this layer may not import); empty groups are left out."""
    bucket = np.where(values > 0, np.floor(np.log2(np.maximum(values, 1))).astype(int) + 1, 0)
    return [{"range": [0, 0] if b == 0 else [int(2 ** (b - 1)), int(2 ** b - 1)], "facts": int((bucket == b).sum()),
             "correct": float(correct[bucket == b].mean())}
            for b in np.unique(bucket)]


def fit_logistic(x: np.ndarray, known: np.ndarray, total: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """(a, b) of P(known) = 1 / (1 + exp(-(a + b x))) from `known` of `total` facts at each x, by Newton's method
    on the binomial log-likelihood, with a tiny ridge so that perfectly separated data still gives finite numbers."""
    design = np.stack([np.ones_like(x, dtype=float), x.astype(float)], axis=1)
    weights = np.zeros(2)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-design @ weights))
        hessian = design.T @ (design * (total * p * (1 - p))[:, None]) + 1e-6 * np.eye(2)
        step = np.linalg.solve(hessian, design.T @ (known - total * p) - 1e-6 * weights)
        weights += step
        if np.abs(step).max() < 1e-10:
            break
    return float(weights[0]), float(weights[1])


def half_point(exposures: np.ndarray, known: np.ndarray, total: np.ndarray) -> float | None:
    """Exposures at which the fitted P(known) against log2(1 + exposures) rises through 1/2 (`known` of `total`
    facts at each exposure count); None where it does not rise, or crosses outside the exposures observed (an
    extrapolation, not a measurement)."""
    x = np.log2(1 + exposures)
    a, b = fit_logistic(x, known, total)
    if b <= 0 or not 0 <= -a / b <= x[total > 0].max():
        return None
    return float(2 ** (-a / b) - 1)


def _counts(exposures: np.ndarray, correct: np.ndarray, individual: np.ndarray) -> tuple[np.ndarray, ...]:
    """The facts known and in all of each (individual, exposure count): individual, exposures, known, total."""
    pairs, rows = np.unique(np.stack([individual, exposures], axis=1), axis=0, return_inverse=True)
    return pairs[:, 0], pairs[:, 1], np.bincount(rows, weights=correct), np.bincount(rows).astype(float)


def half_knowledge(exposures: np.ndarray, correct: np.ndarray, individual: np.ndarray, seed: int = 0) -> dict:
    """Exposures at which half the facts are known, from a logistic fit of correct against log2(1 + exposures),
    with a 95% percentile interval over `BOOTSTRAP` resamples of the individuals (facts of one individual
    share its exposures, so they are resampled together: each resample weighs an individual's counts by the
    times it was drawn)."""
    person, exposed, known, total = _counts(exposures, correct, individual)
    who, owner = np.unique(person, return_inverse=True)
    point = half_point(exposed, known, total)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOTSTRAP):
        times = np.bincount(rng.integers(0, len(who), len(who)), minlength=len(who))[owner]
        draws.append(half_point(exposed, known * times, total * times))
    finite = np.array([d for d in draws if d is not None])
    low, high = (np.percentile(finite, [2.5, 97.5]).tolist() if len(finite) == BOOTSTRAP else (None, None))
    return {"exposures": point, "low": low, "high": high, "facts": int(len(correct)), "individuals": int(len(who))}


def acquisition(facts: pd.DataFrame, plateau_end: float | None) -> dict[str, dict]:
    """Per phase (evaluations before the plateau end, and after it; all of them without one): accuracy by
    exposure bucket (0, 1, 2-3, ...) and the exposures to half knowledge."""
    phases = {"all": facts} if plateau_end is None else {
        "before_plateau_end": facts[facts["step"] <= plateau_end],
        "after_plateau_end": facts[facts["step"] > plateau_end]}
    out = {}
    for phase, rows in phases.items():
        if not len(rows):
            continue
        exposures, correct = rows["exposures"].to_numpy(), rows["correct"].to_numpy()
        out[phase] = {"by_exposure": by_powers_of_two(exposures, correct),
                      "half_knowledge": half_knowledge(exposures, correct, rows["individual"].to_numpy())}
    return out


def forgetting(facts: pd.DataFrame, known_after: float | None = None) -> list[dict]:
    """Of the facts known at an earlier evaluation (after step `known_after`, the plateau end: a fact right during
    the plateau is mostly a lucky guess), the share still known, by steps since their individual was last drawn
    (0, 1, 2-3, 4-7, ...); facts whose individual was drawn since the step they were known are left out, so
    that the curve holds forgetting without new exposures."""
    known = facts[facts["correct"] & (facts["step"] > (-1 if known_after is None else known_after))]
    known_at = known.groupby(["individual", "attribute", "template"], observed=True)["step"].min()
    rows = facts.join(known_at.rename("known_at"), on=["individual", "attribute", "template"], how="inner")
    rows = rows[(rows["step"] > rows["known_at"]) & (rows["last_drawn"] <= rows["known_at"])]
    since = (rows["step"] - rows["last_drawn"]).to_numpy()
    return [{"steps_since_drawn": b["range"], "facts": b["facts"], "still_known": b["correct"]}
            for b in by_powers_of_two(since, rows["correct"].to_numpy(dtype=bool))]


def kept(queries: pd.DataFrame) -> list[dict]:
    """Fine-tuning's old facts one by one: at each evaluation, of the facts known at the first (the pretrained
    model) the share still known, and of those unknown then the share known now."""
    key = ["individual", "attribute", "template"]
    first = queries[queries["step"] == queries["step"].min()].set_index(key)["correct"].rename("known_before")
    rows = queries.join(first, on=key, how="inner")
    out = []
    for step, at in rows.groupby("step"):
        before, correct = at["known_before"].to_numpy(dtype=bool), at["correct"].to_numpy(dtype=bool)
        out.append({"step": int(step), "known_before": int(before.sum()),
                    "still_known": float(correct[before].mean()) if before.any() else None,
                    "learned": float(correct[~before].mean()) if (~before).any() else None})
    return out


def flip_rates(facts: pd.DataFrame) -> dict:
    """Between consecutive evaluations of each fact: the share of known facts that are lost, and of unknown
    ones that are learned."""
    key = ["individual", "attribute", "template"]
    ordered = facts.sort_values([*key, "step"], ignore_index=True)
    same = (ordered[key].shift() == ordered[key]).all(axis=1).to_numpy()  # the previous row is the same fact
    correct = ordered["correct"].to_numpy(dtype=bool)
    before, after = np.roll(correct, 1)[same], correct[same]
    return {"known_then_lost": float((~after[before]).mean()) if before.any() else None,
            "unknown_then_learned": float(after[~before].mean()) if (~before).any() else None,
            "pairs": int(same.sum())}


def learned_first(facts: pd.DataFrame) -> dict[str, float | None]:
    """Per attribute, the first evaluation step at which half its facts are known (None: never)."""
    accuracy = facts.groupby(["attribute", "step"], observed=True)["correct"].mean()
    return {str(attribute): next((float(step) for step, value in series.droplevel(0).items() if value >= 0.5), None)
            for attribute, series in accuracy.groupby(level=0, observed=True)}


def has_facts(run: RunFolder, exposures: bool = True) -> bool:
    """Whether the run wrote facts/ (runs before them did not), with exposures (pretraining's) if asked."""
    return (run.path / FACTS / (EXPOSURE_FACTS if exposures else QUERY_FACTS)).is_dir()


def facts_summary(run: RunFolder, plateau_end: float | None) -> dict:
    """For a study's summary.csv: the exposures to half knowledge of the evaluations before and after the
    plateau end (point estimates; a study's interval is over its seeds); empty for a run without facts."""
    if not has_facts(run) or plateau_end is None:
        return {}
    facts = read_facts(run)
    phases = (facts[facts["step"] <= plateau_end], facts[facts["step"] > plateau_end])
    return {key: half_point(*_counts(rows["exposures"].to_numpy(), rows["correct"].to_numpy(),
                                     rows["individual"].to_numpy())[1:])
            for key, rows in zip(HALF_KNOWLEDGE_KEYS, phases, strict=True) if len(rows)}
