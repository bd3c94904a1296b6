"""Form ``batch1`` with ``target="ort-cpu"``: ``ReorderInput -> com.microsoft.nchwc::Conv(computed kernel) ->
ReorderOutput`` for every depthwise / 1x1 / dense layer whose channels are multiples of 4.

The attention runs on the blocked input (nchwc GlobalAveragePool, or the k x k pooling of ``pooling.py``, + Gemms:
no Conv, so ORT inserts no reorders around the tiny attention layers). The constant kernel bank is stored already
in ORT's blocked filter layout (depthwise ``OIHWBo``: (C/B, kh, kw, B); dense/1x1 ``OIHWBiBo``: (Co/B, Ci/B, kh,
kw, Bi, Bo)), so the per-sample kernel is made by Muls with the attention vectors reshaped to that layout (no
in-graph Transpose).
Bias stays a constant conv bias (zeros when the layer has none, so a residual Sum can always be fused). Channels that
are not multiples of the block are zero-padded to it (kernels, attention heads, bias), as onnxruntime pads static
convs, so such layers stay in the blocked chain instead of breaking it with reorders (a softmax head's padded rows
get a logit of ``SOFTMAX_PAD_LOGIT``: attention 0, the real channels' softmax unchanged). A layer without heads
gets ``static_conv_nchwc`` instead (``plan.py`` routes it there): its static conv, blocked like the model's own.

Three forms (``plan.py`` chooses per layer, by measurement or its cost model): ``kernel`` folds every attention
into the kernel; ``activations`` applies a dense / 1x1 layer's channel and filter attentions to the activations, as
NCHWc depthwise 1x1 Convs whose weight is the attention vector, so the main conv keeps the constant kernel (n = 1,
no spatial head) or only the taps' scaling; ``columns`` (dense k x k, n = 1) scales the tap-major input columns by
the spatial and channel attentions and feeds the constant kernel as a 1x1 Conv, so no kernel is rewritten at all.
The ``chain_nchwc`` pass then removes the reorders between consecutive NCHWc layers and fuses
activations and residual Adds into the convs. Measurements: ``benchmarks/onnx_lowering_forms.md``.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ....deploy.schema import NCHWC_DOMAIN
from ....errors import InvalidValueError
from ..common import OdLayer
from .attention import activate, attention_heads, attention_norm_relu
from .builder import Builder, Geometry, kernel_mix, tap_slices
from .nchwc_layout import block_static_conv, pad_axis, padded
from .pooling import blocked_columns, pool_blocked


#: The logit of a softmax head's padded rows: their attention is then exactly 0, and the real channels keep their
#: softmax (a sigmoid head's padded rows keep logit 0: attention 0.5, on a zero kernel slice).
SOFTMAX_PAD_LOGIT = -1e30


def _padded_attention_params(layer: OdLayer, cin_p: int, cout_p: int, blk: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The attention's parameters, every weight 2-D, for a layer whose channels are padded to ``cin_p`` / ``cout_p``:
    the weights that read the pooled input (``fc``, or the heads without a trunk) as ``blocked_columns`` (zero
    columns for the padded input channels, which pool to 0), and padded rows in the channel and filter heads (zero
    weights; bias 0 for a sigmoid head, ``SOFTMAX_PAD_LOGIT`` for a softmax head). Also the padded head sizes."""
    from .attention import head_sizes

    p = dict(layer.params())
    sizes = head_sizes(layer)
    grown = {"channel": cin_p, "filter": cout_p}
    new_sizes = {h: grown.get(h, n) for h, n in sizes.items()}
    # merge_attention_heads stacked the heads' rows in ``layer.heads`` order
    weights = {"heads_weight": layer.heads} if "heads_weight" in p else {f"{h}_weight": [h] for h in layer.heads}
    for role in ["fc_weight"] if layer.has_trunk else weights:
        p[role] = blocked_columns(p[role], cin_p, blk)

    def pad_rows(value: np.ndarray, heads: list[str], bias: bool) -> np.ndarray:
        rows = value.reshape(value.shape[0], -1) if value.ndim > 1 else value
        parts, start = [], 0
        for h in heads:
            fill = SOFTMAX_PAD_LOGIT if bias and layer.activation(h) == "softmax" else 0.0
            parts.append(pad_axis(rows[start:start + sizes[h]], 0, new_sizes[h], fill))
            start += sizes[h]
        return np.concatenate(parts, axis=0)

    for role, heads in weights.items():
        p[role] = pad_rows(p[role], heads, bias=False)
        bias_role = role.replace("_weight", "_bias")
        p[bias_role] = pad_rows(p[bias_role], heads, bias=True)
    return p, new_sizes


def _attention_trunk(b: Builder, layer: OdLayer, xb, p: dict[str, np.ndarray], cin_p: int, blk: int):
    """The attention's hidden vector (1, A) from the NCHWc input: pooled features (``pool_blocked``), Gemm, norm,
    ReLU; without a trunk, the pooled features (1, cin_p * k * k) themselves."""
    h = pool_blocked(b, xb, tuple(layer.attrs["input_hw"]), layer.pool_size, cin_p, blk)
    if not layer.has_trunk:
        return h
    ins = [h, b.const("fc_weight", p["fc_weight"])]
    if "fc_bias" in p:
        ins.append(b.const("fc_bias", p["fc_bias"]))
    return attention_norm_relu(b, layer, b.op("Gemm", ins, {"transB": 1}), (1, -1))


def _attention_vec(b: Builder, layer: OdLayer, xb, cin_p: int, cout_p: int, blk: int) -> dict[str, gs.Variable]:
    """Attentions as (1, size) vectors from the NCHWc input (``cin_p`` channels): pooled features + Gemms; the
    channel and filter attentions come padded to ``cin_p`` / ``cout_p``."""
    p, sizes = _padded_attention_params(layer, cin_p, cout_p, blk)

    def gemm(h, wname, bname):
        ins = [h, b.const(wname, p[wname])]
        if bname in p:
            ins.append(b.const(bname, p[bname]))
        return b.op("Gemm", ins, {"transB": 1})

    return attention_heads(b, layer, _attention_trunk(b, layer, xb, p, cin_p, blk), gemm, sizes)


def _head_params(layer: OdLayer, p: dict[str, np.ndarray], sizes: dict[str, int], head: str) -> tuple[np.ndarray, np.ndarray]:
    """(weight (size, A), bias (size,)) of one head, sliced out of the merged heads (rows in ``layer.heads``
    order) where they are merged."""
    if f"{head}_weight" in p:
        w, bias = p[f"{head}_weight"], p[f"{head}_bias"]
        return w.reshape(w.shape[0], -1), bias
    start = sum(sizes[h] for h in layer.heads[:layer.heads.index(head)])
    w = p["heads_weight"].reshape(p["heads_weight"].shape[0], -1)
    return w[start:start + sizes[head]], p["heads_bias"][start:start + sizes[head]]


def _pointwise_kernel_scale(b: Builder, layer: OdLayer, xb, cin_p: int, cout_p: int, blk: int):
    """1x1, n = 1, kernel form: the scale S[ob, i, bo] = a_c[i] * a_f[ob, bo] of the blocked kernel in the fewest
    nodes. The channel head is a Gemm whose output is already the column (C_in, 1) (weight as A), the filter head a
    Gemm reshaped to (C_out/B, 1, B); one broadcast MatMul makes S (no Split, no reshapes of the channel vector)."""
    p, sizes = _padded_attention_params(layer, cin_p, cout_p, blk)
    h = _attention_trunk(b, layer, xb, p, cin_p, blk)
    wc, bc = _head_params(layer, p, sizes, "channel")
    wf, bf = _head_params(layer, p, sizes, "filter")
    column = b.op("Gemm", [b.const("channel_w", wc), h, b.const("channel_b", bc.reshape(-1, 1))], {"transB": 1})
    column = activate(b, column, layer.activation("channel"), axis=0)
    row = activate(b, b.op("Gemm", [h, b.const("filter_w", wf), b.const("filter_b", bf)], {"transB": 1}),
                   layer.activation("filter"))
    return b.op("MatMul", [column, b.reshape(row, [cout_p // blk, 1, blk])])


def lower_batch1_nchwc(b: Builder, layer: OdLayer, blk: int, form: str) -> gs.Variable:
    """``layer`` (with attention heads) at batch 1 as NCHWc Convs of block ``blk`` in ``form`` ('kernel',
    'activations' or 'columns'; the choice is ``plan.py``'s)."""
    if form not in ("kernel", "activations", "columns"):
        raise InvalidValueError(f"unknown NCHWc form {form!r} for layer {layer.name!r}; expected kernel, activations or columns")
    if not layer.heads:
        raise InvalidValueError(f"layer {layer.name!r} has no attention heads: lower it with static_conv_nchwc")
    a = layer.attrs
    geo = Geometry.of(layer)
    n, cout, cin, g = a["kernel_num"], a["out_channels"], a["in_channels"], a["group"]
    cin_p, cout_p = padded(cin, blk), padded(cout, blk)
    depthwise = layer.kind == "depthwise"
    g = cout_p if depthwise else g
    w = pad_axis(layer.param("weight"), 1, cout_p)  # (n, C_out, C_in/g, kh, kw), channels padded
    if not depthwise:
        w = pad_axis(w, 2, cin_p)
    xb = b.op("ReorderInput", [layer.x], {"channels_last": 0}, domain=NCHWC_DOMAIN)
    if form == "kernel" and layer.kind == "pointwise" and n == 1 and set(layer.heads) == {"channel", "filter"}:
        scale = _pointwise_kernel_scale(b, layer, xb, cin_p, cout_p, blk)
        wb = w[0, :, :, 0, 0].reshape(cout_p // blk, blk, cin_p).transpose(0, 2, 1)  # (C_out/B, C_in, B): OIHWBiBo
        wk = b.reshape(b.op("Mul", [b.const("weight_nchwc", wb), scale]), [cout_p, cin_p, 1, 1])
        return _nchwc_conv(b, layer, xb, wk, bias_of(b, layer, cout_p), geo, g)
    att = _attention_vec(b, layer, xb, cin_p, cout_p, blk)
    bias = [bias_of(b, layer, cout_p)]
    if form == "columns":
        if not (layer.kind == "dense" and n == 1 and cin_p == cin and "spatial" in att and geo.k2 > 1):
            raise InvalidValueError(f"layer {layer.name!r} has no columns form (dense k x k, n = 1, a spatial head, block channels)")
        return _columns_form(b, layer, att, geo, bias, blk)
    cin, cout = cin_p, cout_p  # from here on the kernel and the blocked tensors have the padded channels
    if depthwise:
        wb = w.reshape(n, cout // blk, blk, geo.kh, geo.kw).transpose(0, 1, 3, 4, 2)
    else:
        wb = w.reshape(n, cout // blk, blk, cin // blk, blk, geo.kh, geo.kw).transpose(0, 1, 3, 5, 6, 4, 2)
    if n > 1:
        wk = b.reshape(kernel_mix(b, att, wb.reshape(n, -1)), list(wb.shape[1:]))
    else:
        wk = b.const("weight_nchwc", wb[0])
    on_activations = form == "activations" and not depthwise
    if depthwise:
        wk = _scale_depthwise_kernel(b, wk, att, geo, cout, blk)
    elif on_activations:
        if "spatial" in att and geo.k2 > 1:
            wk = _scale_taps(b, wk, att["spatial"], geo, cin, cout, blk)
        if "channel" in att:
            xb = _scale_channels(b, xb, att["channel"], cin)
    elif any(h in att for h in ("channel", "spatial", "filter")):
        wk = _scale_blocked_kernel(b, wk, att, geo, cin, cout, blk)
    wk = b.reshape(wk, [cout, cin // g, geo.kh, geo.kw])
    if on_activations and "filter" in att:
        yb = _nchwc_conv(b, layer, xb, wk, _zeros(b, cout), geo, g, reorder_out=False)
        yb = _scale_channels(b, yb, att["filter"], cout, bias)
        return b.op("ReorderOutput", [yb], {"channels": a["out_channels"], "channels_last": 0}, domain=NCHWC_DOMAIN)
    return _nchwc_conv(b, layer, xb, wk, bias[0], geo, g)


def static_conv_nchwc(b: Builder, layer: OdLayer, blk: int) -> gs.Variable:
    """``layer`` as the static conv of its first kernel (bank and bias as they are), blocked like the model's own
    static convs (``block_static_conv``; the plain Conv where it cannot be): a layer without heads, and the
    baseline the layer's forms are timed against (``plan.STATIC``)."""
    geo = Geometry.of(layer)
    inputs = [layer.x, b.const("static_weight", layer.param("weight")[0])]
    if layer.has("bias"):
        inputs.append(b.const("static_bias", layer.param("bias")))
    y = b.op("Conv", inputs, {**geo.conv_attrs(layer.attrs["group"]), "kernel_shape": [geo.kh, geo.kw]})
    block_static_conv(b.graph, y.inputs[0], blk)
    return y


def bias_of(b: Builder, layer: OdLayer, cout_p: int) -> gs.Constant:
    """The layer's bias padded to ``cout_p``; zeros when it has none, so every NCHWc Conv has a bias and the Sum slot
    behind it (``chain_nchwc``) never needs to know the padded channel count."""
    bias = pad_axis(layer.param("bias"), 0, cout_p) if layer.has("bias") else np.zeros(cout_p, np.float32)
    return b.const("bias", bias)


def _nchwc_conv(b: Builder, layer: OdLayer, xb, wk, bias, geo: Geometry, group: int, reorder_out: bool = True):
    """The layer's NCHWc Conv on ``xb`` with kernel ``wk`` and ``bias``; its output reordered to NCHW (real channels)
    unless ``reorder_out`` is False."""
    attrs = {"group": group, "kernel_shape": [geo.kh, geo.kw], "pads": list(geo.pads), "strides": [geo.sh, geo.sw],
             "dilations": [geo.dh, geo.dw]}
    yb = b.op("Conv", [xb, wk, bias], attrs, domain=NCHWC_DOMAIN)
    if not reorder_out:
        return yb
    return b.op("ReorderOutput", [yb], {"channels": layer.attrs["out_channels"], "channels_last": 0}, domain=NCHWC_DOMAIN)


def _zeros(b: Builder, channels: int) -> gs.Constant:
    return b.const("zero_bias", np.zeros(channels, np.float32))


def _columns_form(b: Builder, layer: OdLayer, att, geo: Geometry, bias: list, blk: int) -> gs.Variable:
    """Dense k x k, n = 1: ``Concat`` of the k^2 shifted input views (tap-major, NCHW) times ``a_s (x) a_c``, then
    the constant kernel as an NCHWc 1x1 Conv over k^2 C_in channels (prepacked by ORT like a static one); the
    filter attention and bias as a depthwise 1x1 Conv on the output. Output channels that are not a multiple of the
    block are zero-padded to it (kernel rows; the bias and filter attention come padded)."""
    a = layer.attrs
    cout, cin, k2 = padded(a["out_channels"], blk), a["in_channels"], geo.k2
    kdim = k2 * cin
    scale = b.reshape(att["spatial"], [k2, 1])
    per_channel = b.reshape(att["channel"], [1, cin]) if "channel" in att else b.const("ones", np.ones((1, cin)))
    scale = b.op("Mul", [scale, per_channel])  # (k2, C_in), tap-major like the columns
    cols = b.op("Concat", tap_slices(b, layer.x, layer), {"axis": 1})  # (1, k2 * C_in, Ho, Wo), t * C_in + c
    cols = b.op("Mul", [cols, b.reshape(scale, [1, kdim, 1, 1])])
    colsb = b.op("ReorderInput", [cols], {"channels_last": 0}, domain=NCHWC_DOMAIN)
    wt = pad_axis(layer.param("weight")[0], 0, cout).transpose(0, 2, 3, 1).reshape(cout, kdim)  # tap-major
    wb = wt.reshape(cout // blk, blk, kdim // blk, blk).transpose(0, 2, 3, 1)  # OIHWBiBo with H = W = 1
    w = b.const("weight_columns_nchwc", wb.reshape(cout, kdim, 1, 1))
    attrs = {"group": 1, "kernel_shape": [1, 1], "pads": [0, 0, 0, 0], "strides": [1, 1], "dilations": [1, 1]}
    filter_on_output = "filter" in att
    yb = b.op("Conv", [colsb, w, _zeros(b, cout) if filter_on_output else bias[0]], attrs, domain=NCHWC_DOMAIN)
    if filter_on_output:
        yb = _scale_channels(b, yb, att["filter"], cout, bias)
    return b.op("ReorderOutput", [yb], {"channels": a["out_channels"], "channels_last": 0}, domain=NCHWC_DOMAIN)


def _scale_channels(b: Builder, tb, vec, channels: int, bias=()):
    """``tb`` (NCHWc) times ``vec`` (1, channels) per channel, plus ``bias`` (zeros if none): a depthwise 1x1
    NCHWc Conv whose weight is the attention vector (its blocked layout is the channel order)."""
    w = b.reshape(vec, [channels, 1, 1, 1])
    attrs = {"group": channels, "kernel_shape": [1, 1], "pads": [0, 0, 0, 0], "strides": [1, 1], "dilations": [1, 1]}
    return b.op("Conv", [tb, w, bias[0] if bias else _zeros(b, channels)], attrs, domain=NCHWC_DOMAIN)


def _scale_taps(b: Builder, wk, spatial, geo: Geometry, cin: int, cout: int, blk: int):
    """Dense ``OIHWBiBo`` kernel times the spatial attention per tap: one broadcast Mul over (Bi, Bo) spans."""
    blocks = (cout // blk) * (cin // blk)
    kernel = b.reshape(wk, [blocks, geo.k2, blk * blk])
    return b.op("Mul", [kernel, b.reshape(spatial, [1, geo.k2, 1])])


def _scale_depthwise_kernel(b: Builder, wk, att, geo: Geometry, cout: int, blk: int):
    """Depthwise ``OIHWBo`` kernel (C/B, kh, kw, B): tiny, so one broadcast Mul per attention is cheap."""
    scale = None
    if "spatial" in att and geo.k2 > 1:
        scale = b.reshape(att["spatial"], [1, geo.kh, geo.kw, 1])
    per_channel = [cout // blk, 1, 1, blk]
    for name in ("channel", "filter"):
        if name in att:
            v = b.reshape(att[name], per_channel)
            scale = v if scale is None else b.op("Mul", [scale, v])
    return wk if scale is None else b.op("Mul", [wk, scale])


def _scale_blocked_kernel(b: Builder, wk, att, geo: Geometry, cin: int, cout: int, blk: int):
    """Dense/1x1 ``OIHWBiBo`` kernel: the full-size scale S[ob, m, bo] = in[m] * out[ob, bo] (m = ib, h, w, bi) as
    ONE batched K=1 MatMul, then an elementwise Mul with no broadcast (a broadcast Mul in the blocked layout runs
    over block-sized spans and costs far more)."""
    k2 = geo.k2
    m = (cin // blk) * k2 * blk
    vin = b.const("ones_in", np.ones((cin // blk, k2, blk), np.float32))
    if "channel" in att:
        vin = b.reshape(att["channel"], [cin // blk, 1, blk])
    if "spatial" in att and k2 > 1:
        vin = b.op("Mul", [vin, b.reshape(att["spatial"], [1, k2, 1])])
    vout = b.reshape(att["filter"], [cout // blk, 1, blk]) if "filter" in att else b.const("ones_out", np.ones((cout // blk, 1, blk), np.float32))
    if "channel" in att and not ("spatial" in att and k2 > 1) and k2 > 1:
        vin = b.op("Mul", [vin, b.const("ones_sp", np.ones((1, k2, 1), np.float32))])
    s = b.op("MatMul", [b.reshape(vin, [1, m, 1]), vout])
    return b.op("Mul", [b.reshape(wk, [cout // blk, m, blk]), s])
