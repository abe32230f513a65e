"""Markdown pieces shared by the reports."""

from __future__ import annotations


def step_text(value: float | None) -> str:
    return "not reached" if value is None else f"{value:,.0f}"


def percent_text(value: float | None, missing: str = "not reached") -> str:
    return missing if value is None else f"{value:.1%}"


def final_table(rows: list[dict]) -> str:
    last = max(r["step"] for r in rows)
    final = {r["split"]: r for r in rows if r["step"] == last}
    first = next(iter(final.values()))
    attributes = list(first["per_attribute"])
    lines = ["| | " + " | ".join(["all"] + attributes) + " |", "|---" * (len(attributes) + 2) + "|"]
    for split, row in final.items():
        for key, label in (("accuracy", "accuracy"), ("loss", "loss")):
            overall = row[f"attribute_{key}"]
            values = [row["per_attribute"][a][key] for a in attributes]
            fmt = "{:.1%}" if key == "accuracy" else "{:.3f}"
            lines.append(f"| {split} {label} | " + " | ".join(fmt.format(v) for v in [overall] + values) + " |")
    baselines = [first["baseline_loss"]] + [first["per_attribute"][a]["baseline"] for a in attributes]
    lines.append("| baseline loss | " + " | ".join(f"{v:.3f}" for v in baselines) + " |")
    return "\n".join(lines)
