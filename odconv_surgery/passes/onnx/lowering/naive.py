"""Form ``naive`` (``fuse=False``, and the numeric reference of the per-pass checks): the reference maths without
the batch-in-groups trick. Per-sample aggregated kernel (B, C_out, C_in/g * k^2) and an im2col (Pad + k^2 Slices
+ Concat) batched MatMul; every head its own 1x1 Conv, the attention BatchNorm a node. Any batch size."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..common import OdLayer
from .builder import Builder, Geometry, finish, kernel_mix, tap_slices


def lower_naive(b: Builder, layer: OdLayer, att) -> gs.Variable:
    p = layer.params()
    a = layer.attrs
    geo = Geometry.of(layer)
    n, cout, cin, g = a["kernel_num"], a["out_channels"], a["in_channels"], a["group"]
    k2 = geo.k2
    w = p["weight"]  # (n, C_out, C_in/g, kh, kw)
    x = b.op("Mul", [layer.x, att["channel"]]) if "channel" in att else layer.x
    if n > 1:
        wagg = b.reshape(kernel_mix(b, att, w.reshape(n, -1)), [-1, cout, cin // g, k2])
    else:
        wagg = b.const("weight", w.reshape(1, cout, cin // g, k2))
    if "spatial" in att:
        wagg = b.op("Mul", [wagg, b.reshape(att["spatial"], [-1, 1, 1, k2])])
    wagg = b.reshape(wagg, [-1, g, cout // g, (cin // g) * k2])
    slices = tap_slices(b, x, layer)
    if len(slices) == 1:
        cols = slices[0]
    else:
        axis2 = b.ints("axes", [2])
        cols = b.op("Concat", [b.op("Unsqueeze", [s, axis2]) for s in slices], {"axis": 2})  # (B, C_in, k2, Ho, Wo)
    cols = b.reshape(cols, [-1, g, (cin // g) * k2, geo.ho * geo.wo])
    y = b.reshape(b.op("MatMul", [wagg, cols]), [-1, cout, geo.ho, geo.wo])
    return finish(b, y, att, p)
