"""Recipe parsing: default < YAML < command line, and clear errors."""

from __future__ import annotations

import pytest

from data_gen import RecipeError
from data_gen.recipe import parse_recipe
from pipeline.config import DataArguments, ModelArguments, TrainArguments

TYPES = [ModelArguments, DataArguments, TrainArguments]


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "pretrain.yaml"
    path.write_text("model_preset: tiny\ncorpus: c\noutput_dir: o\nlearning_rate: 1.0e-3\nmax_steps: 50\n")
    return path


def test_precedence_default_yaml_cli(recipe):
    model, data, train = parse_recipe(TYPES, ["--config", str(recipe), "--max_steps", "7", "--seed=5"])
    assert model.model_preset == "tiny" and data.corpus == "c"  # from YAML
    assert train.learning_rate == 1e-3  # YAML over default
    assert train.max_steps == 7 and train.seed == 5  # command line over YAML, both flag forms
    assert train.batch_size == 128 and train.data_seed == 5  # defaults


@pytest.mark.parametrize("args, message", [
    (["--learning_rat", "1"], "unknown key 'learning_rat' in the command line: did you mean 'learning_rate'?"),
    (["--max_steps", "ten"], "argument --max_steps/--max-steps: invalid int value: 'ten'"),
    (["--max_steps", "0"], "max_steps must be at least 1, got 0"),
    (["--model_preset", "huge"], "model_preset 'huge' is unknown"),
])
def test_bad_values_are_clear_errors(recipe, args, message):
    with pytest.raises(RecipeError, match=message.replace("?", r"\?").replace("(", r"\(")):
        parse_recipe(TYPES, ["--config", str(recipe), *args])


def test_unknown_yaml_key_and_missing_file(recipe, tmp_path):
    recipe.write_text(recipe.read_text() + "wieght_decay: 0.1\n")
    with pytest.raises(RecipeError, match="unknown key 'wieght_decay' in recipe .*did you mean 'weight_decay'"):
        parse_recipe(TYPES, ["--config", str(recipe)])
    with pytest.raises(RecipeError, match="does not exist: check the --config path"):
        parse_recipe(TYPES, ["--config", str(tmp_path / "missing.yaml")])
