"""Recipe dataclasses of a toy-memory run: the task and its model, training, and fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import RecipeError
from common.recipe import check_choice, check_values

SCHEDULERS = ("cosine", "constant")


@dataclass
class MemoryArguments:
    """The task (random keys on the unit sphere, each assigned one of n_classes values) and the MLP learning it.
    A fine-tuning run must give the values its init_from was pretrained with (the defaults are the paper's)."""

    key_dim: int = field(default=64, metadata={"help": "Dimension of the keys (Gaussian, normalised)."})
    n_classes: int = field(default=30, metadata={"help": "Number of values a key can be assigned."})
    n_pairs: int = field(default=8192, metadata={"help": "Key-value pairs of pretraining (the old ones)."})
    n_heldout: int = field(default=1024, metadata={"help": "Pairs never trained on, evaluated as `heldout`."})
    pair_seed: int = field(default=0, metadata={"help": "Seed of the keys and their values."})
    hidden_size: int = field(default=256, metadata={"help": "ReLU units of the one hidden layer."})

    def __post_init__(self):
        check_values(self, at_least_one=("key_dim", "n_pairs", "n_heldout", "hidden_size"))
        if self.n_classes < 2:
            raise RecipeError(f"n_classes must be at least 2, got {self.n_classes}")


@dataclass
class ToyTrainArguments:
    """Where the run goes, AdamW and its schedule, the seeds and the evaluation steps."""

    output_dir: str = field(metadata={"help": "Run folder: trajectory, final checkpoint, figure."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a previous run in output_dir."})
    max_steps: int = field(default=16_000, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=128, metadata={"help": "Pairs per step."})
    learning_rate: float = field(default=0.03, metadata={"help": "Peak learning rate."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "cosine (to 0 at max_steps) or constant."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    seed: int = field(default=0, metadata={"help": "Seed of the model's initialisation."})
    data_seed: int | None = field(default=None, metadata={"help": "Seed of the batches (default: seed)."})
    eval_points: int = field(default=40, metadata={"help": "Evaluations at log-spaced steps (and at 0 and the end)."})

    def __post_init__(self):
        check_values(self, at_least_one=("max_steps", "batch_size"), at_least_zero=("weight_decay", "eval_points"),
                     positive=("learning_rate",))
        check_choice("lr_scheduler_type", self.lr_scheduler_type, SCHEDULERS)
        if self.data_seed is None:
            self.data_seed = self.seed


@dataclass
class ToyFinetuneArguments:
    """Fine-tuning (when init_from is set): the pretrained toy run, the new pairs, replay of the old ones."""

    init_from: str = field(default="", metadata={"help": "A pretrained toy run's folder or its checkpoint folder; "
                                                         "empty: pretrain from scratch."})
    n_new: int = field(default=1024, metadata={"help": "New pairs fine-tuned on (fine-tuning only)."})
    replay_weight: float = field(default=0.0, metadata={"help": "Old pairs drawn per new pair (as the language "
                                                                "model's Replay sampler); 0: no replay."})

    def __post_init__(self):
        check_values(self, at_least_one=("n_new",), at_least_zero=("replay_weight",))
