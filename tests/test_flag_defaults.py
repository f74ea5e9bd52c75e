"""Every flag that sets a config field takes its default from the config dataclass: one place to
change, and the command line and the library agree."""

from __future__ import annotations

import dataclasses

import pytest

from rrnet.baselines.cli import CLI_KINDS, config_from_args
from rrnet.baselines.config import BaselineConfig
from rrnet.cli import build_parser, train_config_from_args
from rrnet.cli_flags import default_of
from rrnet.eval.cli import settings_from_args
from rrnet.eval.runner import EvalSettings
from rrnet.experiment import ExperimentConfig, experiment_config_from_args
from rrnet.generate import GenerationSettings
from rrnet.train import TrainConfig

MINIMAL = {
    "train": ["train", "--model", "m", "--data", "d", "--output_dir", "o"],
    "generate": ["generate", "--model", "m", "--output_dir", "o"],
    **{f"baseline {k}": ["baseline", k, "--model", "m", "--data", "d", "--output_dir", "o"] for k in CLI_KINDS},
    "experiment": ["experiment", "--model", "m", "--benchmark", "b", "--output_dir", "o"],
    "evaluate": ["evaluate", "--model", "m", "--benchmark", "b", "--output_dir", "o"],
    "analyze alpha-sweep": ["analyze", "alpha-sweep", "--model", "m", "--rectifier", "r", "--output_dir", "o"],
    "analyze mask-eot": ["analyze", "mask-eot", "--model", "m", "--prompt", "p", "--output_dir", "o"],
}

_SAMPLING = [("num_images", EvalSettings, "num_images"), ("seed", EvalSettings, "seed"),
             ("resolution", EvalSettings, "resolution"), ("batch_size", EvalSettings, "batch_size")]
_BASELINE = [("epochs", "epochs"), ("learning_rate", "learning_rate"), ("batch_size", "batch_size"),
             ("weight_decay", "weight_decay"), ("seed", "seed"), ("resolution", "resolution")]

# (command, flag dest, dataclass, field)
FLAGS = [
    *(("train", dest, TrainConfig, field) for dest, field in [
        ("weight_decay", "weight_decay"),
        ("positive_weight", "positive_weight"), ("negative_weight", "negative_weight"),
        ("disentangle_noise", "disentangle_noise"), ("direction_weight", "direction_weight"),
        ("relations_per_step", "relations_per_step"), ("hidden_size", "hidden"),
        ("heads", "heads"), ("num_layers", "num_layers"), ("seed", "seed"), ("resolution", "resolution")]),
    *(("generate", dest, GenerationSettings, field) for dest, field in [
        ("alpha", "alphas"), ("num_images", "num_images"), ("seed", "seed"), ("resolution", "resolution")]),
    *((f"baseline {kind}", dest, BaselineConfig, field) for kind in CLI_KINDS for dest, field in _BASELINE),
    *(("baseline lora", dest, BaselineConfig, field) for dest, field in [
        ("rank", "lora_rank"), ("lora_alpha", "lora_alpha"), ("target_modules", "lora_targets")]),
    ("experiment", "variants", ExperimentConfig, "variants"),
    ("experiment", "epochs", TrainConfig, "epochs"),
    ("experiment", "baseline_epochs", ExperimentConfig, "baseline_epochs"),
    ("experiment", "hidden_size", TrainConfig, "hidden"),
    ("experiment", "alpha", ExperimentConfig, "alphas"),
    ("experiment", "ablation_alpha", ExperimentConfig, "ablation_alpha"),
    *(("experiment", dest, config, field) for dest, config, field in _SAMPLING),
    *(("evaluate", dest, config, field) for dest, config, field in _SAMPLING),
    *(("analyze alpha-sweep", dest, GenerationSettings, field) for dest, field in [
        ("alpha", "alphas"), ("num_images", "num_images"), ("seed", "seed"), ("resolution", "resolution")]),
    ("analyze mask-eot", "num_images", GenerationSettings, "num_images"),
]


def _parse(command: str):
    return build_parser().parse_args(MINIMAL[command])


def _as_flag(value):
    """A tuple field is a list flag (`nargs="+"` gives lists)."""
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("command,dest,config,field", FLAGS, ids=[f"{c} --{d}" for c, d, _, _ in FLAGS])
def test_flag_default_is_the_dataclass_default(command, dest, config, field):
    assert getattr(_parse(command), dest) == _as_flag(default_of(config, field))


@pytest.mark.parametrize("command,dest,config,field", FLAGS, ids=[f"{c} --{d}" for c, d, _, _ in FLAGS])
def test_flag_default_follows_the_dataclass(command, dest, config, field, monkeypatch):
    """Change the dataclass default and the flag's default changes with it: it is declared once."""
    declared = next(f for f in dataclasses.fields(config) if f.name == field)
    marker = ("changed",) if isinstance(declared.default, tuple) else object()
    monkeypatch.setattr(declared, "default", marker)
    assert getattr(_parse(command), dest) == _as_flag(marker)


def test_train_flags_describe_the_default_config():
    """The `--no_X` switches and the plain flags, all left out (with the paper's recipe), give `TrainConfig()`."""
    assert train_config_from_args(build_parser().parse_args(MINIMAL["train"] + ["--recipe", "official"])) == TrainConfig()


def test_train_without_a_recipe_uses_the_default_recipe():
    """`--recipe` is the one training flag whose default is not `TrainConfig`'s (the paper's): the
    command line trains with `DEFAULT_RECIPE`, everything else the recipe leaves alone stays the paper's."""
    from rrnet.recipes import DEFAULT_RECIPE, recipe_config

    assert _parse("train").recipe == DEFAULT_RECIPE
    assert train_config_from_args(_parse("train")) == recipe_config(DEFAULT_RECIPE)


@pytest.mark.parametrize("kind", list(CLI_KINDS))
def test_baseline_flags_describe_the_default_config(kind):
    assert config_from_args(_parse(f"baseline {kind}")) == BaselineConfig()


def test_experiment_and_evaluate_flags_describe_the_default_configs():
    """A model without a mini-world record samples with the paper's steps and guidance: the defaults."""
    assert experiment_config_from_args(_parse("experiment")) == ExperimentConfig()
    assert settings_from_args(_parse("evaluate")) == EvalSettings()


def test_default_of_names_a_missing_field():
    with pytest.raises(TypeError, match="no field 'epoch'"):
        default_of(TrainConfig, "epoch")


def test_recipe_flags_take_the_recipes_values_unless_given():
    """`--epochs`, `--learning_rate`, ... default to the chosen recipe's values (the official recipe's
    are the dataclass defaults); a flag given explicitly wins over the recipe."""
    from rrnet.cli import RECIPE_FLAGS
    from rrnet.recipes import RECIPES, recipe_config

    parsed = _parse("train")
    assert all(getattr(parsed, name) is None for name in RECIPE_FLAGS)
    for name in RECIPES:
        assert train_config_from_args(build_parser().parse_args(MINIMAL["train"] + ["--recipe", name])) == \
            dataclasses.replace(recipe_config(name), recipe=name)
    fast = train_config_from_args(build_parser().parse_args(MINIMAL["train"] + ["--recipe", "fast", "--epochs", "7"]))
    assert fast.epochs == 7 and fast.learning_rate == recipe_config("fast").learning_rate and fast.recipe == "fast"
