import numpy as np
import onnx
import pytest
import torch

from odconv_surgery.deploy.export import export_marked
from odconv_surgery.passes.onnx import (
    NAIVE_PIPELINE,
    PIPELINE,
    REGISTRY,
    OnnxModelError,
    PassContext,
    PassNumericsError,
    check_pass,
    ort_run,
    register_pass,
    run_pipeline,
)
from odconv_surgery.passes.onnx.check import random_batch
from odconv_surgery.deploy.schema import OD_DOMAIN
from odconv_surgery.passes.onnx.common import odconv_layers
from odconv_surgery.passes.onnx.find_odconv import find_odconv
import onnx_graphsurgeon as gs

from helpers.onnx_models import tiny


@pytest.fixture(scope="module")
def marked():
    model = tiny(4)
    return export_marked(model, torch.randn(1, 8, 16, 16))


@pytest.mark.parametrize("passes", [PIPELINE, NAIVE_PIPELINE], ids=["fused", "naive"])
def test_each_pass_keeps_numerics(marked, passes):
    feed = random_batch((1, 8, 16, 16), batch=3, seed=5)
    reference = ort_run(marked, feed)
    proto = marked
    for name in passes:
        proto = REGISTRY[name](proto)
        reference = check_pass(name, reference, proto, feed, tolerance=1e-4)
    onnx.checker.check_model(proto)
    assert not any(n.domain == OD_DOMAIN for n in proto.graph.node)


def test_find_and_folds(marked):
    layers = find_odconv(marked)
    assert [l.name for l in layers] == ["c1", "c2", "c3", "c4", "c5"]
    assert {l.kind for l in layers} == {"dense", "depthwise", "pointwise", "grouped"}
    folded = REGISTRY["fold_output_bn"](marked)
    assert not any(n.op_type == "BatchNormalization" for n in folded.graph.node)  # bn1 after c1 folded
    c1 = [l for l in odconv_layers(gs.import_onnx(folded)) if l.name == "c1"][0]
    assert c1.has("bias")
    merged = REGISTRY["merge_attention_heads"](REGISTRY["fold_attention_norm"](folded))
    for layer in odconv_layers(gs.import_onnx(merged)):
        assert layer.has("heads_weight") and layer.has("fc_bias") and not layer.has("norm_mean")


def test_attention_is_a_handful_of_nodes(marked):
    proto = run_pipeline(marked, batch1_branch=False)
    per_layer = {}
    for node in proto.graph.node:
        layer = node.name.split("/")[0]
        per_layer[layer] = per_layer.get(layer, 0) + 1
    attention_ops = [n for n in proto.graph.node if n.name.startswith("c3/") and n.op_type in ("GlobalAveragePool", "Conv", "Relu", "Split", "Sigmoid", "Softmax")]
    assert len(attention_ops) <= 9
    assert per_layer["c3"] <= 18  # 1x1, n=4: attention + per-sample kernel MatMul


def test_corrupt_and_non_onnx_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage not a protobuf \xff\xfe")
    with pytest.raises(OnnxModelError, match="bad.onnx is not a valid ONNX model"):
        run_pipeline(str(bad))
    text = tmp_path / "readme.txt"
    text.write_text("hello")
    with pytest.raises(OnnxModelError, match="readme.txt is not a valid ONNX model"):
        run_pipeline(str(text))
    with pytest.raises(OnnxModelError, match="ONNX file not found: .*missing.onnx"):
        run_pipeline(str(tmp_path / "missing.onnx"))
    with pytest.raises(OnnxModelError, match="expected an onnx.ModelProto, a path or bytes, got int"):
        run_pipeline(42)


def test_pass_that_breaks_numerics_raises_naming_it(marked):
    def perturb(model):
        model = onnx.ModelProto.FromString(model.SerializeToString())
        graph = gs.import_onnx(model)
        layer = odconv_layers(graph)[0]
        params = layer.params()
        params["weight"] = params["weight"] * 1.01
        layer.set_params(params)
        return gs.export_onnx(graph)

    if "perturb_weights" not in REGISTRY:
        register_pass("perturb_weights", perturb)
    with pytest.raises(PassNumericsError, match="perturb_weights"):
        run_pipeline(marked, ["find_odconv", "perturb_weights", "lower_odconv"], check_input=np.zeros((1, 8, 16, 16), np.float32))


def test_unknown_pass(marked):
    with pytest.raises(ValueError, match="unknown"):
        run_pipeline(marked, ["nope"])


def _batch1_domains(proto):
    if_node = next(n for n in proto.graph.node if n.op_type == "If")
    branch = next(a.g for a in if_node.attribute if a.name == "then_branch")
    return {n.domain for n in branch.node}


def test_options_travel_in_the_context(marked):
    """The NCHWc block comes from the context of each call, not from module state (two targets side by side)."""
    folded = run_pipeline(marked, PIPELINE[:4])
    nchwc = REGISTRY["lower_by_batch_regime"](folded, PassContext("ort-cpu", nchwc_block=8))
    portable = REGISTRY["lower_by_batch_regime"](folded)
    assert "com.microsoft.nchwc" in _batch1_domains(nchwc)
    assert "com.microsoft.nchwc" not in _batch1_domains(portable)
    with pytest.raises(ValueError, match="target"):
        PassContext("gpu")


def test_each_pass_logs_its_count(marked, caplog):
    with caplog.at_level("INFO", logger="odconv_surgery.passes.onnx"):
        run_pipeline(marked, ["find_odconv", "fold_output_bn"])
    assert [r.getMessage() for r in caplog.records] == ["find_odconv: 5 layers", "fold_output_bn: 1 layers"]


def _blocked_net(shapes, nodes):
    """A (1, c, 8, 8) -> (1, c, 8, 8) net of ``nodes`` (ONNX helper nodes, input ``x``, output ``y``) over random
    initializers ``shapes(c)`` (name -> shape), c = 2 * onnxruntime's NCHWc block; returns (plain model, its gs graph
    with every Conv blocked, c). Skips where the NCHWc ops are not usable."""
    from onnx import TensorProto, helper, numpy_helper

    from odconv_surgery.passes.onnx.common import detect_nchwc_block
    from odconv_surgery.passes.onnx.lowering.nchwc_layout import block_static_conv

    blk = detect_nchwc_block()
    if blk is None:
        pytest.skip("onnxruntime NCHWc contrib ops not usable here")
    rng = np.random.default_rng(0)
    c = 2 * blk
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.2, name)
             for name, shape in shapes(c).items()]
    graph = helper.make_graph(nodes(c), "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 8, 8])], inits)
    plain = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = gs.import_onnx(plain)
    assert all(block_static_conv(g, n, blk) for n in [n for n in g.nodes if n.op == "Conv"])
    g.cleanup()
    return plain, g, c


def test_chain_nchwc_rules_count_and_keep_numerics():
    """Conv -> Relu -> Conv -> Add(residual): each rule of the chain fires once and the function is unchanged."""
    from onnx import helper

    from odconv_surgery.passes.onnx.chain_nchwc import chain_nchwc, drop_reorder_round_trips, fuse_activations, fuse_residual_adds
    from odconv_surgery.passes.onnx.common import export_graph

    plain, g, c = _blocked_net(
        lambda c: {"wa": (c, c, 3, 3), "ba": (c,), "wb": (c, c, 1, 1), "bb": (c,)},
        lambda c: [
            helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["a"], ["r"], name="relu"),
            helper.make_node("Conv", ["r", "wb", "bb"], ["b"], name="conv_b"),
            helper.make_node("Add", ["b", "r"], ["y"], name="add"),
        ])
    assert (fuse_activations(g), fuse_residual_adds(g), drop_reorder_round_trips(g)) == (1, 1, 1)
    assert chain_nchwc(g) == 0  # fixpoint reached
    blocked = export_graph(g.cleanup().toposort(), plain)
    assert [n.op_type for n in blocked.graph.node].count("ReorderInput") == 1
    feed = random_batch((1, c, 8, 8), batch=1)
    np.testing.assert_allclose(ort_run(blocked, feed), ort_run(plain, feed), rtol=1e-4, atol=1e-4)


def test_chain_nchwc_runs_pools_on_the_blocked_tensor():
    """Conv -> Relu -> MaxPool -> Conv (a resnet stem) and a GlobalAveragePool: the pools become NCHWc pools, no
    reorder is left between the convs, and the function is unchanged."""
    from onnx import helper

    from odconv_surgery.passes.onnx.chain_nchwc import chain_nchwc, pool_blocked
    from odconv_surgery.passes.onnx.common import export_graph

    plain, g, c = _blocked_net(
        lambda c: {"wa": (c, c, 3, 3), "ba": (c,), "wb": (c, c, 1, 1), "bb": (c,)},
        lambda c: [
            helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["a"], ["r"], name="relu"),
            helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Conv", ["p", "wb", "bb"], ["b"], name="conv_b"),
            helper.make_node("GlobalAveragePool", ["b"], ["gap"], name="gap"),
            helper.make_node("Add", ["b", "gap"], ["y"], name="add"),  # broadcast: stays an Add
        ])
    assert chain_nchwc(g) >= 3
    assert pool_blocked(g) == 0  # both pools already blocked
    blocked = export_graph(g.cleanup().toposort(), plain)
    ops = [(n.op_type, n.domain) for n in blocked.graph.node]
    assert ("MaxPool", "com.microsoft.nchwc") in ops and ("GlobalAveragePool", "com.microsoft.nchwc") in ops
    assert [op for op, _ in ops].count("ReorderInput") == 1  # the input's only
    feed = random_batch((1, c, 8, 8), batch=1)
    np.testing.assert_allclose(ort_run(blocked, feed), ort_run(plain, feed), rtol=1e-4, atol=1e-4)


def test_chain_nchwc_fuses_one_add_per_conv():
    """``dw3x3(x) + dw1x1(x) + x`` (timm RepViT's token mixer): the second Add must not become a fifth input of an
    NCHWc Conv (onnxruntime's schema allows X, W, B, Sum); the file loads and keeps the function."""
    from onnx import helper

    from odconv_surgery.passes.onnx.chain_nchwc import MAX_CONV_INPUTS, chain_nchwc
    from odconv_surgery.passes.onnx.common import export_graph

    plain, g, c = _blocked_net(
        lambda c: {"w3": (c, 1, 3, 3), "b3": (c,), "w1": (c, 1, 1, 1), "b1": (c,)},
        lambda c: [
            helper.make_node("Conv", ["x", "w3", "b3"], ["a"], name="dw3", pads=[1, 1, 1, 1], group=c),
            helper.make_node("Conv", ["x", "w1", "b1"], ["b"], name="dw1", group=c),
            helper.make_node("Add", ["a", "b"], ["s"], name="add_ab"),
            helper.make_node("Add", ["s", "x"], ["y"], name="add_x"),
        ])
    assert chain_nchwc(g) >= 1
    blocked = export_graph(g.cleanup().toposort(), plain)
    convs = [n for n in blocked.graph.node if n.op_type == "Conv"]
    assert max(len(n.input) for n in convs) == MAX_CONV_INPUTS
    assert [n.op_type for n in blocked.graph.node].count("Add") == 1
    feed = random_batch((1, c, 8, 8), batch=1)
    np.testing.assert_allclose(ort_run(blocked, feed), ort_run(plain, feed), rtol=1e-4, atol=1e-4)


def test_nchwc_steps_are_passes_named_in_the_file_and_checked(monkeypatch):
    """ort-cpu: blocking the model's convs, chaining and the block guard run as passes of their own, recorded in
    ``odconv.passes``, and a wrong rewrite in one of them is caught by the numeric check naming it."""
    from odconv_surgery.deploy.export import export_onnx
    from odconv_surgery.deploy.schema import metadata
    from odconv_surgery.passes.onnx import block_static_convs as module
    from odconv_surgery.passes.onnx.common import detect_nchwc_block

    if detect_nchwc_block() is None:
        pytest.skip("onnxruntime NCHWc contrib ops not usable here")
    model, x = tiny(1), torch.randn(1, 8, 16, 16)
    model.c0 = torch.nn.Conv2d(8, 8, 1)  # a static conv in front, for block_static_convs to block
    forward = model.forward
    model.forward = lambda t: forward(model.c0(t))
    proto = export_onnx(model, None, x, target="ort-cpu")
    applied = metadata(proto)["odconv.passes"].split(",")
    assert applied[applied.index("lower_by_batch_regime") + 1:] == ["block_static_convs", "chain_nchwc", "guard_nchwc_block", "check_and_infer_shapes"]
    real = module.block_static_conv

    def wrong(graph, node, blk):
        done = real(graph, node, blk)
        if done:
            conv = next(n for n in graph.nodes if n.op == "Conv" and n.domain and n.name.endswith("/nchwc"))
            conv.inputs[1].values = conv.inputs[1].values * 1.5
        return done

    monkeypatch.setattr(module, "block_static_conv", wrong)
    with pytest.raises(PassNumericsError, match="block_static_convs"):
        export_onnx(model, None, x, target="ort-cpu")
