"""benchmarks/bench_batch_forms.py: both files are the same model in the two batch > 1 forms, and the table says
which form is faster per batch regime."""

import pytest

from bench_batch_forms import main, render
from odconv_surgery.deploy.schema import metadata


def test_a_case_must_name_model_method_policy_and_kernels():
    with pytest.raises(SystemExit):
        main(["--cases", "resnet50:condconv"])


def test_render_names_the_faster_form_only_at_batch_above_one():
    regime = {"static_ms": 2.0, "static": 1.0, "per-sample graph": 1.5, "per-layer": 1.9}
    table = render({"m:odconv:all_but_first:4": {(1, 1): regime, (8, 0): {**regime, "per-layer": 1.2}}}, 8)
    rows = table.splitlines()[2:]
    assert rows[0].endswith("| - |") and "batch 1, 1 thread(s)" in rows[0]
    assert rows[1].endswith("| per-layer |") and "batch 8, all thread(s)" in rows[1] and "| 1.20x |" in rows[1]


def test_files_differ_only_in_the_batch_form():
    from odconv_surgery.passes.onnx.common import detect_nchwc_block

    if detect_nchwc_block() is None:
        pytest.skip("onnxruntime NCHWc contrib ops not usable here")
    from bench_batch_forms import files

    protos = files("mobilenet_v2_0.5:odconv:last:2:1")
    assert [metadata(protos[f])["odconv.batch_form"] for f in ("per-sample graph", "per-layer")] == [
        "per-sample graph", "per-layer"]
