"""The Hugging Face Hub boundary: every call to `huggingface_hub` goes through this module."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from data_gen.recipe import RecipeError

WEIGHT_FILES = ["*.json", "*.safetensors"]  # config, tokenizer and weights: no optimizer or training state


def resolve_checkpoint(init_from: str, revision: str | None = None) -> Path:
    """A local folder holding the weights of `init_from`: the folder itself, or the files of a Hub
    model id at `revision` downloaded into the local Hugging Face cache."""
    path = Path(init_from)
    if path.exists():
        if not (path / "config.json").is_file():
            raise RecipeError(f"init_from '{init_from}' holds no model (no config.json): point it at a checkpoint "
                              f"folder such as runs/demo/checkpoints/step-000001500")
        return path
    if init_from.count("/") != 1 or init_from.startswith((".", "/")):
        raise RecipeError(f"init_from '{init_from}' is neither an existing folder nor a Hub id 'owner/name': fix "
                          f"the path")
    try:
        return Path(huggingface_hub.snapshot_download(init_from, revision=revision, allow_patterns=WEIGHT_FILES))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as err:
        raise RecipeError(f"init_from '{init_from}' (revision {revision or 'main'}) could not be fetched from the "
                          f"Hub ({type(err).__name__}): check the id, the revision and your login, or use a local "
                          f"checkpoint folder") from err
