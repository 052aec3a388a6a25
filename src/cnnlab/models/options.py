"""The layer options the configurable models share (activation, init, batch norm, dropout,
attention) as one ``BlockOptions`` object, and the decorator that still offers them to
callers as plain builder keywords."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields, replace

from torch import nn

from cnnlab.models.attention import maybe_attention
from cnnlab.models.layers import dropout_places, init_weights, norm_places


@dataclass(frozen=True)
class BlockOptions:
    """How a model builds its blocks; every field is a model option of the same name."""

    activation: str = "relu"
    init: str = "default"
    init_std: float = 0.01
    batch_norm: str = "none"
    dropout: float = 0.0
    dropout_at: str = "fc"
    attention: str = "none"
    attention_heads: int = 1
    attention_dim: int = 0

    def norms(self) -> tuple[bool, bool]:
        """(batch norm after the convs, after the hidden FCs)."""
        return norm_places(self.batch_norm)

    def dropouts(self) -> tuple[float, float]:
        """(dropout rate in the conv part, in the FC part)."""
        return dropout_places(self.dropout, self.dropout_at)

    def attention_layers(self, channels: int) -> list[nn.Module]:
        """[] or one self-attention block over a ``channels``-channel map."""
        return maybe_attention(channels, self.attention, self.attention_heads, self.attention_dim)

    def init_weights(self, module: nn.Module) -> nn.Module:
        return init_weights(module, self.init, self.init_std)


BLOCK_OPTIONS = tuple(f.name for f in fields(BlockOptions))


def block_options(**defaults):
    """Class decorator for a model whose ``__init__`` takes ``blocks: BlockOptions``.

    The class is then called with BlockOptions' fields as keywords (``activation="tanh"``),
    each defaulting to ``defaults`` or else BlockOptions' own default, and its signature
    lists them as ordinary keywords: ``create_model``'s option check, ``option_default`` and
    ``cnnlab models`` read builder signatures, so they keep seeing every option."""
    base = BlockOptions(**defaults)

    def deco(cls):
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, blocks: BlockOptions | None = None, **kwargs):
            given = {k: kwargs.pop(k) for k in BLOCK_OPTIONS if k in kwargs}
            init(self, *args, blocks=replace(blocks or base, **given), **kwargs)

        own = inspect.signature(init).parameters.values()
        params = [p for p in own if p.name not in ("self", "blocks")]
        params += [
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=getattr(base, f.name),
                annotation=f.type,
            )
            for f in fields(BlockOptions)
        ]
        cls.__init__ = __init__
        cls.__signature__ = inspect.Signature(params)
        return cls

    return deco
