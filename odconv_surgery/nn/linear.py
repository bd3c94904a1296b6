"""``ODLinear``: a dynamic ``nn.Linear``, computed by the 1x1 ``ODConv2d`` it holds on (N, C) inputs.

A fully connected layer on (N, C) is a 1x1 convolution on (N, C, 1, 1). Holding that convolution as an ``ODConv2d``
lets everything built for the conv serve the Linear unchanged: the settings, the function-preserving init, the
temperature, ``param_groups``, ``fuse_batchnorm``, the accounting, and the export (the inner layer exports as a
marker on a (N, C, 1, 1) input, lowered like any 1x1 layer). CondConv converts a network's classifier this way.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..errors import InvalidTypeError, InvalidValueError
from .odconv import ODConv2d
from .options import LayerOptions


def pointwise_conv(linear: nn.Linear) -> nn.Conv2d:
    """The 1x1 ``nn.Conv2d`` that computes ``linear`` on (N, C, 1, 1): its weight and bias are views of the Linear's
    (nothing is copied; ``requires_grad`` and the train/eval mode carried over). What ``ODConv2d.from_conv`` and the
    memory checks read a Linear as."""
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None, device="meta")
    conv.weight = nn.Parameter(linear.weight.detach()[:, :, None, None], requires_grad=linear.weight.requires_grad)
    if linear.bias is not None:
        conv.bias = nn.Parameter(linear.bias.detach(), requires_grad=linear.bias.requires_grad)
    return conv.train(linear.training)


def linear_from_pointwise(conv: nn.Conv2d) -> nn.Linear:
    """The ``nn.Linear`` computing the 1x1 ``conv`` on (N, C) inputs (its weight and bias as views, ``requires_grad``
    carried over): how a folded ``ODLinear`` becomes static again."""
    linear = nn.Linear(conv.in_channels, conv.out_channels, bias=conv.bias is not None, device="meta")
    linear.weight = nn.Parameter(conv.weight.detach().flatten(1), requires_grad=conv.weight.requires_grad)
    if conv.bias is not None:
        linear.bias = nn.Parameter(conv.bias.detach(), requires_grad=conv.bias.requires_grad)
    return linear.train(conv.training)


class ODLinear(nn.Module):
    """A dynamic fully connected layer, a drop-in for ``nn.Linear`` on (N, in_features) inputs.

    ``conv`` is the 1x1 ``ODConv2d`` that computes it, built from ``layer``: ``ODConv2d``'s keywords (``options``
    or settings such as ``kernel_num=8``, ``device``, ``dtype``, ``check_memory``). Its parameters are the layer's
    (``conv.weight``: the bank (n, out_features, in_features, 1, 1)). Inputs of another rank are refused: a Linear
    applied to token or pixel features ((N, L, C), (N, H, W, C)) has one input per position, which a per-sample
    kernel does not describe.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **layer: Any) -> None:
        super().__init__()
        self.conv = ODConv2d(in_features, out_features, 1, bias=bias, **layer)

    @classmethod
    def around(cls, conv: ODConv2d) -> "ODLinear":
        """The ``ODLinear`` computing ``conv`` (a 1x1, ungrouped, unstrided, unpadded ``ODConv2d``) on (N, C)."""
        if not isinstance(conv, ODConv2d):
            raise InvalidTypeError(f"ODLinear.around expects an ODConv2d, got {type(conv).__name__}")
        pointwise = (conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.dilation == (1, 1)
                     and conv.groups == 1 and conv.padding in ((0, 0), "valid", "same"))
        if not pointwise:
            raise InvalidValueError(f"ODLinear.around needs a 1x1 ODConv2d without groups, stride or padding, got {conv}")
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.conv = conv
        return layer.train(conv.training)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **from_conv: Any) -> "ODLinear":
        """An ``ODLinear`` with ``linear``'s features, built and initialised by ``ODConv2d.from_conv`` from the 1x1
        view of ``linear`` (``pointwise_conv``); ``from_conv`` are that method's keywords (``options``, ``init``,
        ``generator``, ``check_memory``, settings such as ``kernel_num=8``). ``init="pretrained"`` (the default)
        gives ``linear``'s outputs."""
        if not isinstance(linear, nn.Linear):
            raise InvalidTypeError(f"ODLinear.from_linear expects an nn.Linear, got {type(linear).__name__}")
        return cls.around(ODConv2d.from_conv(pointwise_conv(linear), **from_conv))

    @property
    def in_features(self) -> int:
        return self.conv.in_channels

    @property
    def out_features(self) -> int:
        return self.conv.out_channels

    @property
    def options(self) -> LayerOptions:
        """The settings of the layer (those of its ``conv``)."""
        return self.conv.options

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2:
            raise InvalidValueError(
                f"ODLinear expects a 2-D (N, {self.in_features}) input, got shape {tuple(x.shape)}: it converts a "
                "Linear applied to one feature vector per sample (a classifier). Flatten the input to (N, C) before "
                "this layer, or leave the Linear static (drop it from include=, or exclude= it)"
            )
        return self.conv(x[:, :, None, None]).flatten(1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
