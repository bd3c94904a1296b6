"""What the ONNX passes share: a view of one marker node (``OdLayer``), model loading, graph import/export,
the errors, the BatchNorm scale and the probe for onnxruntime's NCHWc block. (Names: ``deploy/schema.py``.)

The exporter (``odconv_surgery.deploy.export``) emits every shared-attention ``ODConv2d`` as ONE node
``odconv.surgery::ODConv2d`` whose first input is the layer input x and whose other inputs are the layer's
parameters as constant initializers, each tagged by the ``roles`` string attribute (same order as the inputs).
Geometry (channels, kernel, strides, pads, dilations, group, kernel_num, heads, norm, the attention's
activations and pool size) is carried as attributes and the node name is the PyTorch module path. Finding ODConv
layers is therefore exact (op type + domain), not op-sequence guessing. Passes rewrite the roles (e.g. fold a
BatchNorm into ``weight``/``bias``); the final lowering pass replaces each marker by standard ONNX ops, so a fully
lowered graph runs in any runtime.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ...deploy.schema import MARKER_ATTENTION_DEFAULTS, NCHWC_DOMAIN, OD_DOMAIN, OD_DOMAIN_VERSION, OD_OP
from ...errors import ModelNumericsError, OnnxModelError, PassNumericsError  # noqa: F401 - raised here, defined with every error
from .weights_aside import WeightStore


def load_model(model: "onnx.ModelProto | str | os.PathLike | bytes") -> onnx.ModelProto:
    """Accept a ModelProto, a path or serialized bytes; raise ``OnnxModelError`` with a clear message otherwise."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as exc:  # noqa: BLE001 - protobuf raises several types
            raise OnnxModelError(f"bytes given are not a serialized ONNX model ({exc})") from exc
        source = "<bytes>"
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise OnnxModelError(f"ONNX file not found: {path}")
        try:
            proto = onnx.load(path)
        except Exception as exc:  # noqa: BLE001
            raise OnnxModelError(f"{path} is not a valid ONNX model (corrupt or another format): {exc}") from exc
        source = path
    else:
        raise OnnxModelError(f"expected an onnx.ModelProto, a path or bytes, got {type(model).__name__}")
    if not proto.graph.node and not proto.graph.output:
        raise OnnxModelError(f"{source} parsed but holds no ONNX graph (corrupt or not an ONNX file)")
    return proto


def constant_value(tensor) -> np.ndarray | None:
    """The value of a constant tensor, following the exporter's Identity / Constant indirections; else None."""
    while isinstance(tensor, gs.Variable) and len(tensor.inputs) == 1 and tensor.inputs[0].op in ("Identity", "Constant"):
        producer = tensor.inputs[0]
        if producer.op == "Constant":
            return np.asarray(producer.attrs["value"].values)
        tensor = producer.inputs[0]
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    return None


def bn_scale(gamma, var, eps: float) -> np.ndarray:
    """Per-channel scale s = gamma / sqrt(var + eps) of an eval-mode BatchNorm (float64): BN(y) = s * (y - mu) + beta."""
    return np.asarray(gamma, dtype=np.float64) / np.sqrt(np.asarray(var, dtype=np.float64) + eps)


def is_odconv(node: gs.Node) -> bool:
    return node.op == OD_OP and (node.domain or "") == OD_DOMAIN


@dataclass
class OdLayer:
    """A view of one ``ODConv2d`` marker node: its parameters by role, as numpy arrays."""

    node: gs.Node

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def attrs(self) -> dict[str, Any]:
        return self.node.attrs

    @property
    def roles(self) -> list[str]:
        return list(self.node.attrs["roles"])

    @property
    def x(self) -> gs.Variable:
        return self.node.inputs[0]

    @property
    def y(self) -> gs.Variable:
        return self.node.outputs[0]

    def has(self, role: str) -> bool:
        return role in self.roles

    def param(self, role: str) -> np.ndarray:
        # The exporter deduplicates equal initializers behind Identity nodes: constant_value follows them.
        value = constant_value(self.node.inputs[1 + self.roles.index(role)])
        if value is None:
            raise OnnxModelError(f"ODConv layer {self.name!r}: parameter {role!r} is not a constant initializer")
        return value

    def params(self) -> dict[str, np.ndarray]:
        return {role: self.param(role) for role in self.roles}

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        """Replace all parameter inputs (x stays first) by fresh constants named after the layer and role."""
        roles = list(params)
        inputs = [self.x]
        for role in roles:
            inputs.append(gs.Constant(f"{self.name}.{role}", np.ascontiguousarray(params[role], dtype=np.float32)))
        self.node.inputs = inputs
        self.node.attrs["roles"] = roles

    @property
    def heads(self) -> list[str]:
        """The heads the layer has, in ``HEAD_ORDER`` (none: the layer is a plain conv)."""
        return list(self.node.attrs.get("heads", []))

    @property
    def has_trunk(self) -> bool:
        """Whether the heads read a hidden FC (+ norm + ReLU) rather than the pooled input itself."""
        return self.has("fc_weight")

    @property
    def pool_size(self) -> int:
        """k: the attention reads the input adaptively average-pooled to k x k."""
        return int(self.attrs.get("pool_size", MARKER_ATTENTION_DEFAULTS["pool_size"]))

    def activation(self, head: str) -> str:
        """The activation of ``head``: "sigmoid" or "softmax" (over the head's own values)."""
        key = "kernel_activation" if head == "kernel" else "activation"
        return str(self.attrs.get(key, MARKER_ATTENTION_DEFAULTS[key]))

    @property
    def kind(self) -> str:
        """'depthwise' (k x k, groups == C_in == C_out), 'pointwise' (1x1, groups 1), 'dense' (k x k, groups 1) or
        'grouped' (any other groups, 1x1 depthwise included: no form treats it apart)."""
        a = self.attrs
        kh, kw = a["kernel_shape"]
        g = a["group"]
        if g > 1 and g == a["in_channels"] == a["out_channels"] and kh * kw > 1:
            return "depthwise"
        if g > 1:
            return "grouped"
        return "pointwise" if kh * kw == 1 else "dense"


def odconv_layers(graph: gs.Graph) -> list[OdLayer]:
    return [OdLayer(node) for node in graph.nodes if is_odconv(node)]


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    return gs.import_onnx(model)


def export_graph(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export a gs graph keeping the original model's metadata, IR version and opset imports."""
    graph.cleanup()
    store = WeightStore()
    with store.aside_in(graph):  # nested subgraphs copy their weights once per level otherwise
        out = gs.export_onnx(graph, do_type_check=False)
    store.refill(out.graph)
    out.ir_version = like.ir_version
    del out.opset_import[:]
    out.opset_import.extend(like.opset_import)
    if any(node.domain == OD_DOMAIN for node in out.graph.node) and not any(o.domain == OD_DOMAIN for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(OD_DOMAIN, OD_DOMAIN_VERSION))
    if any(node.domain == NCHWC_DOMAIN for node in out.graph.node) and not any(o.domain == NCHWC_DOMAIN for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(NCHWC_DOMAIN, 1))
    if not any(node.domain == OD_DOMAIN for node in out.graph.node):
        keep = [o for o in out.opset_import if o.domain != OD_DOMAIN]
        del out.opset_import[:]
        out.opset_import.extend(keep)
    del out.metadata_props[:]
    out.metadata_props.extend(like.metadata_props)
    out.producer_name = like.producer_name
    out.producer_version = like.producer_version
    return out


def odconv_node_count(model: onnx.ModelProto) -> int:
    """How many ODConv marker nodes the model's main graph holds."""
    return sum(1 for node in model.graph.node if node.domain == OD_DOMAIN and node.op_type == OD_OP)


def has_odconv_nodes(model: onnx.ModelProto) -> bool:
    return odconv_node_count(model) > 0


@functools.lru_cache(maxsize=1)
def detect_nchwc_block() -> int | None:
    """onnxruntime's CPU NCHWc block size (8 or 16), found by probing a depthwise nchwc Conv; None if unusable.
    Probed once per process."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c = 16
    x = rng.standard_normal((1, c, 6, 6)).astype(np.float32)
    w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    ref = None
    for blk in (None, 8, 16):
        if blk is None:
            nodes = [helper.make_node("Conv", ["x", "w"], ["y"], group=c, pads=[1] * 4)]
            inits = [numpy_helper.from_array(w, "w")]
        else:
            wb = w.reshape(c // blk, blk, 3, 3).transpose(0, 2, 3, 1).reshape(c, 1, 3, 3).copy()
            nodes = [
                helper.make_node("ReorderInput", ["x"], ["xb"], domain=NCHWC_DOMAIN),
                helper.make_node("Conv", ["xb", "w"], ["yb"], domain=NCHWC_DOMAIN, group=c, pads=[1] * 4, kernel_shape=[3, 3]),
                helper.make_node("ReorderOutput", ["yb"], ["y"], domain=NCHWC_DOMAIN, channels=c),
            ]
            inits = [numpy_helper.from_array(wb, "w")]
        graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 6, 6])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(NCHWC_DOMAIN, 1)])
        try:
            opts = ort.SessionOptions()
            opts.log_severity_level = 4
            sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            out = sess.run(None, {"x": x})[0]
        except Exception:  # noqa: BLE001
            if blk is None:
                return None
            continue
        if blk is None:
            ref = out
        elif np.allclose(out, ref, atol=1e-4):
            return blk
    return None
