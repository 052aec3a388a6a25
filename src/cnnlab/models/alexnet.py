"""The AlexNet family: the article's code sample, the 2012 paper, torchvision's form, and
a 32×32 adaptation for CIFAR-10."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cnnlab.errors import CheckpointError, ConfigError
from cnnlab.models.base import Classifier, register_model
from cnnlab.models.layers import conv_block, get_activation
from cnnlab.models.options import BlockOptions, block_options


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after): out = ceil(size/s), extra pixel after."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _flat_size(features: nn.Module, c: int, s: int) -> tuple[int, int, int]:
    """(C, H, W) of the feature map for a c×s×s input (one dry run at build time)."""
    was = features.training
    features.eval()
    with torch.no_grad():
        shape = features(torch.zeros(1, c, s, s)).shape[1:]
    features.train(was)
    if min(shape) < 1:
        raise ValueError("the input is too small for this network")
    return tuple(shape)


@register_model(
    "alexnet", (3, 227), "the article's AlexNet (BN after conv1/2/5, 'same' 11×11/4 conv1)"
)
@block_options(batch_norm="conv", dropout=0.5)
class AlexNetArticle(Classifier):
    """The article's code sample: conv1 96@11×11/4 'same' → ReLU → BN → max-pool 3/2,
    conv2 256@5×5 'same' → ReLU → BN → pool, conv3 384, conv4 384, conv5 256 (3×3 'same'),
    ReLU → BN → pool, FC 4096 → dropout 0.5 → FC 4096 → dropout 0.5 → classes.
    227×227×3 gives 57 → 28 → 28 → 13 → 13 → 6: 256·6·6 = 9216 flat features.
    ``batch_norm``: 'conv' (default) = after conv1/2/5 as in the article."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 227,
        *,
        blocks: BlockOptions,
    ):
        super().__init__()
        bn_conv, bn_fc = blocks.norms()
        dr_conv, dr_fc = blocks.dropouts()
        act = blocks.activation

        def block(cin, cout, k, s, bn, pool):
            # the article applies ReLU inside the conv, then batch norm
            layers = [nn.ZeroPad2d(_pad4(k, s)), nn.Conv2d(cin, cout, k, s), get_activation(act)]
            if bn:
                layers.append(nn.BatchNorm2d(cout))
            if pool:
                layers.append(nn.MaxPool2d(3, 2))
            if dr_conv:
                layers.append(nn.Dropout2d(dr_conv))
            return layers

        size = [input_size]

        def _pad4(k, s):
            lo, hi = _same_pad(size[0], k, s)
            size[0] = -(-size[0] // s)
            return (lo, hi, lo, hi)

        def pooled():
            size[0] = (size[0] - 3) // 2 + 1

        feats = [*block(in_channels, 96, 11, 4, bn_conv, True)]
        pooled()
        feats += block(96, 256, 5, 1, bn_conv, True)
        pooled()
        feats += block(256, 384, 3, 1, False, False)
        feats += block(384, 384, 3, 1, False, False)
        feats += block(384, 256, 3, 1, bn_conv, False)
        # attention over the 13×13 conv5 map, before the last pool
        feats += blocks.attention_layers(256)
        feats.append(nn.MaxPool2d(3, 2))
        self.features = nn.Sequential(*feats)
        c, h, w = _flat_size(self.features, in_channels, input_size)
        self.set_head(c * h * w, (4096, 4096), num_classes, act, bn_fc, dr_fc)
        blocks.init_weights(self)


@register_model(
    "alexnet-2012",
    (3, 224),
    "Krizhevsky et al. 2012 (LRN, overlapping pools, groups=2 for two towers)",
)
@block_options(init="normal", dropout=0.5)
class AlexNet2012(Classifier):
    """Krizhevsky, Sutskever & Hinton 2012: 96-256-384-384-256 filters, ReLU, local
    response normalisation (k=2, n=5, α=1e-4, β=0.75) after conv1/2, overlapping 3×3/2
    max-pooling, dropout 0.5 before FC6/FC7. ``groups=2`` splits conv2/4/5 into the
    paper's two GPU towers (conv3 and the FCs stay connected across towers).
    Weights N(0, 0.01) as in the paper; biases 0 (the paper's 1s for conv2/4/5/FC are a
    known trap with plain SGD, so they are not copied)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 224,
        groups: int = 1,
        lrn: bool = True,
        *,
        blocks: BlockOptions,
    ):
        super().__init__()
        if int(groups) not in (1, 2):
            raise ConfigError(f"groups must be 1 or 2 (two towers), got {groups!r}")
        g = int(groups)
        activation = blocks.activation
        bn_conv, bn_fc = blocks.norms()
        dr_conv, dr_fc = blocks.dropouts()

        def norm():
            return [nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)] if lrn else []

        def pool():
            return nn.MaxPool2d(3, 2)  # overlapping: window 3 > stride 2

        self.features = nn.Sequential(
            *conv_block(nn.Conv2d(in_channels, 96, 11, 4, 2), activation, bn_conv),
            *norm(),
            pool(),
            *conv_block(nn.Conv2d(96, 256, 5, 1, 2, groups=g), activation, bn_conv),
            *norm(),
            pool(),
            *conv_block(nn.Conv2d(256, 384, 3, 1, 1), activation, bn_conv, None, dr_conv),
            *conv_block(nn.Conv2d(384, 384, 3, 1, 1, groups=g), activation, bn_conv, None, dr_conv),
            *conv_block(nn.Conv2d(384, 256, 3, 1, 1, groups=g), activation, bn_conv),
            *blocks.attention_layers(256),
            pool(),
        )
        c, h, w = _flat_size(self.features, in_channels, input_size)
        fc = (4096, 4096)
        self.set_head(c * h * w, fc, num_classes, activation, bn_fc, dr_fc, dropout_first=True)
        blocks.init_weights(self)


# torchvision's AlexNet keeps the three FCs in one ``classifier`` Sequential; here the last
# Linear is ``classifier`` and the rest is ``head`` (the cnnlab contract), so state-dict keys
# are translated: classifier.1 → head.3, classifier.4 → head.6, classifier.6 → classifier.
TV_KEYS = {"classifier.1.": "head.3.", "classifier.4.": "head.6.", "classifier.6.": "classifier."}


def from_torchvision_keys(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        for a, b in TV_KEYS.items():
            if k.startswith(a):
                k = b + k[len(a) :]
                break
        out[k] = v
    return out


def to_torchvision_keys(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        for a, b in TV_KEYS.items():
            if k.startswith(b):
                k = a + k[len(b) :]
                break
        out[k] = v
    return out


def read_state_dict(p: Path) -> dict[str, torch.Tensor]:
    """A ``.pth`` state dict of tensors (read with ``weights_only=True``; a checkpoint dict
    holding one under ``state_dict`` is unwrapped)."""
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"weights file {str(p)!r} not found") from None
    except Exception as e:  # noqa: BLE001  (pickle/zip errors of many types)
        raise CheckpointError(
            f"cannot read {str(p)!r} as a torchvision state dict: {type(e).__name__}"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{str(p)!r} is not a state dict of tensors")
    return state


@register_model(
    "alexnet-torchvision", (3, 224), "torchvision's AlexNet; weights=PATH loads a torchvision .pth"
)
class AlexNetTorchvision(Classifier):
    """torchvision.models.alexnet (the 'one weird trick' variant: 64-192-384-256-256,
    adaptive 6×6 average pool, dropout before FC6/FC7): 61,100,840 parameters.
    ``weights=PATH`` loads a torchvision state dict (.pth, read with weights_only=True);
    with a class count other than the file's, every layer but the last is loaded."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 224,
        dropout: float = 0.5,
        weights: str | None = None,
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        _flat_size(self.features, in_channels, input_size)  # fails early on tiny inputs
        self.num_features = 4096
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d((6, 6)),
            nn.Flatten(),
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(4096, num_classes)
        # the file path is not a model option a checkpoint needs: its weights are saved
        self.cnnlab_transient_args = ("weights",)
        if weights:
            self.load_torchvision(weights)

    def load_torchvision(self, path: str | Path) -> None:
        p = Path(path)
        state = from_torchvision_keys(read_state_dict(p))
        own = self.state_dict()
        if set(state) != set(own):
            missing = sorted(set(own) - set(state))[:3]
            raise CheckpointError(
                f"{str(p)!r} is not an AlexNet state dict (missing e.g. {', '.join(missing)})"
            )
        skip = {k for k in state if k.startswith("classifier.") and state[k].shape != own[k].shape}
        for k, v in state.items():
            if k not in skip and v.shape != own[k].shape:
                raise CheckpointError(
                    f"{str(p)!r}: {k} has shape {tuple(v.shape)}, the model needs "
                    f"{tuple(own[k].shape)} (check in_channels)"
                )
        self.load_state_dict({k: v for k, v in state.items() if k not in skip}, strict=not skip)


@register_model("alexnet-cifar", (3, 32), "AlexNet layout for 32×32 (3×3 convs, BN, FC 1024-1024)")
@block_options(init="kaiming_normal", batch_norm="conv", dropout=0.5)
class AlexNetCifar(Classifier):
    """AlexNet's five-conv/three-FC layout for 32×32 inputs: 3×3 convs 64-192-384-256-256
    (the torchvision widths), batch norm, three 2×2 max-pools (32 → 16 → 8 → 4), FC
    1024-1024 with dropout 0.5. 11×11/4 would leave an 8×8 map after conv1."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        input_size: int = 32,
        hidden: int = 1024,
        *,
        blocks: BlockOptions,
    ):
        super().__init__()
        bn_conv, bn_fc = blocks.norms()
        dr_conv, dr_fc = blocks.dropouts()
        a = blocks.activation
        self.features = nn.Sequential(
            *conv_block(nn.Conv2d(in_channels, 64, 3, 1, 1), a, bn_conv, nn.MaxPool2d(2), dr_conv),
            *conv_block(nn.Conv2d(64, 192, 3, 1, 1), a, bn_conv, nn.MaxPool2d(2), dr_conv),
            *conv_block(nn.Conv2d(192, 384, 3, 1, 1), a, bn_conv),
            *conv_block(nn.Conv2d(384, 256, 3, 1, 1), a, bn_conv),
            *conv_block(nn.Conv2d(256, 256, 3, 1, 1), a, bn_conv),
            *blocks.attention_layers(256),
            nn.MaxPool2d(2),
        )
        c, h, w = _flat_size(self.features, in_channels, input_size)
        fc = (int(hidden), int(hidden))
        self.set_head(c * h * w, fc, num_classes, a, bn_fc, dr_fc, dropout_first=True)
        blocks.init_weights(self)
