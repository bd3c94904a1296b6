import json

import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnx import helper

from odconv_surgery import ODConv2d
from odconv_surgery.deploy.export import export_marked, export_onnx
from odconv_surgery.deploy.runtime import OrtRunner, check_parity
from odconv_surgery.deploy.schema import OD_DOMAIN, metadata
from odconv_surgery.passes.onnx.graph_walk import subgraphs

from helpers.onnx_models import build, tiny


def _meta(model):
    return {p.key: p.value for p in model.metadata_props}


@pytest.mark.parametrize("kernel_num", [1, 4])
@pytest.mark.parametrize("fuse", [False, True])
def test_tiny_every_kind_parity(kernel_num, fuse):
    model = tiny(kernel_num)
    x = torch.randn(1, 8, 16, 16)
    proto = export_onnx(model, None, x, fuse=fuse)
    assert not any(n.domain == OD_DOMAIN for n in proto.graph.node)
    check_parity(model, proto, x, batches=(1, 3, 8))


def test_mobilenet_parity_and_metadata(tmp_path):
    model, _ = build("mobilenet_v2_0.5", kernel_num=1)
    x = torch.randn(1, 3, 32, 32)
    path = tmp_path / "m.onnx"
    export_onnx(model, path, x)
    proto = onnx.load(path)
    meta = _meta(proto)
    assert meta["odconv.temperature"] == "1.0"
    assert meta["odconv.version"]
    recipe = json.loads(meta["odconv.recipe"])
    assert recipe["policy"] == "all_but_first" and recipe["kernel_num"] == 1
    assert len(json.loads(meta["odconv.layers"])) == sum(isinstance(m, ODConv2d) for m in model.modules())
    assert "batch_regime" in meta["odconv.passes"]
    check_parity(model, str(path), x, batches=(1, 3, 8))


def test_resnet18_parity():
    model, _ = build("resnet18", kernel_num=1)
    x = torch.randn(1, 3, 64, 64)
    check_parity(model, export_onnx(model, None, x), x, batches=(1, 3, 8))


def test_dynamic_batch_graph_has_no_batch():
    model = tiny(4)
    x = torch.randn(2, 8, 16, 16)
    proto = export_onnx(model, None, x, batch1_branch=False)
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.HasField("dim_value")
    runner = OrtRunner(proto, device="cpu")
    for b in (1, 5, 7):
        assert runner(np.zeros((b, 8, 16, 16), np.float32)).shape[0] == b


def test_static_model_export_is_noop():
    static = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    proto = export_onnx(static, None, x)
    assert _meta(proto)["odconv.layers"] == "[]"
    assert not any(n.op_type == "If" for n in proto.graph.node)
    check_parity(static, proto, x, batches=(1, 2))


def test_temperature_is_one_at_export_and_restored():
    model = tiny(4)
    for m in model.modules():
        if isinstance(m, ODConv2d):
            m.attention.temperature = 7.0
    x = torch.randn(1, 8, 16, 16)
    proto = export_onnx(model, None, x)
    assert all(m.attention.temperature == 7.0 for m in model.modules() if isinstance(m, ODConv2d))
    check_parity(model, proto, x, batches=(2,))  # check_parity compares at temperature 1


def test_generic_path_unshared_and_reflect():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        ODConv2d(8, 16, 3, padding=1, kernel_num=2, share_attention=False),
        torch.nn.ReLU(),
        ODConv2d(16, 16, 3, padding=1, padding_mode="reflect", kernel_num=2),
    ).eval()
    x = torch.randn(1, 8, 12, 12)
    proto = export_onnx(net, None, x)
    check_parity(net, proto, x, batches=(1, 3))
    assert json.loads(_meta(proto)["odconv.layers"]) == []  # both went through the generic formulation


def test_marker_graph_is_exact_to_find():
    model = tiny(1)
    proto = export_marked(model, torch.randn(1, 8, 16, 16))
    names = sorted(n.name for n in proto.graph.node if n.domain == OD_DOMAIN)
    assert names == ["c1", "c2", "c3", "c4", "c5"]


def test_export_rejects_bad_input():
    with pytest.raises(ValueError, match=r"ODConv2d expects a 4-D \(N, C, H, W\) input, got shape \(8, 16, 16\)"):
        export_onnx(tiny(1), None, torch.randn(8, 16, 16))


SLOW_MODELS = ["mobilenet_v2_1.0", "mobilenet_v2_0.5", "resnet18", "resnet50"]
POLICIES = ["all_but_first", "1x1", "3x3", "last:6"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "kernel_num",
    [
        1,
        pytest.param(4, marks=pytest.mark.xfail(reason=(
            "known: the any-batch n>1 form is ~10x less exact than eager at batch > 1 (measured 1.2-1.9e-4 vs eager "
            "fp32 1.2-1.7e-5 on mobilenet_v2 1.0 1x1 and resnet18); batch 1 is exact"), strict=False)),
    ],
)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", SLOW_MODELS)
def test_parity_matrix(name, policy, kernel_num):
    """ORT vs a float64 eager reference. Deep random models with n = 4 are ill-conditioned in fp32 (eager fp32
    itself measured 6e-4 off float64 on mobilenet_v2 1.0 / 1x1 / n=4), so the bound is 1e-4 or 4x eager fp32's
    own error, whichever is larger: ORT must be as exact as PyTorch is on the same model."""
    import copy

    model, _ = build(name, policy=policy, kernel_num=kernel_num)
    x = torch.randn(1, 3, 96, 96)
    runner = OrtRunner(export_onnx(model, None, x, check=False), device="cpu")
    model64 = copy.deepcopy(model).double()
    for batch in (1, 3, 8):
        xb = torch.randn(batch, 3, 96, 96, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            ref = model64(xb.double())
            eager_err = float((model(xb).double() - ref).abs().max() / ref.abs().max())
        ort_err = float((torch.from_numpy(runner(xb)).double() - ref).abs().max() / ref.abs().max())
        assert ort_err <= max(1e-4, 4 * eager_err), f"batch {batch}: ORT {ort_err:.2e} vs eager fp32 {eager_err:.2e}"


def test_ort_cpu_target_parity():
    _nchwc_block_or_skip()
    model = tiny(1)
    x = torch.randn(1, 8, 16, 16)
    proto = export_onnx(model, None, x, target="ort-cpu")
    check_parity(model, proto, x, batches=(1, 3))


def _nchwc_block_or_skip() -> int:
    from odconv_surgery.passes.onnx.common import detect_nchwc_block

    blk = detect_nchwc_block()
    if blk is None:
        pytest.skip("onnxruntime NCHWc contrib ops not usable here")
    return blk


def test_default_target_is_the_fastest_form_for_this_onnxruntime():
    from odconv_surgery.deploy.export import resolve_target
    from odconv_surgery.deploy.runtime import cuda_available
    from odconv_surgery.deploy.schema import META_NCHWC_BLOCK, META_TARGET, metadata

    blk = _nchwc_block_or_skip()
    if cuda_available():
        pytest.skip("with a CUDA EP and a GPU, 'auto' picks the portable form")
    x = torch.randn(1, 8, 16, 16)
    proto = export_onnx(tiny(1), None, x)
    meta = metadata(proto)
    assert meta[META_TARGET] == "ort-cpu" and meta[META_NCHWC_BLOCK] == str(blk)
    portable = export_onnx(tiny(1), None, x, target="portable")
    assert META_NCHWC_BLOCK not in metadata(portable)
    assert all(o.domain != "com.microsoft.nchwc" for o in portable.opset_import)
    with pytest.raises(ValueError, match="target must be one of 'auto', 'portable', 'ort-cpu'"):
        resolve_target("ort-gpu")


def _with_foreign_block(proto: onnx.ModelProto, blk: int) -> onnx.ModelProto:
    """``proto`` as if exported on a CPU whose NCHWc block is not ``blk``: the guard's expected layout and the
    metadata say the other block."""
    from odconv_surgery.deploy.schema import META_NCHWC_BLOCK, set_metadata
    from odconv_surgery.passes.onnx.lowering.nchwc_guard import blocked_probe

    other = 16 if blk == 8 else 8
    tampered = onnx.ModelProto()
    tampered.CopyFrom(proto)
    hits = [t for g in (tampered.graph, *subgraphs(tampered.graph)) for t in g.initializer if "nchwc_guard/expected" in t.name]
    assert len(hits) == 1  # one guard on the file's outputs, whatever branch runs (pass guard_nchwc_block)
    for hit in hits:
        hit.CopyFrom(onnx.numpy_helper.from_array(blocked_probe(other)[1], hit.name))
    set_metadata(tampered, {META_NCHWC_BLOCK: str(other)})
    return tampered


def test_ort_cpu_file_from_another_cpu_is_refused_or_nan_never_wrong():
    import onnxruntime as ort

    from odconv_surgery.passes.onnx.common import OnnxModelError

    blk = _nchwc_block_or_skip()
    model = tiny(1)
    x = torch.randn(1, 8, 16, 16)
    foreign = _with_foreign_block(export_onnx(model, None, x, target="ort-cpu"), blk)
    with pytest.raises(OnnxModelError, match="target='portable'"):
        OrtRunner(foreign, device="cpu")
    # a bare InferenceSession runs it: the guard turns the outputs into NaN at every batch (either branch)
    session = ort.InferenceSession(foreign.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        assert np.isnan(session.run(None, {"input": torch.randn(batch, 8, 16, 16).numpy()})[0]).all()


def test_onnx_demo_report():
    from odconv_surgery.deploy.benchmark import onnx_demo

    model = tiny(1)
    static = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU()).eval()
    text = onnx_demo(model, static, torch.randn(1, 8, 16, 16), repeats=2, rounds=1)
    assert "naive" in text and "fused" in text and "FAIL" not in text
    portable = text.index("fused, target portable")  # each parity block says which file it checked
    ort_cpu = text.index("fused, target ort-cpu")
    assert portable < text.index("batch 8") < ort_cpu


@pytest.mark.parametrize("name,kernel_num", [("mobilenet_v2_0.5", 1), ("mobilenet_v2_0.5", 4), ("resnet18", 1), ("resnet18", 4)])
def test_ort_cpu_nchwc_chain_parity(name, kernel_num):
    """ort-cpu batch-1 branch: every ODConv kind as an NCHWc Conv, activations / residual Adds fused, no reorders
    between NCHWc layers; exact at batch 1."""
    from odconv_surgery.passes.onnx.common import detect_nchwc_block

    if detect_nchwc_block() is None:
        pytest.skip("onnxruntime NCHWc contrib ops not usable here")
    model, _ = build(name, kernel_num=kernel_num)
    x = torch.randn(1, 3, 64, 64)
    proto = export_onnx(model, None, x, target="ort-cpu", check=False)
    check_parity(model, proto, x, batches=(1, 2))
    then = next(a.g for n in proto.graph.node if n.op_type == "If" for a in n.attribute if a.name == "then_branch")
    ops = [n.op_type for n in then.node]
    convs = [n for n in then.node if n.op_type == "Conv" and n.domain == "com.microsoft.nchwc"]
    assert len(convs) >= 10
    assert any(a.name == "activation" for n in convs for a in n.attribute)
    prod = {o: n for n in then.node for o in n.output}
    # reorders only at boundaries with static ops (first conv / MaxPool / a static downsample conv), never
    # behind an activation or residual Add of an NCHWc conv that could have been fused
    unfused = [
        prod[n.input[0]].op_type for n in then.node
        if n.op_type == "ReorderInput" and n.input[0] in prod and prod[n.input[0]].op_type in ("Relu", "Clip", "Add")
        and any(i in prod and prod[i].op_type == "ReorderOutput" for i in prod[n.input[0]].input)
    ]
    assert not unfused, unfused
    attrs = {n.name: {a.name: helper.get_attribute_value(a) for a in n.attribute} for n in convs}
    # ResNet's late 3x3 layers (n = 1) run as scaled tap-major columns into a constant 1x1 NCHWc Conv
    columns = [n for n in convs if attrs[n.name]["kernel_shape"] == [1, 1] and prod[n.input[0]].op_type == "ReorderInput"
               and prod[prod[n.input[0]].input[0]].op_type == "Mul"]
    assert bool(columns) == (name == "resnet18" and kernel_num == 1)
    assert ops.count("ReorderInput") <= 1 + ops.count("Conv") - len(convs) + ops.count("MaxPool") + len(columns)
    # Late, low-resolution layers scale activations (depthwise 1x1 NCHWc Convs with the attention as weight);
    # early ones fold the attentions into the kernel (a MatMul builds the scale tensor).
    on_activations = [n for n in convs if attrs[n.name]["kernel_shape"] == [1, 1] and attrs[n.name]["group"] > 1]
    assert on_activations
    if name.startswith("mobilenet") and kernel_num == 1:
        assert "MatMul" in ops


def _scan_bodies(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """Every Scan body under ``graph``, at any depth."""
    found = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                if node.op_type == "Scan":
                    found.append(attr.g)
                found += _scan_bodies(attr.g)
    return found


@pytest.mark.parametrize("target", ["portable", "ort-cpu"])
def test_any_batch_branch_runs_depthwise_and_nchwc_layers_per_sample(target):
    """Batch > 1: portable, a depthwise layer runs its batch-1 form in a Scan over the batch; ort-cpu, the whole
    batch-1 graph (blocked end to end) runs once per sample in one Scan; exact at batches 0, 2 and 3."""
    if target == "ort-cpu":
        _nchwc_block_or_skip()
    model, _ = build("mobilenet_v2_0.5", kernel_num=1)
    x = torch.randn(1, 3, 64, 64)
    proto = export_onnx(model, None, x, target=target, check=False)
    check_parity(model, proto, x, batches=(2, 3))
    runner = OrtRunner(proto, device="cpu")
    assert runner(np.zeros((0, 3, 64, 64), np.float32)).shape == (0, 1000)
    bodies = _scan_bodies(proto.graph)
    depthwise = [m for m in model.modules() if isinstance(m, ODConv2d) and m.groups > 1]
    nchwc = [b for b in bodies if any(n.domain == "com.microsoft.nchwc" for n in b.node)]
    if target == "portable":
        assert len(bodies) >= len(depthwise) > 0 and not nchwc
    else:
        assert len(bodies) == len(nchwc) == 1
        assert metadata(proto)["odconv.batch_form"] == "per-sample graph"
        reorders = [n for n in nchwc[0].node if n.op_type == "ReorderInput" and "nchwc_guard" not in n.name]
        assert len(reorders) <= 2  # blocked end to end: in after the stem, no breaks


def test_scale_on_activations_follows_the_element_counts():
    import onnx_graphsurgeon as gs

    from odconv_surgery.passes.onnx.common import OdLayer
    from odconv_surgery.passes.onnx.lowering.plan import scale_on_activations
    from odconv_surgery.passes.onnx.lowering.builder import Geometry

    def layer(cin, cout, k, hw, heads=("channel", "filter", "spatial")):
        attrs = dict(in_channels=cin, out_channels=cout, kernel_shape=[k, k], input_hw=[hw, hw], strides=[1, 1],
                     dilations=[1, 1], pads=[k // 2] * 4, group=1, heads=list(heads))
        od = OdLayer(gs.Node("ODConv2d", "l", attrs))
        return scale_on_activations(od, Geometry.of(od))

    assert layer(160, 960, 1, 7)  # kernel 154k elements, activations 55k
    assert not layer(16, 96, 1, 56)  # kernel 1.5k, activations 351k
    assert layer(512, 512, 3, 7) and not layer(64, 64, 3, 56)
    assert not layer(512, 512, 3, 7, heads=("spatial",))  # nothing to move to the activations


def test_taps_on_columns_only_where_the_kernel_dwarfs_the_output_positions():
    import onnx_graphsurgeon as gs

    from odconv_surgery.passes.onnx.common import OdLayer
    from odconv_surgery.passes.onnx.lowering.plan import taps_on_columns
    from odconv_surgery.passes.onnx.lowering.builder import Geometry

    def layer(cin, cout, k, hw, stride=1, heads=("channel", "filter", "spatial")):
        attrs = dict(in_channels=cin, out_channels=cout, kernel_shape=[k, k], input_hw=[hw, hw], strides=[stride] * 2,
                     dilations=[1, 1], pads=[k // 2] * 4, group=1, heads=list(heads))
        od = OdLayer(gs.Node("ODConv2d", "l", attrs))
        return taps_on_columns(od, Geometry.of(od))

    assert layer(512, 512, 3, 7) and layer(256, 512, 3, 14, stride=2)  # ResNet-18 layer4: 2.4M-element kernels, 49 positions
    assert not layer(256, 256, 3, 14) and not layer(64, 64, 3, 56)  # columns would outweigh the kernel
    assert not layer(160, 960, 1, 7)  # 1x1: no taps
    assert not layer(512, 512, 3, 7, heads=("channel", "filter"))  # no spatial head: the kernel stays constant anyway


def test_batch_form_per_layer_when_asked_and_exact():
    """``batch_form="per-layer"``: no whole-graph Scan, the per-layer forms instead; exact at batches 0, 2, 3, 8."""
    from odconv_surgery.passes.onnx import run_pipeline

    _nchwc_block_or_skip()
    model = tiny(kernel_num=3).eval()
    x = torch.randn(1, 8, 16, 16)
    proto = run_pipeline(export_marked(model, x), target="ort-cpu", batch_form="per-layer")
    assert metadata(proto)["odconv.batch_form"] == "per-layer"
    whole_graph_scans = [n for g in (proto.graph, *subgraphs(proto.graph)) for n in g.node
                         if n.op_type == "Scan" and n.name == "batch_regime/Scan"]
    assert not whole_graph_scans
    default = run_pipeline(export_marked(model, x), target="ort-cpu")
    assert [n for g in subgraphs(default.graph) for n in g.node if n.name == "batch_regime/Scan"]
    check_parity(model, proto, x, batches=(0, 2, 3, 8))
    with pytest.raises(Exception, match="batch_form must be one of"):
        run_pipeline(export_marked(model, x), target="ort-cpu", batch_form="scan")


@pytest.mark.parametrize("kernel_num, per_layer_ms, expected", [(3, 5.0, "per-layer"), (3, 9.9, "per-sample graph"),
                                                                 (1, 5.0, "per-sample graph")])
def test_tune_times_the_batch_forms_only_for_multi_kernel_models(monkeypatch, kernel_num, per_layer_ms, expected):
    """With tune, a model with several kernels per layer gets the faster batch > 1 form at batch 8 (the per-layer
    forms must win by the margin); one kernel per layer keeps the per-sample graph without timing a batch."""
    from odconv_surgery.deploy import tuning

    _nchwc_block_or_skip()
    timed_batches = []

    def fake_time_files(protos, inputs, threads, rounds=5, round_s=0.05, batch=1):
        timed_batches.append(batch)
        return [10.0, per_layer_ms] if batch > 1 else [1.0, 1.0]

    monkeypatch.setattr(tuning, "time_files", fake_time_files)
    model = tiny(kernel_num=kernel_num).eval()
    x = torch.randn(1, 8, 16, 16)
    proto = export_onnx(model, None, x, target="ort-cpu", tune=True)
    meta = metadata(proto)
    assert meta["odconv.batch_form"] == expected
    if kernel_num > 1:
        assert tuning.BATCH_FORM_TUNING_BATCH in timed_batches
        assert meta["odconv.batch_tuning"].startswith(f"{expected} kept") and "odconv.tuning" in meta
    else:
        assert all(b == 1 for b in timed_batches) and "odconv.batch_tuning" not in meta
    check_parity(model, proto, x, batches=(0, 1, 3))


def test_files_over_the_size_limit_are_timed_one_session_at_a_time(monkeypatch):
    """Large files are timed one after the other (one onnxruntime session alive), small ones in interleaved rounds;
    either way every file gets a time and the batch form is still chosen by it."""
    from odconv_surgery.deploy import session_timing, tuning

    _nchwc_block_or_skip()
    sessions_per_call = []
    real = session_timing.fastest_round_seconds

    def counting(sessions, *args, **kwargs):
        sessions_per_call.append(len(sessions))
        return real(sessions, *args, **kwargs)

    real_time_files = tuning.time_files

    def spied_time_files(*args, **kwargs):  # the files' timing only (the tuner times its layers the same way)
        monkeypatch.setattr(session_timing, "fastest_round_seconds", counting)
        try:
            return real_time_files(*args, **kwargs)
        finally:
            monkeypatch.setattr(session_timing, "fastest_round_seconds", real)

    monkeypatch.setattr(tuning, "time_files", spied_time_files)
    model, x = tiny(kernel_num=3).eval(), torch.randn(1, 8, 16, 16)
    monkeypatch.setattr(tuning, "INTERLEAVED_MAX_BYTES", 1024)
    proto = export_onnx(model, None, x, target="ort-cpu", tune=True, check=False)
    assert sessions_per_call and set(sessions_per_call) == {1}
    assert metadata(proto)["odconv.batch_tuning"].endswith("(batch 8, 1 thread(s))")
    check_parity(model, proto, x, batches=(0, 1, 3))
    sessions_per_call.clear()
    monkeypatch.setattr(tuning, "INTERLEAVED_MAX_BYTES", 2**30)
    export_onnx(model, None, x, target="ort-cpu", tune=True, check=False)
    assert sessions_per_call and set(sessions_per_call) == {2}