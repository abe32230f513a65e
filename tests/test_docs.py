"""Docs that cannot rot: docs/reference.md is what `python -m pipeline.reference` writes, every column a run or a
study writes is described in the code, every relative link (and anchor) of README.md and docs/ resolves, every
command they show parses, and the README's quick start runs.

Commands are read from fenced blocks (bash, sh, shell or no language): `python -m <module> ...` (also
`.venv/bin/python`, and `accelerate launch ... -m <module> ...`) and `make <target>`. A line ending in `\\`
continues, `# ...` is a comment, and placeholders (`<folder>`, `...`) read as a dummy value. A block meant as a bad
example is skipped when the line before its opening fence is `<!-- no-check -->`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shlex
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from transformers import HfArgumentParser

from common.recipe import renamed_keys
from pipeline.analysis.forgetting import FORGETTING_COLUMNS
from pipeline.evaluation.facts import EXPOSURE_COLUMNS, QUERY_COLUMNS, exposure_table, query_table
from pipeline.evaluation.metrics import METRIC_COLUMNS
from pipeline.reference import COMMANDS, REFERENCE, Command, markdown
from pipeline.run_folder import FINETUNE, NEW, OLD, PRETRAIN, REPORT, RunFolder
from pipeline.studies.aggregate import (
    FINETUNE_METRICS,
    INTERVAL_COLUMNS,
    PRETRAIN_COLUMNS,
    PRETRAIN_INTERVALS,
    STUDY_COLUMNS,
    aggregate,
)
from pipeline.studies.schema import Study
from pipeline.toy_memory.config import MemoryArguments
from pipeline.toy_memory.data import memory_pairs
from pipeline.toy_memory.model import build_memory
from pipeline.toy_memory.train import evaluate
from pipeline.train.callbacks import LINE_COLUMNS

from .conftest import REPO, tiny_flags

DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
GOLDEN = REPO / "tests" / "assets" / "golden"
TRAJECTORY_KEYS = set(LINE_COLUMNS) | set(METRIC_COLUMNS)
SHELLS = ("", "bash", "sh", "shell")
PROJECT = ("pipeline", "data_gen", "common")
NO_CHECK = "<!-- no-check -->"
PLACEHOLDER = re.compile(r"<[^<>]*>|\.\.\.")
COMMAND_START = re.compile(r"^(\w+=\S*\s+)*(\S*/)?(python3?|accelerate|make)\b")


@dataclass
class Block:
    """A fenced code block: the line of its opening fence, its language, its lines with their numbers, and whether
    it is checked (the no-check mark does not precede it)."""

    start: int
    language: str
    lines: list[tuple[int, str]]
    checked: bool


@dataclass
class Markdown:
    """A markdown file split into its prose lines and its fenced blocks (lines numbered from 1)."""

    prose: list[tuple[int, str]]
    blocks: list[Block]


@cache
def read_markdown(path: Path) -> Markdown:
    """The file's prose and fenced blocks; a block is checked unless the last prose line before it is NO_CHECK."""
    prose, blocks, fence, previous = [], [], None, ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        opening = re.match(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)", line)
        if fence is None and opening:
            fence = opening.group(1)
            blocks.append(Block(number, opening.group(2).lower(), [], previous != NO_CHECK))
        elif fence is not None and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            fence, previous = None, line
        elif fence is not None:
            blocks[-1].lines.append((number, line))
        else:
            prose.append((number, line))
            previous = line.strip() or previous
    return Markdown(prose, blocks)


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{line}"


# Links and anchors


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text lowercased, punctuation but hyphens and underscores dropped, spaces
    to hyphens."""
    text = re.sub(r"<[^>]+>", "", re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading))
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file: its headings' slugs (a repeated one gets -1, -2, ...) and explicit ids."""
    found, counts = set(), {}
    for _, line in read_markdown(path).prose:
        found |= set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line))
        if heading := re.match(r"^ {0,3}#{1,6}\s+(.*?)(\s+#+)?\s*$", line):
            base = slug(heading.group(1))
            found.add(f"{base}-{counts[base]}" if base in counts else base)
            counts[base] = counts.get(base, 0) + 1
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every inline link and image outside code."""
    return [(number, target) for number, line in read_markdown(path).prose
            for target in re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", re.sub(r"`[^`]*`", "", line))]


def link_problem(path: Path, target: str) -> str | None:
    """What is wrong with a link from `path` to `target` (None for an external link, or one that resolves)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):
        return None
    file, _, anchor = unquote(target).partition("#")
    dest = (REPO / file.lstrip("/") if file.startswith("/") else path.parent / file) if file else path
    if not dest.exists():
        return f"link to {target}: no such file"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest.resolve()):
        return f"link to {target}: {dest.name} has no heading or <a id> '{anchor}'"
    return None


def link_problems(path: Path) -> list[str]:
    return [f"{where(path, line)}: {problem}" for line, target in links(path)
            if (problem := link_problem(path, target))]


# Commands


def command_lines(block: Block) -> list[tuple[int, str]]:
    """The block's command lines (continuations joined), with the number of each one's first line."""
    out, pending = [], None
    for number, line in block.lines:
        start, text = pending or (number, "")
        text += line.rstrip().removesuffix("\\") + " "
        pending = (start, text) if line.rstrip().endswith("\\") else None
        if pending is None:
            out.append((start, text.strip()))
    return out


def shown_commands(path: Path) -> list[tuple[int, list[str]]]:
    """(line, words) of every `python -m` / `make` command in the file's checked shell blocks, each normalised to
    `python -m <module> ...` or `make ...`."""
    out = []
    for block in read_markdown(path).blocks:
        for number, text in command_lines(block) if block.language in SHELLS and block.checked else []:
            if COMMAND_START.match(text := text.lstrip("$ ")):  # not prose in a plain block, which shlex may refuse
                out += [(number, words) for words in map(normalised, shell_commands(text)) if words]
    return out


def shell_commands(text: str) -> list[list[str]]:
    """The words of each command of a shell line (split at &&, || and ;), comments dropped."""
    commands = [[]]
    for word in shlex.split(text, comments=True):
        if word in ("&&", "||", ";", "|"):
            commands.append([])
        else:
            commands[-1].append(word)
    return commands


def normalised(words: list[str]) -> list[str] | None:
    """`python -m <module> ...` or `make ...` for a command that runs one (after VAR=value words), else None."""
    words = words[next((i for i, word in enumerate(words) if not re.match(r"^\w+=", word)), len(words)):]
    program = Path(words[0]).name if words else ""
    if program == "accelerate" and words[1:2] == ["launch"] and "-m" in words:
        return ["python", *words[words.index("-m"):]]
    if program in ("python", "python3") and words[1:2] == ["-m"] and len(words) > 2:
        return ["python", *words[1:]]
    return words if program == "make" else None


def find_command(module: str, args: list[str]) -> tuple[str, Command, list[str]] | None:
    """The project's command that `python -m <module> <args>` runs, its name and arguments (after a subcommand)."""
    if args and f"{module} {args[0]}" in COMMANDS:
        return f"{module} {args[0]}", COMMANDS[f"{module} {args[0]}"], args[1:]
    return (module, COMMANDS[module], args) if module in COMMANDS else None


@cache
def make_targets() -> set[str]:
    return {target for line in (REPO / "Makefile").read_text().splitlines()
            if (rule := re.match(r"^([\w./ -]+):(?!=)", line)) for target in rule.group(1).split()}


def recipe_problem(name: str, command: Command, args: list[str]) -> str | None:
    """An unknown key, or a --config file that does not exist."""
    keys = {f.name for t in command.recipe for f in fields(t)} | set(renamed_keys(command.recipe)) | {"config"}
    for i, word in enumerate(args):
        key, eq, value = word[2:].partition("=") if word.startswith("--") else ("", "", "")
        if key and key not in keys:
            return f"--{key} is not a recipe key of python -m {name}"
        if key == "config":
            config = value if eq else (args[i + 1:] or [""])[0]
            if not PLACEHOLDER.search(config) and not (REPO / config).is_file():
                return f"--config {config}: no such file"
    return None


def parser_problem(name: str, command: Command, args: list[str]) -> str | None:
    """argparse's error for `args`, if it refuses them."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            command.parser().parse_args([PLACEHOLDER.sub("1", word) for word in args])
    except SystemExit:
        return f"python -m {name} refuses its arguments: {errors.getvalue().strip().splitlines()[-1]}"
    return None


def command_problem(words: list[str]) -> str | None:
    """What is wrong with a normalised command (None where it parses, or is not the project's)."""
    if words[0] == "make":
        unknown = [w for w in words[1:] if not w.startswith("-") and "=" not in w and w not in make_targets()]
        return f"make {' '.join(unknown)}: no such target in the Makefile" if unknown else None
    module, args = words[2], words[3:]
    if (found := find_command(module, args)) is None:
        ours = module.startswith(PROJECT)
        return f"python -m {' '.join(words[2:4])}: not a command of this project" if ours else None
    name, command, args = found
    return recipe_problem(name, command, args) if command.recipe else parser_problem(name, command, args)


def command_problems(path: Path) -> list[str]:
    return [f"{where(path, line)}: {problem}" for line, words in shown_commands(path)
            if (problem := command_problem(words))]


# The quick start


def quick_start(readme: Path) -> list[list[str]]:
    """The commands of the first bash block of the readme's `## Quick start` section."""
    text = read_markdown(readme)
    heading = next((n for n, line in text.prose if line.strip() == "## Quick start"), None)
    end = next((n for n, line in text.prose if heading and n > heading and line.startswith("## ")), float("inf"))
    block = next((b for b in text.blocks if heading and b.language == "bash" and heading < b.start < end), None)
    if block is None:
        pytest.fail(f"{readme.name} has no '## Quick start' section with a bash block")
    return [words for _, line in command_lines(block) for words in map(normalised, shell_commands(line)) if words]


def tiny_overrides(tmp_path: Path) -> dict[str, list[str]]:
    """Per quick-start command, flags that make it take seconds: a tiny corpus, model and run, under tmp_path."""
    corpus, run = tmp_path / "corpus", tmp_path / "run"
    schedule = dict(max_steps=4, eval_points=2, eval_steps=0, checkpoint_points=1, eval_individuals=10, save_steps=2)
    return {"data_gen build": ["--output_dir", str(corpus), "--n_individuals", "50", "--n_heldout", "10",
                               "--n_finetune", "10"],
            "pipeline.pretrain": tiny_flags(corpus, run, **schedule),
            "pipeline.report": ["--run", str(run)],
            "pipeline.finetune": tiny_flags(corpus, tmp_path / "finetuned", model_preset=None,
                                            init_from=RunFolder(run).checkpoint(4), n_individuals_finetune=10,
                                            **schedule)}


def run_quick_start(readme: Path, tmp_path: Path) -> None:
    """Each quick-start command's main, in process, with its tiny overrides appended."""
    overrides = tiny_overrides(tmp_path)
    for words in quick_start(readme):
        found = words[0] == "python" and find_command(words[2], words[3:])
        assert found and found[0] in overrides, f"the quick start's {' '.join(words[:4])} has no tiny overrides here"
        found[1].main([*words[3:], *overrides[found[0]]])


# The tests


def test_the_reference_is_what_the_code_generates():
    assert (REPO / REFERENCE).read_text() == markdown(), f"{REFERENCE} is out of date: run python -m pipeline.reference"


def test_the_reference_is_the_same_after_the_recipes_were_parsed():
    """HfArgumentParser replaces a dataclass field's type by the resolved class when it parses it: the reference
    reads the annotations as written, so a process that built the recipes' parsers first writes the same file."""
    for command in COMMANDS.values():
        if command.recipe:
            HfArgumentParser(list(command.recipe))  # as parse_recipe builds it
    assert (REPO / REFERENCE).read_text() == markdown()


def test_every_recipe_key_has_a_help():
    assert not [f"{name}: {f.name}" for name, command in COMMANDS.items() for t in command.recipe for f in fields(t)
                if not f.metadata.get("help")]


def test_every_trajectory_key_is_described():
    lines = [line for stage in (PRETRAIN, FINETUNE) for line in json.loads((GOLDEN / f"{stage}.json").read_text())
             ["trajectory"]]
    memory = MemoryArguments(key_dim=4, n_classes=3, n_pairs=4, n_heldout=2, hidden_size=8)
    lines += evaluate(build_memory(memory, 0), {"seen": memory_pairs(memory, 4)}, PRETRAIN, 0)
    assert {key for line in lines for key in line} <= TRAJECTORY_KEYS


@pytest.mark.parametrize("stage", [PRETRAIN, FINETUNE])
def test_every_summary_column_is_described(stage, tmp_path):
    study = Study("base.yaml", str(tmp_path), {"seed": [0]}, stage=stage)
    run = RunFolder(study.run_folder(study.points()[0]))
    rows = json.loads((GOLDEN / f"{stage}.json").read_text())["trajectory"]
    run.start({"seed": 0, "max_steps": max(r["step"] for r in rows)})
    run.append_trajectory(rows)
    assert aggregate(study)
    with (tmp_path / "summary.csv").open() as f:
        header = next(csv.reader(f))
    columns, metrics = ((PRETRAIN_COLUMNS, PRETRAIN_INTERVALS) if stage == PRETRAIN
                        else (FORGETTING_COLUMNS, FINETUNE_METRICS))
    intervals = {f"{metric}_{suffix}" for metric in metrics for suffix in INTERVAL_COLUMNS}
    described = {*study.axes, *STUDY_COLUMNS, *columns, *intervals}
    assert set(header) - described == set()


def test_every_facts_column_is_described():
    scores = {"seen": {"individual": np.zeros(1), "attribute": np.zeros(1), "correct": np.ones(1, dtype=bool),
                       "value_loss": np.ones(1), "top_prob": np.ones(1)}}
    assert query_table(0, scores, {"seen": np.zeros(1)}).column_names == list(QUERY_COLUMNS)
    assert exposure_table(0, np.ones(1), np.zeros(1)).column_names == list(EXPOSURE_COLUMNS)


def test_the_checks_find_broken_links_and_commands(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title\n## Part\n## Part\n[ok](#part-1) [bad](#part-2) [file](page.md#a-title) "
                    "![missing](nowhere.png) [web](https://example.com/x)\n`[code](nowhere)`\n"
                    "```bash\npython -m pipeline.pretrain --config <recipe> \\\n  --no_such_key 1  # comment\n"
                    "make demo\nmake nothing\n.venv/bin/python -m pipeline.report --run <folder>\n"
                    "accelerate launch --num_processes 2 -m pipeline.sweep --config x.yaml --bad_flag\n```\n"
                    "<!-- no-check -->\n```\npython -m pipeline.report\n```\n")
    assert [p.split(": ", 1)[1] for p in link_problems(page)] == [
        "link to #part-2: page.md has no heading or <a id> 'part-2'", "link to nowhere.png: no such file"]
    problems = command_problems(page)
    assert [p.split(":")[1] for p in problems] == ["7", "10", "12"]
    assert "--no_such_key is not a recipe key" in problems[0] and "no such target" in problems[1]
    assert "unrecognized arguments: --bad_flag" in problems[2]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves(path):
    assert not (problems := link_problems(path)), "\n".join(problems)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_shown_parses(path):
    assert not (problems := command_problems(path)), "\n".join(problems)


@pytest.mark.slow
def test_the_quick_start_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the recipes' paths are relative to the repository
    run_quick_start(REPO / "README.md", tmp_path)
    pretrained, finetuned = RunFolder(tmp_path / "run"), RunFolder(tmp_path / "finetuned")
    assert (pretrained / REPORT).is_file() and (finetuned / REPORT).is_file()
    assert {OLD, NEW} <= {line["split"] for line in finetuned.trajectory()}
    assert {key for run in (pretrained, finetuned) for line in run.trajectory() for key in line} <= TRAJECTORY_KEYS
