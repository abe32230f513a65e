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
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


class RecipeError(ValueError):
    """A user mistake in a recipe, a path or a value; its message says how to fix it."""


class _Parser(HfArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # "-1e-3" is a value, not a flag (argparse only knows "-1" and "-0.5"), so that it meets a clear check
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message: str):  # argparse would print the whole usage and exit
        raise RecipeError(message)


def _yaml_to_args(values: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in values.items():
        if value is None or value == []:  # argparse has no spelling for "none" or "empty": keep the default
            continue
        args.append(f"--{key}")
        if isinstance(value, (list, tuple)):
            args.extend(str(v) for v in value)
        else:
            args.append(str(value))
    return args


def _unknown_key_error(key: str, known: Sequence[str], where: str) -> RecipeError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "see --help for the valid keys"
    return RecipeError(f"unknown key '{key}' in {where}: {hint}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML mapping, with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file '{path}' does not exist: check the --config path")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe file '{path}' is not valid YAML: {str(err).splitlines()[0]}") from err
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


def _renames(dataclass_types: Sequence[type]) -> dict[str, str]:
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


def parse_recipe(dataclass_types: Sequence[type], args: Sequence[str] | None = None) -> tuple:
    """Parse ``--config recipe.yaml`` plus flags into one instance of each dataclass type."""
    renames = _renames(dataclass_types)
    args = _rename_flags(list(sys.argv[1:] if args is None else args), renames)
    parser = _Parser(list(dataclass_types), allow_abbrev=False)  # a typo must not pass as an abbreviation
    parser.add_argument("--config", default=None, help="YAML recipe; command-line flags override its keys")
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(args)
    known_keys = [f.name for t in dataclass_types for f in dataclasses.fields(t)]
    yaml_args: list[str] = []
    if known.config:
        values = rename_keys(load_recipe_file(known.config), renames)
        for key in values:
            if key not in known_keys:
                raise _unknown_key_error(key, known_keys, f"recipe '{known.config}'")
        yaml_args = _yaml_to_args(values)
    *parsed, remaining = parser.parse_args_into_dataclasses(
        args=yaml_args + args, return_remaining_strings=True, look_for_args_file=False
    )  # parsed ends with a namespace holding --config
    if remaining:
        flag = next((a for a in remaining if a.startswith("--")), remaining[0])
        raise _unknown_key_error(flag.lstrip("-").split("=")[0], known_keys, "the command line")
    return tuple(parsed[: len(dataclass_types)])


class RunError(RuntimeError):
    """A fault during a run (non-finite loss, disk full, a stop signal): what happened, what was kept,
    what to do; `exit_code` is the process's exit status."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def run_cli(main: Callable[[], Any]) -> int:
    """Run an entry point; a RecipeError (bad input) becomes one line on stderr and exit status 2, a
    RunError (a fault) one line and its exit code."""
    try:
        main()
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0
