"""python -m pipeline.toy_memory --config recipes/toy_memory/pretrain.yaml [--key value ...]"""

import sys

from common.errors import run_cli

from .stage import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
