"""The AlexNet and improved LeNet-5 recipes resolve to valid configs and buildable models."""

import pytest

from cnnlab.config import load_recipe
from cnnlab.models import MODELS, create_model
from cnnlab.train.validate import validate


@pytest.mark.parametrize(
    "recipe,model",
    [
        ("alexnet-imagenet", "alexnet-2012"),
        ("alexnet-fashion-mnist-224", "alexnet"),
        ("alexnet-cifar10", "alexnet-cifar"),
        ("lenet5-cifar10", "lenet5"),
        ("lenet5-mnist", "lenet5"),
        ("lenet5-fashion-mnist", "lenet5"),
        ("lenet5-fashion-mnist-fast", "lenet5"),
        ("photos", "alexnet-cifar"),
    ],
)
def test_recipe(recipe, model):
    c = validate(load_recipe(f"recipes/{recipe}.yaml"))
    assert c.model.name == model
    if MODELS.get(model).default_input[1] <= 64:  # the big ones are built in test_alexnet
        create_model(model, **c.model.args)


def test_imagenet_recipe_is_the_paper():
    c = load_recipe("recipes/alexnet-imagenet.yaml")
    assert (c.optim.name, c.optim.lr, c.optim.momentum, c.optim.weight_decay) == (
        "sgd",
        0.01,
        0.9,
        0.0005,
    )
    assert (c.sched.name, c.sched.gamma, c.train.epochs, c.train.batch_size) == (
        "plateau",
        0.1,
        90,
        128,
    )
    assert c.data.name == "imagefolder"


def test_the_fashion_recipes_average_the_weights_and_score_mirror_images():
    """Fashion-MNIST's classes keep their meaning when mirrored: both recipes train on
    mirror images, score each test image with its mirror image and keep a weight average."""
    for name in ("lenet5-fashion-mnist", "lenet5-fashion-mnist-fast"):
        c = validate(load_recipe(f"recipes/{name}.yaml"))
        assert "flip" in c.data.augment.split(",") and c.train.eval_flip and c.train.ema > 0
    digits = validate(load_recipe("recipes/lenet5-mnist.yaml"))
    assert "flip" not in digits.data.augment and not digits.train.eval_flip
