"""Pass ``find_odconv``: locate and validate every ODConv subgraph.

Invariant: the graph is not modified. Every ``odconv.surgery::ODConv2d`` marker node is checked (roles match
inputs, all parameters are constant initializers of the shapes its attributes imply, its name is listed in the
model's ``odconv.layers`` metadata); a marker that fails raises ``ValueError`` naming the layer. The layers are
exact to find because the exporter emits one marker per module call (node name = module path, plus ``/call<i>``
for a module called at several sites), no op-sequence guessing involved.
"""

from __future__ import annotations

import json

import onnx

from ...deploy.schema import META_LAYERS, metadata
from ...errors import OnnxModelError
from .base import OnnxPass, PassContext
from .common import OdLayer, import_graph, odconv_layers


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
        module = a.get("layer_name", layer.name)  # a module called at several sites has one marker per call
        if listed_names is not None and module not in listed_names:
            raise OnnxModelError(f"ODConv layer {module!r} is not listed in the model's odconv.layers metadata")
    return layers


class FindODConv(OnnxPass):
    NAME = "find_odconv"

    def transform(self, model: onnx.ModelProto, ctx: PassContext) -> tuple[onnx.ModelProto, int]:
        return model, len(find_odconv(model))
