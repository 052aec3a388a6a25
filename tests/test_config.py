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


# -- hostile recipes and values: bounded work, one short line ----------------------------


def billion_laughs(levels: int, under: str = "train:\n  loss") -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\n{under}: *a{levels - 1}\n"


def test_a_billion_laughs_recipe_is_refused_at_once(tmp_path):
    import time

    for under in ("train:\n  loss", "model:\n  activation"):
        p = tmp_path / "bomb.yaml"
        p.write_text(billion_laughs(10, under))  # 9**10 values once expanded
        t = time.process_time()  # this process's CPU, whatever else the machine runs
        with pytest.raises(ConfigError, match="expands to more than") as e:
            load_recipe(p)
        assert time.process_time() - t < 2 and len(str(e.value)) < 300
    # a smaller bomb that fits the node bound is still never expanded into a message
    p.write_text(billion_laughs(4))  # 6,561 strings
    with pytest.raises(ConfigError) as e:
        validate(load_recipe(p))
    assert len(str(e.value)) < 300


def test_deep_nesting_and_huge_integers_are_one_line(tmp_path):
    from cnnlab.cli import main

    p = tmp_path / "deep.yaml"
    for text in ("train:\n  loss: " + "[" * 5000 + "]" * 5000, "train:\n  seed: " + "5" * 5000):
        p.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_recipe(p)
        assert len(str(e.value)) < 300
    for bad in ("model.x=" + "[" * 3000 + "]" * 3000, "train.seed=" + "5" * 5000):
        with pytest.raises(ConfigError) as e:
            apply_overrides(Config(), [bad])
        assert len(str(e.value)) < 300
    assert main(["train", "--seed", str(2**70), "--runs-dir", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "override, match",
    [
        ("optim.momentum=-5", "optim.momentum must be in"),
        ("optim.beta1=2", "optim.beta1 must be in"),
        ("optim.beta2=1", "optim.beta2 must be in"),
        ("train.seed=-1", "train.seed must be in"),
        (f"train.seed={2**70}", "train.seed must be in"),
        ("data.pad=1000000", "data.pad must be in"),
        ("data.pad=-1", "data.pad must be in"),
        ("data.resize=4", "data.resize must be ≥ 8"),
        ("train.class_weights=[1, 0]", "train.class_weights must be none, auto or a list"),
        ("data.size=4", "data.size must be an integer in"),
        ("run.name=../x", "not a folder name inside --runs-dir"),
    ],
)
def test_value_ranges(override, match):
    with pytest.raises(ConfigError, match=match):
        validate(apply_overrides(Config(), ["data.name=synthetic", override]))


def test_a_value_checked_against_the_data_is_checked_by_the_same_function():
    """data.pad and train.class_weights: one check each, in config/checks.py, which the trainer
    and the loss call again once the image side and the class count are known."""
    from cnnlab.config import check_class_weights, check_pad

    check_pad(28, side=28)
    with pytest.raises(ConfigError, match="data.pad=29 is larger than the 28-pixel images"):
        check_pad(29, side=28)
    check_class_weights([1, 2.5])
    check_class_weights("auto", classes=3)
    with pytest.raises(ConfigError, match="a list of 3 numbers > 0 .* got 2 values"):
        check_class_weights([1, 2.5], classes=3)
