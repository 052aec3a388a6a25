"""LeNet-5: the article's form and LeCun et al.'s 1998 form."""

from __future__ import annotations

from torch import nn

from cnnlab.models.base import Classifier, conv_out, register_model
from cnnlab.models.layers import conv_block
from cnnlab.models.options import BlockOptions, block_options


@register_model("lenet5", (1, 28), "the article's LeNet-5 (tanh convs, FC 256-128 ReLU)")
@block_options(activation="tanh")
class LeNet5(Classifier):
    """The article's LeNet-5: conv 6@5×5 pad 2 → act → max-pool → conv 16@5×5 → act →
    max-pool → FC 256 → FC 128 → FC classes (softmax is in the loss)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 28,
        fc_activation: str = "relu",
        *,
        blocks: BlockOptions,
    ):
        super().__init__()
        activation = blocks.activation
        bn_conv, bn_fc = blocks.norms()
        dr_conv, dr_fc = blocks.dropouts()
        self.features = nn.Sequential(
            *conv_block(
                nn.Conv2d(in_channels, 6, 5, padding=2),
                activation,
                bn_conv,
                nn.MaxPool2d(2),
                dr_conv,
            ),
            *conv_block(nn.Conv2d(6, 16, 5), activation, bn_conv, nn.MaxPool2d(2), dr_conv),
            *blocks.attention_layers(16),
        )
        s = conv_out(conv_out(conv_out(conv_out(input_size, 5, 1, 2), 2, 2), 5), 2, 2)
        self.set_head(16 * s * s, (256, 128), num_classes, fc_activation, bn_fc, dr_fc)
        blocks.init_weights(self)


@register_model(
    "lenet5-1998", (1, 32), "LeCun et al. 1998 (C1-S2-C3-S4-C5-F6, scaled tanh, avg-pool)"
)
@block_options(activation="lecun_tanh", init="lecun_normal")
class LeNet5_1998(Classifier):
    """LeCun et al. 1998: C1 6@5×5 → S2 → C3 16@5×5 → S4 → C5 120 → F6 84 → classes,
    scaled tanh, average-pool subsampling. 28-pixel inputs are padded to 32 as the paper
    did for MNIST. (Full C3 connectivity and a linear output in place of the RBF layer,
    the common reading: 61,706 parameters on 32×32×1.)"""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 32,
        *,
        blocks: BlockOptions,
    ):
        super().__init__()
        activation = blocks.activation
        bn_conv, bn_fc = blocks.norms()
        dr_conv, dr_fc = blocks.dropouts()
        pad = 2 if input_size < 32 else 0
        self.features = nn.Sequential(
            # C1 → S2, C3 → S4
            *conv_block(
                nn.Conv2d(in_channels, 6, 5, padding=pad),
                activation,
                bn_conv,
                nn.AvgPool2d(2),
                dr_conv,
            ),
            *conv_block(nn.Conv2d(6, 16, 5), activation, bn_conv, nn.AvgPool2d(2), dr_conv),
            *blocks.attention_layers(16),
        )
        s = conv_out(conv_out(conv_out(conv_out(input_size, 5, 1, pad), 2, 2), 5), 2, 2)
        # C5 (a 5×5 conv over a 5×5 map), F6
        self.set_head(16 * s * s, (120, 84), num_classes, activation, bn_fc, dr_fc)
        blocks.init_weights(self)
