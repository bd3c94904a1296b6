"""Pass ``find_odconv``: locate and validate every ODConv subgraph.

Invariant: the graph is not modified. Every ``odconv.surgery::ODConv2d`` marker node is checked (roles match
inputs, all parameters are constant initializers of the shapes its attributes imply, its attention is one the
lowering knows: heads in order with their parameters, known activations, a pool size, a trunk or none; its name is
listed in the model's ``odconv.layers`` metadata); a marker that fails raises ``ValueError`` naming the layer. The layers are
exact to find because the exporter emits one marker per module call (node name = module path, plus ``/call<i>``
for a module called at several sites), no op-sequence guessing involved.
"""

from __future__ import annotations

import json

import numpy as np
import onnx

from ...deploy.schema import HEAD_ORDER, META_LAYERS, metadata
from ...nn.options import ACTIVATIONS, KERNEL_ACTIVATIONS
from ...errors import OnnxModelError
from .base import OnnxPass, PassContext
from .common import OdLayer, import_graph, odconv_layers
from .lowering.attention import head_sizes


def find_odconv(model: onnx.ModelProto) -> list[OdLayer]:
    graph = import_graph(model)
    layers = odconv_layers(graph)
    listed = metadata(model).get(META_LAYERS)
    listed_names = set(json.loads(listed)) if listed else None
    for layer in layers:
        a = layer.attrs
        roles = layer.roles
        if len(roles) != len(layer.node.inputs) - 1:
            raise OnnxModelError(f"ODConv layer {layer.name!r}: {len(roles)} roles for {len(layer.node.inputs) - 1} parameters")
        params = layer.params()  # raises if a parameter is not constant
        n, cout, cin, g = a["kernel_num"], a["out_channels"], a["in_channels"], a["group"]
        kh, kw = a["kernel_shape"]
        expected = (n, cout, cin // g, kh, kw)
        if tuple(params["weight"].shape) != expected:
            raise OnnxModelError(f"ODConv layer {layer.name!r}: kernel bank shape {params['weight'].shape}, expected {expected}")
        _check_attention(layer, params)
        module = a.get("layer_name", layer.name)  # a module called at several sites has one marker per call
        if listed_names is not None and module not in listed_names:
            raise OnnxModelError(f"ODConv layer {module!r} is not listed in the model's odconv.layers metadata")
    return layers


def _check_attention(layer: OdLayer, params: dict[str, np.ndarray]) -> None:
    """Refuse a marker whose attention the lowering would misread (``OnnxModelError`` naming the layer and what is
    wrong): unknown heads or activations, a bad pool size, or head / trunk parameters of the wrong shapes."""
    def refuse(what: str) -> None:
        raise OnnxModelError(f"ODConv layer {layer.name!r}: {what}; re-export the model with this version of "
                             "odconv-surgery (export_onnx), whose markers the passes read")

    heads = layer.heads
    if heads != [h for h in HEAD_ORDER if h in heads]:
        refuse(f"heads {heads} are not distinct heads in the order {list(HEAD_ORDER)}")
    for head, allowed in (("channel", ACTIVATIONS), ("kernel", KERNEL_ACTIVATIONS)):
        if layer.activation(head) not in allowed:
            key = "kernel_activation" if head == "kernel" else "activation"
            refuse(f"{key} {layer.activation(head)!r} is not one of {list(allowed)}")
    k = layer.pool_size
    if k < 1:
        refuse(f"pool_size {k} is not >= 1")
    if not heads:
        extra = [role for role in layer.roles if role not in ("weight", "bias")]
        if extra:
            refuse(f"parameters {extra} for a layer without heads")
        return
    cin = layer.attrs["in_channels"]
    if layer.has_trunk:
        fc = params["fc_weight"].shape
        if len(fc) != 4 or fc[1:] != (cin, k, k):
            refuse(f"fc_weight shape {fc}, expected (A, {cin}, {k}, {k})")
        reads = (fc[0], 1, 1)
    else:
        if any(role.startswith("norm_") or role == "fc_bias" for role in layer.roles):
            refuse("a trunk norm or fc bias without fc_weight")
        reads = (cin, k, k)
    sizes = head_sizes(layer)
    merged = "heads_weight" in params
    for role, rows in ({"heads": sum(sizes.values())} if merged else sizes).items():
        if f"{role}_weight" not in params or f"{role}_bias" not in params:
            refuse(f"head {role!r} has no {role}_weight / {role}_bias parameters")
        if params[f"{role}_weight"].shape != (rows, *reads) or params[f"{role}_bias"].shape != (rows,):
            refuse(f"{role} head weight {params[f'{role}_weight'].shape} / bias {params[f'{role}_bias'].shape}, "
                   f"expected {(rows, *reads)} / {(rows,)}")


class FindODConv(OnnxPass):
    NAME = "find_odconv"

    def transform(self, model: onnx.ModelProto, ctx: PassContext) -> tuple[onnx.ModelProto, int]:
        return model, len(find_odconv(model))
