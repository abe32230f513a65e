"""Recipes: dataclass configs filled from a YAML file and the command line.

Precedence is dataclass default < YAML (``--config``) < command line, and both
``--key value`` and ``--key=value`` work. YAML values go through the same
argparse conversion as command-line values, so a wrong type fails the same way.
A YAML recipe may start from another with ``extends: <file>`` (a path relative to
it), whose keys it overrides. A dataclass may map former key names to current ones
in a ``renamed_keys`` class attribute: the old names still work, with a warning.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import re
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from common.errors import RecipeError


class _Parser(HfArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # "-1e-3" is a value, not a flag (argparse only knows "-1" and "-0.5"), so that it meets a clear check
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message: str):  # argparse would print the whole usage and exit
        raise RecipeError(message)


def to_flags(values: dict[str, Any]) -> list[str]:
    """`values` as command-line flags (a list gives several words); a None or empty value is left out, so the
    key keeps its default (argparse has no spelling for "none" or "empty")."""
    args: list[str] = []
    for key, value in values.items():
        if value is None or value == []:
            continue
        args += [f"--{key}", *(map(str, value) if isinstance(value, (list, tuple)) else [str(value)])]
    return args


def _unknown_key_error(key: str, known: Sequence[str], where: str,
                       elsewhere: dict[str, str] | None = None) -> RecipeError:
    if key in (elsewhere or {}):
        return RecipeError(f"key '{key}' in {where} is a key of {elsewhere[key]}, not of this command: remove it, or "
                           f"give it there")
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "see --help for the valid keys"
    return RecipeError(f"unknown key '{key}' in {where}: {hint}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML whose mappings may not give a key twice (PyYAML would silently keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML mapping, with a clear error (line and column) for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file '{path}' does not exist: check the --config path")
    try:
        values = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError(f"recipe file '{path}' is not valid YAML{where}: {problem}: fix that line") from err
    if not isinstance(values, dict):
        raise RecipeError(f"recipe file '{path}' must be a mapping of keys to values")
    return values


def load_recipe_file(path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe's keys, on top of those of the recipe it `extends` (recursively)."""
    path = Path(path)
    values = load_yaml(path)
    if "extends" not in values:
        return values
    base = path.parent / str(values.pop("extends"))
    if base.resolve() in seen:
        raise RecipeError(f"recipe '{path}' extends '{base}', which extends it back: remove one 'extends'")
    return {**load_recipe_file(base, (*seen, path.resolve())), **values}


def _nullable_keys(dataclass_types: Sequence[type]) -> set[str]:
    """The fields that may be None, read from the annotations (HfArgumentParser replaces `int | None` by `int`
    in the fields themselves)."""
    return {name for t in dataclass_types for name, hint in typing.get_type_hints(t).items()
            if type(None) in typing.get_args(hint)}


def renamed_keys(dataclass_types: Sequence[type]) -> dict[str, str]:
    """Former key names -> current ones, from the `renamed_keys` of the dataclasses (the one place they are
    read: for recipes, flags, study files and the recipes saved with runs)."""
    return {old: new for t in dataclass_types for old, new in getattr(t, "renamed_keys", {}).items()}


def _warn_renamed(old: str, new: str) -> None:
    print(f"warning: recipe key '{old}' is deprecated: use '{new}' (same meaning)", file=sys.stderr)


def rename_keys(values: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    """`values` with former key names replaced by current ones, warning once per old name."""
    for old in renames.keys() & values.keys():
        _warn_renamed(old, renames[old])
    return {renames.get(key, key): value for key, value in values.items()}


def _rename_flags(args: list[str], renames: dict[str, str]) -> list[str]:
    out = []
    for arg in args:
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key in renames:
            _warn_renamed(key, renames[key])
            arg = f"--{renames[key]}{eq}{value}"
        out.append(arg)
    return out


def parse_recipe(dataclass_types: Sequence[type], args: Sequence[str] | None = None,
                 elsewhere: dict[str, str] | None = None) -> tuple:
    """Parse ``--config recipe.yaml`` plus flags into one instance of each dataclass type. An unknown key
    that is one of `elsewhere` (key -> the command it belongs to) is named as that command's."""
    renames = renamed_keys(dataclass_types)
    args = _rename_flags(list(sys.argv[1:] if args is None else args), renames)
    optional = _nullable_keys(dataclass_types)
    parser = _Parser(list(dataclass_types), allow_abbrev=False)  # a typo must not pass as an abbreviation
    parser.add_argument("--config", default=None, help="YAML recipe; command-line flags override its keys")
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(args)
    known_keys = [f.name for t in dataclass_types for f in dataclasses.fields(t)]
    yaml_args: list[str] = []
    if known.config:
        values = rename_keys(load_recipe_file(known.config), renames)
        for key, value in values.items():
            if key not in known_keys:
                raise _unknown_key_error(key, known_keys, f"recipe '{known.config}'", elsewhere)
            if value is None and key not in optional:
                raise RecipeError(f"recipe '{known.config}' gives '{key}' no value (null): give it one or remove the "
                                  f"line")
        yaml_args = to_flags(values)
    *parsed, remaining = parser.parse_args_into_dataclasses(
        args=yaml_args + args, return_remaining_strings=True, look_for_args_file=False
    )  # parsed ends with a namespace holding --config
    if remaining:
        flag = next((a for a in remaining if a.startswith("--")), remaining[0])
        raise _unknown_key_error(flag.lstrip("-").split("=")[0], known_keys, "the command line", elsewhere)
    return tuple(parsed[: len(dataclass_types)])


def check_values(config, at_least_one: Sequence[str] = (), at_least_zero: Sequence[str] = (),
                 positive: Sequence[str] = (), fractions: Sequence[str] = ()) -> None:
    """Range checks of a dataclass config: every float field finite, then the named fields (those set,
    not None) at least 1, at least 0, above 0, or in [0, 1)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise RecipeError(f"{f.name} must be a finite number, got {value}")
    for names, ok, wanted in ((at_least_one, lambda v: v >= 1, "at least 1"), (at_least_zero, lambda v: v >= 0,
                              "0 or more"), (positive, lambda v: v > 0, "positive"),
                              (fractions, lambda v: 0 <= v < 1, "in [0, 1)")):
        for name in names:
            value = getattr(config, name)
            if value is not None and not ok(value):
                raise RecipeError(f"{name} must be {wanted}, got {value}")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise RecipeError(f"{name} '{value}' is unknown: use one of {', '.join(choices)}")
