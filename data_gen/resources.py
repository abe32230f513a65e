"""The name, value and template lists a corpus is drawn from (shipped in `resources/`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from common.errors import RecipeError

from .config import CorpusConfig
from .layout import TEMPLATES

RESOURCES = Path(__file__).parent / "resources"
ATTRIBUTES = ("birth_date", "birth_city", "current_location", "university", "major", "company")
MAX_TEMPLATES = 127  # per attribute: template indices are stored as int8
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
_LISTS = {"n_first_names": "first_names.txt", "n_last_names": "last_names.txt", "n_cities": "cities.txt",
          "n_universities": "universities.txt", "n_majors": "majors.txt", "n_companies": "companies.txt"}


@dataclass(frozen=True)
class Pools:
    """Everything an individual can be: name parts and, per attribute, the values of each value token.

    An attribute value is one token per slot: birth_date has three slots (day, month,
    year), every other attribute one. Individuals store one index per slot.
    """

    first_names: list[str]
    last_names: list[str]
    slots: dict[str, list[list[str]]]
    templates: dict[str, list[str]]

    @property
    def name_space(self) -> int:
        return len(self.first_names) ** 2 * len(self.last_names)

    def tokens(self) -> list[str]:
        """Every name part and value token, each of which must be a single token."""
        values = {v for slots in self.slots.values() for slot in slots for v in slot}
        return sorted(values | set(self.first_names) | set(self.last_names))


def _read_list(folder: Path, filename: str, count: int, key: str) -> list[str]:
    path = folder / filename
    if not path.is_file():
        raise RecipeError(f"resource list '{path}' is missing: point resources_dir at a folder holding {filename}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(set(lines)) != len(lines):
        raise RecipeError(f"resource list '{path}' has duplicate lines: values must be distinct")
    if count > len(lines):
        raise RecipeError(f"{key}={count} but '{path}' has only {len(lines)} entries: lower {key}")
    return lines[:count]


def _read_templates(folder: Path, n_train: int) -> dict[str, list[str]]:
    path = folder / TEMPLATES
    if not path.is_file():
        raise RecipeError(f"template file '{path}' is missing: point resources_dir at a folder holding {TEMPLATES}")
    templates = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(templates, dict) or set(templates) != set(ATTRIBUTES):
        raise RecipeError(f"'{path}' must map exactly the attributes {', '.join(ATTRIBUTES)} to template lists")
    counts = {len(texts) for texts in templates.values()}
    if len(counts) > 1 or max(counts) > MAX_TEMPLATES:
        raise RecipeError(f"'{path}' must give every attribute the same number of templates, at most {MAX_TEMPLATES} "
                          f"(indices are stored as int8); it has {', '.join(map(str, sorted(counts)))}")
    for attribute, texts in templates.items():
        if len(texts) <= n_train:
            raise RecipeError(f"'{path}' has {len(texts)} {attribute} templates but n_train_templates={n_train}: "
                              f"lower n_train_templates below {len(texts)} so some are left for evaluation")
        for text in texts:
            if text.count("{name}") != 1 or text.count("{value}") != 1 or text.index("{name}") > text.index("{value}"):
                raise RecipeError(f"template '{text}' must hold one {{name}} followed later by one {{value}}")
    return {attribute: list(templates[attribute]) for attribute in ATTRIBUTES}


def load_pools(config: CorpusConfig) -> Pools:
    """Read the lists named by the config, cut to its pool sizes."""
    folder = Path(config.resources_dir) if config.resources_dir else RESOURCES
    lists = {key: _read_list(folder, filename, getattr(config, key), key) for key, filename in _LISTS.items()}
    days = [str(d) for d in range(1, 32)]
    years = [str(y) for y in range(config.year_min, config.year_max + 1)]
    slots = {
        "birth_date": [days, list(MONTHS), years],
        "birth_city": [lists["n_cities"]],
        "current_location": [lists["n_cities"]],
        "university": [lists["n_universities"]],
        "major": [lists["n_majors"]],
        "company": [lists["n_companies"]],
    }
    return Pools(lists["n_first_names"], lists["n_last_names"], slots,
                 _read_templates(folder, config.n_train_templates))
