"""The house plan: the run folder and the corpus folder are each defined in one module, so no other
module spells one of their file names or joins one of their folder names to a path (docstrings
aside); the import contracts hold."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

from data_gen import layout
from pipeline import run_folder

ROOT = Path(__file__).resolve().parents[1]
DEFINITIONS = {ROOT / "pipeline" / "run_folder.py": run_folder, ROOT / "data_gen" / "layout.py": layout}


def _names(module) -> tuple[set[str], set[str]]:
    """A layout module's file names (with an extension) and folder names."""
    values = {v for k, v in vars(module).items() if k.isupper() and isinstance(v, str)}
    return {v for v in values if "." in v}, {v for v in values if "." not in v and v.islower()}


def _code_strings(path: Path) -> list[tuple[int, str, bool]]:
    """String constants of a module (f-string parts included), docstrings left out: (line, text, whether it
    is joined to a path with `/`)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    joined = {id(side) for node in ast.walk(tree) if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
              for side in (node.left, node.right)}
    return [(node.lineno, node.value, id(node) in joined) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_file_names_are_spelled_only_where_the_folders_are_defined():
    files, folders = set(), set()
    for module in DEFINITIONS.values():
        module_files, module_folders = _names(module)
        files |= module_files
        folders |= module_folders - {"train", "heldout", "finetune", "seen", "old", "new", "pretrain"}
    assert {"trajectory.jsonl", "run_config.yaml", "trainer_state.json", "manifest.json"} <= files
    assert {"checkpoints", "resume"} <= folders
    found = []
    for path in sorted([*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "data_gen").rglob("*.py"),
                        *(ROOT / "bench").glob("*.py")]):
        if path in DEFINITIONS:
            continue
        for line, text, in_path in _code_strings(path):
            if (in_path and text in folders) or any(name in text for name in files):
                found.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
    assert not found, "file names spelled outside run_folder.py / layout.py:\n" + "\n".join(found)


@pytest.mark.skipif(shutil.which("lint-imports") is None and not (ROOT / ".venv/bin/lint-imports").exists(),
                    reason="import-linter is not installed")
def test_import_contracts_hold():
    command = shutil.which("lint-imports") or str(ROOT / ".venv/bin/lint-imports")
    result = subprocess.run([command], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout
