"""Form ``per_sample`` (any batch size): a batch-1 form of the layer run once per sample, by an ONNX ``Scan`` over
the batch.

For a depthwise layer, every batch-independent formulation without a per-sample kernel touches the activation
k^2 times over (k^2 shifted views, each scaled per sample and tap, then summed); a grouped conv with the batch folded
into its groups would need a batch-dependent ``group`` attribute. The Scan instead builds each sample's small
kernel and runs one depthwise Conv on that sample, so the batch costs about batch x the batch-1 form. The body
is built by the function the caller passes (``plan.py``: the layer's batch-1 form, its NCHWc form for
``target="ort-cpu"``, where dense layers run this way too) on an (1, C, H, W) view of the sample, with its own
constants. A batch of 0 skips the Scan (which refuses it) for an empty output.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from ..common import OdLayer
from .builder import Builder, Geometry, layer_view

#: Builds one sample's output (1, C_out, H_out, W_out) from a view of the layer on that sample (1, C_in, H, W).
BodyBuilder = Callable[[Builder, OdLayer], gs.Variable]


def lower_per_sample(b: Builder, layer: OdLayer, body_form: BodyBuilder) -> gs.Variable:
    """``Scan`` over the batch of what ``body_form`` builds for one sample of ``layer`` (a batch-1 form); the output is
    (B, C_out, H_out, W_out)."""
    a = layer.attrs
    geo = Geometry.of(layer)
    hin, win = a["input_hw"]
    body = gs.Graph(name=f"{b.prefix}/per_sample", opset=b.graph.opset)
    bb = Builder(body, f"{b.prefix}/per_sample")
    sample = gs.Variable(f"{bb.prefix}/x", dtype=np.float32, shape=[a["in_channels"], hin, win])
    body.inputs = [sample]
    x = bb.op("Unsqueeze", [sample, bb.ints("axes", [0])])
    with layer_view(layer, x) as view:
        y = body_form(bb, view)
    out = bb.op("Squeeze", [y, bb.ints("axes", [0])])
    out.dtype, out.shape = np.float32, [a["out_channels"], geo.ho, geo.wo]
    body.outputs = [out]
    return _unless_empty(b, layer.x, [a["out_channels"], geo.ho, geo.wo], lambda g: Builder(g, f"{b.prefix}/scan").op(
        "Scan", [layer.x], {"body": body, "num_scan_inputs": 1}))


def _unless_empty(b: Builder, x: gs.Variable, sample_shape: list[int], build) -> gs.Variable:
    """``If(batch == 0)``: an empty (0, *sample_shape) tensor, else what ``build(branch_graph)`` makes
    (onnxruntime's Scan refuses a sequence of length 0)."""
    batch = b.op("Shape", [x], {"start": 0, "end": 1}, dtype=np.int64)
    cond = b.op("Squeeze", [b.op("Equal", [batch, b.ints("zero", [0])], dtype=np.bool_)], dtype=np.bool_)
    empty_graph = gs.Graph(name=f"{b.prefix}/empty", opset=b.graph.opset)
    empty = Builder(empty_graph, f"{b.prefix}/empty").op(
        "ConstantOfShape", [gs.Constant(f"{b.prefix}/empty_shape", np.array([0, *sample_shape], np.int64))],
        {"value": gs.Constant(f"{b.prefix}/empty_value", np.zeros(1, np.float32))})
    empty.dtype, empty.shape = np.float32, [0, *sample_shape]
    empty_graph.outputs = [empty]
    run_graph = gs.Graph(name=f"{b.prefix}/run", opset=b.graph.opset)
    y = build(run_graph)
    y.dtype, y.shape = np.float32, ["batch", *sample_shape]
    run_graph.outputs = [y]
    return b.op("If", [cond], {"then_branch": empty_graph, "else_branch": run_graph})
