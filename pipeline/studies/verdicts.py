"""A claim's verdict from its rule and its studies' files, decided by intervals over seeds
(pipeline/studies/intervals): reproduced, partly (the direction holds, the size differs), not reproduced,
inconclusive (an interval straddles a cut: the runs that would settle it are said), or not run (a study, a
run or a file is missing). A finished run that leaves a quantity undefined (no plateau detected) is judged.

A rule is one mapping of one kind (quantities as in pipeline/studies/claims.py), each a class below:

- `fit: {name, target: [lo, hi], direction: [lo, hi]}`: the exponent of a power law of fit.json
  (`plateau_end`, `plateau_length`, ...), fitted seed by seed: reproduced if its interval lies inside
  `target`, partly if inside `direction` (null: unbounded) but outside `target`, not reproduced outside.
- `every_run: {reproduced: [conditions], partly: [conditions]}`: a condition is `{value: quantity,
  <above | at_least | below | at_most>: number or quantity of the same run, times: factor}`, judged at
  each grid point on the interval over its seeds of value - times x bound; every point must hold.
- `ratio: {of, to, reproduced_at_least, partly_at_least}`: the ratio of two quantities, seed by seed.
- `trend: {value, along, direction}`: each step along `along` (seed by seed) in `direction`: reproduced;
  only the last against the first: partly; the last against the first the other way: not reproduced.
- `best: {value, along, lowest, target: [lo, hi]}`: the value of `along` with the lowest (or highest) mean,
  told apart from the others seed by seed: in `target`: reproduced; strictly inside the grid: partly.
- `best_shift: {value, along, lowest, by, direction}`: that best value of `along`, at each value of `by`,
  moving strictly with `by` in `direction`: reproduced; weakly, with a change, over three or more: partly.
- `all_of: [rules]`: reproduced if all are, inconclusive if one is, not reproduced if all are, else partly.

Band-dependent quantities (the plateau's start, end and length) are judged again at the detector's other
bands; a verdict that changes with the band is marked sensitive to the detector.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.errors import RecipeError

from ..run_folder import STUDY_FIT
from .aggregate import DETECTOR_KEYS, TOLERANCES
from .claims import Claims, StudyFiles, Undefined, Values, quantity, read_values
from .intervals import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    PARTLY,
    REPRODUCED,
    Decision,
    Interval,
    Scale,
    at_least,
    at_most,
    combine,
    decide,
    fmt,
    over_seeds,
    paired,
    window,
)

NOT_RUN = "not run"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN)
OPERATORS = {"above": ">", "at_least": ">=", "below": "<", "at_most": "<="}
Files = dict[str, StudyFiles]


@dataclass
class Panel:
    """One interval a verdict was decided on, and the scale that decided it (for the claim's figure)."""

    label: str
    interval: Interval
    scale: Scale


@dataclass
class Outcome:
    """A rule's verdict, our numbers in words, why, and the numbers for claims.json."""

    verdict: str
    says: str
    why: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)
    seeds: int | None = None
    seeds_needed: int | None = None
    panels: list[Panel] = field(default_factory=list)
    bands: dict[str, str] = field(default_factory=dict)  # detector band -> verdict, where the rule reads one

    @property
    def sensitive(self) -> bool:
        """Whether the verdict changes with the detector's band."""
        return len({v for v in self.bands.values() if v != NOT_RUN}) > 1


def _outcome(decision: Decision, says: str, numbers: dict, seeds: int | None, panels: list[Panel]) -> Outcome:
    return Outcome(decision.verdict, says, decision.why, numbers, seeds, decision.seeds_needed, panels)


def _needs(spec: Any, keys: tuple[str, ...], kind: str, where: str) -> dict:
    if not isinstance(spec, dict) or set(keys) - set(spec):
        raise RecipeError(f"claims file: {where} ({kind}) needs {', '.join(keys)}")
    return spec


def _seed_key(row: dict) -> Any:
    return row.get("seed")


def _point(row: dict) -> str:
    """A run's grid point: its name without its seed."""
    parts = [p for p in str(row["run"]).split("_") if not p.startswith("seed=")]
    return "_".join(parts) or "the study"


def _defined(rows_values: list[tuple[dict, float | None]]) -> tuple[list, int]:
    """The (row, value) pairs with a value, and how many runs leave it undefined."""
    kept = [(r, v) for r, v in rows_values if v is not None]
    return kept, len(rows_values) - len(kept)


class Fit:
    keys = ("name", "target", "direction")

    @staticmethod
    def check(spec: dict, where: str) -> None:
        pass

    @staticmethod
    def describe(spec: dict) -> str:
        (t_lo, t_hi), (d_lo, d_hi) = spec["target"], spec["direction"]
        direction = " and ".join(t for t in (f"> {d_lo}" if d_lo is not None else "",
                                             f"< {d_hi}" if d_hi is not None else "") if t)
        return (f"the exponent of the {spec['name']} power law in N, fitted seed by seed: reproduced if its 95% "
                f"t-interval over seeds lies inside [{t_lo}, {t_hi}]; partly if it lies where the exponent is "
                f"{direction} but outside the target; not reproduced outside; else inconclusive")

    @staticmethod
    def evaluate(spec: dict, files: Files, default: str) -> Outcome:
        fit = files[spec.get("study", default)].fit(spec["name"])
        if "seed_exponents" not in fit:
            raise LookupError(f"{STUDY_FIT}'s {spec['name']} fit holds no exponents per seed (written before fits were "
                              "made seed by seed): rerun the study")
        interval = over_seeds(list(fit["seed_exponents"].values()))
        scale = window(tuple(spec["target"]), tuple(spec["direction"]))
        says = (f"{spec['name'].replace('_', ' ')} grows as N^b with b {interval.text()} over seeds "
                f"(fit through the means: b {fmt(fit['b'])}, R² {fmt(fit['r2'])}, N {fmt(min(fit['x']))}-"
                f"{fmt(max(fit['x']))})")
        numbers = {"exponent": interval.to_dict(), "fit_b": fit["b"], "r2": fit["r2"], "a": fit["a"]}
        return _outcome(decide(interval, scale), says, numbers, interval.n, [Panel("exponent b", interval, scale)])


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


def _bound_text(bound: Any, times: float) -> str:
    scaled = "" if times == 1 else f"{times:g} x "
    return f"{scaled}{bound:g}" if isinstance(bound, (int, float)) else f"{scaled}{bound.name}"


@dataclass
class Judged:
    """Conditions judged at every grid point: the decision, its numbers, panels, words and seeds."""

    decision: Decision
    numbers: dict
    panels: list[Panel]
    says: str
    seeds: int


class EveryRun:
    keys = ("reproduced",)

    @staticmethod
    def check(spec: dict, where: str) -> None:
        _conditions(spec["reproduced"], where)
        _conditions(spec.get("partly"), where)

    @staticmethod
    def describe(spec: dict) -> str:
        def words(items: list) -> str:
            return " and ".join(f"{q.describe()} {OPERATORS[op]} {_bound_text(b, t)}" for q, op, b, t in items)

        reproduced, partly = _conditions(spec["reproduced"], "rule"), _conditions(spec.get("partly"), "rule")
        return (f"at every grid point, the 95% t-interval over its seeds of {words(reproduced)} must hold whole: "
                f"reproduced" + (f"; partly if {words(partly)} holds so" if partly else "")
                + "; inconclusive while an interval straddles its bound")

    @staticmethod
    def _condition(q, op: str, bound: Any, times: float, files: Files, default: str) -> Judged:
        """One condition at every grid point: its decision, numbers, panels, words and seeds."""
        values = read_values(q, files, default)
        if isinstance(bound, (int, float)):
            limits = {str(r["run"]): float(bound) for r in values.rows}
        else:
            read = read_values(bound, files, default)
            limits = {str(r["run"]): v for r, v in zip(read.rows, read.values)}
            missing = [str(r["run"]) for r in values.rows if str(r["run"]) not in limits]
            if missing:
                raise LookupError(f"runs {', '.join(missing)} have no {bound.name} to compare with: not run")
        scale = (at_least(0.0, strict=op == "above") if op in ("above", "at_least")
                 else at_most(0.0, strict=op == "below"))
        points: dict[str, list[tuple[dict, float | None]]] = {}
        for row, value in zip(values.rows, values.values):
            limit = limits[str(row["run"])]
            points.setdefault(_point(row), []).append(
                (row, None if value is None or limit is None else value - times * limit))
        decisions, numbers, panels = [], {}, []
        for point, members in points.items():
            kept, undefined = _defined(members)
            label = f"{q.name} - {_bound_text(bound, times)}" + (f" ({point})" if len(points) > 1 else "")
            if undefined == len(members):
                decisions.append(Decision(NOT_REPRODUCED, f"{point}: {values.undefined} in {undefined} run(s)"))
                continue
            interval = over_seeds([v for _, v in kept])
            decision = decide(interval, scale)
            if undefined:
                decision = Decision(INCONCLUSIVE, f"{point}: {values.undefined} in {undefined} of {len(members)} runs; "
                                    + decision.why, decision.seeds_needed)
            decisions.append(decision)
            numbers[label] = interval.to_dict()
            panels.append(Panel(label, interval, scale))
        return Judged(combine(decisions), numbers, panels, EveryRun._says(q, op, bound, times, values), values.seeds)

    @staticmethod
    def _says(q, op: str, bound: Any, times: float, values: Values) -> str:
        defined = [v for v in values.values if v is not None]
        points = {_point(r) for r in values.rows}
        if not defined:
            text = values.undefined
        elif len(points) > 1:
            text = f"{fmt(min(defined))} to {fmt(max(defined))} over {len(points)} grid points, {values.seeds} seed(s)"
        else:
            text = over_seeds(defined).text()
        return f"{q.name} {text} (needs {OPERATORS[op]} {_bound_text(bound, times)})"

    @classmethod
    def _all(cls, items: list, files: Files, default: str) -> Judged:
        parts = [cls._condition(*item, files, default) for item in items]
        return Judged(combine([p.decision for p in parts]), {k: v for p in parts for k, v in p.numbers.items()},
                      [panel for p in parts for panel in p.panels], "; ".join(p.says for p in parts),
                      max(p.seeds for p in parts))

    @classmethod
    def evaluate(cls, spec: dict, files: Files, default: str) -> Outcome:
        judged = cls._all(_conditions(spec["reproduced"], "rule"), files, default)
        decision, partly = judged.decision, _conditions(spec.get("partly"), "rule")
        if decision.verdict in (NOT_REPRODUCED, INCONCLUSIVE) and partly:
            weaker = cls._all(partly, files, default).decision
            if weaker.verdict == NOT_REPRODUCED:
                decision = Decision(NOT_REPRODUCED, decision.why + "; the partly conditions fail too")
            elif decision.verdict == NOT_REPRODUCED and weaker.verdict == REPRODUCED:
                decision = Decision(PARTLY, decision.why + "; the partly conditions hold")
            elif decision.verdict == NOT_REPRODUCED:
                decision = Decision(INCONCLUSIVE, decision.why + "; partly or not: " + weaker.why, weaker.seeds_needed)
        return _outcome(decision, judged.says, judged.numbers, judged.seeds, judged.panels)


class Ratio:
    keys = ("of", "to", "reproduced_at_least", "partly_at_least")

    @staticmethod
    def check(spec: dict, where: str) -> None:
        quantity(spec["of"], where), quantity(spec["to"], where)

    @staticmethod
    def describe(spec: dict) -> str:
        of, to = quantity(spec["of"], "rule"), quantity(spec["to"], "rule")
        return (f"the ratio {of.describe()} / {to.describe()}, seed by seed: reproduced if its 95% t-interval over "
                f"seeds lies at or above {spec['reproduced_at_least']:g}, partly if between "
                f"{spec['partly_at_least']:g} and {spec['reproduced_at_least']:g}, not reproduced if below "
                f"{spec['partly_at_least']:g}; else inconclusive")

    @staticmethod
    def evaluate(spec: dict, files: Files, default: str) -> Outcome:
        of, to = (read_values(quantity(spec[k], "rule"), files, default) for k in ("of", "to"))
        scale = at_least(spec["reproduced_at_least"], spec["partly_at_least"])
        try:
            pairs = [(a, b) for _, a, b in paired(of.by_seed(), to.by_seed()) if a is not None and b is not None]
            unpaired = ""
        except LookupError as err:  # runs of two studies that share no seed: the ratio of their means, no interval
            pairs = [(float(np.mean([v for v in of.values if v is not None])),
                      float(np.mean([v for v in to.values if v is not None])))]
            unpaired = f"; unpaired, so no interval: {err}"
        if not pairs:
            raise Undefined(f"no seed defines both {of.quantity.name} and {to.quantity.name}")
        interval = over_seeds([a / b for a, b in pairs])
        mean_of, mean_to = (float(np.mean([p[i] for p in pairs])) for i in (0, 1))
        says = (f"{of.quantity.name} {fmt(mean_of)} against {to.quantity.name} {fmt(mean_to)}: "
                f"ratio {interval.text()}")
        decision = decide(interval, scale)
        decision = Decision(decision.verdict, decision.why + unpaired, decision.seeds_needed)
        numbers = {"ratio": interval.to_dict(), "of": mean_of, "to": mean_to}
        label = f"{of.quantity.name} / {to.quantity.name}"
        return _outcome(decision, says, numbers, interval.n, [Panel(label, interval, scale)])


def _by_keys(spec: dict, files: Files, default: str, keys: tuple[str, ...]) -> tuple[Values, dict]:
    """The quantity's defined values nested by the values of `keys` (sorted), then seed -> value; Undefined
    where no run defines it."""
    values = read_values(quantity(spec["value"], "rule"), files, default)
    groups: dict = {}
    for row, value in zip(values.rows, values.values):
        if value is not None:
            inner = groups
            for key in keys:
                inner = inner.setdefault(row[key], {})
            inner[_seed_key(row)] = value
    if not groups:
        raise Undefined(f"no run defines {values.quantity.name}: {values.undefined}")

    def ordered(level: dict, depth: int) -> dict:
        return level if depth == 0 else {k: ordered(level[k], depth - 1) for k in sorted(level)}

    return values, ordered(groups, len(keys))


def _by_along(spec: dict, files: Files, default: str) -> tuple[Values, dict[Any, dict[Any, float]]]:
    """The quantity's defined values: value of `along` -> seed -> value."""
    return _by_keys(spec, files, default, (spec["along"],))


def _difference(later: dict, earlier: dict) -> Interval:
    """later - earlier, seed by seed."""
    return over_seeds([a - b for _, a, b in paired(later, earlier)])


def _series_text(groups: dict, along: str, name: str) -> str:
    return f"{name} by {along}: " + ", ".join(f"{fmt(k) if isinstance(k, float) else k}: "
                                              f"{fmt(float(np.mean(list(v.values()))))}" for k, v in groups.items())


class Trend:
    keys = ("value", "along", "direction")

    @staticmethod
    def check(spec: dict, where: str) -> None:
        quantity(spec["value"], where)
        if spec["direction"] not in ("increasing", "decreasing"):
            raise RecipeError(f"claims file: {where} (trend): direction is increasing or decreasing")

    @staticmethod
    def describe(spec: dict) -> str:
        value = quantity(spec["value"], "rule").describe()
        return (f"{value} {spec['direction']} in {spec['along']}, each step's change seed by seed: reproduced if "
                f"every step's 95% t-interval lies on that side of 0; partly if only the last against the first "
                f"does; not reproduced if the last against the first lies on the other side; else inconclusive")

    @staticmethod
    def evaluate(spec: dict, files: Files, default: str) -> Outcome:
        values, groups = _by_along(spec, files, default)
        keys = list(groups)
        says = _series_text(groups, spec["along"], values.quantity.name)
        if len(keys) < 2:
            raise LookupError(f"one value of {spec['along']}: no trend")
        scale = at_least(0.0, strict=True) if spec["direction"] == "increasing" else at_most(0.0, strict=True)
        overall = _difference(groups[keys[-1]], groups[keys[0]])
        steps = [_difference(groups[b], groups[a]) for a, b in zip(keys, keys[1:])]
        first_last, each = decide(overall, scale), [decide(s, scale) for s in steps]
        says += f"; last - first {overall.text()}"
        panels = [Panel(f"{fmt(keys[-1])} - {fmt(keys[0])}", overall, scale)]
        numbers = {"means": {k: float(np.mean(list(v.values()))) for k, v in groups.items()},
                   "last_minus_first": overall.to_dict()}
        if first_last.verdict != REPRODUCED:
            decision = first_last
        elif all(d.verdict == REPRODUCED for d in each):
            decision = Decision(REPRODUCED, f"every step is {spec['direction']}: " + "; ".join(d.why for d in each))
        elif any(d.verdict == NOT_REPRODUCED for d in each):
            decision = Decision(PARTLY, f"{spec['direction']} from first to last, not at every step")
        else:
            decision = combine(each)
        return _outcome(decision, says, numbers, values.seeds, panels)


def _separated(groups: dict, best: Any, others: list, lowest: bool) -> tuple[list[Decision], list[Panel]]:
    """Whether `best` beats each of `others`, seed by seed: decisions on other - best (best - other)."""
    scale = at_least(0.0, strict=True) if lowest else at_most(0.0, strict=True)
    decisions, panels = [], []
    for other in others:
        interval = _difference(groups[other], groups[best])
        decisions.append(decide(interval, scale))
        panels.append(Panel(f"{fmt(other)} - {fmt(best)}", interval, scale))
    return decisions, panels


def _best_words(spec: dict) -> str:
    best = "lowest" if spec.get("lowest", True) else "highest"
    return f"the {spec['along']} with the {best} mean {quantity(spec['value'], 'rule').describe()}"


def _argbest(groups: dict, lowest: bool) -> Any:
    means = {k: float(np.mean(list(v.values()))) for k, v in groups.items()}
    return (min if lowest else max)(means, key=means.get)


class Best:
    keys = ("value", "along", "target")

    @staticmethod
    def check(spec: dict, where: str) -> None:
        quantity(spec["value"], where)

    @staticmethod
    def describe(spec: dict) -> str:
        return (f"{_best_words(spec)}, told apart seed by seed: reproduced if it lies in [{spec['target'][0]}, "
                f"{spec['target'][1]}] and beats every value outside it; partly if a value strictly inside the grid "
                f"but outside the target beats every value in it; not reproduced if a value at the grid's edge does; "
                f"else inconclusive")

    @staticmethod
    def evaluate(spec: dict, files: Files, default: str) -> Outcome:
        values, groups = _by_along(spec, files, default)
        lowest, (lo, hi) = spec.get("lowest", True), spec["target"]
        best = _argbest(groups, lowest)
        inside = best if lo <= best <= hi else None
        rivals = [k for k in groups if k != best and (lo <= k <= hi) != (inside is not None)]
        decisions, panels = _separated(groups, best, rivals, lowest)
        says = _series_text(groups, spec["along"], values.quantity.name) + f"; best {spec['along']} {fmt(best)}"
        numbers = {"best": best, "means": {k: float(np.mean(list(v.values()))) for k, v in groups.items()}}
        told = combine(decisions) if decisions else Decision(REPRODUCED, "no rival")
        if told.verdict != REPRODUCED:
            decision = Decision(INCONCLUSIVE, f"the best {spec['along']} {fmt(best)} is not told apart from "
                                f"{'those outside' if inside is not None else 'those inside'} the target: {told.why}",
                                told.seeds_needed)
        elif inside is not None:
            decision = Decision(REPRODUCED, f"{fmt(best)} in [{lo}, {hi}], ahead of every value outside it")
        else:
            strictly = min(groups) < best < max(groups)
            decision = Decision(PARTLY if strictly else NOT_REPRODUCED, f"{fmt(best)} outside [{lo}, {hi}], ahead "
                                f"of every value in it; " + ("inside the grid" if strictly else "at the grid's edge"))
        return _outcome(decision, says, numbers, values.seeds, panels)


def _monotone(values: list[float], direction: str, strict: bool = True) -> bool:
    steps = np.diff(values) * (1 if direction == "increasing" else -1)
    return bool(len(steps) and ((steps > 0).all() if strict else (steps >= 0).all()))


class BestShift:
    keys = ("value", "along", "by", "direction")

    @staticmethod
    def check(spec: dict, where: str) -> None:
        Trend.check(spec, where)

    @staticmethod
    def describe(spec: dict) -> str:
        return (f"{_best_words(spec)} at each {spec['by']}, each told apart from the runner-up seed by seed (else "
                f"inconclusive): reproduced if it is strictly {spec['direction']} in {spec['by']}; partly if weakly "
                f"so with a change over three or more {spec['by']}")

    @staticmethod
    def evaluate(spec: dict, files: Files, default: str) -> Outcome:
        values, per_by = _by_keys(spec, files, default, (spec["by"], spec["along"]))
        if len(per_by) < 2:
            raise LookupError(f"one value of {spec['by']}: no shift")
        lowest, best, decisions, panels = spec.get("lowest", True), {}, [], []
        for by, groups in per_by.items():
            best[by] = _argbest(groups, lowest)
            told, drawn = _separated(groups, best[by], [k for k in groups if k != best[by]], lowest)
            decisions += told
            panels += [Panel(f"{spec['by']} {fmt(by)}: {p.label}", p.interval, p.scale) for p in drawn]
        says = f"best {spec['along']} by {spec['by']}: " + ", ".join(f"{fmt(k)}: {fmt(v)}" for k, v in best.items())
        numbers, series = {"best": best}, list(best.values())
        told = combine(decisions)
        if told.verdict != REPRODUCED:
            decision = Decision(INCONCLUSIVE, f"a best {spec['along']} is not told apart from another: {told.why}",
                                told.seeds_needed)
        elif _monotone(series, spec["direction"]):
            decision = Decision(REPRODUCED, f"strictly {spec['direction']}")
        elif len(series) >= 3 and _monotone(series, spec["direction"], strict=False) and len(set(series)) > 1:
            decision = Decision(PARTLY, f"weakly {spec['direction']}")
        else:
            decision = Decision(NOT_REPRODUCED, f"not {spec['direction']}")
        return _outcome(decision, says, numbers, values.seeds, panels)


class AllOf:
    @staticmethod
    def check(spec: Any, where: str) -> None:
        if not isinstance(spec, list) or not spec:
            raise RecipeError(f"claims file: {where} (all_of) needs a list of rules")
        for i, part in enumerate(spec):
            check_rule(part, f"{where}, part {i + 1}")

    @staticmethod
    def describe(spec: list) -> str:
        return "all of: " + "; ".join(f"({i + 1}) {describe(part)}" for i, part in enumerate(spec))

    @staticmethod
    def evaluate(spec: list, files: Files, default: str) -> Outcome:
        parts = [verdict(part, files, default, bands=False) for part in spec]
        seeds = max((p.seeds or 0 for p in parts), default=0) or None
        says = "; ".join(f"({i + 1}) {p.says}" for i, p in enumerate(parts))
        why = "; ".join(f"({i + 1}) {p.verdict}: {p.why}" for i, p in enumerate(parts))
        numbers = {f"part_{i + 1}": p.numbers for i, p in enumerate(parts)}
        panels = [Panel(f"({i + 1}) {q.label}", q.interval, q.scale) for i, p in enumerate(parts) for q in p.panels]
        if any(p.verdict == NOT_RUN for p in parts):
            return Outcome(NOT_RUN, says, why, numbers, seeds, None, panels)
        decision = combine([Decision(p.verdict, p.why, p.seeds_needed) for p in parts], every=False)
        return Outcome(decision.verdict, says, why, numbers, seeds, decision.seeds_needed, panels)


KINDS = {"fit": Fit, "every_run": EveryRun, "ratio": Ratio, "trend": Trend, "best": Best, "best_shift": BestShift,
         "all_of": AllOf}


def _kind(rule: Any, where: str) -> tuple[str, Any]:
    if not isinstance(rule, dict) or len(rule) != 1 or next(iter(rule)) not in KINDS:
        raise RecipeError(f"claims file: {where} must be one mapping of one kind: {', '.join(KINDS)}")
    return next(iter(rule.items()))


def check_rule(rule: Any, where: str) -> None:
    """Raise a RecipeError if the rule does not parse."""
    kind, spec = _kind(rule, where)
    if kind != "all_of":
        _needs(spec, KINDS[kind].keys, kind, where)
    KINDS[kind].check(spec, where)


def check_rules(claims: Claims) -> None:
    for claim in claims.claims:
        check_rule(claim.rule, f"claim {claim.id}'s rule")


def describe(rule: dict) -> str:
    """The rule in words, from its mapping (so the text is what is evaluated)."""
    kind, spec = _kind(rule, "rule")
    return KINDS[kind].describe(spec)


def at_band(rule: Any, tolerance: float) -> Any:
    """The rule reading the plateau's start, end and length as the detector finds them at another band."""
    if isinstance(rule, list):
        return [at_band(part, tolerance) for part in rule]
    if not isinstance(rule, dict):
        return rule
    out = {k: at_band(v, tolerance) for k, v in copy.copy(rule).items()}
    for key in ("column", "name"):
        if out.get(key) in DETECTOR_KEYS:
            out[key] = f"{out[key]}_tol{tolerance:g}"
    return out


def reads_detector(rule: Any) -> bool:
    return at_band(rule, TOLERANCES[0]) != rule


def verdict(rule: dict, files: Files, default: str, bands: bool = True) -> Outcome:
    """The rule applied to the studies' files (`default`: the claim's first study); not run where a study,
    a run or a file is missing. With `bands`, a rule that reads the phase detector is also judged at each of
    its bands."""
    kind, spec = _kind(rule, "rule")
    try:
        outcome = KINDS[kind].evaluate(spec, files, default)
    except Undefined as err:
        why = str(err).strip("'\"")
        return Outcome(NOT_REPRODUCED, why, f"{why}: the finished runs leave it undefined")
    except (FileNotFoundError, LookupError) as err:
        return Outcome(NOT_RUN, "-", str(err).strip("'\""))
    if bands and reads_detector(rule):
        outcome.bands = {f"{t:g}": verdict(at_band(rule, t), files, default, bands=False).verdict for t in TOLERANCES}
    return outcome
