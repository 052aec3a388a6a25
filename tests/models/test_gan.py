import pytest
import torch

from cnnlab.config import GAN_MODELS
from cnnlab.errors import ConfigError
from cnnlab.models.gan import GANS, create_gan, list_gans


@pytest.mark.parametrize("name", ["dcgan", "dcgan-conditional", "dcgan-ac"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32])
def test_generator_discriminator_shapes(name, channels, size):
    torch.manual_seed(0)
    G, D = create_gan(name, channels=channels, size=size, num_classes=10, z_dim=16, width=8)
    cond = GANS.get(name).conditional
    y = torch.tensor([0, 3, 9]) if cond else None
    z = torch.randn(3, 16)
    x = G(z, y)
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1  # tanh range, the range real images are scaled to
    aux = GANS.get(name).auxiliary
    logits = D(x, None if aux else y)
    assert logits.shape == (3,)
    if aux:  # the AC-GAN discriminator also classifies
        adv, cls = D(x, with_class=True)
        assert torch.equal(adv, logits) and cls.shape == (3, 10)
    logits.sum().backward()  # gradients reach the generator through D
    assert all(p.grad is not None for p in G.parameters())
    assert G.cnnlab_args == D.cnnlab_args and G.cnnlab_args["name"] == name


def test_conditioning_changes_the_output():
    torch.manual_seed(0)
    G, D = create_gan("dcgan-conditional", num_classes=10, z_dim=8, width=8)
    G.eval()
    z = torch.randn(1, 8).repeat(2, 1)
    x = G(z, torch.tensor([0, 1]))
    assert not torch.allclose(x[0], x[1])
    with pytest.raises(ValueError):
        G(z)


def test_dcgan_init_and_registry():
    G, D = create_gan("dcgan", width=16)
    w = G.net[0].weight
    assert abs(w.std().item() - 0.02) < 0.005
    assert list_gans() == ["dcgan", "dcgan-ac", "dcgan-conditional"]
    with pytest.raises(ConfigError, match="a DCGAN needs 28 or 32 px"):
        create_gan("dcgan", size=64)
    with pytest.raises(ConfigError, match="unknown gan 'dcgann'; choose one of"):
        create_gan("dcgann")


def test_config_names_the_registered_gans():
    # cnnlab.config sits below models and names the GAN models to pick the GAN task
    assert sorted(GAN_MODELS) == list_gans()
