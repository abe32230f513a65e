"""Attention-patching study: an unpatched reference run, then one rerun per reference checkpoint
with every attention pattern taken from that checkpoint, compared on one figure.

    python -m pipeline.studies.attention_patching --config recipes/studies/attention_patching.yaml

It is a study like any other (pipeline.studies.schema): the reference is its first run and the grid
goes over `reference_checkpoint`. Runs already finished are skipped and interrupted ones resumed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import RecipeError, run_cli
from common.recipe import parse_recipe

from ..run_folder import STUDY_FIGURE, STUDY_REFERENCE, STUDY_REPORT
from .figures import summarize_study
from .runner import run_study
from .schema import FirstRun, Study


@dataclass
class PatchingStudyArguments:
    """Which reference recipe to patch, with which checkpoints, from which step."""

    reference_config: str = field(metadata={"help": "Pretraining recipe of the unpatched reference run."})
    output_dir: str = field(metadata={"help": f"Study folder: {STUDY_REFERENCE}/, patched-<step>/, {STUDY_REPORT}, "
                                              f"{STUDY_FIGURE}."})
    reference_steps: list[int] = field(default_factory=lambda: [0], metadata={
        "help": "Reference checkpoints whose attention patterns are used, one patched run each."})
    start_patching: list[int] = field(default_factory=lambda: [0], metadata={
        "help": "Steps from which the patched runs are patched; several make a start x reference grid (claim C6), "
                "where a start equal to a reference step freezes attention from there."})

    def __post_init__(self):
        if isinstance(self.start_patching, int):  # one start step, as the field was before it took several
            self.start_patching = [self.start_patching]
        if not Path(self.reference_config).is_file():
            raise RecipeError(f"reference_config '{self.reference_config}' does not exist: point it at a pretraining "
                              f"recipe")

    def study(self) -> Study:
        out = Path(self.output_dir)
        grid, fixed, name = {"reference_checkpoint": self.reference_steps}, {}, "patched-{reference_checkpoint}"
        if len(self.start_patching) > 1:
            grid, name = {"start_patching": self.start_patching, **grid}, name + "-from-{start_patching}"
        else:
            fixed = {"start_patching": self.start_patching[0]}
        return Study(base=self.reference_config, output_dir=str(out), grid=grid, fixed=fixed, run_name=name,
                     pretrain=FirstRun(self.reference_config, str(out / STUDY_REFERENCE),
                                       {"checkpoint_at": self.reference_steps}))


def main(argv: list[str] | None = None) -> None:
    (args,) = parse_recipe([PatchingStudyArguments], argv)
    study = args.study()
    run_study(study)
    _, (report, *_) = summarize_study(study)
    print(f"study report: {report}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
