"""The official ODConv code's formulation (OSVAI/ODConv, ``_forward_impl_common`` / ``_forward_impl_pw1x``), as a
swap-in for our ``ODConv2d`` layers, so benchmarks can time "the official code" on the same parameters.

The reference computes, for every layer and batch alike: x * channel attention, one per-sample aggregated kernel
sum_i(spatial * kernel attention * W_i), one grouped conv with the batch folded into the groups, then the output
times the filter attention; a 1x1 layer with one kernel runs as a plain conv between the two scalings. It has none
of our per-layer form choices (tap-sum, kernel-side scaling, batched matmul). The attention branch is our layer's
own (the same computation as the reference's), so only the convolution formulation differs.
"""

from __future__ import annotations

from torch import Tensor, nn

from odconv_surgery import ODConv2d
from odconv_surgery.passes.fx.swap_modules import swap_module


class UnsupportedReferenceLayerError(ValueError):
    """The official code has no equivalent of this layer's settings."""


class ReferenceODConv2d(nn.Module):
    """Computes ``layer``'s function the way the official code does, sharing ``layer``'s parameters and buffers."""

    def __init__(self, layer: ODConv2d) -> None:
        super().__init__()
        if not layer.share_attention:
            raise UnsupportedReferenceLayerError(
                "the official ODConv code shares one attention across kernels; convert with share_attention=True"
            )
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        layer = self.layer
        att = layer.compute_attentions(x)  # channel attention carries the fixed kernel_scale, a scalar
        x = x * att.channel
        if layer.kernel_size == (1, 1) and layer.kernel_num == 1:  # _forward_impl_pw1x
            out = layer._conv(x, layer.weight[0], layer.groups)
        else:  # _forward_impl_common
            # spatial * kernel attention first (small), then one product with the bank, summed over the kernels
            scales = [a for a in (att.spatial, att.kernel) if a is not None]
            scale = scales[0] * scales[1] if len(scales) == 2 else scales[0]
            out = layer._grouped_per_sample_conv(x, (scale * layer.weight.unsqueeze(0)).sum(dim=1))
        if att.filter is not None:
            out = out * att.filter
        return layer._add_bias(out)


def use_reference_formulation(model: nn.Module) -> int:
    """Wrap every ``ODConv2d`` of ``model`` (in place) in ``ReferenceODConv2d``; returns how many were wrapped."""
    layers = [m for m in model.modules() if isinstance(m, ODConv2d)]
    for layer in layers:
        swap_module(model, layer, ReferenceODConv2d(layer))
    return len(layers)
