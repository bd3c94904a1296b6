"""The lowering of the ODConv marker (the passes that use it: ``lower_odconv``, ``lower_by_batch_regime``).

File forms: ``naive`` (reference), ``any`` (fused, any batch size), ``batch1`` (fused, batch size 1; with an NCHWc
block, onnxruntime's NCHWc contrib ops). ``plan.py`` decides how each layer is lowered in each file form (which leaf
form, where its attentions are applied, which NCHWc form) and dispatches to the leaf forms, one per module
(``naive``, ``static_kernel``, ``im2col``, ``per_sample``, ``batch1``, ``batch1_nchwc``), which build what the plan
says and import no other form. ``FORMS`` maps each file form to plan's dispatcher, of one signature
``(builder, layer, planner) -> y``. Shared pieces: ``builder`` (node factory, ``Geometry``, ``Scaling``),
``attention`` (the attention branch), ``pooling`` (its input pooling), ``nchwc_layout`` (which layers fit the
blocked Conv, channel padding, pre-blocked static kernels); ``tuning_cache`` holds the tuner's timings.
"""

from __future__ import annotations

import logging
from typing import Callable

import onnx
import onnx_graphsurgeon as gs

from ....errors import InvalidValueError
from ..base import export_sorted
from ..common import OdLayer, import_graph, odconv_layers
from .builder import LOWERED_TAG, Builder
from .plan import FILE_FORMS, Planner, dispatcher, file_planner

logger = logging.getLogger("odconv_surgery.passes.onnx")

#: A form lowers one layer: ``form(builder, layer, planner) -> y`` (the planner picks NCHWc forms; None for the
#: portable target). Every form builds the attention it needs itself.
Form = Callable[[Builder, OdLayer, "Planner | None"], gs.Variable]

FORMS: dict[str, Form] = {name: dispatcher(name) for name in FILE_FORMS}


def lower(model: onnx.ModelProto, form: str = "any", prefix: str = "", nchwc_block: int | None = None,
          planner: Planner | None = None) -> onnx.ModelProto:
    """Lower every ODConv marker with ``form`` ('naive', 'any' or 'batch1'); with ``nchwc_block`` the 'batch1' form
    uses onnxruntime's NCHWc contrib ops of that block size (see ``PassContext``), each layer in the form
    ``planner`` picks (the cost model's when None)."""
    graph = import_graph(model)
    lower_graph(graph, form, prefix, nchwc_block, planner)
    return export_sorted(graph, model)


def lower_graph(graph: gs.Graph, form: str, prefix: str = "", nchwc_block: int | None = None,
                planner: Planner | None = None) -> int:
    """Lower ``graph``'s markers in place (node names under ``prefix``); the number of layers lowered.

    With an NCHWc block, the 'batch1' form builds each layer as NCHWc Convs (the form ``planner`` picks) and the
    'any' form runs its per-sample layers that way. The whole-graph NCHWc steps are passes of their own that run
    after the lowering: ``block_static_convs``, ``chain_nchwc``, ``guard_nchwc_block``."""
    if form not in FORMS:
        raise InvalidValueError(f"unknown lowering form {form!r}; expected one of {sorted(FORMS)}")
    planner = file_planner(form, nchwc_block, planner)
    layers = odconv_layers(graph)
    for layer in layers:
        b = Builder(graph, f"{prefix}{layer.name}{LOWERED_TAG}{form}")
        y_new = FORMS[form](b, layer, planner)
        y_old = layer.y
        # Re-point: the producer of y_new now produces y_old's tensor (keeps the downstream names).
        producer = y_new.inputs[0]
        idx = producer.outputs.index(y_new)
        layer.node.outputs.clear()
        producer.outputs[idx] = y_old
    return len(layers)


__all__ = ["FORMS", "lower", "lower_graph"]
