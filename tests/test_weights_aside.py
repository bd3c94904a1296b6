"""Large constants set aside while graphs are copied come back byte for byte, in every graph, and never as a
placeholder."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues
import pytest
import torch
from onnx import helper, numpy_helper

from odconv_surgery import ODConv2d, check_parity
from odconv_surgery.deploy.export import export_onnx
from odconv_surgery.errors import ODConvError
from odconv_surgery.passes.onnx import weights_aside
from odconv_surgery.passes.onnx.common import export_graph, import_graph
from odconv_surgery.passes.onnx.weights_aside import ASIDE_MIN_BYTES, WeightStore

BIG = (ASIDE_MIN_BYTES // 4) + 16  # floats: just over the limit


def _nested_model() -> onnx.ModelProto:
    """An ``If`` whose branches each hold a large weight named ``w`` (different values), beside an outer one."""
    rng = np.random.default_rng(0)
    outer, then_w, else_w = (rng.standard_normal(BIG).astype(np.float32) for _ in range(3))

    def branch(name: str, w: np.ndarray) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Add", ["x", "w"], [f"{name}_y"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_y", onnx.TensorProto.FLOAT, [BIG])],
                                 [numpy_helper.from_array(w, "w")])

    nodes = [helper.make_node("Add", ["x", "outer_w"], ["x2"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", then_w), else_branch=branch("else", else_w)),
             helper.make_node("Add", ["y", "x2"], ["z"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [BIG]),
                                           helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [BIG])],
                              [numpy_helper.from_array(outer, "outer_w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _weights(model: onnx.ModelProto) -> dict[tuple[str, str], bytes]:
    return {(g.name, t.name): numpy_helper.to_array(t).tobytes() for g in weights_aside._graphs(model.graph)
            for t in g.initializer}


def test_proto_round_trip_keeps_every_graph_its_own_data():
    model = _nested_model()
    before = _weights(model)
    store = WeightStore()
    store.set_aside(model.graph)
    assert len(store) == 3 and all(len(t.raw_data) < 100 for g in weights_aside._graphs(model.graph) for t in g.initializer)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # what the passes do with the light graph
    store.refill(copy.graph)
    assert _weights(copy) == before
    onnx.checker.check_model(copy)


def test_gs_export_sets_aside_and_restores_numpy_and_imported_constants():
    model = _nested_model()
    before = _weights(model)
    graph = import_graph(model)  # imported constants: lazily loaded protos
    added = np.arange(BIG, dtype=np.float32)
    x2 = graph.nodes[0].outputs[0]
    out = gs.Variable("x3", dtype=np.float32, shape=[BIG])
    graph.nodes.append(gs.Node("Add", inputs=[x2, gs.Constant("added", added)], outputs=[out]))  # a numpy constant
    graph.nodes[-2].inputs[1] = out
    store = WeightStore()
    with store.aside_in(graph):
        assert len(store) == 4 and all(isinstance(t._values, LazyValues) and len(t._values.tensor.raw_data) < 100
                                       for t in graph.tensors().values() if isinstance(t, gs.Constant))
    exported = export_graph(graph.toposort(), model)
    weights = _weights(exported)
    assert {k: v for k, v in weights.items() if k in before} == before
    assert weights[("g", "added")] == added.tobytes()
    assert isinstance(graph.tensors()["added"].values, np.ndarray)  # the graph's own constants are restored
    onnx.checker.check_model(exported)


def test_a_placeholder_without_its_data_is_refused():
    model = _nested_model()
    WeightStore().set_aside(model.graph)
    with pytest.raises(ODConvError, match="placeholder"):
        WeightStore().refill(model.graph)


@pytest.mark.parametrize("target", ["portable", "ort-cpu"])
def test_every_constant_set_aside_keeps_the_exported_function(target, monkeypatch):
    """The whole pipeline, every constant set aside (limit 0), numerically checked after every pass."""
    monkeypatch.setattr(weights_aside, "ASIDE_MIN_BYTES", 0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                ODConv2d(16, 24, 3, padding=1, kernel_num=2), ODConv2d(24, 24, 1)).eval()
    x = torch.randn(1, 3, 12, 12)
    proto = export_onnx(model, None, x, target=target, tune=False, check=True)
    assert not any(t.raw_data.startswith(weights_aside._TOKEN) for t in weights_aside._tensors(proto.graph))
    check_parity(model, proto, x, batches=(0, 1, 3))
