"""The per-layer NCHWc form chooser (``passes/onnx/lowering/plan.py``): every form it can choose keeps the model's
function at batch 0/1/3/8, tuning measures once and then reads its cache, and the file records what was chosen."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from odconv_surgery import ODConv2d, check_parity
from odconv_surgery.deploy.export import export_marked, export_onnx
from odconv_surgery.deploy import machine, tuning
from odconv_surgery.deploy.machine import isa_level
from odconv_surgery.deploy.schema import META_FORMS, metadata
from odconv_surgery.passes.onnx.common import detect_nchwc_block, import_graph, odconv_layers
from odconv_surgery.passes.onnx.lowering import plan, tuning_cache
from odconv_surgery.passes.onnx.lowering.plan import NCHWC_FORMS, Planner, candidate_forms, cost_model_form

from helpers.nchwc_forms import force_nchwc_form
from helpers.onnx_models import randomise


@pytest.fixture(scope="module")
def blk() -> int:
    b = detect_nchwc_block()
    if b is None:
        pytest.skip("onnxruntime NCHWc contrib ops not usable here")
    return b


class EveryForm(nn.Module):
    """Layers with every candidate form: 1x1 (kernel / activations), dense 3x3 n = 1 (columns, since its input
    channels are a multiple of 16), dense 3x3 n = 2, depthwise, and unaligned channels (12, 20)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.pw = ODConv2d(32, 48, 1)
        self.dw = ODConv2d(48, 48, 3, stride=2, padding=1, groups=48)
        self.dense = ODConv2d(48, 32, 3, padding=1)
        self.dense_n2 = ODConv2d(32, 20, 3, padding=1, kernel_num=2)
        self.narrow = ODConv2d(20, 12, 1)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        y = torch.relu(self.dw(torch.relu(self.pw(s))))
        y = torch.relu(self.dense(y) + y[:, :32])
        return self.narrow(torch.relu(self.dense_n2(y)))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return randomise(EveryForm(), scale=0.5)


@pytest.mark.parametrize("form", NCHWC_FORMS)
def test_every_form_keeps_the_function_at_every_batch(model, blk, form, monkeypatch):
    force_nchwc_form(monkeypatch, form)
    x = torch.randn(1, 3, 16, 16)
    proto = export_onnx(model, None, x, target="ort-cpu", tune=False)
    chosen = json.loads(metadata(proto)[META_FORMS])
    assert any(v == f"{form} (forced)" for v in chosen.values()), chosen
    results = check_parity(model, proto, x, batches=(0, 1, 3, 8))
    assert [r.batch for r in results] == [0, 1, 3, 8]


def test_candidates_and_cost_model(model, blk):
    graph = import_graph(export_marked(model, torch.randn(1, 3, 16, 16)))
    layers = {layer.name: layer for layer in odconv_layers(graph)}
    by_kind = {layer.kind: candidate_forms(layer, blk) for layer in layers.values()}
    assert by_kind["depthwise"] == ["kernel"]
    assert set(by_kind["pointwise"]) == {"kernel", "activations"}
    dense_n1 = next(layer for layer in layers.values() if layer.kind == "dense" and layer.attrs["kernel_num"] == 1)
    assert set(candidate_forms(dense_n1, blk)) == {"kernel", "activations", "columns"}
    for layer in layers.values():
        assert candidate_forms(layer, blk)[0] == cost_model_form(layer, blk)  # the fallback comes first


def test_tuning_measures_once_then_reads_the_cache(model, blk, tmp_path, monkeypatch):
    cache = tmp_path / "tuning.json"
    monkeypatch.setenv("ODCONV_TUNING_CACHE", str(cache))
    # The whole-file verdict (measured forms against the cost model's) is a timing that noise can flip between two
    # exports (test_whole_file_check_keeps_the_faster_file tests it); here the measured file always wins.
    monkeypatch.setattr(tuning, "time_files", lambda protos, *a, **k: [1.0] + [2.0] * (len(protos) - 1))
    x = torch.randn(1, 3, 16, 16)
    proto = export_onnx(model, None, x, target="ort-cpu", tune=True, check=False)
    first = json.loads(metadata(proto)[META_FORMS])
    assert first and all(v.endswith(("(measured)", "(cost model)")) for v in first.values()), first
    assert "odconv.tuning" in metadata(proto)
    data = json.loads(cache.read_text())
    (section,) = data
    assert f"block {blk}" in section and "onnxruntime" in section and isa_level() in section
    assert data[section] and all(set(times) >= {"kernel", "activations"} for times in data[section].values())

    def no_timing(*args, **kwargs):
        raise AssertionError("a cached layer was timed again")

    monkeypatch.setattr(plan, "time_forms", no_timing)
    second = json.loads(metadata(export_onnx(model, None, x, target="ort-cpu", tune=True, check=False))[META_FORMS])
    assert {k: v.split()[0] for k, v in second.items()} == {k: v.split()[0] for k, v in first.items()}
    assert all(second[k].endswith("(cache)") for k, v in first.items() if v.endswith("(measured)")), second


def test_cache_can_be_disabled_and_survives_garbage(model, blk, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ODCONV_TUNING_CACHE", "off")
    assert tuning_cache.tuning_cache_path() is None
    monkeypatch.setenv("ODCONV_TUNING_CACHE", str(tmp_path / "c.json"))
    (tmp_path / "c.json").write_text("{not json")
    cache = tuning_cache.TuningCache(tmp_path / "c.json")
    assert cache.data == {} and "unreadable tuning cache" in caplog.text
    cache.put(blk, "k", {"kernel": 1.0})
    cache.save()
    assert tuning_cache.TuningCache(tmp_path / "c.json").get(blk, "k") == {"kernel": 1.0}
    monkeypatch.delenv("ODCONV_TUNING_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tuning_cache.tuning_cache_path() == tmp_path / "xdg" / "odconv-surgery" / "tuning.json"


def test_cache_keys_tell_cpu_generations_apart(monkeypatch):
    """A VM that names only the vendor line ('AMD EPYC') still keys Zen 4 and Zen 5 apart (family numbers)."""
    def keyed(info):
        monkeypatch.setattr(machine, "_cpuinfo", lambda: info)
        tuning_cache.machine_key.cache_clear()
        try:
            return tuning_cache.machine_key()
        finally:
            tuning_cache.machine_key.cache_clear()

    zen4 = {"model name": "AMD EPYC", "cpu family": "25", "model": "17", "stepping": "1", "flags": "avx2 avx512f"}
    zen5 = {**zen4, "cpu family": "26", "model": "2"}
    assert keyed(zen4) != keyed(zen5) and "family 26, model 2, stepping 1" in keyed(zen5)
    assert machine.cpu_model() != "AMD EPYC"
    monkeypatch.setattr(machine, "_cpuinfo", lambda: {"model name": "Some CPU"})  # no ids (not Linux/x86): the name
    assert machine.cpu_model() == "Some CPU"


def test_measured_choice_keeps_the_cost_model_within_noise(blk, model):
    graph = import_graph(export_marked(model, torch.randn(1, 3, 16, 16)))
    layer = next(layer for layer in odconv_layers(graph) if layer.kind == "pointwise")
    planner = Planner(blk, tune=True, cache_path=None)
    model_form = cost_model_form(layer, blk)
    other = next(f for f in candidate_forms(layer, blk) if f != model_form)
    planner.cache.put(blk, tuning_cache.layer_signature(layer, 1), {model_form: 10.0, other: 9.9})
    assert planner.choose(layer).form == model_form  # 1 % faster is noise
    planner = Planner(blk, tune=True, cache_path=None)
    planner.cache.put(blk, tuning_cache.layer_signature(layer, 1), {model_form: 10.0, other: 5.0})
    assert planner.choose(layer).form == other and planner.choose(layer).source == "cache"


def test_bad_options_are_refused(model):
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="tune must be"):
        export_onnx(model, None, x, tune="no")
    with pytest.raises(ValueError, match="threads must be"):
        export_onnx(model, None, x, threads=0)
    with pytest.raises(ValueError, match="force must be"):
        Planner(16, force="fast")


def test_plain_is_never_tuned_in_where_an_nchwc_form_exists(blk, model):
    """Timed alone the portable form misses what breaking the blocked chain costs its neighbours (measured slower in
    the network), so the tuner never picks it for a layer an NCHWc form can build; forcing it still works."""
    graph = import_graph(export_marked(model, torch.randn(1, 3, 16, 16)))
    for layer in odconv_layers(graph):
        assert "plain" not in candidate_forms(layer, blk)
        assert Planner(blk, force="plain").choose(layer).form == "plain"


def test_whole_file_check_keeps_the_faster_file(model, blk, monkeypatch):
    from odconv_surgery.deploy import tuning

    x = torch.randn(1, 3, 16, 16)
    tuned = export_onnx(model, None, x, target="ort-cpu", tune=False, check=False)
    modelled = export_onnx(model, None, x, target="ort-cpu", tune=False, check=False)
    forms = json.loads(metadata(tuned)[META_FORMS])
    first = next(iter(forms))
    from odconv_surgery.deploy.schema import set_metadata

    other = "kernel" if forms[first].startswith("activations") else "activations"
    set_metadata(tuned, {META_FORMS: json.dumps({**forms, first: f"{other} (measured)"})})
    for times, expected in (([1.0, 2.0], tuned), ([1.99, 2.0], modelled)):
        monkeypatch.setattr(tuning, "time_files", lambda *a, t=times, **k: t)
        assert tuning.faster_file(tuned, modelled, [x], 1) is expected
        assert "kept" in metadata(expected)["odconv.tuning"]
    same = export_onnx(model, None, x, target="ort-cpu", tune=False, check=False)
    assert tuning.faster_file(same, modelled, [x], 1) is same  # identical forms: nothing timed
    assert metadata(same)["odconv.forms_departing"] == "0" and tuning.same_as_cost_model(same)
    forced = export_onnx(model, None, x, target="ort-cpu", tune=False, check=False)
    set_metadata(forced, {"odconv.forms_departing": "2"})
    assert not tuning.same_as_cost_model(forced)


def test_a_form_that_fails_to_run_is_left_out(blk, model, monkeypatch):
    """A candidate this runtime cannot build or run is dropped from the timing; if the cost model's own form fails,
    the cost model's choice stands (no measurement to trust)."""
    graph = import_graph(export_marked(model, torch.randn(1, 3, 16, 16)))
    layer = next(layer for layer in odconv_layers(graph) if layer.kind == "pointwise")
    model_form = cost_model_form(layer, blk)
    other = next(f for f in candidate_forms(layer, blk) if f != model_form)
    real = plan.layer_graph
    for broken, expected_source in ((other, "measured"), (model_form, "cost model")):
        def failing(lay, b, form, broken=broken):
            if form == broken:
                raise RuntimeError("not buildable here")
            return real(lay, b, form)

        monkeypatch.setattr(plan, "layer_graph", failing)
        choice = Planner(blk, tune=True, cache_path=None).choose(layer)
        assert choice.form == model_form and choice.source == expected_source
        assert broken not in choice.times_us


def test_the_whole_file_check_lowers_each_file_from_the_export(model, blk, monkeypatch):
    """The pipeline edits its input: with check=True the cost model's file used to be lowered from the tuned file's
    already-lowered proto (a second NCHWc guard, two nodes named nchwc_guard/.../Mul, a file ORT refuses)."""
    import collections

    from odconv_surgery.deploy import tuning

    monkeypatch.setattr(tuning, "same_as_cost_model", lambda proto: False)
    monkeypatch.setattr(tuning, "faster_file", lambda tuned, modelled, *args, **kwargs: modelled)
    x = torch.randn(1, 3, 16, 16)
    proto = export_onnx(model, None, x, target="ort-cpu", tune=True, check=True)
    names = collections.Counter(node.name for node in proto.graph.node)
    assert [n for n, count in names.items() if count > 1] == []
    assert sum(node.op_type == "ReorderInput" and "nchwc_guard" in node.name for node in proto.graph.node) == 1
    check_parity(model, proto, x, batches=(1, 3))
