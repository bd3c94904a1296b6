"""torch.fx tracing that keeps every convolution and Linear a leaf, so each call site is one graph node."""

from __future__ import annotations

import torch
from torch import fx, nn

CONV_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd,)
#: What the analysis describes: convolutions, and the Linear layers (which only some policies convert).
LAYER_TYPES: tuple[type[nn.Module], ...] = (*CONV_TYPES, nn.Linear)


class ConvLeafTracer(fx.Tracer):
    """An fx tracer that never traces into a convolution or a Linear (subclasses, ODConv2d and ODLinear included)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        from ...nn.linear import ODLinear
        from ...nn.odconv import ODConv2d

        if isinstance(m, LAYER_TYPES + (ODConv2d, ODLinear)):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace_model(model: nn.Module) -> fx.Graph:
    """Symbolically trace ``model`` with convs kept as leaves; raises whatever fx raises on untraceable code."""
    tracer = ConvLeafTracer()
    with torch.no_grad():
        return tracer.trace(model)
