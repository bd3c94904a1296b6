"""The ``odconv-surgery`` console script, run as a subprocess (and --help in-process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from odconv_surgery.cli import main

TINY = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self, num_classes=10, width=8):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, num_classes)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    def tiny(**kw):
        return Tiny(**kw)
    """
)
SPEC = "cli_tiny_models:tiny?width=8"


@pytest.fixture
def run(tmp_path):
    (tmp_path / "cli_tiny_models.py").write_text(TINY)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}

    def _run(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "odconv_surgery.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=timeout)

    return _run


@pytest.mark.parametrize("command", [[], ["list"], ["apply"], ["export"], ["bench"], ["sweep"]])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    assert "usage: odconv-surgery" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_list_apply_export(run, tmp_path):
    proc = run("list", SPEC)
    assert proc.returncode == 0, proc.stderr
    assert "features.0" in proc.stdout and "all_but_first" in proc.stdout

    proc = run("apply", SPEC, "--policy", "all_but_first", "-n", "2", "--reduction", "1/4", "-o", "tiny.pt", "--image-size", "16")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "tiny.pt").is_file() and "MAdds" in proc.stdout
    assert json.loads((tmp_path / "tiny.pt.model.json").read_text())["model"].startswith("cli_tiny_models:tiny")

    from odconv_surgery.checkpoint import read_checkpoint

    recipe, _ = read_checkpoint(tmp_path / "tiny.pt")
    assert recipe.kernel_num == 2 and recipe.reduction == 0.25

    proc = run("export", "tiny.pt", "-o", "tiny.onnx", "--image-size", "16")
    assert proc.returncode == 0, proc.stderr
    import onnx

    onnx.checker.check_model(onnx.load(tmp_path / "tiny.onnx"))


def test_errors_name_the_fix(run):
    proc = run("list", "torchvision:mobilenet_v3")
    assert proc.returncode == 1 and "Did you mean" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("export", "missing.pt", "-o", "x.onnx")
    assert proc.returncode == 1 and "odconv-surgery apply" in proc.stderr
    proc = run("apply", SPEC, "--policy", "no_such_policy", "-o", "x.pt", "--image-size", "16")
    assert proc.returncode == 1 and "error" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("apply", SPEC)  # missing -o
    assert proc.returncode == 2 and "--output" in proc.stderr


def test_bench(run):
    proc = run("bench", SPEC, "--policies", "all_but_first", "--image-size", "16", "--repeats", "2", "--rounds", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "| fused |" in proc.stdout and "cpu-b1-t1" in proc.stdout


def test_sweep_tiny_and_resume(run, tmp_path):
    args = ["sweep", SPEC, "--policies", "baseline", "all_but_first", "--epochs", "1", "--seeds", "1", "--image-size", "12",
            "--limit", "48", "--max-steps", "2", "--batch-size", "16", "-o", "out", "-q"]
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["status"] == "ok" for line in lines)
    assert (tmp_path / "out" / "acc_vs_params.png").read_bytes().startswith(b"\x89PNG")
    proc = run(*args)  # resume: nothing to do, nothing appended
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 2
    other = list(args)
    other[other.index("--epochs") + 1] = "2"
    proc = run(*other)  # other settings into the same directory: refused, nothing mixed
    assert proc.returncode == 1 and "another output directory" in proc.stderr
