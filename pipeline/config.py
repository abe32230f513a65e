"""Recipe dataclasses of a training run, one per concern.

A recipe stays flat (YAML keys and command-line flags are field names): `TrainArguments` is every
training section at once, and code takes the section it needs (`OptimizerArguments`, ...).
Schedules share one vocabulary: `*_points` counts log-spaced steps, `*_steps` is an interval (as in
the Hugging Face Trainer's `save_steps`), `*_at` lists steps.
"""

from __future__ import annotations

import importlib.util
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import ClassVar

from accelerate.tracking import LOGGER_TYPE_TO_CLASS
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from common.errors import RecipeError
from common.recipe import check_choice, check_values
from data_gen.samplers import SamplerConfig

from .run_folder import EXECUTION_CHANGES

# attention kernel -> the package it needs (module, pip requirement), None for those torch has
ATTENTION_PACKAGES = {"sdpa": None, "eager": None,
                      "flash_attention_2": ("flash_attn", "flash-attn --no-build-isolation")}
SCHEDULERS = ("cosine", "constant", "linear", "cosine_with_min_lr", "constant_with_warmup")
PRESETS = {
    "tiny": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 2},
    "demo": {"num_hidden_layers": 2, "hidden_size": 128, "intermediate_size": 512, "num_attention_heads": 4},
    "44M": {"num_hidden_layers": 8, "hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8},
    "163M": {"num_hidden_layers": 12, "hidden_size": 896, "intermediate_size": 3584, "num_attention_heads": 16},
    "400M": {"num_hidden_layers": 12, "hidden_size": 1536, "intermediate_size": 6144, "num_attention_heads": 12},
}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")  # the last two trace the same graphs without generating code
FREEZE = ("none", "mlp", "attention")
LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ModelArguments:
    """Which transformers decoder to build (a size preset, any field overridable)."""

    model_preset: str = field(default="44M", metadata={"help": f"Size preset: {', '.join(PRESETS)}."})
    model_type: str = field(default="llama", metadata={"help": "A transformers decoder type with Llama-style config "
                                                               "names (llama, mistral, qwen2, ...), or hawk: De et "
                                                               "al.'s recurrent model (RG-LRU blocks, no attention)."})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "Override the preset's layer count."})
    hidden_size: int | None = field(default=None, metadata={"help": "Override the preset's model width."})
    intermediate_size: int | None = field(default=None, metadata={"help": "Override the preset's MLP width."})
    num_attention_heads: int | None = field(default=None, metadata={"help": "Override the preset's head count."})

    def __post_init__(self):
        check_choice("model_preset", self.model_preset, tuple(PRESETS))
        check_values(self, at_least_one=("num_hidden_layers", "hidden_size", "intermediate_size",
                                         "num_attention_heads"))

    def sizes(self) -> dict[str, int]:
        """The preset's sizes with the overrides applied."""
        sizes = dict(PRESETS[self.model_preset])
        sizes.update({k: getattr(self, k) for k in sizes if getattr(self, k) is not None})
        return sizes


@dataclass
class DataArguments(SamplerConfig):
    """Which corpus to train on, how its individuals are drawn (the sampler keys), how many are evaluated."""

    corpus: str = field(kw_only=True, metadata={"help": "Corpus folder written by `python -m data_gen build`, or "
                                                        "a Hub dataset id."})
    eval_individuals: int = field(
        default=1000, kw_only=True, metadata={"help": "Individuals evaluated per group (seen, held-out, ...), "
                                                      "spread evenly over their indices; 0 evaluates all."})

    eval_ranges: list[str] = field(
        default_factory=list, kw_only=True, metadata={"help": "Blocks of training individuals evaluated whole, each as "
                                                              "its own group: 'FIRST:END' (END excluded), e.g. '0:100' "
                                                              "(group individuals_0-99)."})

    shuffle_sentences: bool = field(
        default=True, kw_only=True, metadata={"help": "Each biography's six sentences in a random order (the paper's "
                                                      "shuffle_templates); false: always in one order (claim C4)."})
    final_eval_individuals: int | None = field(
        default=None, kw_only=True, metadata={"help": "Individuals evaluated per group at the last step (0: all, as "
                                                      "capacity runs want; default: eval_individuals)."})

    def __post_init__(self):
        super().__post_init__()
        if self.eval_individuals < 0:
            raise RecipeError(f"eval_individuals must be 0 (all) or more, got {self.eval_individuals}")
        check_values(self, at_least_zero=("final_eval_individuals",))
        self.ranges()

    def ranges(self, population: int | None = None) -> list[tuple[int, int]]:
        """The (first, end) of each block of `eval_ranges`, checked against the training population if given."""
        try:
            ranges = [(int(a), int(b)) for a, b in (text.split(":") for text in self.eval_ranges)]
        except ValueError:
            ranges = [(1, 0)]
        if any(not 0 <= first < end <= (population or end) for first, end in ranges):
            raise RecipeError(f"eval_ranges {self.eval_ranges} must be blocks 'FIRST:END' with 0 <= FIRST < END"
                              + (f" <= the corpus's {population} training individuals" if population else "")
                              + ", e.g. '0:100'")
        return ranges


@dataclass
class RunArguments:
    """Where the run goes, how long it is and what it draws."""

    output_dir: str = field(metadata={"help": "Run folder: trajectory, checkpoints, tracker logs, report."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a previous run in output_dir."})
    max_steps: int = field(default=16_000, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=128, metadata={"help": "Global batch (biographies per step, all processes)."})
    micro_batch_size: int | None = field(
        default=None, metadata={"help": "Biographies per process per forward pass (default: batch_size / processes);"
                                        " smaller values accumulate gradients."})
    seed: int = field(default=0, metadata={"help": "Seed of the model's initialisation."})
    data_seed: int | None = field(default=None, metadata={"help": "Seed of the biography stream (default: seed)."})
    extend_to: int = field(default=0, metadata={
        "help": "Train the run already in output_dir on to this step, from its last resume checkpoint (the rest of "
                "its command unchanged); it replaces max_steps, and the learning-rate schedule is that of a run of "
                "this many steps: a constant one gives the longer run exactly, a decaying one is rebuilt (the report "
                "says which). 0: no extension."})
    extended_from: list[int] = field(default_factory=list, metadata={
        "help": "Recorded by extend_to in the run's saved recipe: its max_steps before each extension (not set "
                "by hand)."})
    execution_changes: list[str] = field(default_factory=list, metadata={
        "help": "Recorded in the run's saved recipe when it resumed with execution keys changed: 'step S: key old -> "
                "new' each (not set by hand)."})

    # a run folder moved elsewhere is the same run; micro-batches keep the global batch
    execution_keys: ClassVar[frozenset[str]] = frozenset({"output_dir", "micro_batch_size"})

    def check_run(self) -> None:
        check_values(self, at_least_one=("max_steps", "batch_size", "micro_batch_size"), at_least_zero=("extend_to",))
        if self.data_seed is None:
            self.data_seed = self.seed
        if self.extend_to:
            self.max_steps = self.extend_to


@dataclass
class OptimizerArguments:
    """AdamW and its learning-rate schedule."""

    learning_rate: float = field(default=4e-4, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW's decay rate of the gradient's mean."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW's decay rate of the squared gradient's mean."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW's epsilon, added to the denominator."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": f"One of {', '.join(SCHEDULERS)}."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    lr_schedule_steps: int | None = field(default=None, metadata={
        "help": "Length of the learning-rate schedule (default: max_steps). Longer, the run is exactly the first "
                "max_steps steps of a run of that many, e.g. to measure a plateau before the schedule decays."})

    def check_optimizer(self) -> None:
        check_values(self, at_least_one=("lr_schedule_steps",),
                     at_least_zero=("weight_decay", "max_grad_norm", "warmup_steps"),
                     positive=("learning_rate", "adam_epsilon"), fractions=("adam_beta1", "adam_beta2"))
        check_choice("lr_scheduler_type", self.lr_scheduler_type, SCHEDULERS)


def describe_extension(recipe: dict) -> str | None:
    """What the learning rate of an extended run (`extended_from` in its recipe) did, in a sentence; None for a
    run that was never extended."""
    if not recipe.get("extended_from"):
        return None
    steps, kind = [*recipe["extended_from"], recipe["max_steps"]], recipe["lr_scheduler_type"]
    history = " then ".join(f"{s:,}" for s in steps)
    if recipe.get("lr_schedule_steps"):
        schedule = (f"its {kind} learning-rate schedule runs over lr_schedule_steps={recipe['lr_schedule_steps']:,}, "
                    f"not max_steps, so it is the run a {steps[-1]:,}-step recipe gives from the start")
    elif kind.startswith("constant"):
        schedule = (f"its learning rate is constant after the warm-up, so it is the run a {steps[-1]:,}-step recipe "
                    f"gives from the start")
    else:
        schedule = (f"its {kind} learning-rate schedule was rebuilt over {steps[-1]:,} steps at each extension: the "
                    f"rate after step {steps[-2]:,} is that of a {steps[-1]:,}-step run, not the end of the shorter "
                    f"run's decay (set lr_schedule_steps to keep one schedule across extensions)")
    return f"Trained to {history} steps (extend_to): {schedule}."


def describe_execution_changes(recipe: dict) -> str | None:
    """The execution keys a resumed run changed (`execution_changes` in its recipe), in a sentence; None if none."""
    if not recipe.get(EXECUTION_CHANGES):
        return None
    return (f"Resumed with its execution changed ({'; '.join(recipe[EXECUTION_CHANGES])}): how the steps were "
            f"computed, not what they learn, so they agree with an unchanged run up to rounding (the rounding of "
            f"the precision, where it changed).")


@dataclass
class ScheduleArguments:
    """When to evaluate, checkpoint and log."""

    renamed_keys: ClassVar[dict[str, str]] = {"eval_every": "eval_steps", "checkpoint_steps": "checkpoint_at"}
    execution_keys: ClassVar[frozenset[str]] = frozenset({"save_steps", "logging_steps", "report_to"})

    eval_points: int = field(default=40, metadata={"help": "Evaluations at log-spaced steps (and at 0 and the end)."})
    eval_steps: int = field(default=0, metadata={"help": "Also evaluate every k steps (0: only log-spaced). "
                                                         "Formerly eval_every."})
    checkpoint_points: int = field(default=8, metadata={"help": "Permanent checkpoints at log-spaced steps."})
    checkpoint_at: list[int] = field(default_factory=list, metadata={"help": "More permanent checkpoints at these "
                                                                             "steps. Formerly checkpoint_steps."})
    save_steps: int = field(default=1000, metadata={"help": "Resume checkpoint every k steps and at the end (latest "
                                                            "kept); 0 saves none, so an interrupted run restarts."})
    logging_steps: int = field(default=10, metadata={"help": "Log training loss every k steps."})
    report_to: str = field(default="tensorboard", metadata={"help": "Tracker (tensorboard, wandb, ...) or none."})

    def check_schedule(self) -> None:
        check_values(self, at_least_one=("logging_steps",),
                     at_least_zero=("eval_points", "eval_steps", "checkpoint_points", "save_steps"))
        check_choice("report_to", self.report_to, ("none", "all", *LOGGER_TYPE_TO_CLASS))
        if self.report_to not in ("none", "all") and importlib.util.find_spec(self.report_to) is None:
            raise RecipeError(f"report_to '{self.report_to}' needs the {self.report_to} package: pip install "
                              f"{self.report_to}, or pass --report_to none")


@dataclass(frozen=True)
class Batching:
    """How a run's batches are built on its device: the batch keys of PerformanceArguments, defaults resolved."""

    prefetch_batches: int
    pad_to_multiple_of: int
    fixed_length: bool
    packing: bool


@dataclass
class PerformanceArguments:
    """How fast: precision, compilation, attention kernel, batching and prefetching (all execution keys: the same
    run computed another way, equal up to rounding; precision's rounding is the largest, and a change is warned)."""

    execution_keys: ClassVar[frozenset[str]] = frozenset({
        "mixed_precision", "torch_compile", "torch_compile_mode", "torch_compile_backend", "fixed_length", "packing",
        "attn_implementation", "eval_batch_size", "pad_to_multiple_of", "prefetch_batches", "peak_tflops"})

    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16."})
    torch_compile: bool = field(default=False, metadata={"help": "Compile the training step with torch.compile "
                                                                 "(inductor)."})
    torch_compile_mode: str = field(default="default", metadata={
        "help": f"torch.compile mode: {', '.join(COMPILE_MODES)} (reduce-overhead: CUDA graphs; needs fixed_length)."})
    torch_compile_backend: str = field(default="inductor", metadata={
        "help": f"torch.compile backend: {', '.join(COMPILE_BACKENDS)} (the last two only trace: for tests and "
                f"debugging)."})
    fixed_length: bool | None = field(default=None, metadata={
        "help": "Pad every batch to the longest biography the corpus can draw: fixed shapes, so no recompiles and "
                "CUDA graphs (default: on a GPU; on a CPU batches are padded to their longest biography)."})
    packing: bool | None = field(default=None, metadata={
        "help": "Lay each micro-batch's biographies end to end in one row, with positions from 0 in each and "
                "attention within each (FlexAttention): no padding work. With fixed_length the row holds the run's "
                "largest micro-batch. Default: on for compiled runs with sdpa on a GPU, where FlexAttention is a "
                "fused kernel (eager, it computes every pair of positions); never by default for Hawk."})
    attn_implementation: str = field(default="sdpa", metadata={"help": f"One of {', '.join(ATTENTION_PACKAGES)}."})
    eval_batch_size: int = field(default=1024, metadata={"help": "Queries per evaluation forward pass."})
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "Pad batches to a multiple of this length (default: 8 on a GPU, 1 on a CPU)."})
    prefetch_batches: int | None = field(
        default=None, metadata={"help": "Steps of batches built ahead in a background thread (default: 2 on a GPU; "
                                        "0 on a CPU, whose cores the thread would take from training)."})
    peak_tflops: float | None = field(default=None, metadata={"help": "Peak 16-bit TFLOP/s per device for MFU "
                                                                      "(default: looked up from the GPU's name)."})

    def batching(self, on_gpu: bool, recurrent: bool = False) -> Batching:
        """The batch keys as set, else their defaults on a GPU or a CPU (as their help says) and, for packing,
        for a `recurrent` model (Hawk)."""
        return Batching(
            prefetch_batches=self.prefetch_batches if self.prefetch_batches is not None else (2 if on_gpu else 0),
            pad_to_multiple_of=self.pad_to_multiple_of or (8 if on_gpu else 1),
            fixed_length=self.fixed_length if self.fixed_length is not None else on_gpu,
            packing=self.packs(on_gpu, recurrent))

    def packs(self, on_gpu: bool, recurrent: bool = False) -> bool:
        """Whether rows are packed: `packing`, or by default for compiled GPU runs with sdpa (the only attention
        that keeps to each biography; FlexAttention, fused there) of a model with attention (a `recurrent` one's
        state would run across the biographies of a row)."""
        if self.packing is not None:
            return self.packing
        return on_gpu and self.torch_compile and self.attn_implementation == "sdpa" and not recurrent

    @property
    def compile_backend(self) -> str | None:
        """The backend everything compiled is compiled with (the step, evaluation), or None."""
        return self.torch_compile_backend if self.torch_compile else None

    def check_performance(self) -> None:
        check_choice("mixed_precision", self.mixed_precision, ("no", "fp16", "bf16"))
        check_choice("torch_compile_mode", self.torch_compile_mode, COMPILE_MODES)
        check_choice("torch_compile_backend", self.torch_compile_backend, COMPILE_BACKENDS)
        check_choice("attn_implementation", self.attn_implementation, tuple(ATTENTION_PACKAGES))
        module, requirement = ATTENTION_PACKAGES[self.attn_implementation] or (None, None)
        if module and importlib.util.find_spec(module) is None:
            raise RecipeError(f"attn_implementation {self.attn_implementation} needs the {module} package, which is "
                              f"not installed: pip install {requirement} (CUDA GPUs), or pass --attn_implementation "
                              f"sdpa")
        if self.packing and self.attn_implementation != "sdpa":
            raise RecipeError(f"packing needs attention that stays within each biography, which only "
                              f"attn_implementation sdpa provides (got {self.attn_implementation}): set "
                              f"--attn_implementation sdpa or --packing false")
        check_values(self, at_least_one=("eval_batch_size", "pad_to_multiple_of"), at_least_zero=("prefetch_batches",),
                     positive=("peak_tflops",))


@dataclass
class HubArguments:
    """Pushing checkpoints to the Hugging Face Hub (execution keys: where copies go, not what is learned)."""

    execution_keys: ClassVar[frozenset[str]] = frozenset({
        "push_to_hub", "hub_model_id", "hub_private_repo", "hub_min_commit_interval", "hub_wait_at_end"})

    push_to_hub: bool = field(default=False, metadata={"help": "Push each permanent checkpoint to its own revision "
                                                               "of hub_model_id, in the background (token: "
                                                               "`hf auth login` or HF_TOKEN)."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Model repository, owner/name."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the repository private."})
    hub_min_commit_interval: float = field(default=30.0, metadata={"help": "Seconds between two commits (the Hub "
                                                                           "limits commits per hour)."})
    hub_wait_at_end: float = field(default=300.0, metadata={"help": "Seconds the end of a run waits for its queued "
                                                                    "pushes; what is left is named, with the "
                                                                    "`python -m pipeline.hub push` that finishes it."})

    def check_hub(self) -> None:
        check_values(self, at_least_zero=("hub_min_commit_interval", "hub_wait_at_end"))
        if self.push_to_hub and not self.hub_model_id:
            raise RecipeError("push_to_hub is set but hub_model_id is not: name the repository, e.g. --hub_model_id "
                              "you/fact-model")
        if self.hub_model_id is not None:
            try:
                validate_repo_id(self.hub_model_id)
            except HFValidationError:
                raise RecipeError(f"hub_model_id '{self.hub_model_id}' is not a Hub repository id: use owner/name "
                                  f"(letters, digits, '-', '_' and '.', at most 96 characters), e.g. "
                                  f"you/fact-model") from None


@dataclass
class TrainArguments(HubArguments, PerformanceArguments, ScheduleArguments, OptimizerArguments, RunArguments):
    """Every training section, flat."""

    def __post_init__(self):
        self.check_run()
        self.check_optimizer()
        self.check_schedule()
        self.check_performance()
        self.check_hub()


@dataclass
class FinetuneTrainArguments(TrainArguments):
    """Training arguments with the fine-tuning defaults of the paper: constant learning rate 3e-5."""

    learning_rate: float = field(default=3e-5, metadata={"help": "Learning rate."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": f"One of {', '.join(SCHEDULERS)}."})


@dataclass
class PatchingArguments:
    """Attention patching (optional): train with the attention patterns of another run's checkpoint."""

    reference_run: str | None = field(default=None, metadata={"help": "output_dir of the reference run; its step-0 "
                                                                       "checkpoint gives the initial weights."})
    reference_checkpoint: int | None = field(default=None, metadata={"help": "Step of the reference run's "
                                                                             "checkpoint whose patterns are used."})
    start_patching: int = field(default=0, metadata={"help": "Patch from this step on (the optimizer state is reset "
                                                             "then); equal to reference_checkpoint, it freezes "
                                                             "attention."})

    def __post_init__(self):
        if self.reference_run and self.reference_checkpoint is None:
            raise RecipeError("reference_run is set but reference_checkpoint is not: name the reference step to patch "
                              "with")
        check_values(self, at_least_zero=("start_patching",))


@dataclass
class FinetuneArguments:
    """Fine-tuning: the pretrained weights, the individuals trained on, replay, and what is trained."""

    init_from: str = field(metadata={"help": "Pretrained weights: a checkpoint folder (runs/demo/checkpoints/"
                                             "step-000001500) or a Hub model id."})
    init_revision: str | None = field(default=None, metadata={"help": "Hub revision of init_from (branch, tag or "
                                                                      "commit, e.g. step-000016000)."})
    new_split: str = field(default="finetune", metadata={"help": "Where the fine-tuned individuals come from: "
                                                                 "finetune (never seen) or train (seen in "
                                                                 "pretraining, e.g. the rare ones)."})
    n_individuals_finetune: int = field(default=1000, metadata={"help": "How many individuals are fine-tuned on."})
    new_offset: int = field(default=0, metadata={"help": "Index in new_split of the first one (e.g. n_individuals -"
                                                         " n_individuals_finetune: the rarest of a power law)."})
    replay_weight: float = field(default=0.0, metadata={"help": "Biographies of pretraining individuals (drawn "
                                                                "uniformly) per new biography; 0: no replay."})
    freeze: str = field(default="none", metadata={"help": f"Parameters kept fixed: {', '.join(FREEZE)}."})
    lora_rank: int = field(default=0, metadata={"help": "Train LoRA adapters of this rank (peft) instead of the "
                                                        "weights; 0: off."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator."})
    lora_target_modules: list[str] = field(default_factory=lambda: list(LORA_MODULES),
                                           metadata={"help": "Modules given adapters (default: every projection)."})
    allow_other_corpus: bool = field(default=False, metadata={
        "help": "Fine-tune although init_from was pretrained on another corpus than --corpus (its old individuals are "
                "then people the model never saw, so forgetting is not measured); the report says so."})

    def __post_init__(self):
        if self.new_split not in ("finetune", "train"):
            raise RecipeError(f"new_split must be finetune or train, got '{self.new_split}'")
        check_values(self, at_least_one=("n_individuals_finetune",), at_least_zero=("new_offset", "replay_weight",
                                                                                      "lora_rank"),
                     positive=("lora_alpha",))
        if self.freeze not in FREEZE:
            raise RecipeError(f"freeze must be one of {', '.join(FREEZE)}, got '{self.freeze}'")
        if self.lora_rank and self.freeze != "none":
            raise RecipeError("lora_rank and freeze both set: LoRA already keeps every pretrained weight fixed, "
                              "use one of them")


def recipe_dict(*configs) -> dict:
    """The resolved recipe: every field of every config, flat, as saved with a run."""
    return {key: value for config in configs for key, value in asdict(config).items()}


def field_defaults(*types) -> dict:
    """Every field's default (for fields that have one), as a recipe holds it."""
    defaults = {}
    for t in types:
        for f in fields(t):
            if f.default is not MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not MISSING:
                defaults[f.name] = f.default_factory()
    return defaults


def execution_keys(*types) -> frozenset[str]:
    """The keys of `types` that say how a run is executed, not what it learns (each section's `execution_keys`):
    a run resumes with them changed. Every other key is the run's identity."""
    return frozenset().union(*(vars(base).get("execution_keys", ()) for t in types for base in t.__mro__))


def field_names(*types) -> set[str]:
    return {f.name for t in types for f in fields(t)}


PRETRAIN_ARGUMENTS = (ModelArguments, DataArguments, TrainArguments, PatchingArguments)
FINETUNE_ARGUMENTS = (DataArguments, FinetuneTrainArguments, FinetuneArguments)
STAGE_COMMANDS = {PRETRAIN_ARGUMENTS: "pretraining (python -m pipeline.pretrain)",
                  FINETUNE_ARGUMENTS: "fine-tuning (python -m pipeline.finetune)"}


def other_stage_keys(arguments: tuple) -> dict[str, str]:
    """The keys of the other training stage than the one of `arguments` that it lacks, each naming that
    stage's command (parse_recipe's `elsewhere`)."""
    other = next(a for a in STAGE_COMMANDS if a != arguments)
    return dict.fromkeys(field_names(*other) - field_names(*arguments), STAGE_COMMANDS[other])
