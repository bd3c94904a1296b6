"""The attention branch of a lowered layer: the input pooled to k x k (``pooling.py``), ``fc`` (a k x k Conv), norm,
ReLU, and the heads with their activations; without a trunk the heads read the pooled input (k x k Convs).

``build_attention`` emits it on NCHW tensors (Convs, attentions as (B, size, 1, 1)); the NCHWc form reuses
``attention_norm_relu`` and ``attention_heads`` with Gemms on flat features. Each head has its activation
(``OdLayer.activation``): a Sigmoid, or a Softmax over the head's own values; merged heads get one Sigmoid per run of
adjacent sigmoid heads and one Softmax per softmax head.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..common import OdLayer
from .builder import Builder
from .pooling import pool_nchw


def head_sizes(layer: OdLayer) -> dict[str, int]:
    """Output size of each of ``layer``'s heads, keyed by head name."""
    a = layer.attrs
    kh, kw = a["kernel_shape"]
    sizes = {"channel": a["in_channels"], "filter": a["out_channels"], "spatial": kh * kw, "kernel": a["kernel_num"]}
    return {h: sizes[h] for h in layer.heads}


def attention_norm_relu(b: Builder, layer: OdLayer, h, channel_shape: tuple[int, ...]):
    """The attention trunk's norm (BatchNorm in eval, or LayerNorm over channels) and ReLU on ``h``; the
    LayerNorm affine is broadcast with ``channel_shape`` ((1, -1, 1, 1) on NCHW, (1, -1) on Gemm outputs)."""
    p = layer.params()
    a = layer.attrs
    norm = a["norm"]
    if norm == "bn" and "norm_mean" in p:
        h = b.op(
            "BatchNormalization",
            [h, b.const("bn_s", p["norm_scale"]), b.const("bn_b", p["norm_bias"]), b.const("bn_m", p["norm_mean"]), b.const("bn_v", p["norm_var"])],
            {"epsilon": float(a["norm_eps"])},
        )
    elif norm == "ln":
        axes = b.ints("axes", [1])
        mean = b.op("ReduceMean", [h, axes], {"keepdims": 1})
        d = b.op("Sub", [h, mean])
        var = b.op("ReduceMean", [b.op("Mul", [d, d]), axes], {"keepdims": 1})
        std = b.op("Sqrt", [b.op("Add", [var, b.const("eps", np.float32(a["norm_eps"]))])])
        h = b.op("Div", [d, std])
        h = b.op("Mul", [h, b.const("ln_s", p["norm_scale"].reshape(channel_shape))])
        h = b.op("Add", [h, b.const("ln_b", p["norm_bias"].reshape(channel_shape))])
    return b.op("Relu", [h])


def build_attention(b: Builder, layer: OdLayer) -> dict[str, gs.Variable]:
    """Attentions as (B, size, 1, 1) tensors keyed by head name (none for a layer without heads)."""
    if not layer.heads:
        return {}
    p = layer.params()
    h = pool_nchw(b, layer.x, tuple(layer.attrs["input_hw"]), layer.pool_size)
    if layer.has_trunk:
        fc_inputs = [h, b.const("fc_w", p["fc_weight"])]
        if "fc_bias" in p:
            fc_inputs.append(b.const("fc_b", p["fc_bias"]))
        h = b.op("Conv", fc_inputs)
        h = attention_norm_relu(b, layer, h, (1, -1, 1, 1))

    def conv(h, wname, bname):
        return b.op("Conv", [h, b.const(wname, p[wname]), b.const(bname, p[bname])])

    return attention_heads(b, layer, h, conv)


def activate(b: Builder, z, kind: str, axis: int = 1) -> gs.Variable:
    """A head's activation on its logits ``z``: a Sigmoid, or a Softmax over ``axis`` (the head's values)."""
    return b.op("Sigmoid", [z]) if kind == "sigmoid" else b.op("Softmax", [z], {"axis": axis})


def activation_runs(layer: OdLayer) -> list[tuple[str, list[str]]]:
    """``layer``'s heads in order, grouped for merged activations: (kind, heads), each run of adjacent sigmoid
    heads one group (one Sigmoid serves them all), each softmax head a group of its own."""
    runs: list[tuple[str, list[str]]] = []
    for name in layer.heads:
        kind = layer.activation(name)
        if kind == "sigmoid" and runs and runs[-1][0] == "sigmoid":
            runs[-1][1].append(name)
        else:
            runs.append((kind, [name]))
    return runs


def attention_heads(b: Builder, layer: OdLayer, h, linear, sizes: dict[str, int] | None = None) -> dict[str, gs.Variable]:
    """Head activations keyed by name. ``linear(h, weight_name, bias_name)`` emits one head projection (a Conv on
    NCHW, a Gemm on flat features). Merged heads: one projection, split by ``activation_runs`` (one Sigmoid per run
    of sigmoid heads, one Softmax per softmax head). ``sizes``: the heads' output sizes when ``linear``'s weights are
    padded (NCHWc forms), else ``head_sizes(layer)``."""
    sizes = head_sizes(layer) if sizes is None else sizes
    out: dict[str, gs.Variable] = {}
    if "heads_weight" in layer.roles:
        z = linear(h, "heads_weight", "heads_bias")
        runs = activation_runs(layer)
        pieces = b.split(z, [sum(sizes[n] for n in names) for _, names in runs])
        for (kind, names), piece in zip(runs, pieces):
            out.update(zip(names, b.split(activate(b, piece, kind), [sizes[n] for n in names])))
        return out
    for name in layer.heads:
        out[name] = activate(b, linear(h, f"{name}_weight", f"{name}_bias"), layer.activation(name))
    return out
