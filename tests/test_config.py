import pytest

from cnnlab.config import Config, apply_overrides, from_dict, load_recipe
from cnnlab.errors import ConfigError
from cnnlab.train.validate import validate


def test_overrides_typed():
    c = apply_overrides(
        Config(),
        [
            "optim.lr=0.01",
            "train.epochs=3",
            "model.activation=relu",
            "train.deterministic=true",
            "data.resize=none",
        ],
    )
    assert c.optim.lr == 0.01 and c.train.epochs == 3 and c.train.deterministic is True
    assert c.model.args == {"activation": "relu"} and c.data.resize is None
    validate(c)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown config key 'optim.lrr'; optim keys: name, lr"):
        apply_overrides(Config(), ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="section"):
        apply_overrides(Config(), ["foo=1"])
    with pytest.raises(ConfigError, match="model 'lenet5' has no option 'bogus'"):
        validate(apply_overrides(Config(), ["model.bogus=1"]))


def test_bad_values():
    with pytest.raises(ConfigError, match="train.epochs must be an integer"):
        apply_overrides(Config(), ["train.epochs=abc"])
    with pytest.raises(ConfigError, match="unknown optimizer 'sgdd'; choose one of: adagrad, adam"):
        validate(apply_overrides(Config(), ["optim.name=sgdd"]))
    with pytest.raises(ConfigError, match="lr must be > 0"):
        validate(apply_overrides(Config(), ["optim.lr=-1"]))
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(Config(), ["optim.lr"])


@pytest.mark.parametrize("recipe", ["lenet5-mnist", "lenet5-fashion-mnist", "lenet5-cifar10"])
def test_shipped_recipes_validate(recipe):
    c = validate(load_recipe(f"recipes/{recipe}.yaml"))
    assert c.model.name.startswith("lenet5")


def test_yaml_roundtrip(tmp_path):
    c = apply_overrides(Config(), ["model.activation=elu", "sched.name=cosine"])
    p = tmp_path / "c.yaml"
    p.write_text(c.to_yaml())
    assert load_recipe(p).to_dict() == c.to_dict()
    assert from_dict(c.to_dict()).model.args == {"activation": "elu"}


def test_bad_recipe(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_recipe(p)
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")
