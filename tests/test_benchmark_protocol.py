"""The benchmark protocol: refuse a busy machine, the paper's CPU ratios, one summary line per case."""

import pytest

from lab import machine_load
from lab.machine_load import BusyMachineError, busy_threshold, require_quiet
from lab.onnx_tables import render_summary
from lab.paper import paper_cpu_ratio
from odconv_surgery.deploy.benchmark import Row


def test_busy_machine_is_refused_unless_allowed(monkeypatch):
    monkeypatch.setattr(machine_load, "load_average", lambda: busy_threshold() + 1)
    with pytest.raises(BusyMachineError, match="--allow-busy"):
        require_quiet()
    warnings = []
    assert require_quiet(allow_busy=True, warn=warnings.append) == busy_threshold() + 1
    assert warnings and "squeezes every ratio toward 1" in warnings[0]
    monkeypatch.setattr(machine_load, "load_average", lambda: 0.0)
    assert require_quiet() == 0.0


def test_paper_cpu_ratios_come_from_the_paper_fps():
    assert paper_cpu_ratio("mobilenet_v2_0.5", "1x1", 1) == pytest.approx(30.1 / 27.1)
    assert paper_cpu_ratio("resnet50", "all_but_first", 4) == pytest.approx(6.4 / 2.5)
    assert paper_cpu_ratio("resnet18", "all_but_first", 1) is None


def test_summary_puts_the_static_time_beside_every_ratio():
    def row(variant, ms, regime="cpu-b1-t1"):
        return Row("mobilenet_v2_0.5", "3x3", 1, regime, variant, 1, 1, ms=ms, fps=1e3 / ms, ratio_to_static=ms / 4.0)

    rows = [row("static", 4.0), row("naive", 20.0), row("fused", 10.0), row("fused_ortcpu", 5.0),
            row("static", 8.0, "cpu-b8-tall"), row("fused_ortcpu", 12.0, "cpu-b8-tall")]
    lines = render_summary(rows).splitlines()
    assert len(lines) == 4
    assert lines[2] == "| mobilenet_v2_0.5 | 3x3 | 1 | cpu-b1-t1 | 4.00 | 1.25x | 2.50x | 5.00x | 1.10 |"
    assert lines[3].startswith("| mobilenet_v2_0.5 | 3x3 | 1 | cpu-b8-tall | 8.00 | 3.00x |") and lines[3].endswith("| - |")


def test_ratios_are_taken_within_each_round():
    from odconv_surgery.deploy.benchmark import ratios_to

    # the machine slowed down while "odconv" was timed in round 2: the per-round ratio ignores that round
    per_round = {"static": [1.0, 1.0, 2.0], "odconv": [1.2, 2.4, 2.4]}
    assert ratios_to(per_round) == {"static": 1.0, "odconv": pytest.approx(1.2)}
