"""The two kinds of converted layer as one: an ``ODConv2d`` in place of a conv, an ``ODLinear`` in place of a Linear.

Code that converts, saves, folds or counts layers goes through these helpers, so that an ``ODLinear`` is one layer
under its own name (the name its Linear had), never the ``ODConv2d`` it holds seen on its own.
"""

from __future__ import annotations

from typing import Any, Union

from torch import nn

from .linear import ODLinear, pointwise_conv
from .odconv import ODConv2d

ConvertedLayer = Union[ODConv2d, ODLinear]
CONVERTED_TYPES: tuple[type[nn.Module], ...] = (ODConv2d, ODLinear)


def as_conv(module: nn.Conv2d | nn.Linear) -> nn.Conv2d:
    """The convolution a static layer is converted as: a conv itself, a Linear its 1x1 view (``pointwise_conv``)."""
    return pointwise_conv(module) if isinstance(module, nn.Linear) else module


def inner_conv(layer: ConvertedLayer) -> ODConv2d:
    """The ``ODConv2d`` that computes a converted layer (an ``ODLinear``'s ``conv``, an ``ODConv2d`` itself)."""
    return layer.conv if isinstance(layer, ODLinear) else layer


def convert_layer(module: nn.Conv2d | nn.Linear, **from_conv: Any) -> ConvertedLayer:
    """The converted layer replacing ``module``: ``ODConv2d.from_conv`` of a conv, ``ODLinear.from_linear`` of a
    Linear, ``from_conv`` being their keywords."""
    if isinstance(module, nn.Linear):
        return ODLinear.from_linear(module, **from_conv)
    return ODConv2d.from_conv(module, **from_conv)


def converted_layers(model: nn.Module) -> dict[str, ConvertedLayer]:
    """Every converted layer of ``model`` by name, in module order: each ``ODLinear``, and each ``ODConv2d`` that is
    not the inner layer of an ``ODLinear``."""
    inner = {id(m.conv) for m in model.modules() if isinstance(m, ODLinear)}
    return {name: m for name, m in model.named_modules()
            if isinstance(m, ODLinear) or (isinstance(m, ODConv2d) and id(m) not in inner)}
