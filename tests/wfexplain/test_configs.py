"""Every recipe lives in wfexplain/configs.py and checks its ranges one way, the way the CLI's options check them."""

import argparse
import dataclasses
import inspect

import pytest

import wfexplain
from wfexplain import configs
from wfexplain.baselines import BASELINES
from wfexplain.cli.options import add_config_args, config_from

CONFIGS = [c for _, c in inspect.getmembers(configs, inspect.isclass)
           if dataclasses.is_dataclass(c) and c.__module__ == configs.__name__]


def test_every_recipe_is_here_including_the_baselines_and_the_public_ones():
    assert {m.config for m in BASELINES.values()} <= set(CONFIGS)
    assert {wfexplain.UnlearnConfig, wfexplain.RemovalConfig, wfexplain.engine.TrainConfig} <= set(CONFIGS)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_a_recipe_is_frozen_and_every_number_has_a_range(cls):
    assert issubclass(cls, configs.Checked) and cls.__dataclass_params__.frozen
    for f in dataclasses.fields(cls):
        assert f.type in ("int", "float", "bool"), f"{cls.__name__}.{f.name}: {f.type}"
        assert (configs.field_range(f) is None) == (f.type == "bool"), f"{cls.__name__}.{f.name} has no range"
    cls()  # the defaults are in range


@pytest.mark.parametrize(("cls", "kwargs", "message"), [
    (configs.SSDConfig, {"train_images": -1}, "train_images must be an integer ≥ 0, got -1"),
    (configs.SalUnConfig, {"mask_ratio": 0.0}, r"mask_ratio must be a number in \(0, 1\], got 0.0"),
    (configs.NegGradPlusConfig, {"beta": 1.5}, r"beta must be a number in \[0, 1\], got 1.5"),
    (configs.FinetuneConfig, {"steps": 2.0}, "steps must be an integer ≥ 1, got 2.0"),
    (configs.RandomLabelsConfig, {"lr": float("nan")}, "lr must be a number > 0, got nan"),
    (configs.UnlearnConfig, {"batch_size": 1}, "batch_size must be an integer ≥ 2, got 1"),
])
def test_one_mechanism_one_message(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_the_options_of_a_recipe_come_from_its_fields(cls):
    p = argparse.ArgumentParser(exit_on_error=False)
    add_config_args(p, cls)
    assert config_from(p.parse_args([]), cls) == cls()
    f = next(f for f in dataclasses.fields(cls) if configs.field_range(f))
    lo, _, open_lo, _ = configs.field_range(f)
    flag = f"--{f.name.replace('_', '-')}"
    with pytest.raises(argparse.ArgumentError, match=f"argument {flag}: must be"):
        p.parse_args([flag, str(lo if open_lo else lo - 1)])
