"""NCHWc layout helpers shared by the NCHWc lowering form and the ``block_static_convs`` pass: which layers fit
onnxruntime's blocked Conv, channels padded to the block, and a static Conv re-expressed with a pre-blocked kernel.

The layout is numpy only (no onnxruntime), so it is tested on any machine, block 16 included, against plain NCHW.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ....deploy.schema import NCHWC_DOMAIN
from ..common import OdLayer, constant_value


#: onnxruntime's ``ReorderInput`` takes channel counts that are multiples of 4 and zero-pads them to the block.
CHANNEL_ALIGNMENT = 4


def padded(channels: int, blk: int) -> int:
    """``channels`` rounded up to a multiple of the NCHWc block ``blk`` (the channels of the blocked tensor)."""
    return -(-channels // blk) * blk


def nchwc_ok(layer: OdLayer, blk: int | None) -> bool:
    """Whether the batch-1 form of ``layer`` runs as one NCHWc Conv of block ``blk``: depthwise, 1x1 or dense, with
    channel counts that are multiples of 4 (those that are not multiples of the block are zero-padded to it, as
    onnxruntime's own NCHWc transformer does, so the chain of blocked layers never breaks on them)."""
    if not blk:
        return False
    a = layer.attrs
    if layer.kind == "depthwise":
        return a["out_channels"] % CHANNEL_ALIGNMENT == 0
    if layer.kind in ("dense", "pointwise"):
        return a["in_channels"] % CHANNEL_ALIGNMENT == 0 and a["out_channels"] % CHANNEL_ALIGNMENT == 0
    return False


def pad_axis(value: np.ndarray, axis: int, size: int, fill: float = 0.0) -> np.ndarray:
    """``value`` padded with ``fill`` at the end of ``axis`` to ``size``."""
    if value.shape[axis] == size:
        return value
    widths = [(0, 0)] * value.ndim
    widths[axis] = (0, size - value.shape[axis])
    return np.pad(value, widths, constant_values=fill)


def block_static_conv(graph: gs.Graph, node: gs.Node, blk: int) -> bool:
    """Re-express a constant-weight static Conv as ``ReorderInput -> nchwc Conv -> ReorderOutput`` with the kernel
    pre-blocked (channels zero-padded to the block), so that ``chain_nchwc`` joins it to the neighbouring NCHWc
    ODConv layers (ORT's own NchwcTransformer would wrap it in reorders of its own that the chain cannot see).
    A conv with fewer input channels than the block that are not a multiple of 4 (an RGB stem) reads its NCHW input
    directly. False when it does not fit (non-constant weight or bias, output channels not multiples of 4, other
    input channels not multiples of 4, grouped but not depthwise, ``auto_pad``)."""
    w = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None or w.ndim != 4:
        return False
    bias = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    if len(node.inputs) > 2 and node.inputs[2].name and bias is None:
        return False
    cout, cpg, kh, kw = w.shape
    g = int(node.attrs.get("group", 1))
    if cout % CHANNEL_ALIGNMENT or node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return False
    cout_p = padded(cout, blk)
    w = pad_axis(w, 0, cout_p)
    reads_nchw = g == 1 and cpg < blk and cpg % CHANNEL_ALIGNMENT != 0
    if reads_nchw:  # a stem conv (RGB in): onnxruntime's NCHWc Conv reads an NCHW input under the block, as its own
        wb = w.reshape(cout_p // blk, blk, cpg, kh, kw).transpose(0, 2, 3, 4, 1)  # transformer does (OIHWBo)
    elif g == 1 and cpg % CHANNEL_ALIGNMENT == 0:
        cin_p = padded(cpg, blk)
        w = pad_axis(w, 1, cin_p)
        wb = w.reshape(cout_p // blk, blk, cin_p // blk, blk, kh, kw).transpose(0, 2, 4, 5, 3, 1)
    elif g == cout and cpg == 1:
        g = cout_p
        wb = w.reshape(cout_p // blk, blk, kh, kw).transpose(0, 2, 3, 1)
    else:
        return False
    attrs = {
        "group": g, "kernel_shape": [kh, kw], "pads": list(node.attrs.get("pads", [0, 0, 0, 0])),
        "strides": list(node.attrs.get("strides", [1, 1])), "dilations": list(node.attrs.get("dilations", [1, 1])),
    }
    x, y = node.inputs[0], node.outputs[0]
    xb = x if reads_nchw else gs.Variable(f"{node.name}/x_nchwc", dtype=np.float32)
    yb = gs.Variable(f"{node.name}/y_nchwc", dtype=np.float32)
    bias = np.zeros(cout, np.float32) if bias is None else bias  # always a bias: the Sum slot behind it stays usable
    inputs = [
        xb, gs.Constant(f"{node.name}/w_nchwc", np.ascontiguousarray(wb.reshape(w.shape), dtype=np.float32)),
        gs.Constant(f"{node.name}/b_nchwc", np.ascontiguousarray(pad_axis(bias, 0, cout_p), dtype=np.float32)),
    ]
    node.inputs.clear()
    node.outputs.clear()
    if not reads_nchw:
        graph.nodes.append(
            gs.Node("ReorderInput", f"{node.name}/ReorderInput", {"channels_last": 0}, [x], [xb], domain=NCHWC_DOMAIN))
    graph.nodes += [
        gs.Node("Conv", f"{node.name}/nchwc", attrs, inputs, [yb], domain=NCHWC_DOMAIN),
        gs.Node("ReorderOutput", f"{node.name}/ReorderOutput", {"channels": cout, "channels_last": 0}, [yb], [y], domain=NCHWC_DOMAIN),
    ]
    return True
