"""Pass ``lower_odconv``: replace every ``odconv.surgery::ODConv2d`` marker by standard ONNX ops.

Invariant: the model's function is unchanged (numerically, within float32 rounding) and, after this pass, the
graph holds no ODConv marker; no lowered op has a batch-dependent attribute (shapes use 0/-1 for the batch), so
the result runs at any batch size. Convolution weights stay constant initializers wherever the form allows.

Forms (x: layer input, a_c/a_f/a_s/a_w: channel/filter/spatial/kernel attention; "any" = any batch size):

* ``naive`` (``fuse=False`` and the numeric reference of the checks): the reference maths without the
  batch-in-groups trick: per-sample aggregated kernel (B, C_out, C_in/g * k^2) and an im2col (Pad + k^2 Slices
  + Concat) batched MatMul, every head its own 1x1 Conv, the attention BatchNorm as a node.
* fused, regime ``any`` (every batch size), chosen by measurement (ORT 1.32 CPU, 1 thread, see
  ``benchmarks``/README; times in us, batch 1 / batch 8):
  - 1x1, n = 1: constant Conv on ``x * a_c``, then ``* a_f + b`` (static weight, NCHWc path; ~static cost).
  - 1x1, n > 1: per-sample kernel ``a_w @ W`` (B, C_out, C_in) + batched MatMul. 32->192 @28x28: static 324 /
    3125, this 349 / 3323, stacked n*C_out constant conv + weighted sum 2484 / 24569 (n=4).
  - dense k x k, n = 1: im2col (tap-major) scaled by ``a_s (x) a_c`` then a constant 1x1 Conv (C_out, k^2 C_in):
    64->64 @56x56: static 6111 / 49984, this 10360 / 131049; 256->256 @14x14: 6257 / 48396 vs 7458 / 62309.
  - dense k x k, n > 1: same im2col, per-sample aggregated kernel, batched MatMul (10108 / 120099 at 64@56);
    stacking the n kernels in one constant conv costs n x MAdds (26626 / 205491).
  - depthwise k x k: ``sum_t slice_t(x) * K_t`` with per-sample per-tap weights K_t = W_t a_s[t] a_c (k^2 Slices,
    Muls and one Sum): 48ch @56x56: static 209 / 3126, this 1786 / 28529, im2col+Mul+ReduceSum 3901 / 28418,
    one-hot constant conv to 9C channels 2797 / 24169.
  - other grouped convs: the naive form.
* fused, regime ``batch1`` (used by the batch-size-1 branch of ``batch_regime``): every attention folded into
  a computed kernel, then one Conv: dense 64@56: 7000 us (static 6111), 256@14: 7299 (6257); depthwise 48@56:
  621 (209), 288@14: 506 (110). The attentions are folded into the kernel when the kernel is smaller than the
  activation they would otherwise scale; else the activation is scaled and the constant kernel kept.
* fused, regime ``batch1`` with ``target="ort-cpu"`` (``lower_batch1_nchwc`` + ``_nchwc_chain``): EVERY
  depthwise / 1x1 / dense layer whose channels are block multiples runs as one ``com.microsoft.nchwc::Conv``
  on its computed kernel, with attention = nchwc GlobalAveragePool + Gemms, and the whole batch-1 branch stays
  in NCHWc (activations and residual Adds fused into the convs, reorders removed between layers).
  Profile (ORT 1.32 CPU, AVX2 block 8, 1 thread, mobilenet_v2 0.5 all_but_first, 224^2, batch-1 branch of the
  ORT-optimized graph, kernel time per run with node profiling on):
  - before (only depthwise NCHWc): 101 ReorderInput + 103 ReorderOutput (ORT wraps every per-sample Mul/Add
    of the 1x1 layers and every attention 1x1 Conv in reorders), 34 unfused Clip; Conv 12.2 ms (142 convs:
    51 layers + ~90 attention FC convs), Mul 3.0, ReorderOutput 2.5, ReorderInput 2.3, GAP 2.2, Add 1.7,
    Clip 1.4, Split 0.9, Reshape 0.7 ms; total 33.4 ms vs static 12.1 ms (profiled).
  - after: 1 ReorderInput + 2 ReorderOutput (network input / head), 52 nchwc Conv (all Clip fused as
    ``activation``, residual Adds as ``Sum``): Conv 7.6 ms (static 7.7: the computed kernels run as fast as
    the prepacked static ones), Reshape 1.6 (204 tiny nodes, mostly profiler overhead), FusedGemm 1.1, kernel
    scaling Mul 1.0 + MatMul 0.8, GAP 1.0, Split 0.5 ms; total 17.1 ms vs static 8.2 ms (profiled, same run).
  - kernel scaling: a broadcast Mul in the blocked OIHWBiBo layout runs over 8-float spans (560 us for the
    1280x160 kernel, 4.4 ms over the network); the full-size scale as one K=1 batched MatMul (in (x) out)
    followed by one plain elementwise Mul costs 1.8 ms in all.
  Per layer kind, NCHWc with the computed kernel is never slower than the previous forms (depthwise: 217 vs
  621 us plain computed-kernel Conv; 1x1/dense: same Conv time as static plus the kernel scaling, against
  activation-sized Muls + reorders before), so it is used for every kind whose channels allow it.
  Depthwise 48 ch @56x56 through ``com.microsoft.nchwc::Conv`` with the computed kernel reordered in-graph:
  217 us vs 180 us static (the plain computed-kernel Conv: 621 us), because ORT only prepacks constant kernels
  into its fast NCHWc path.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .base import OnnxPass, PassContext, export_sorted
from .common import OdLayer, constant_value, import_graph, odconv_layers


class _Builder:
    """Tiny node factory over a gs graph with unique names under one prefix."""

    def __init__(self, graph: gs.Graph, prefix: str) -> None:
        self.graph = graph
        self.prefix = prefix
        self.count = 0

    def _name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}/{hint}_{self.count}"

    def const(self, hint: str, value, dtype=np.float32) -> gs.Constant:
        return gs.Constant(self._name(hint), np.ascontiguousarray(np.asarray(value, dtype=dtype)))

    def ints(self, hint: str, value) -> gs.Constant:
        return self.const(hint, value, np.int64)

    def op(self, op: str, inputs, attrs=None, n_out: int = 1, hint: str | None = None):
        name = self._name(hint or op)
        outputs = [gs.Variable(f"{name}_out{i}", dtype=np.float32) for i in range(n_out)]
        self.graph.nodes.append(gs.Node(op=op, name=name, attrs=attrs or {}, inputs=list(inputs), outputs=outputs))
        return outputs[0] if n_out == 1 else outputs

    def reshape(self, x, shape):
        return self.op("Reshape", [x, self.ints("shape", shape)])

    def split(self, x, sizes, axis=1):
        if len(sizes) == 1:
            return [x]
        return self.op("Split", [x, self.ints("split", sizes)], {"axis": axis}, n_out=len(sizes))


# ----------------------------------------------------------------------------------------------- attention
def _head_sizes(layer: OdLayer) -> dict[str, int]:
    a = layer.attrs
    kh, kw = a["kernel_shape"]
    sizes = {"channel": a["in_channels"], "filter": a["out_channels"], "spatial": kh * kw, "kernel": a["kernel_num"]}
    return {h: sizes[h] for h in layer.heads}


def _attention_norm_relu(b, layer, h, channel_shape: tuple[int, ...]):
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


def build_attention(b: _Builder, layer: OdLayer) -> dict[str, gs.Variable]:
    """Attentions as (B, size, 1, 1) tensors keyed by head name."""
    p = layer.params()
    h = b.op("GlobalAveragePool", [layer.x])
    fc_inputs = [h, b.const("fc_w", p["fc_weight"])]
    if "fc_bias" in p:
        fc_inputs.append(b.const("fc_b", p["fc_bias"]))
    h = b.op("Conv", fc_inputs)
    h = _attention_norm_relu(b, layer, h, (1, -1, 1, 1))

    def conv(h, wname, bname):
        return b.op("Conv", [h, b.const(wname, p[wname]), b.const(bname, p[bname])])

    return _attention_heads(b, layer, h, conv)


def _attention_heads(b, layer, h, linear) -> dict[str, gs.Variable]:
    """Head activations keyed by name. ``linear(h, weight_name, bias_name)`` emits one head projection (a 1x1
    Conv on NCHW, a Gemm on flat features). Merged heads: one projection, one Sigmoid over the sigmoid heads,
    one Softmax for the kernel head."""
    sizes = _head_sizes(layer)
    out: dict[str, gs.Variable] = {}
    if "heads_weight" in layer.roles:
        z = linear(h, "heads_weight", "heads_bias")
        sig_heads = [name for name in layer.heads if name != "kernel"]
        parts = [sum(sizes[n] for n in sig_heads)] + ([sizes["kernel"]] if "kernel" in sizes else [])
        pieces = b.split(z, parts)
        sig = b.op("Sigmoid", [pieces[0]])
        for name, piece in zip(sig_heads, b.split(sig, [sizes[n] for n in sig_heads])):
            out[name] = piece
        if "kernel" in sizes:
            out["kernel"] = b.op("Softmax", [pieces[1]], {"axis": 1})
        return out
    for name in layer.heads:
        z = linear(h, f"{name}_weight", f"{name}_bias")
        out[name] = b.op("Softmax", [z], {"axis": 1}) if name == "kernel" else b.op("Sigmoid", [z])
    return out


# ----------------------------------------------------------------------------------------------- helpers
def _geometry(layer: OdLayer):
    a = layer.attrs
    kh, kw = a["kernel_shape"]
    sh, sw = a["strides"]
    dh, dw = a["dilations"]
    pt, pl, pb, pr = a["pads"]
    hin, win = a["input_hw"]
    ho = (hin + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (win + pl + pr - dw * (kw - 1) - 1) // sw + 1
    return kh, kw, sh, sw, dh, dw, (pt, pl, pb, pr), ho, wo


def _tap_slices(b: _Builder, x, layer: OdLayer) -> list:
    """The k^2 shifted (strided, dilated) views of the padded input, each (B, C_in, H_out, W_out), tap-major."""
    kh, kw, sh, sw, dh, dw, (pt, pl, pb, pr), ho, wo = _geometry(layer)
    if any((pt, pl, pb, pr)):
        x = b.op("Pad", [x, b.ints("pads", [0, 0, pt, pl, 0, 0, pb, pr])], {"mode": "constant"})
    if kh * kw == 1 and sh == sw == 1:
        return [x]
    slices = []
    axes = b.ints("axes", [2, 3])
    steps = b.ints("steps", [sh, sw])
    for i in range(kh):
        for j in range(kw):
            starts = [i * dh, j * dw]
            ends = [i * dh + sh * (ho - 1) + 1, j * dw + sw * (wo - 1) + 1]
            slices.append(b.op("Slice", [x, b.ints("starts", starts), b.ints("ends", ends), axes, steps]))
    return slices


def _finish(b: _Builder, y, att, p, bias_done: bool = False):
    if "filter" in att and att["filter"] is not None:
        y = b.op("Mul", [y, att["filter"]])
    if "bias" in p and not bias_done:
        y = b.op("Add", [y, b.const("bias", p["bias"].reshape(1, -1, 1, 1))])
    return y


def _kernel_mix(b: _Builder, att, bank_flat: np.ndarray):
    """a_w (B, n) @ bank (n, K) -> (B, K)."""
    aw = b.reshape(att["kernel"], [-1, bank_flat.shape[0]])
    return b.op("MatMul", [aw, b.const("bank", bank_flat)])


# ----------------------------------------------------------------------------------------------- naive
def lower_naive(b: _Builder, layer: OdLayer, att) -> gs.Variable:
    p = layer.params()
    a = layer.attrs
    kh, kw, sh, sw, dh, dw, pads, ho, wo = _geometry(layer)
    n, cout, cin, g = a["kernel_num"], a["out_channels"], a["in_channels"], a["group"]
    k2 = kh * kw
    w = p["weight"]  # (n, C_out, C_in/g, kh, kw)
    x = b.op("Mul", [layer.x, att["channel"]])
    if n > 1:
        wagg = b.reshape(_kernel_mix(b, att, w.reshape(n, -1)), [-1, cout, cin // g, k2])
    else:
        wagg = b.const("weight", w.reshape(1, cout, cin // g, k2))
    if "spatial" in att:
        wagg = b.op("Mul", [wagg, b.reshape(att["spatial"], [-1, 1, 1, k2])])
    wagg = b.reshape(wagg, [-1, g, cout // g, (cin // g) * k2])
    slices = _tap_slices(b, x, layer)
    if len(slices) == 1:
        cols = slices[0]
    else:
        axis2 = b.ints("axes", [2])
        cols = b.op("Concat", [b.op("Unsqueeze", [s, axis2]) for s in slices], {"axis": 2})  # (B, C_in, k2, Ho, Wo)
    cols = b.reshape(cols, [-1, g, (cin // g) * k2, ho * wo])
    y = b.reshape(b.op("MatMul", [wagg, cols]), [-1, cout, ho, wo])
    return _finish(b, y, att, p)


# ----------------------------------------------------------------------------------------------- fused, any batch
def lower_any(b: _Builder, layer: OdLayer, att) -> gs.Variable:
    p = layer.params()
    a = layer.attrs
    kh, kw, sh, sw, dh, dw, pads, ho, wo = _geometry(layer)
    n, cout, cin, g = a["kernel_num"], a["out_channels"], a["in_channels"], a["group"]
    k2 = kh * kw
    w = p["weight"]
    kind = layer.kind
    if k2 == 1 and n == 1:
        x = b.op("Mul", [layer.x, att["channel"]])
        conv_in = [x, b.const("weight", w[0])]
        bias_in_conv = "bias" in p and "filter" not in att
        if bias_in_conv:
            conv_in.append(b.const("bias", p["bias"]))
        y = b.op("Conv", conv_in, {"strides": [sh, sw], "pads": list(pads), "dilations": [dh, dw], "group": g})
        return _finish(b, y, att, p, bias_done=bias_in_conv)
    if kind == "depthwise":
        c = cin
        taps = w.reshape(n, c, k2).transpose(0, 2, 1)  # (n, k2, C)
        if n > 1:
            kt = b.reshape(_kernel_mix(b, att, taps.reshape(n, -1)), [-1, k2, c])
        else:
            kt = b.const("taps", taps)
        kt = b.op("Mul", [kt, b.reshape(att["spatial"], [-1, k2, 1])])
        kt = b.op("Mul", [kt, b.reshape(att["channel"], [-1, 1, c])])
        kts = b.split(b.reshape(kt, [-1, k2 * c, 1, 1]), [c] * k2)
        slices = _tap_slices(b, layer.x, layer)
        y = b.op("Sum", [b.op("Mul", [s, kt_]) for s, kt_ in zip(slices, kts)])
        return _finish(b, y, att, p)
    if kind in ("dense", "pointwise"):
        kdim = k2 * cin
        wt = w.transpose(0, 1, 3, 4, 2).reshape(n, cout, kdim)  # tap-major columns: t * C_in + c
        if "spatial" in att:
            scale = b.op("Mul", [b.reshape(att["spatial"], [-1, k2, 1]), b.reshape(att["channel"], [-1, 1, cin])])
        else:
            scale = att["channel"]
        slices = _tap_slices(b, layer.x, layer)
        cols = slices[0] if len(slices) == 1 else b.op("Concat", slices, {"axis": 1})  # (B, k2*C_in, Ho, Wo)
        if n == 1:
            cols = b.op("Mul", [cols, b.reshape(scale, [-1, kdim, 1, 1])])
            conv_in = [cols, b.const("weight", wt[0].reshape(cout, kdim, 1, 1))]
            bias_in_conv = "bias" in p and "filter" not in att
            if bias_in_conv:
                conv_in.append(b.const("bias", p["bias"]))
            return _finish(b, b.op("Conv", conv_in), att, p, bias_done=bias_in_conv)
        wagg = b.reshape(_kernel_mix(b, att, wt.reshape(n, -1)), [-1, cout, kdim])
        if cout <= ho * wo:  # scale whichever is smaller: the per-sample kernel or the columns
            wagg = b.op("Mul", [wagg, b.reshape(scale, [-1, 1, kdim])])
            cols = b.reshape(cols, [-1, kdim, ho * wo])
        else:
            cols = b.reshape(b.op("Mul", [cols, b.reshape(scale, [-1, kdim, 1, 1])]), [-1, kdim, ho * wo])
        y = b.reshape(b.op("MatMul", [wagg, cols]), [-1, cout, ho, wo])
        return _finish(b, y, att, p)
    return lower_naive(b, layer, att)


# ----------------------------------------------------------------------------------------------- fused, batch 1
def lower_batch1(b: _Builder, layer: OdLayer, att) -> gs.Variable:
    """Valid only for batch size 1: attentions folded into one computed kernel (reshapes use batch 1)."""
    p = layer.params()
    a = layer.attrs
    kh, kw, sh, sw, dh, dw, pads, ho, wo = _geometry(layer)
    n, cout, cin, g = a["kernel_num"], a["out_channels"], a["in_channels"], a["group"]
    k2 = kh * kw
    w = p["weight"]
    if k2 == 1 and n == 1:
        return lower_any(b, layer, att)
    kind = layer.kind
    hin, win = a["input_hw"]
    wshape = [cout, cin // g, kh, kw]
    if n > 1:
        wk = b.reshape(_kernel_mix(b, att, w.reshape(n, -1)), wshape)
    else:
        wk = b.const("weight", w[0])
    if "spatial" in att:
        wk = b.op("Mul", [wk, b.reshape(att["spatial"], [1, 1, kh, kw])])
    wnum = int(np.prod(wshape))
    x = layer.x
    if kind == "depthwise":
        wk = b.op("Mul", [wk, b.reshape(att["channel"], [cout, 1, 1, 1])])
    elif kind in ("dense", "pointwise") and wnum <= cin * hin * win:
        wk = b.op("Mul", [wk, b.reshape(att["channel"], [1, cin, 1, 1])])
    else:
        x = b.op("Mul", [x, att["channel"]])
    filt_in_weight = "filter" in att and wnum <= cout * ho * wo
    if filt_in_weight:
        wk = b.op("Mul", [wk, b.reshape(att["filter"], [cout, 1, 1, 1])])
    conv_in = [x, wk]
    bias_in_conv = "bias" in p and ("filter" not in att or filt_in_weight)
    if bias_in_conv:
        conv_in.append(b.const("bias", p["bias"]))
    y = b.op("Conv", conv_in, {"strides": [sh, sw], "pads": list(pads), "dilations": [dh, dw], "group": g, "kernel_shape": [kh, kw]})
    if "filter" in att and not filt_in_weight:
        y = b.op("Mul", [y, att["filter"]])
    if "bias" in p and not bias_in_conv:
        y = b.op("Add", [y, b.const("bias", p["bias"].reshape(1, -1, 1, 1))])
    return y


NCHWC = "com.microsoft.nchwc"


def _nchwc_ok(layer: OdLayer, blk: int | None) -> bool:
    """Whether the batch-1 form of ``layer`` runs as one NCHWc Conv of block ``blk`` (channels multiples of it)."""
    if not blk:
        return False
    a = layer.attrs
    if layer.kind == "depthwise":
        return a["out_channels"] % blk == 0
    if layer.kind in ("dense", "pointwise"):
        return a["in_channels"] % blk == 0 and a["out_channels"] % blk == 0
    return False


def _nchwc_op(b: _Builder, op: str, inputs, attrs=None):
    y = b.op(op, inputs, attrs)
    y.inputs[0].domain = NCHWC
    return y


def _attention_vec(b: _Builder, layer: OdLayer, xb) -> dict[str, gs.Variable]:
    """Attentions as (1, size) vectors from the NCHWc input: nchwc GlobalAveragePool + Gemms (no Conv, so ORT
    inserts no NCHWc reorders around the tiny attention layers)."""
    p = layer.params()
    a = layer.attrs
    h = b.reshape(_nchwc_op(b, "GlobalAveragePool", [xb]), [1, a["in_channels"]])

    def gemm(h, wname, bname):
        w = p[wname]
        ins = [h, b.const(wname, w.reshape(w.shape[0], -1))]
        if bname in p:
            ins.append(b.const(bname, p[bname]))
        return b.op("Gemm", ins, {"transB": 1})

    h = gemm(h, "fc_weight", "fc_bias")
    h = _attention_norm_relu(b, layer, h, (1, -1))
    return _attention_heads(b, layer, h, gemm)


def lower_batch1_nchwc(b: _Builder, layer: OdLayer, blk: int) -> gs.Variable:
    """Batch-1 form for ``target="ort-cpu"``: ``ReorderInput -> nchwc Conv(computed kernel) -> ReorderOutput``.

    The constant kernel bank is stored already in ORT's blocked filter layout (depthwise ``OIHWBo``: (C/B, kh,
    kw, B); dense/1x1 ``OIHWBiBo``: (Co/B, Ci/B, kh, kw, Bi, Bo)), so the per-sample kernel is made by broadcast
    Muls with the attention vectors reshaped to that layout (no in-graph Transpose). Bias stays a constant conv
    bias. ``_nchwc_chain`` then removes the reorders between consecutive NCHWc layers and fuses activations
    and residual Adds into the convs.
    """
    p = layer.params()
    a = layer.attrs
    kh, kw, sh, sw, dh, dw, pads, ho, wo = _geometry(layer)
    n, cout, cin, g = a["kernel_num"], a["out_channels"], a["in_channels"], a["group"]
    w = p["weight"]  # (n, C_out, C_in/g, kh, kw)
    xb = _nchwc_op(b, "ReorderInput", [layer.x], {"channels_last": 0})
    att = _attention_vec(b, layer, xb)
    if layer.kind == "depthwise":
        wb = w.reshape(n, cout // blk, blk, kh, kw).transpose(0, 1, 3, 4, 2)
        shp_out, shp_in, shp_sp = [cout // blk, 1, 1, blk], [cout // blk, 1, 1, blk], [1, kh, kw, 1]
    else:
        wb = w.reshape(n, cout // blk, blk, cin // blk, blk, kh, kw).transpose(0, 1, 3, 5, 6, 4, 2)
        shp_out, shp_in, shp_sp = [cout // blk, 1, 1, 1, 1, blk], [1, cin // blk, 1, 1, blk, 1], [1, 1, kh, kw, 1, 1]
    bshape = list(wb.shape[1:])
    if n > 1:
        wk = b.reshape(_kernel_mix(b, att, wb.reshape(n, -1)), bshape)
    else:
        wk = b.const("weight_nchwc", wb[0])
    if layer.kind == "depthwise":  # tiny kernel: broadcast Muls (one per attention) are cheap
        scale = None
        if "spatial" in att and kh * kw > 1:
            scale = b.reshape(att["spatial"], shp_sp)
        for name, shp in (("channel", shp_in), ("filter", shp_out)):
            if name in att:
                v = b.reshape(att[name], shp)
                scale = v if scale is None else b.op("Mul", [scale, v])
        if scale is not None:
            wk = b.op("Mul", [wk, scale])
    elif any(h in att for h in ("channel", "spatial", "filter")):
        # Full-size scale S[ob, m, bo] = in[m] * out[ob, bo] (m = ib, h, w, bi) as ONE batched K=1 MatMul, then an
        # elementwise Mul with no broadcast: a broadcast Mul in the blocked layout runs over 8-float spans and
        # cost 560 us for the 1280x160 kernel (MatMul + Mul: see the module docstring).
        m = (cin // blk) * kh * kw * blk
        vin = b.const("ones_in", np.ones((cin // blk, kh * kw, blk), np.float32))
        if "channel" in att:
            vin = b.reshape(att["channel"], [cin // blk, 1, blk])
        if "spatial" in att and kh * kw > 1:
            vin = b.op("Mul", [vin, b.reshape(att["spatial"], [1, kh * kw, 1])])
        vout = b.reshape(att["filter"], [cout // blk, 1, blk]) if "filter" in att else b.const("ones_out", np.ones((cout // blk, 1, blk), np.float32))
        if "channel" in att and not ("spatial" in att and kh * kw > 1) and kh * kw > 1:
            vin = b.op("Mul", [vin, b.const("ones_sp", np.ones((1, kh * kw, 1), np.float32))])
        s = b.op("MatMul", [b.reshape(vin, [1, m, 1]), vout])
        wk = b.op("Mul", [b.reshape(wk, [cout // blk, m, blk]), s])
    wk = b.reshape(wk, [cout, cin // g, kh, kw])
    inputs = [xb, wk] + ([b.const("bias", p["bias"])] if "bias" in p else [])
    yb = _nchwc_op(b, "Conv", inputs, {"group": g, "kernel_shape": [kh, kw], "pads": list(pads), "strides": [sh, sw], "dilations": [dh, dw]})
    return _nchwc_op(b, "ReorderOutput", [yb], {"channels": cout, "channels_last": 0})


def _static_conv_to_nchwc(graph: gs.Graph, node: gs.Node, blk: int) -> None:
    """A constant-weight static Conv of the batch-1 branch as ``ReorderInput -> nchwc Conv -> ReorderOutput``
    with the kernel pre-blocked, so that ``_nchwc_chain`` joins it to the neighbouring NCHWc ODConv layers (ORT's
    own NchwcTransformer would wrap it in reorders of its own that the chain cannot see)."""
    w = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None or w.ndim != 4:
        return
    bias = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    if len(node.inputs) > 2 and node.inputs[2].name and bias is None:
        return
    cout, cpg, kh, kw = w.shape
    g = int(node.attrs.get("group", 1))
    if cout % blk:
        return
    if g == 1 and cpg % blk == 0:
        wb = w.reshape(cout // blk, blk, cpg // blk, blk, kh, kw).transpose(0, 2, 4, 5, 3, 1)
    elif g == cout and cpg == 1:
        wb = w.reshape(cout // blk, blk, kh, kw).transpose(0, 2, 3, 1)
    else:
        return
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return
    attrs = {
        "group": g, "kernel_shape": [kh, kw], "pads": list(node.attrs.get("pads", [0, 0, 0, 0])),
        "strides": list(node.attrs.get("strides", [1, 1])), "dilations": list(node.attrs.get("dilations", [1, 1])),
    }
    x, y = node.inputs[0], node.outputs[0]
    xb = gs.Variable(f"{node.name}/x_nchwc", dtype=np.float32)
    yb = gs.Variable(f"{node.name}/y_nchwc", dtype=np.float32)
    inputs = [xb, gs.Constant(f"{node.name}/w_nchwc", np.ascontiguousarray(wb.reshape(w.shape), dtype=np.float32))]
    if bias is not None:
        inputs.append(gs.Constant(f"{node.name}/b_nchwc", np.ascontiguousarray(bias, dtype=np.float32)))
    node.inputs.clear()
    node.outputs.clear()
    graph.nodes += [
        gs.Node("ReorderInput", f"{node.name}/ReorderInput", {"channels_last": 0}, [x], [xb], domain=NCHWC),
        gs.Node("Conv", f"{node.name}/nchwc", attrs, inputs, [yb], domain=NCHWC),
        gs.Node("ReorderOutput", f"{node.name}/ReorderOutput", {"channels": cout, "channels_last": 0}, [yb], [y], domain=NCHWC),
    ]


def _is(node, op: str, domain: str = NCHWC) -> bool:
    return node.op == op and (node.domain or "") == domain


def _single_producer(t):
    return t.inputs[0] if isinstance(t, gs.Variable) and len(t.inputs) == 1 else None


def _nchwc_chain(graph: gs.Graph) -> None:
    """Keep the network in NCHWc between the NCHWc ODConv layers (batch-1, ort-cpu).

    Rewrites, to a fixpoint: (1) ``Add(ReorderOutput(a), ReorderOutput(Conv(..)))`` -> the conv's ``Sum`` input
    (residual Add fused, as ORT's own NchwcTransformer does for static convs); (2) ``Relu`` / ``Clip`` right
    after ``ReorderOutput(Conv)`` -> the conv's ``activation`` attribute; (3) ``ReorderInput(ReorderOutput(t))``
    -> ``t`` (channels are block multiples, so the round trip is the identity).
    """
    outputs = set(id(t) for t in graph.outputs)

    def conv_behind(reorder_out):
        """The nchwc Conv feeding ``reorder_out`` when its blocked output feeds nothing else."""
        conv = _single_producer(reorder_out.inputs[0])
        if conv is None or not _is(conv, "Conv") or len(conv.outputs[0].outputs) != 1:
            return None
        return conv

    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if node.op == "Add" and not node.domain and len(node.inputs) == 2 and node.outputs:
                s0, s1 = node.inputs[0].shape, node.inputs[1].shape
                if s0 is not None and s1 is not None and list(s0) != list(s1):
                    continue
                for k in (1, 0):
                    r = _single_producer(node.inputs[k])
                    if r is None or not _is(r, "ReorderOutput"):
                        continue
                    conv = conv_behind(r)
                    if conv is None or "activation" in conv.attrs or len(node.inputs[k].outputs) != 1 or id(node.inputs[k]) in outputs:
                        continue
                    # The other addend in NCHWc: the blocked tensor behind its ReorderOutput, or the output of an
                    # nchwc ReorderInput already made of it (e.g. a MaxPool output that feeds the next ODConv).
                    t = node.inputs[1 - k]
                    other = _single_producer(t)
                    if other is not None and _is(other, "ReorderOutput") and other.attrs.get("channels") == r.attrs.get("channels"):
                        summand = other.inputs[0]
                    else:
                        ri = [c for c in t.outputs if _is(c, "ReorderInput") and c.attrs.get("channels_last", 0) == 0 and c.outputs]
                        if ri:
                            summand = ri[0].outputs[0]
                        elif t.shape is not None and len(t.shape) == 4 and t.shape[1] == r.attrs.get("channels"):
                            # e.g. a static downsample Conv: one reorder here beats an unfused Add + Relu.
                            summand = gs.Variable(f"{node.name}/sum_nchwc", dtype=np.float32)
                            graph.nodes.append(gs.Node("ReorderInput", f"{node.name}/ReorderInput", {"channels_last": 0}, [t], [summand], domain=NCHWC))
                        else:
                            continue
                    if len(conv.inputs) < 3:
                        cout = r.attrs["channels"]
                        conv.inputs.append(gs.Constant(f"{conv.name}/zero_bias", np.zeros(cout, np.float32)))
                    conv.inputs.append(summand)
                    r.outputs = list(node.outputs)
                    node.inputs.clear()
                    node.outputs.clear()
                    changed = True
                    break
            elif node.op in ("Relu", "Clip") and not node.domain and node.outputs:
                r = _single_producer(node.inputs[0])
                if r is None or not _is(r, "ReorderOutput") or len(node.inputs[0].outputs) != 1 or id(node.inputs[0]) in outputs:
                    continue
                conv = conv_behind(r)
                if conv is None or "activation" in conv.attrs:
                    continue
                if node.op == "Clip":
                    lo = constant_value(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1].name else node.attrs.get("min")
                    hi = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else node.attrs.get("max")
                    if lo is None or hi is None:
                        continue
                    conv.attrs["activation"] = "Clip"
                    conv.attrs["activation_params"] = [float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0])]
                else:
                    conv.attrs["activation"] = "Relu"
                r.outputs = list(node.outputs)
                node.inputs.clear()
                node.outputs.clear()
                changed = True
        for node in list(graph.nodes):
            if _is(node, "ReorderInput") and node.outputs and node.attrs.get("channels_last", 0) == 0:
                r = _single_producer(node.inputs[0])
                if r is None or not _is(r, "ReorderOutput") or r.attrs.get("channels_last", 0) != 0:
                    continue
                src, dst = r.inputs[0], node.outputs[0]
                for consumer in list(dst.outputs):
                    for i, t in enumerate(consumer.inputs):
                        if t is dst:
                            consumer.inputs[i] = src
                node.inputs.clear()
                node.outputs.clear()
                changed = True
        graph.cleanup()


FORMS = {"naive": lower_naive, "any": lower_any, "batch1": lower_batch1}


def lower(model: onnx.ModelProto, form: str = "any", prefix: str = "", nchwc_block: int | None = None) -> onnx.ModelProto:
    """Lower every ODConv marker with ``form`` ('naive', 'any' or 'batch1'); with ``nchwc_block`` the 'batch1' form
    uses onnxruntime's NCHWc contrib ops of that block size (see ``PassContext``)."""
    graph = import_graph(model)
    _lower_graph(graph, form, prefix, nchwc_block)
    return export_sorted(graph, model)


def _lower_graph(graph: gs.Graph, form: str, prefix: str, nchwc_block: int | None) -> int:
    if form not in FORMS:
        raise ValueError(f"unknown lowering form {form!r}; expected one of {sorted(FORMS)}")
    nchwc_block = nchwc_block if form == "batch1" else None
    static_convs = [n for n in graph.nodes if n.op == "Conv" and not n.domain] if nchwc_block else []
    layers = odconv_layers(graph)
    for layer in layers:
        b = _Builder(graph, f"{prefix}{layer.name}/od_{form}")
        if nchwc_block and _nchwc_ok(layer, nchwc_block):
            y_new = lower_batch1_nchwc(b, layer, nchwc_block)
        else:
            y_new = FORMS[form](b, layer, build_attention(b, layer))
        y_old = layer.y
        # Re-point: the producer of y_new now produces y_old's tensor (keeps the downstream names).
        producer = y_new.inputs[0]
        idx = producer.outputs.index(y_new)
        layer.node.outputs.clear()
        producer.outputs[idx] = y_old
    if nchwc_block:
        for node in static_convs:
            _static_conv_to_nchwc(graph, node, nchwc_block)
        graph.cleanup()
        _nchwc_chain(graph)
    return len(layers)


class LowerODConv(OnnxPass):
    """Lower every marker with one form (the pass ``lower_odconv``: 'any'; ``lower_naive``: 'naive')."""

    def __init__(self, name: str, form: str) -> None:
        if form not in FORMS:
            raise ValueError(f"unknown lowering form {form!r}; expected one of {sorted(FORMS)}")
        self.NAME = name  # type: ignore[misc] - one class, two registered passes
        self.form = form

    def rewrite(self, graph: gs.Graph, ctx: PassContext) -> int:
        return _lower_graph(graph, self.form, "", ctx.nchwc_block)
