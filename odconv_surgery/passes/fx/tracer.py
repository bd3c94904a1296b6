"""torch.fx tracing that keeps every convolution a leaf, so each conv call site is one graph node."""

from __future__ import annotations

import torch
from torch import fx, nn

CONV_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd,)


class ConvLeafTracer(fx.Tracer):
    """An fx tracer that never traces into a convolution (``nn.Conv2d`` subclasses and ODConv2d included)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        from ...nn.odconv import ODConv2d

        if isinstance(m, CONV_TYPES + (ODConv2d,)):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace_model(model: nn.Module) -> fx.Graph:
    """Symbolically trace ``model`` with convs kept as leaves; raises whatever fx raises on untraceable code."""
    tracer = ConvLeafTracer()
    with torch.no_grad():
        return tracer.trace(model)
