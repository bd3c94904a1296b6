"""benchmarks/bench_gpu.py runs (CI: the tiny --device cpu --smoke configuration) and refuses to time without CUDA."""

import json

import pytest
import torch

from bench_gpu import PAPER_RATIOS, SPECS, main
from lab.timing import Timing, measure
from helpers.layer_forms import converted_forms_net
from lab import machine_load


def test_smoke_configuration_writes_the_table(tmp_path, capsys):
    assert main(["--device", "cpu", "--smoke", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "eager.json").read_text())
    rows = result["rows"]
    assert [(r["formulation"], r["dtype"]) for r in rows] == [
        ("static", "fp32"), ("static", "bf16"), ("ours", "fp32"), ("ours", "bf16"), ("official", "fp32"), ("official", "bf16")]
    for row in rows:
        for mode in ("inference", "train"):
            m = row[mode]
            assert m["error"] is None and m["static_ms"] > 0, (row, mode)
            if row["formulation"] != "static":
                assert m["ms"] > 0 and m["ratio"] == pytest.approx(m["ms"] / m["static_ms"])
    official = [r for r in rows if r["formulation"] == "official"]
    assert all(r["rel_diff_vs_ours"] < 1e-4 for r in official)  # one function, two formulations
    assert result["settings"]["size"] == 32 and result["environment"]["device"] == "cpu"
    markdown = (tmp_path / "eager.md").read_text()
    static_ms = rows[0]["inference"]["static_ms"]
    assert f"| resnet18 | — | static | — | — | fp32 | {static_ms:.1f} ms |" in markdown
    assert markdown in capsys.readouterr().out


def test_without_cuda_it_exits_with_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--quick", "--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert main(["--device", "cpu", "--out", str(tmp_path)]) == 2  # CPU timings are bench_eager.py's job
    assert "--smoke" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, but busy: refused before timing
    monkeypatch.setattr(machine_load, "load_average", lambda: 10.0 * machine_load.busy_threshold())
    assert main(["--quick", "--out", str(tmp_path)]) == 2
    assert "--allow-busy" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_paper_ratios_name_benchmarked_cases():
    from bench_gpu import cases_for

    for model, method, kernel_num, policy in PAPER_RATIOS:
        assert model in SPECS and (method, policy, kernel_num) in cases_for(model, [1, 4], ["condconv", "dyconv"])


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_measure_compiles_the_model_to_one_graph(mode):
    """--compile's path: the first (compiling) call is timed apart, and dynamo sees the converted model as one
    graph (a graph break would hand the backend several)."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    timing = Timing(size=8, infer_batch=2, train_batch=4, repeats=2, warmup=1, compile_backend=backend, num_classes=10)
    ms, peak, compile_s = measure(converted_forms_net(1), mode, timing, torch.device("cpu"))
    assert ms > 0 and compile_s > 0 and peak is None
    assert len(graphs) == 1
