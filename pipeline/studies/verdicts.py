"""A claim's verdict from its rule and its studies' files: reproduced, partly (the direction holds, the
size differs), not reproduced, or not run (a study or a value is missing).

A rule is one mapping of one kind (quantities as in pipeline/studies/claims.py):

- `fit: {name, target: [lo, hi], direction: [lo, hi]}`: a power law of fit.json (`plateau_end`,
  `plateau_length`, ...): reproduced if the 95% interval of its exponent overlaps `target`, partly if
  the exponent lies in `direction` (null: unbounded).
- `every_run: {reproduced: [conditions], partly: [conditions]}`: a condition is `{value: quantity,
  <above | at_least | below | at_most>: number or quantity of the same run, times: factor}`;
  reproduced if every run meets every `reproduced` condition, partly if every run meets the `partly` ones.
- `ratio: {of, to, reproduced_at_least, partly_at_least}`: the ratio of two quantities' means.
- `trend: {value, along, direction}`: the means over the values of `along` strictly increasing or
  decreasing: reproduced; only the last against the first: partly.
- `best: {value, along, lowest, target: [lo, hi]}`: the value of `along` with the lowest (or highest) mean
  in `target`: reproduced; strictly inside the grid: partly.
- `best_shift: {value, along, lowest, by, direction}`: that best value of `along` moving strictly with
  `by` in `direction`: reproduced; weakly, with a change, over three or more values of `by`: partly.
- `all_of: [rules]`: reproduced if all are, not reproduced if none is reproduced or partly, else partly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.errors import RecipeError

from .aggregate import bootstrap_interval
from .claims import Claims, StudyFiles, Values, quantity, read_values

REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_RUN = "reproduced", "partly", "not reproduced", "not run"
KINDS = ("fit", "every_run", "ratio", "trend", "best", "best_shift", "all_of")
OPERATORS = {"above": (">", np.greater), "at_least": (">=", np.greater_equal),
             "below": ("<", np.less), "at_most": ("<=", np.less_equal)}


@dataclass
class Outcome:
    """A rule's verdict, our number(s) as text, why, and the numbers for claims.json."""

    verdict: str
    ours: str
    why: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)
    seeds: int | None = None


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if abs(x) < 1e3 else f"{x:,.0f}"


def interval_text(values: list[float]) -> tuple[str, dict]:
    """The mean of `values` with its 95% bootstrap interval over runs, as text and numbers."""
    mean, low, high = bootstrap_interval(values)
    text = fmt(mean) + (f" [{fmt(low)}, {fmt(high)}]" if len(values) > 1 else "")
    return text, {"mean": mean, "low": low, "high": high, "runs": len(values)}


def _kind(rule: Any, where: str) -> tuple[str, Any]:
    if not isinstance(rule, dict) or len(rule) != 1 or next(iter(rule)) not in KINDS:
        raise RecipeError(f"claims file: {where} must be one mapping of one kind: {', '.join(KINDS)}")
    return next(iter(rule.items()))


def _needs(spec: Any, keys: tuple[str, ...], kind: str, where: str) -> dict:
    if not isinstance(spec, dict) or set(keys) - set(spec):
        raise RecipeError(f"claims file: {where} ({kind}) needs {', '.join(keys)}")
    return spec


def _conditions(spec: list, where: str) -> list[tuple[Any, str, Any, float]]:
    out = []
    for condition in spec or []:
        ops = [op for op in OPERATORS if op in condition] if isinstance(condition, dict) else []
        if "value" not in (condition or {}) or len(ops) != 1:
            raise RecipeError(f"claims file: {where}: a condition is {{value: quantity, one of "
                              f"{', '.join(OPERATORS)}: number or quantity, times: factor}}")
        bound = condition[ops[0]]
        bound = bound if isinstance(bound, (int, float)) else quantity(bound, where)
        out.append((quantity(condition["value"], where), ops[0], bound, float(condition.get("times", 1.0))))
    return out


def check_rule(rule: Any, where: str) -> None:
    """Raise a RecipeError if the rule does not parse."""
    kind, spec = _kind(rule, where)
    if kind == "all_of":
        if not isinstance(spec, list) or not spec:
            raise RecipeError(f"claims file: {where} (all_of) needs a list of rules")
        for i, part in enumerate(spec):
            check_rule(part, f"{where}, part {i + 1}")
    elif kind == "fit":
        _needs(spec, ("name", "target", "direction"), kind, where)
    elif kind == "every_run":
        _needs(spec, ("reproduced",), kind, where)
        _conditions(spec["reproduced"], where)
        _conditions(spec.get("partly"), where)
    elif kind == "ratio":
        _needs(spec, ("of", "to", "reproduced_at_least", "partly_at_least"), kind, where)
        quantity(spec["of"], where), quantity(spec["to"], where)
    elif kind == "trend":
        _needs(spec, ("value", "along", "direction"), kind, where)
        quantity(spec["value"], where)
    elif kind in ("best", "best_shift"):
        keys = ("value", "along", "target") if kind == "best" else ("value", "along", "by", "direction")
        quantity(_needs(spec, keys, kind, where)["value"], where)
    if kind in ("trend", "best_shift") and spec["direction"] not in ("increasing", "decreasing"):
        raise RecipeError(f"claims file: {where} ({kind}): direction is increasing or decreasing")


def check_rules(claims: Claims) -> None:
    for claim in claims.claims:
        check_rule(claim.rule, f"claim {claim.id}'s rule")


def describe(rule: dict) -> str:
    """The rule in words, from its mapping (so the text is what is evaluated)."""
    kind, spec = _kind(rule, "rule")
    if kind == "all_of":
        return "all of: " + "; ".join(f"({describe(part)})" for part in spec)
    if kind == "fit":
        lo, hi = spec["direction"]
        direction = " and ".join(t for t in (f"> {lo}" if lo is not None else "", f"< {hi}" if hi is not None
                                              else "") if t)
        return (f"reproduced if the 95% interval of the exponent of the {spec['name']} fit overlaps "
                f"[{spec['target'][0]}, {spec['target'][1]}]; partly if the exponent is {direction}")

    def conditions(items: list) -> str:
        return " and ".join(f"{q.describe()} {OPERATORS[op][0]} "
                            f"{('' if t == 1 else f'{t:g} x ')}{b if isinstance(b, (int, float)) else b.describe()}"
                            for q, op, b, t in items)

    if kind == "every_run":
        partly = _conditions(spec.get("partly"), "rule")
        return (f"reproduced if in every run {conditions(_conditions(spec['reproduced'], 'rule'))}"
                + (f"; partly if in every run {conditions(partly)}" if partly else ""))
    if kind == "ratio":
        return (f"the ratio of the mean {quantity(spec['of'], 'rule').describe()} to the mean "
                f"{quantity(spec['to'], 'rule').describe()}: reproduced if >= {spec['reproduced_at_least']:g}, "
                f"partly if >= {spec['partly_at_least']:g}")
    value = quantity(spec["value"], "rule").describe()
    if kind == "trend":
        return (f"reproduced if the mean {value} is strictly {spec['direction']} in {spec['along']}; partly if "
                f"only its last value against its first is")
    best = "lowest" if spec.get("lowest", True) else "highest"
    if kind == "best":
        return (f"reproduced if the {spec['along']} with the {best} mean {value} lies in "
                f"[{spec['target'][0]}, {spec['target'][1]}]; partly if it is strictly inside the grid")
    return (f"reproduced if the {spec['along']} with the {best} mean {value} is strictly {spec['direction']} in "
            f"{spec['by']}; partly if it is weakly so with a change over three or more {spec['by']}")


def _fit(spec: dict, files: dict[str, StudyFiles], default: str) -> Outcome:
    fit = files[spec.get("study", default)].fit(spec["name"])
    b, low, high = fit["b"], fit.get("b_low", fit["b"]), fit.get("b_high", fit["b"])
    (t_lo, t_hi), (d_lo, d_hi) = spec["target"], spec["direction"]
    seeds = max(fit.get("runs", [1]))
    ours = (f"exponent {fmt(b)} [{fmt(low)}, {fmt(high)}], R² {fmt(fit['r2'])}, "
            f"N {fmt(min(fit['x']))}-{fmt(max(fit['x']))}")
    numbers = {"exponent": b, "low": low, "high": high, "r2": fit["r2"], "a": fit["a"]}
    if low <= t_hi and high >= t_lo:
        return Outcome(REPRODUCED, ours, "the interval overlaps the target", numbers, seeds)
    inside = (d_lo is None or b > d_lo) and (d_hi is None or b < d_hi)
    gap = min(abs(low - t_hi), abs(high - t_lo))
    return Outcome(PARTLY if inside else NOT_REPRODUCED, ours,
                   f"the interval misses [{t_lo}, {t_hi}] by {fmt(gap)}", numbers, seeds)


def _every_run(spec: dict, files: dict[str, StudyFiles], default: str) -> Outcome:
    def met(items: list) -> tuple[dict[str, bool], dict[str, Values]]:
        runs: dict[str, bool] = {}
        read = {}
        for q, op, bound, times in items:
            values = read_values(q, files, default)
            read[q.describe()] = values
            if isinstance(bound, (int, float)):
                bounds = [float(bound)] * len(values.values)
            else:
                limits = read_values(bound, files, default)
                by_run = dict(zip((r["run"] for r in limits.rows), limits.values))
                bounds = [by_run.get(r["run"], np.nan) for r in values.rows]
            for row, value, limit in zip(values.rows, values.values, bounds):
                runs[row["run"]] = runs.get(row["run"], True) and bool(OPERATORS[op][1](value, times * limit))
        return runs, read

    runs, read = met(_conditions(spec["reproduced"], "rule"))
    seeds = max(v.seeds for v in read.values())
    numbers = {name: interval_text(v.values)[1] for name, v in read.items()}
    ours = "; ".join(f"{name}: {interval_text(v.values)[0]}" for name, v in read.items())
    count = f"{sum(runs.values())} of {len(runs)} runs meet the reproduced conditions"
    if all(runs.values()):
        return Outcome(REPRODUCED, ours, count, numbers, seeds)
    partly = _conditions(spec.get("partly"), "rule")
    if partly:
        partly_runs, _ = met(partly)
        if all(partly_runs.values()):
            return Outcome(PARTLY, ours, count + "; every run meets the partly conditions", numbers, seeds)
    return Outcome(NOT_REPRODUCED, ours, count, numbers, seeds)


def _ratio(spec: dict, files: dict[str, StudyFiles], default: str) -> Outcome:
    of, to = (read_values(quantity(spec[k], "rule"), files, default) for k in ("of", "to"))
    rng = np.random.default_rng(0)
    draws = (rng.choice(of.values, (2000, len(of.values))).mean(1)
             / rng.choice(to.values, (2000, len(to.values))).mean(1))
    ratio = float(np.mean(of.values) / np.mean(to.values))
    low, high = np.percentile(draws, [2.5, 97.5])
    runs = len(of.values) + len(to.values)
    ours = (f"{fmt(ratio)}" + (f" [{fmt(low)}, {fmt(high)}]" if runs > 2 else "")
            + f" ({fmt(float(np.mean(of.values)))} / {fmt(float(np.mean(to.values)))})")
    numbers = {"ratio": ratio, "low": float(low), "high": float(high), "of": float(np.mean(of.values)),
               "to": float(np.mean(to.values)), "runs": runs}
    seeds = max(of.seeds, to.seeds)
    if ratio >= spec["reproduced_at_least"]:
        return Outcome(REPRODUCED, ours, f">= {spec['reproduced_at_least']:g}", numbers, seeds)
    verdict = PARTLY if ratio >= spec["partly_at_least"] else NOT_REPRODUCED
    return Outcome(verdict, ours, f"{fmt(ratio)} against the {spec['reproduced_at_least']:g} needed", numbers, seeds)


def _means(spec: dict, files: dict[str, StudyFiles], default: str, along: str) -> tuple[dict, int]:
    """The quantity's mean over runs for each value of `along` (sorted), and the seeds."""
    values = read_values(quantity(spec["value"], "rule"), files, default)
    groups: dict[float, list[float]] = {}
    for row, value in zip(values.rows, values.values):
        groups.setdefault(row[along], []).append(value)
    return {k: float(np.mean(groups[k])) for k in sorted(groups)}, values.seeds


def _series_text(means: dict, along: str) -> str:
    return ", ".join(f"{fmt(k) if isinstance(k, float) else k}: {fmt(v)}" for k, v in means.items()) + f" (by {along})"


def _monotone(values: list[float], direction: str, strict: bool = True) -> bool:
    steps = np.diff(values) * (1 if direction == "increasing" else -1)
    return bool(len(steps) and ((steps > 0).all() if strict else (steps >= 0).all()))


def _trend(spec: dict, files: dict[str, StudyFiles], default: str) -> Outcome:
    means, seeds = _means(spec, files, default, spec["along"])
    ours, numbers, series = _series_text(means, spec["along"]), {"means": means}, list(means.values())
    if len(series) < 2:
        return Outcome(NOT_RUN, ours, f"one value of {spec['along']}: no trend", numbers, seeds)
    if _monotone(series, spec["direction"]):
        return Outcome(REPRODUCED, ours, f"strictly {spec['direction']}", numbers, seeds)
    if _monotone([series[0], series[-1]], spec["direction"]):
        return Outcome(PARTLY, ours, f"{spec['direction']} from first to last, not at every step", numbers, seeds)
    return Outcome(NOT_REPRODUCED, ours, f"not {spec['direction']}", numbers, seeds)


def _argbest(means: dict, lowest: bool):
    return (min if lowest else max)(means, key=means.get)


def _best(spec: dict, files: dict[str, StudyFiles], default: str) -> Outcome:
    means, seeds = _means(spec, files, default, spec["along"])
    best = _argbest(means, spec.get("lowest", True))
    ours = f"best {spec['along']} {fmt(best)}; " + _series_text(means, spec["along"])
    numbers = {"best": best, "means": means}
    lo, hi = spec["target"]
    if lo <= best <= hi:
        return Outcome(REPRODUCED, ours, f"in [{lo}, {hi}]", numbers, seeds)
    inside = min(means) < best < max(means)
    why = f"outside [{lo}, {hi}]" + ("; inside the grid" if inside else "; at the grid's edge")
    return Outcome(PARTLY if inside else NOT_REPRODUCED, ours, why, numbers, seeds)


def _best_shift(spec: dict, files: dict[str, StudyFiles], default: str) -> Outcome:
    values = read_values(quantity(spec["value"], "rule"), files, default)
    groups: dict[Any, dict[Any, list[float]]] = {}
    for row, value in zip(values.rows, values.values):
        groups.setdefault(row[spec["by"]], {}).setdefault(row[spec["along"]], []).append(value)
    best = {by: _argbest({k: float(np.mean(v)) for k, v in g.items()}, spec.get("lowest", True))
            for by, g in sorted(groups.items())}
    ours = f"best {spec['along']} by {spec['by']}: " + ", ".join(f"{fmt(k)}: {fmt(v)}" for k, v in best.items())
    numbers, series = {"best": best}, list(best.values())
    if len(series) < 2:
        return Outcome(NOT_RUN, ours, f"one value of {spec['by']}", numbers, values.seeds)
    if _monotone(series, spec["direction"]):
        return Outcome(REPRODUCED, ours, f"strictly {spec['direction']}", numbers, values.seeds)
    weakly = len(series) >= 3 and _monotone(series, spec["direction"], strict=False) and len(set(series)) > 1
    return Outcome(PARTLY if weakly else NOT_REPRODUCED, ours,
                   "weakly so" if weakly else f"not {spec['direction']}", numbers, values.seeds)


RULES = {"fit": _fit, "every_run": _every_run, "ratio": _ratio, "trend": _trend, "best": _best,
         "best_shift": _best_shift}


def verdict(rule: dict, files: dict[str, StudyFiles], default: str) -> Outcome:
    """The rule applied to the studies' files (`default`: the claim's first study); not run where a study
    or a value is missing."""
    kind, spec = _kind(rule, "rule")
    if kind == "all_of":
        parts = [verdict(part, files, default) for part in spec]
        seeds = max((p.seeds or 0 for p in parts), default=0) or None
        ours, why = " | ".join(p.ours for p in parts), " | ".join(f"{p.verdict}: {p.why}" for p in parts)
        numbers = {f"part_{i + 1}": p.numbers for i, p in enumerate(parts)}
        verdicts = [p.verdict for p in parts]
        if NOT_RUN in verdicts:
            return Outcome(NOT_RUN, ours, why, numbers, seeds)
        if all(v == REPRODUCED for v in verdicts):
            return Outcome(REPRODUCED, ours, why, numbers, seeds)
        return Outcome(NOT_REPRODUCED if all(v == NOT_REPRODUCED for v in verdicts) else PARTLY, ours, why,
                       numbers, seeds)
    try:
        return RULES[kind](spec, files, default)
    except (FileNotFoundError, LookupError) as err:
        return Outcome(NOT_RUN, "-", str(err).strip("'\""))
