"""The reference, generated from the code alone: every recipe key of every recipe command, every flag of every
command-line tool, and every column of a run's and a study's files, written as docs/reference.md.

    python -m pipeline.reference            # write docs/reference.md
    python -m pipeline.reference --check    # exit 1 when docs/reference.md is not what it would write
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import MISSING, Field, dataclass, fields
from pathlib import Path

import data_gen.__main__ as data_gen_cli
from common.errors import RunError, run_cli
from common.recipe import renamed_keys
from data_gen import CorpusConfig

from . import analyze, finetune, pretrain, reproduce, sweep
from .analysis.forgetting import FORGETTING_COLUMNS
from .config import execution_keys
from .evaluation.facts import EXPOSURE_COLUMNS, QUERY_COLUMNS
from .evaluation.metrics import METRIC_COLUMNS
from .hub import __main__ as hub_cli
from .report import __main__ as report_cli
from .run_folder import (
    EXPOSURE_FACTS,
    FACTS,
    FINETUNE_SUMMARY,
    QUERY_FACTS,
    SUMMARY,
    TRAJECTORY,
    UNCHECKED_KEYS,
)
from .studies import attention_patching
from .studies.aggregate import (
    FINETUNE_METRICS,
    INTERVAL_COLUMNS,
    PRETRAIN_COLUMNS,
    PRETRAIN_INTERVALS,
    STUDY_COLUMNS,
)
from .toy_memory import stage as toy_memory
from .train.callbacks import LINE_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "docs/reference.md"  # relative to ROOT


@dataclass(frozen=True)
class Command:
    """An entry point: `main` takes the words after `python -m <module>`; a recipe command parses `recipe`
    (dataclasses, whose keys decide on resume where `resumes`), a command-line tool its `parser()`."""

    main: Callable[[list[str]], None]
    recipe: tuple[type, ...] = ()
    resumes: bool = False
    parser: Callable[[], argparse.ArgumentParser] | None = None


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.reference", description="Write docs/reference.md "
                                                                                      "from the code.")
    parser.add_argument("--check", action="store_true", help=f"Only compare: exit 1 when {REFERENCE} differs.")
    return parser


def main(argv: list[str] | None = None) -> None:
    path, text = ROOT / REFERENCE, markdown()
    if not parser().parse_args(argv).check:
        path.write_text(text)
    elif not path.is_file() or path.read_text() != text:
        raise RunError(f"{REFERENCE} is out of date: run python -m pipeline.reference")


# "<module>" or "<module> <subcommand>" -> its Command
COMMANDS = {
    "pipeline.pretrain": Command(pretrain.main, pretrain.ARGUMENTS, resumes=True),
    "pipeline.finetune": Command(finetune.main, finetune.ARGUMENTS, resumes=True),
    "pipeline.toy_memory": Command(toy_memory.main, toy_memory.ARGUMENTS, resumes=True),
    "pipeline.studies.attention_patching": Command(attention_patching.main,
                                                   (attention_patching.PatchingStudyArguments,)),
    "data_gen build": Command(data_gen_cli.main, (CorpusConfig,)),
    **{f"data_gen {name}": Command(data_gen_cli.main, parser=parser)
       for name, (parser, _) in data_gen_cli.SUBCOMMANDS.items()},
    "pipeline.sweep": Command(sweep.main, parser=sweep.parser),
    "pipeline.reproduce": Command(reproduce.main, parser=reproduce.parser),
    "pipeline.analyze": Command(analyze.main, parser=analyze.parser),
    "pipeline.report": Command(report_cli.main, parser=report_cli.parser),
    "pipeline.hub": Command(hub_cli.main, parser=hub_cli.parser),
    "pipeline.reference": Command(main, parser=parser),
}


def cell(text: str) -> str:
    """`text` fit for a table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def table(header: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    return [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}",
            *(f"| {' | '.join(cell(c) for c in row)} |" for row in rows), ""]


def shown(value) -> str:
    """A default as a recipe or a command line spells it."""
    if isinstance(value, str) and value:
        return f"`{value}`"
    return f"`{json.dumps(value, default=str)}`"


def default_of(f: Field) -> str:
    if f.default is not MISSING:
        return shown(f.default)
    return shown(f.default_factory()) if f.default_factory is not MISSING else "required"


def declaring(dataclass_type: type, key: str) -> type:
    """The recipe section (dataclass) that declares `key` last, whose default it has."""
    return next(t for t in dataclass_type.__mro__ if key in vars(t).get("__annotations__", {}))


def annotation(dataclass_type: type, key: str) -> str:
    """`key`'s type as its section writes it: the class's annotation, since HfArgumentParser replaces a field's
    `type` by the resolved class once it has parsed the dataclass."""
    return str(vars(declaring(dataclass_type, key))["__annotations__"][key])


def resume_role(key: str, execution: frozenset[str]) -> str:
    """What a resumed run may do with `key`: execution keys may change, identity keys may not."""
    return "not compared" if key in UNCHECKED_KEYS else "execution" if key in execution else "identity"


def recipe_table(command: Command) -> list[str]:
    """One row per recipe key of `command`, then its former key names."""
    execution = execution_keys(*command.recipe)
    rows = [[f"`{f.name}`", declaring(t, f.name).__name__, f"`{annotation(t, f.name)}`", default_of(f),
             *([resume_role(f.name, execution)] if command.resumes else []), f.metadata["help"]]
            for t in command.recipe for f in fields(t)]
    header = ["key", "section", "type", "default", *(["on resume"] if command.resumes else []), "help"]
    renames = renamed_keys(command.recipe)
    former = ["Former names, still read with a warning: "
              + ", ".join(f"`{old}` (now `{new}`)" for old, new in sorted(renames.items())) + ".", ""]
    return table(header, rows) + (former if renames else [])


def flag_of(action: argparse.Action) -> str:
    return ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}` (positional)"


def value_of(action: argparse.Action) -> str:
    """What a flag takes: its choices, its type's name, or nothing (a switch)."""
    if action.choices:
        return "one of " + ", ".join(f"`{c}`" for c in action.choices)
    if action.nargs == 0:
        return "switch"
    return getattr(action.type, "__name__", "str")


def flags_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = [[flag_of(a), value_of(a), "required" if a.required else shown(a.default), a.help or ""]
            for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]
    return table(["flag", "takes", "default", "help"], rows)


def columns_table(columns: dict[str, str], name: str = "column") -> list[str]:
    return table([name, "meaning"], [[f"`{key}`", meaning] for key, meaning in columns.items()])


def recipe_section() -> list[str]:
    out = ["## Recipe keys", "",
           "Each key goes in the YAML recipe given by `--config` or on the command line as `--key value` (the "
           "command line wins). On resume (a run's `output_dir` already holds it), an *identity* key must be what "
           "the run was started with, else the run is refused; an *execution* key says how the run is computed, "
           "not what it learns, and may change (the change is recorded in `execution_changes`); keys *not compared* "
           "may change freely.", ""]
    for name, command in sorted(COMMANDS.items()):
        if command.recipe:
            out += [f"### python -m {name}", "", *recipe_table(command)]
    return out


def cli_section() -> list[str]:
    out = ["## Command-line tools", ""]
    for name, command in sorted(COMMANDS.items()):
        if command.parser:
            tool = command.parser()
            out += [f"### python -m {name}", "", *([cell(tool.description), ""] if tool.description else []),
                    *flags_table(tool)]
    return out


def files_section() -> list[str]:
    every_study = {"<grid key>": "One column per key the study varies: the run's value.", **STUDY_COLUMNS}
    intervals = ", ".join(f"`{m}`" for m in PRETRAIN_INTERVALS), ", ".join(f"`{m}`" for m in FINETUNE_METRICS)
    return ["## Run and study files", "",
            f"### {TRAJECTORY}", "", "One JSON line per evaluation and group of individuals.", "",
            *columns_table({**LINE_COLUMNS, **METRIC_COLUMNS}, "key"),
            f"### {FACTS}/{QUERY_FACTS}/step-*.parquet", "", *columns_table(QUERY_COLUMNS),
            f"### {FACTS}/{EXPOSURE_FACTS}/step-*.parquet", "", *columns_table(EXPOSURE_COLUMNS),
            f"### {SUMMARY}", "", "One row per run of a study. Every study:", "", *columns_table(every_study),
            "A pretraining study's runs:", "", *columns_table(PRETRAIN_COLUMNS),
            f"A fine-tuning study's runs (also their `{FINETUNE_SUMMARY}`):", "", *columns_table(FORGETTING_COLUMNS),
            f"Intervals over seeds, for each metric of {intervals[0]} (pretraining) and {intervals[1]} (fine-tuning):",
            "", *columns_table({f"<metric>_{suffix}": meaning for suffix, meaning in INTERVAL_COLUMNS.items()})]


def markdown() -> str:
    """The whole reference."""
    header = ["# Reference", "",
              f"Generated from the code by `python -m pipeline.reference`: do not edit by hand. After changing a "
              f"recipe key, a flag or a column, rerun it; `python -m pipeline.reference --check` (and the tests) "
              f"fail while {REFERENCE} is out of date.", ""]
    return "\n".join(header + recipe_section() + cli_section() + files_section()).rstrip() + "\n"


if __name__ == "__main__":
    sys.exit(run_cli(main))
