"""torch.fx side of the pipeline: trace (``tracer``), read structure (``graph_analysis``, or ``hook_order`` when
tracing fails), describe the candidates (``candidates``) and rewrite the module tree (``swap_modules``)."""

from .candidates import ConvLayer, ModelAnalysis, UntraceableModelError, analyse_model
from .swap_modules import aliases_of, swap_module

__all__ = ["ConvLayer", "ModelAnalysis", "UntraceableModelError", "analyse_model", "aliases_of", "swap_module"]
