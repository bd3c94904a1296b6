"""The lowering forms of the ODConv marker, one per module (the pass that uses them: ``lower_odconv``).

``naive`` (reference), ``any`` (fused, any batch size), ``batch1`` (fused, batch size 1) and, with an NCHWc
block, ``batch1`` through onnxruntime's NCHWc contrib ops (``batch1_nchwc``, each layer's form chosen by
``plan``). ``FORMS`` maps each name to a function of one signature, ``(builder, layer, planner) -> y``. Shared
pieces: ``builder`` (node factory, ``Geometry``), ``attention`` (the attention branch).
"""

from __future__ import annotations

import logging
from typing import Callable

import onnx
import onnx_graphsurgeon as gs

from ....errors import InvalidValueError
from ..base import export_sorted
from ..common import OdLayer, import_graph, odconv_layers
from .any_batch import lower_any
from .attention import build_attention
from .builder import LOWERED_TAG, Builder
from .naive import lower_naive
from .plan import Planner, lower_batch1_planned

logger = logging.getLogger("odconv_surgery.passes.onnx")

#: A form lowers one layer: ``form(builder, layer, planner) -> y`` (the planner picks NCHWc forms; None for the
#: portable target). Every form builds the attention it needs itself.
Form = Callable[[Builder, OdLayer, "Planner | None"], gs.Variable]


def _naive(b: Builder, layer: OdLayer, planner: Planner | None) -> gs.Variable:
    return lower_naive(b, layer, build_attention(b, layer))


def _any(b: Builder, layer: OdLayer, planner: Planner | None) -> gs.Variable:
    return lower_any(b, layer, planner=planner)


FORMS: dict[str, Form] = {"naive": _naive, "any": _any, "batch1": lower_batch1_planned}


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
    nchwc = nchwc_block and form in ("batch1", "any")
    planner = (planner or Planner(nchwc_block)) if nchwc else None  # the cost model's when none is given
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
