"""Attention-patching study: an unpatched reference run, then one rerun per reference checkpoint
with every attention pattern taken from that checkpoint, compared on one figure.

    python -m pipeline.studies.attention_patching --config recipes/studies/attention_patching.yaml

Runs already finished are skipped and interrupted ones resumed (each is a pretraining run).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from data_gen.recipe import RecipeError, parse_recipe, run_cli  # noqa: E402

from ..analyze import load_trajectory, run_phases, series  # noqa: E402
from ..pretrain import main as pretrain_main  # noqa: E402


@dataclass
class PatchingStudyArguments:
    """Which reference recipe to patch, with which checkpoints, from which step."""

    reference_config: str = field(metadata={"help": "Pretraining recipe of the unpatched reference run."})
    output_dir: str = field(metadata={"help": "Study folder: reference/, patched-<step>/, study.md, study.png."})
    reference_steps: list[int] = field(default_factory=lambda: [0], metadata={
        "help": "Reference checkpoints whose attention patterns are used, one patched run each."})
    start_patching: int = field(default=0, metadata={"help": "Step from which each patched run is patched."})

    def __post_init__(self):
        if not Path(self.reference_config).is_file():
            raise RecipeError(f"reference_config '{self.reference_config}' does not exist: point it at a pretraining "
                              f"recipe")


def run_study(args: PatchingStudyArguments) -> Path:
    out = Path(args.output_dir)
    reference = out / "reference"
    pretrain_main(["--config", args.reference_config, "--output_dir", str(reference), "--checkpoint_steps",
                   *(str(s) for s in args.reference_steps)])
    runs = {"unpatched": reference}
    for step in args.reference_steps:
        runs[f"patched with step {step}"] = out / f"patched-{step}"
        pretrain_main(["--config", args.reference_config, "--output_dir", str(runs[f"patched with step {step}"]),
                       "--reference_run", str(reference), "--reference_checkpoint", str(step),
                       "--start_patching", str(args.start_patching)])
    return write_study_report(out, runs)


def write_study_report(out: Path, runs: dict[str, Path]) -> Path:
    """Learning curves of every run on one figure, and their phases in a table."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 4.5))
    lines = ["| run | plateau start | plateau end | plateau length | emergence (50%) | final accuracy |",
             "|---|---|---|---|---|---|"]
    for label, run in runs.items():
        rows = load_trajectory(run)
        ax_loss.plot(*series(rows, "seen", "attribute_loss"), label=label)
        ax_acc.plot(*series(rows, "seen", "attribute_accuracy"), label=label)
        p = run_phases(rows)
        cells = [p.phase1_end, p.plateau_end, p.plateau_length, p.emergence]
        text = ["-" if c is None else f"{c:,.0f}" for c in cells]
        final = series(rows, "seen", "attribute_accuracy")[1][-1]
        lines.append(f"| {label} | " + " | ".join(text) + f" | {final:.1%} |")
    ax_loss.axhline(run_phases(load_trajectory(runs["unpatched"])).baseline, ls="--", color="black",
                    label="no-knowledge baseline")
    for ax, name in ((ax_loss, "attribute loss (seen individuals)"), (ax_acc, "attribute accuracy (seen)")):
        ax.set_xlabel("training step")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "study.png", dpi=110)
    plt.close(fig)
    report = out / "study.md"
    report.write_text("# Attention patching\n\nEvery patched run starts from the reference's initial weights and "
                      "uses, in every layer, the attention patterns of the named reference checkpoint on its own "
                      "inputs (gradients stopped through them).\n\n![study](study.png)\n\n" + "\n".join(lines) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    (args,) = parse_recipe([PatchingStudyArguments], argv)
    print(f"study report: {run_study(args)}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
