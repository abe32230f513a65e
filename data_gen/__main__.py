"""`python -m data_gen build --config recipes/demo/data.yaml [--key value ...]`"""

from __future__ import annotations

import sys
import time

from .builder import build
from .config import CorpusConfig
from .recipe import RecipeError, parse_recipe, run_cli

USAGE = "usage: python -m data_gen build --config <data.yaml> [--key value ...]"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] != "build":
        raise RecipeError(f"unknown command '{argv[0]}': {USAGE}")
    (config,) = parse_recipe([CorpusConfig], argv[1:])
    start = time.perf_counter()
    out = build(config)
    print(f"wrote {config.n_total:,} individuals to {out} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    sys.exit(run_cli(main))
