"""The builder's configuration: one dataclass, filled from a YAML recipe and flags."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from common.errors import RecipeError
from common.recipe import check_values


@dataclass
class CorpusConfig:
    """What corpus `python -m data_gen build` writes, and where."""

    output_dir: str = field(metadata={"help": "Folder to write the corpus to (must not exist unless --overwrite)."})
    n_individuals: int = field(default=64_000, metadata={"help": "Individuals whose biographies are trained on."})
    n_heldout: int = field(default=16_000, metadata={"help": "Held-out individuals, never trained on (hallucination)."})
    n_finetune: int = field(default=16_000, metadata={"help": "New individuals reserved for fine-tuning."})
    n_train_templates: int = field(
        default=20, metadata={"help": "Templates per attribute used for training; the others are for evaluation."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of every random choice: same config, same bytes."})
    n_first_names: int = field(default=900, metadata={"help": "First/middle names used (the first k of the list)."})
    n_last_names: int = field(default=1000, metadata={"help": "Last names used (the first k of the list)."})
    n_cities: int = field(default=800, metadata={"help": "Cities used for birth city and current location."})
    n_universities: int = field(default=200, metadata={"help": "Universities used."})
    n_majors: int = field(default=100, metadata={"help": "Majors used."})
    n_companies: int = field(default=500, metadata={"help": "Companies used."})
    year_min: int = field(default=1900, metadata={"help": "First possible birth year."})
    year_max: int = field(default=2100, metadata={"help": "Last possible birth year."})
    resources_dir: str | None = field(
        default=None, metadata={"help": "Folder with your own name, value and template lists (default: shipped)."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing corpus at output_dir."})

    def __post_init__(self):
        check_values(self, at_least_one=("n_individuals", "n_first_names", "n_last_names", "n_cities", "n_universities",
                                         "n_majors", "n_companies", "n_train_templates"),
                     at_least_zero=("n_heldout", "n_finetune"))
        if self.year_min > self.year_max:
            raise RecipeError(f"year_min ({self.year_min}) must not exceed year_max ({self.year_max})")

    @property
    def n_total(self) -> int:
        return self.n_individuals + self.n_heldout + self.n_finetune

    def to_dict(self) -> dict:
        """The config as saved with the corpus (where it was written is not part of what was built)."""
        values = asdict(self)
        del values["output_dir"], values["overwrite"]
        return values
