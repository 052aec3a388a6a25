import pytest
import torch
import torch.nn.functional as F

from cnnlab.config import Config, apply_overrides
from cnnlab.errors import ConfigError
from cnnlab.train.losses import build_loss, class_counts, class_weights
from cnnlab.train.validate import validate


def test_auto_weights_are_inverse_frequency_with_mean_one_over_the_images():
    y = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    counts = class_counts(y, 4)  # class 3 has no images
    assert counts.tolist() == [90, 9, 1, 0]
    w = class_weights("auto", counts)
    assert w[3] == 0 and w[0] * 90 == pytest.approx(w[2] * 1) == pytest.approx(w[1] * 9)
    assert w[y].mean().item() == pytest.approx(1.0)
    assert class_weights("none", counts) is None and class_weights(None, counts) is None
    torch.testing.assert_close(class_weights([1, 2.5, 1, 3], counts), torch.tensor([1, 2.5, 1, 3]))


@pytest.mark.parametrize("bad", [[1, 2, 3], [1, 2, 0, 1], [1, -1, 1, 1], "often"])
def test_bad_weights_are_one_clear_error(bad):
    with pytest.raises(ConfigError, match="train.class_weights must be none, auto or a list of 4"):
        class_weights(bad, torch.tensor([5, 5, 5, 5]))


def test_weighted_loss_is_the_image_mean_of_weighted_losses_label_smoothing_kept():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(16, 3, generator=g), torch.randint(0, 3, (16,), generator=g)
    w = torch.tensor([0.5, 2.0, 1.0])
    for s in (0.0, 0.1):
        per = F.cross_entropy(logits, y, label_smoothing=s, reduction="none")
        got = build_loss("cross_entropy", 3, s, w)(logits, y)
        torch.testing.assert_close(got, (per * w[y]).mean())
        ones = build_loss("cross_entropy", 3, s, torch.ones(3))(logits, y)
        torch.testing.assert_close(ones, build_loss("cross_entropy", 3, s)(logits, y))
    nll = build_loss("nll", 3, 0.0, w)(logits, y)
    torch.testing.assert_close(nll, (F.cross_entropy(logits, y, reduction="none") * w[y]).mean())
    with pytest.raises(ConfigError, match="cross_entropy and nll, not 'mse'"):
        build_loss("mse", 3, 0.0, w)


def test_config_keys_parse_and_validate():
    cfg = apply_overrides(Config(), ["train.class_weights=[1, 2]", "data.sampler=balanced"])
    assert cfg.train.class_weights == [1, 2] and cfg.data.sampler == "balanced"
    assert apply_overrides(Config(), ["train.class_weights=none"]).train.class_weights is None
    validate(apply_overrides(Config(), ["train.class_weights=auto"]))
    for sets, msg in (
        (["data.sampler=balance"], "unknown data.sampler 'balance'.*did you mean 'balanced'"),
        (["train.class_weights=[1, 0]"], "train.class_weights must be none, auto or a list"),
        (["train.class_weights=heavy"], "train.class_weights must be none, auto or a list"),
        (["data.sampler=balanced", "data.labels_per_class=10"], "nothing to balance"),
    ):
        with pytest.raises(ConfigError, match=msg):
            validate(apply_overrides(Config(), sets))
