"""Form ``any`` (the fused lowering for every batch size; measurements: ``benchmarks/onnx_lowering_forms.md``).

* a constant kernel (n = 1, no spatial head: every 1x1 layer with n = 1, and k x k layers whose attentions leave
  the spatial head out): constant Conv on ``x * a_c``, then ``* a_f + b`` (``static_kernel``; ORT's NCHWc path).
* depthwise k x k: the batch-1 form once per sample, in a ``Scan`` over the batch (``per_sample``); with an NCHWc
  block (``target="ort-cpu"``) dense k x k layers run that way too, as NCHWc Convs.
* otherwise, 1x1 n > 1 and dense k x k: im2col (tap-major) scaled by ``a_s (x) a_c`` (whichever of them the layer
  has); n = 1: a constant 1x1 Conv (C_out, k^2 C_in); n > 1: per-sample aggregated kernel ``a_w @ W`` and a
  batched MatMul, scaling whichever of kernel and columns is smaller.
* other grouped convs: the naive form.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..common import OdLayer
from .attention import build_attention
from .builder import Builder, Geometry, finish, kernel_mix, tap_slices
from .naive import lower_naive
from .static_kernel import has_static_kernel, lower_static_kernel


def lower_any(b: Builder, layer: OdLayer, att=None, planner=None) -> gs.Variable:
    """``layer`` for any batch size (``att``: its attentions, built here when None); with a ``planner`` (an NCHWc
    block, ``target="ort-cpu"``) dense k x k layers whose planned batch-1 form is an NCHWc one also run per sample,
    as onnxruntime NCHWc Convs (1x1 and other constant-kernel layers stay batched: per sample they measured
    slower)."""
    from .per_sample import lower_per_sample  # its body is the batch1 form, which reuses this module

    static = has_static_kernel(layer)
    per_sample_nchwc = (planner is not None and layer.kind == "dense" and not static
                        and planner.choose(layer).form != "plain")
    if (layer.kind == "depthwise" and not static) or per_sample_nchwc:
        return lower_per_sample(b, layer, planner)  # builds its attention inside the Scan body
    att = build_attention(b, layer) if att is None else att
    if static:
        return lower_static_kernel(b, layer, att)
    if layer.kind in ("dense", "pointwise"):
        return _im2col(b, layer, att)
    return lower_naive(b, layer, att)


def _im2col(b: Builder, layer: OdLayer, att) -> gs.Variable:
    """Dense k x k and 1x1 with n > 1: tap-major columns scaled by ``a_s (x) a_c`` (those the layer has), then one
    conv or MatMul."""
    p = layer.params()
    a = layer.attrs
    geo = Geometry.of(layer)
    n, cout, cin, k2 = a["kernel_num"], a["out_channels"], a["in_channels"], geo.k2
    kdim = k2 * cin
    wt = p["weight"].transpose(0, 1, 3, 4, 2).reshape(n, cout, kdim)  # tap-major columns: t * C_in + c
    scale = att.get("channel")  # (B, C_in, 1, 1), or None: no channel attention
    if "spatial" in att:
        spatial = b.reshape(att["spatial"], [-1, k2, 1])
        per_channel = b.reshape(scale, [-1, 1, cin]) if scale is not None else b.const("ones", np.ones((1, 1, cin)))
        scale = b.op("Mul", [spatial, per_channel])
    slices = tap_slices(b, layer.x, layer)
    cols = slices[0] if len(slices) == 1 else b.op("Concat", slices, {"axis": 1})  # (B, k2*C_in, Ho, Wo)
    if n == 1:  # a spatial head (else the kernel is static): the columns carry every attention
        cols = b.op("Mul", [cols, b.reshape(scale, [-1, kdim, 1, 1])])
        conv_in = [cols, b.const("weight", wt[0].reshape(cout, kdim, 1, 1))]
        bias_in_conv = "bias" in p and "filter" not in att
        if bias_in_conv:
            conv_in.append(b.const("bias", p["bias"]))
        return finish(b, b.op("Conv", conv_in), att, p, bias_done=bias_in_conv)
    wagg = b.reshape(kernel_mix(b, att, wt.reshape(n, -1)), [-1, cout, kdim])
    hw = geo.ho * geo.wo
    if scale is None:  # kernel attention only: columns and kernel mix stay as they are
        cols = b.reshape(cols, [-1, kdim, hw])
    elif cout <= hw:  # scale whichever is smaller: the per-sample kernel or the columns
        wagg = b.op("Mul", [wagg, b.reshape(scale, [-1, 1, kdim])])
        cols = b.reshape(cols, [-1, kdim, hw])
    else:
        cols = b.reshape(b.op("Mul", [cols, b.reshape(scale, [-1, kdim, 1, 1])]), [-1, kdim, hw])
    y = b.reshape(b.op("MatMul", [wagg, cols]), [-1, cout, geo.ho, geo.wo])
    return finish(b, y, att, p)
