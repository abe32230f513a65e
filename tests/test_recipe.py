"""Recipe parsing: default < YAML < command line, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from common.recipe import parse_recipe
from data_gen import CorpusConfig, RecipeError
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


def test_a_recipe_extends_another(tmp_path):
    paper = Path(__file__).parent.parent / "recipes" / "paper" / "pretrain"
    default = parse_recipe(TYPES, ["--config", str(paper / "config_default.yaml")])
    larger = parse_recipe(TYPES, ["--config", str(paper / "config_163M.yaml"), "--max_steps", "9"])
    assert larger[0].model_preset == "163M" and larger[2].output_dir == "runs/paper/pretrain_163M"
    assert larger[2].max_steps == 9  # the command line over both files
    assert larger[1] == default[1] and larger[2].learning_rate == default[2].learning_rate == 4e-4
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nmax_steps: 3\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(RecipeError, match="extends it back"):
        parse_recipe(TYPES, ["--config", str(tmp_path / "a.yaml")])


def test_renamed_schedule_keys_still_work_with_a_warning(recipe, capsys):
    recipe.write_text(recipe.read_text() + "eval_every: 5\n")
    _, _, train = parse_recipe(TYPES, ["--config", str(recipe), "--checkpoint_steps", "3", "7"])
    assert train.eval_steps == 5 and train.checkpoint_at == [3, 7]
    err = capsys.readouterr().err
    assert "'eval_every' is deprecated: use 'eval_steps'" in err and "'checkpoint_steps' is deprecated" in err


@pytest.mark.parametrize("path", sorted(str(p.relative_to(Path(__file__).parent.parent)) for p in (
    Path(__file__).parent.parent / "recipes").rglob("*.yaml") if "accelerate_configs" not in p.parts))
def test_every_shipped_recipe_parses(path):
    from pipeline.finetune import ARGUMENTS as FINETUNE
    from pipeline.pretrain import ARGUMENTS as PRETRAIN
    from pipeline.studies.attention_patching import PatchingStudyArguments
    from pipeline.studies.schema import load_study

    root = Path(__file__).parent.parent
    values = yaml.safe_load((root / path).read_text())
    if "claims" in values:
        from pipeline.studies.claims import load_claims
        from pipeline.studies.verdicts import check_rules

        claims = load_claims(str(root / path))
        check_rules(claims)
        for name, files in claims.studies.items():
            for file in files.values():
                assert (root / file).is_file(), (name, file)
    elif "grid" in values:
        load_study(str(root / path))
    elif "reference_config" in values:
        values["reference_config"] = str(root / values["reference_config"])
        PatchingStudyArguments(**values).study()
    elif "n_individuals" in values:
        parse_recipe([CorpusConfig], ["--config", str(root / path)])
    elif Path(path).parts[1] == "toy_memory":
        from pipeline.toy_memory import ARGUMENTS as TOY_MEMORY

        parse_recipe(TOY_MEMORY, ["--config", str(root / path)])
    else:
        required = ["--corpus", "c", "--output_dir", "o", "--init_from", "i"]
        stage = FINETUNE if "n_individuals_finetune" in values else PRETRAIN
        parse_recipe(stage, ["--config", str(root / path), *required[: 4 if stage is PRETRAIN else 6]])
