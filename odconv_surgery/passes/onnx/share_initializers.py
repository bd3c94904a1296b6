"""Pass ``share_initializers`` (after ``check_and_infer_shapes``): a constant that several subgraphs hold is stored
once, in the main graph.

Invariant: function unchanged; an initializer whose content (data type, shape, bytes) appears in more than one
graph (the main graph, an ``If`` branch, a ``Scan`` body) is stored once in the main graph, the subgraphs reading
it from the enclosing scope as ONNX allows; every other initializer stays where it is. Without it, the graph
tools place each constant in every subgraph that reads it: the blocked ODConv kernels of an ``ort-cpu`` file sit
in the batch-1 branch and again in the per-sample bodies of the other branch, and the static convs' weights in
both branches of a portable file. Reading a weight from the enclosing scope
measured no slower in onnxruntime (batch 1 and 8, order-rotated rounds). It works on the ModelProto (a graph
import would move the constants back).
"""

from __future__ import annotations

import collections
import hashlib

import onnx
from onnx import numpy_helper

from .base import OnnxPass, PassContext


class ShareInitializers(OnnxPass):
    NAME = "share_initializers"
    UNIT = "duplicate initializers merged"

    def transform(self, model: onnx.ModelProto, ctx: PassContext) -> tuple[onnx.ModelProto, int]:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        graphs = list(_graphs(out.graph))
        holders: dict[tuple, int] = collections.Counter()
        for graph in graphs:
            for key in {_content_key(t) for t in graph.initializer}:
                holders[key] += 1
        main = out.graph
        names = {t.name for g in graphs for t in g.initializer} | {o for g in graphs for n in g.node for o in n.output}
        shared: dict[tuple, str] = {_content_key(t): t.name for t in main.initializer}
        merged = 0
        for graph in graphs[1:]:
            renames: dict[str, str] = {}
            keep = []
            for init in graph.initializer:
                key = _content_key(init)
                if holders[key] < 2:
                    keep.append(init)
                    continue
                if key in shared:
                    renames[init.name] = shared[key]
                    merged += 1
                    continue
                if any(t.name == init.name for t in main.initializer):  # a sibling used the name for other data
                    new_name = _unique(init.name, names)
                    renames[init.name] = new_name
                    init.name = new_name
                main.initializer.append(init)
                shared[key] = init.name
            del graph.initializer[:]
            graph.initializer.extend(keep)
            _rename_inputs(graph, {k: v for k, v in renames.items() if k != v})
        return out, merged


def _graphs(graph: onnx.GraphProto):
    """``graph`` and every subgraph under it, outermost first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)


def _content_key(tensor: onnx.TensorProto) -> tuple:
    data = numpy_helper.to_array(tensor)
    return tensor.data_type, tuple(tensor.dims), hashlib.sha1(data.tobytes()).hexdigest()


def _unique(name: str, names: set[str]) -> str:
    i = 1
    while f"{name}__{i}" in names:
        i += 1
    names.add(f"{name}__{i}")
    return f"{name}__{i}"


def _rename_inputs(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    """Rename the readers of ``renames``' keys in ``graph`` and its subgraphs."""
    if not renames:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_inputs(attr.g, renames)
