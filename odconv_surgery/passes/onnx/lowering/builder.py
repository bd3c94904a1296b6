"""What every lowering form shares: a node factory (``Builder``), a layer's ``Geometry``, the k^2 shifted input
views (``tap_slices``), the kernel mix ``a_w @ bank``, the output tail (filter attention, bias) and ``Scaling``,
where ``plan.py`` tells a portable form to apply the attentions."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import onnx_graphsurgeon as gs

from ....nn.geometry import conv_output_size
from ....deploy.schema import OD_DOMAIN
from ..common import OdLayer


#: In the name of every node a lowering builds (``<layer>/od_<form>/...``): tells them from the model's own nodes.
LOWERED_TAG = "/od_"


class Builder:
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

    def op(self, op: str, inputs, attrs=None, n_out: int = 1, hint: str | None = None, domain: str | None = None,
           dtype=np.float32):
        """Append one node; its outputs (``dtype``, float32 unless said) are returned (one, or a list)."""
        name = self._name(hint or op)
        outputs = [gs.Variable(f"{name}_out{i}", dtype=dtype) for i in range(n_out)]
        node = gs.Node(op=op, name=name, attrs=attrs or {}, inputs=list(inputs), outputs=outputs)
        if domain is not None:
            node.domain = domain
        self.graph.nodes.append(node)
        return outputs[0] if n_out == 1 else outputs

    def reshape(self, x, shape):
        return self.op("Reshape", [x, self.ints("shape", shape)])

    def split(self, x, sizes, axis=1):
        if len(sizes) == 1:
            return [x]
        return self.op("Split", [x, self.ints("split", sizes)], {"axis": axis}, n_out=len(sizes))


@dataclass(frozen=True)
class Geometry:
    """One ODConv layer's convolution geometry, read from the marker's attributes."""

    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pads: tuple[int, int, int, int]  # ONNX order: top, left, bottom, right
    ho: int
    wo: int

    @classmethod
    def of(cls, layer: OdLayer) -> "Geometry":
        a = layer.attrs
        kh, kw = a["kernel_shape"]
        sh, sw = a["strides"]
        dh, dw = a["dilations"]
        pt, pl, pb, pr = a["pads"]
        hin, win = a["input_hw"]
        ho = conv_output_size(hin, kh, sh, dh, pt, pb)
        wo = conv_output_size(win, kw, sw, dw, pl, pr)
        return cls(kh, kw, sh, sw, dh, dw, (pt, pl, pb, pr), ho, wo)

    @property
    def k2(self) -> int:
        return self.kh * self.kw

    def conv_attrs(self, group: int) -> dict:
        """Strides, pads, dilations and group of an ONNX Conv with this geometry."""
        return {"strides": [self.sh, self.sw], "pads": list(self.pads), "dilations": [self.dh, self.dw], "group": group}


@dataclass(frozen=True)
class Scaling:
    """Where a portable form applies a layer's attentions (decided by ``plan.py``, carried out by the form): True folds
    them into the (per-sample) kernel, False scales the activations instead and keeps the kernel as it is.

    ``input_on_kernel``: the input-side attentions (the channel attention; in the im2col form the column scale
    ``a_s (x) a_c``), else applied to the input or its columns. ``filter_on_kernel``: the filter attention, else
    applied to the output."""

    input_on_kernel: bool = False
    filter_on_kernel: bool = False


def tap_slices(b: Builder, x, layer: OdLayer) -> list:
    """The k^2 shifted (strided, dilated) views of the padded input, each (B, C_in, H_out, W_out), tap-major."""
    geo = Geometry.of(layer)
    pt, pl, pb, pr = geo.pads
    if any(geo.pads):
        x = b.op("Pad", [x, b.ints("pads", [0, 0, pt, pl, 0, 0, pb, pr])], {"mode": "constant"})
    if geo.k2 == 1 and geo.sh == geo.sw == 1:
        return [x]
    slices = []
    axes = b.ints("axes", [2, 3])
    steps = b.ints("steps", [geo.sh, geo.sw])
    for i in range(geo.kh):
        for j in range(geo.kw):
            starts = [i * geo.dh, j * geo.dw]
            ends = [i * geo.dh + geo.sh * (geo.ho - 1) + 1, j * geo.dw + geo.sw * (geo.wo - 1) + 1]
            slices.append(b.op("Slice", [x, b.ints("starts", starts), b.ints("ends", ends), axes, steps]))
    return slices


def finish(b: Builder, y, att, p, bias_done: bool = False):
    """The output tail: ``* a_f`` (filter attention), then ``+ bias`` unless the conv already added it."""
    if "filter" in att and att["filter"] is not None:
        y = b.op("Mul", [y, att["filter"]])
    if "bias" in p and not bias_done:
        y = b.op("Add", [y, b.const("bias", p["bias"].reshape(1, -1, 1, 1))])
    return y


def kernel_mix(b: Builder, att, bank_flat: np.ndarray):
    """a_w (B, n) @ bank (n, K) -> (B, K)."""
    aw = b.reshape(att["kernel"], [-1, bank_flat.shape[0]])
    return b.op("MatMul", [aw, b.const("bank", bank_flat)])


@contextlib.contextmanager
def layer_view(layer: OdLayer, x: gs.Variable) -> Iterator[OdLayer]:
    """``layer`` read on input ``x`` (a per-sample view, a timing graph's input): a detached marker sharing the
    layer's constants, detached again on exit so it never stays a consumer of them."""
    marker = gs.Node(layer.node.op, layer.name, dict(layer.attrs), [x, *layer.node.inputs[1:]], [])
    marker.domain = OD_DOMAIN
    try:
        yield OdLayer(marker)
    finally:
        marker.inputs.clear()
