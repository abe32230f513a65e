"""What a study costs before it runs: its runs, optimizer steps, biographies and training FLOPs, and
the GPU-hours those take at an assumed utilisation. An estimate, not a measurement: the FLOPs are
train/flops.py's per token (evaluations not counted) over biographies of BIOGRAPHY_TOKENS tokens, and the
hours assume ASSUMED_MFU of an H100's 16-bit peak: 10%, since models of 44M-400M parameters on biographies of
64 tokens are bound by kernel launches and memory more than by matrix math (large models reach 40-50%)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from common.recipe import parse_recipe

from ..config import ModelArguments
from ..train.flops import PEAK_TFLOPS_16BIT, flops_per_token
from .runner import first_run_flags, first_run_stage, run_flags
from .schema import STAGE_ARGUMENTS, TOY_MEMORY, Study

BIOGRAPHY_TOKENS = 64  # the mean biography of the demo corpus (55-73 tokens): six sentences, one token a value
PAPER_VOCABULARY = 4_000  # names, cities, universities, majors, companies, dates and template words
ASSUMED_MFU = 0.1
H100_FLOPS = PEAK_TFLOPS_16BIT["H100 SXM"] * 1e12


@dataclass
class StudyPlan:
    runs: int
    steps: int
    biographies: int
    flops: float  # training FLOPs of the language-model runs (the toy memory's are negligible)

    @property
    def gpu_hours(self) -> float:
        return self.flops / (ASSUMED_MFU * H100_FLOPS) / 3600


def _configs(stage: str, flags: list[str]) -> dict[str, object]:
    return {type(c).__name__: c for c in parse_recipe(STAGE_ARGUMENTS[stage], flags)}


def _training(configs: dict) -> object:
    return next(c for c in configs.values() if hasattr(c, "max_steps"))


def study_plan(study: Study) -> StudyPlan:
    """The study's runs (its first run included), steps, biographies and training FLOPs."""
    runs = ([(first_run_stage(study), first_run_flags(study))] if study.pretrain is not None else []) + [
        (study.stage, run_flags(point, study)) for point in study.points()]
    first_model = None
    if study.pretrain is not None and study.stage != TOY_MEMORY:
        first_model = _configs(*runs[0])[ModelArguments.__name__]
    plan = StudyPlan(len(runs), 0, 0, 0.0)
    for stage, flags in runs:
        configs = _configs(stage, flags)
        training = _training(configs)
        plan.steps += training.max_steps
        plan.biographies += training.max_steps * training.batch_size
        model = configs.get(ModelArguments.__name__, first_model)
        if stage != TOY_MEMORY and model is not None:
            sizes = SimpleNamespace(**model.sizes(), vocab_size=PAPER_VOCABULARY)
            plan.flops += training.max_steps * training.batch_size * BIOGRAPHY_TOKENS * flops_per_token(
                sizes, BIOGRAPHY_TOKENS)
    return plan


def plan_table(studies: dict[str, Study], files: dict[str, str], scale: str) -> str:
    """Markdown: each study's runs, steps, biographies and estimated H100 GPU-hours, and their sum."""
    plans = {name: study_plan(study) for name, study in studies.items()}
    lines = [f"# The {scale}-scale studies: what they cost", "",
             f"Estimated, not measured: training FLOPs of biographies of {BIOGRAPHY_TOKENS} tokens at "
             f"{ASSUMED_MFU:.0%} of an H100's 16-bit peak (pipeline/studies/plan.py says why); evaluations not "
             "counted, and a first run shared by several studies counted in each.", "",
             "| study | file | runs | steps | biographies (pairs for the toy memory) | GPU-hours (estimate) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {name} | `{files[name]}` | {p.runs} | {p.steps:,} | {p.biographies:,} | {p.gpu_hours:,.1f} |"
              for name, p in plans.items()]
    total = StudyPlan(sum(p.runs for p in plans.values()), sum(p.steps for p in plans.values()),
                      sum(p.biographies for p in plans.values()), sum(p.flops for p in plans.values()))
    lines += [f"| all | | {total.runs} | {total.steps:,} | {total.biographies:,} | {total.gpu_hours:,.1f} |", ""]
    return "\n".join(lines)
