"""The ``odconv-surgery`` console script, run as a subprocess (and --help in-process)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from helpers.plugins import DANGEROUS_SPECS as DANGEROUS, write_plugin_package
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
SPEC = "entrypoint:cli_tiny?width=8"  # declared by the fake installed package the fixtures write


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The tiny model as an installed package's entry point, importable in this process and in subprocesses."""
    write_plugin_package(tmp_path, "cli_tiny_models", TINY, {"cli_tiny": "cli_tiny_models:tiny"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("cli_tiny_models", None)


@pytest.fixture
def run(tmp_path, plugin):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}

    def _run(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "odconv_surgery.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=timeout)

    return _run


@pytest.mark.parametrize("command", [[], ["list"], ["apply"], ["export"], ["bench"], ["place"], ["stats"], ["sweep"]])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit, match="^0$"):
        main([*command, "--help"])
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
    assert json.loads((tmp_path / "tiny.pt.model.json").read_text())["model"].startswith("entrypoint:cli_tiny")

    from odconv_surgery.checkpoint import read_checkpoint

    recipe, _ = read_checkpoint(tmp_path / "tiny.pt")
    assert recipe.options.kernel_num == 2 and recipe.options.reduction == 0.25

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


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("template", DANGEROUS)
@pytest.mark.parametrize("command", ["list", "apply", "bench", "sweep"])
def test_dangerous_specs_on_the_command_line_run_nothing(template, command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "F"
    if "remove" in template:
        target.write_text("keep me")
    extra = ["-o", "x.pt"] if command == "apply" else []
    assert main([command, template.format(f=target), *extra]) == 1
    assert "--allow-import" in _error_line(capsys)
    assert main([command, template.format(f=target), *extra, "--allow-import"]) == 1  # the flag does not open the stdlib
    assert "standard-library module" in _error_line(capsys)
    assert target.exists() == ("remove" in template) and not (tmp_path / "x.pt").exists()


def _checkpoint(plugin) -> None:
    assert main(["apply", SPEC, "--policy", "1x1", "-o", "tiny.pt", "--image-size", "16", "-q"]) == 0


@pytest.mark.parametrize("template", DANGEROUS)
def test_dangerous_side_file_runs_nothing(template, plugin, capsys):
    _checkpoint(plugin)
    target = plugin / "F"
    if "remove" in template:
        target.write_text("keep me")
    (plugin / "tiny.pt.model.json").write_text(json.dumps({"model": template.format(f=target)}))
    assert main(["export", "tiny.pt", "-o", "x.onnx"]) == 1
    err = _error_line(capsys)
    assert "tiny.pt.model.json" in err and "--allow-import" in err and "--base" in err
    assert main(["export", "tiny.pt", "-o", "x.onnx", "--allow-import"]) == 1
    assert "standard-library module" in _error_line(capsys)
    assert target.exists() == ("remove" in template) and not (plugin / "x.onnx").exists()


def test_side_file_module_spec_needs_the_flag(plugin, capsys):
    _checkpoint(plugin)
    (plugin / "tiny.pt.model.json").write_text(json.dumps({"model": "cli_tiny_models:tiny?width=8"}))
    assert main(["export", "tiny.pt", "-o", "x.onnx", "--image-size", "16", "-q"]) == 1
    assert "--allow-import" in _error_line(capsys)
    assert main(["export", "tiny.pt", "-o", "x.onnx", "--image-size", "16", "-q", "--allow-import"]) == 0
    assert (plugin / "x.onnx").is_file()


@pytest.mark.parametrize(
    "content, match",
    [
        ("{", "cannot read .*tiny.pt.model.json .*JSONDecodeError"),
        ("[1, 2]", "tiny.pt.model.json must be a JSON object with a string \"model\""),
        ('{"kwargs": {}}', "tiny.pt.model.json must be a JSON object"),
        ('{"model": "torchvision:resnet18", "kwargs": {"num_classes": [1]}}', "tiny.pt.model.json: argument num_classes"),
        ('{"model": "torchvision:resnet18", "kwargs": 3}', "must be a mapping"),
        ('{"model": "torchvision:nope_net"}', "bad model spec in .*tiny.pt.model.json"),
    ],
)
def test_malformed_side_file(content, match, plugin, capsys):
    _checkpoint(plugin)
    (plugin / "tiny.pt.model.json").write_text(content)
    assert main(["export", "tiny.pt", "-o", "x.onnx"]) == 1
    assert re.search(match, _error_line(capsys))


def test_module_spec_with_allow_import(run, tmp_path):
    proc = run("list", "cli_tiny_models:tiny?width=8")
    assert proc.returncode == 1 and "--allow-import" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("list", "cli_tiny_models:tiny?width=8", "--allow-import")
    assert proc.returncode == 0, proc.stderr
    assert "features.0" in proc.stdout


def test_one_line_errors(plugin, capsys, monkeypatch):
    assert main(["list", "torchvision:mobilenet_v2?width_mult=9e999999"]) == 1
    assert "not a finite number" in _error_line(capsys)
    import urllib.error

    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    assert main(["list", "torchvision:resnet18?weights=IMAGENET1K_V1"]) == 1
    assert "connect to the network" in _error_line(capsys)
    monkeypatch.undo()
    monkeypatch.chdir(plugin)
    (plugin / "afile").write_text("")
    sweep = ["sweep", SPEC, "--policies", "baseline", "--epochs", "1", "--seeds", "1", "--image-size", "12", "--limit", "48",
             "--max-steps", "1", "--batch-size", "16", "-q", "--no-latency"]
    assert main([*sweep, "-o", "afile"]) == 1
    assert "afile is not a directory" in _error_line(capsys)
    (plugin / "out" / "results.jsonl").mkdir(parents=True)
    assert main([*sweep, "-o", "out"]) == 1
    assert "results.jsonl is not a regular file" in _error_line(capsys)
    from odconv_surgery.experiments.dir_lock import DirectoryLock

    (plugin / "locked").mkdir()
    with DirectoryLock(plugin / "locked", "sweep"):  # another sweep holds it: refused before launching torchrun
        assert main([*sweep, "-o", "locked", "--nproc", "2"]) == 1
    assert f"another sweep (pid {os.getpid()}) is writing to locked" in _error_line(capsys)


def _raising(exc: BaseException):
    def command(args):
        raise exc

    return command


def test_user_errors_are_one_line_and_bugs_say_so(monkeypatch, capsys):
    from odconv_surgery import errors
    from odconv_surgery import cli

    monkeypatch.delenv("ODCONV_DEBUG", raising=False)
    monkeypatch.setattr(cli, "cmd_list", _raising(errors.PolicyError("unknown placement policy 'x'; available: all")))
    assert main(["list", "m"]) == 1
    err = capsys.readouterr().err
    assert err == "odconv-surgery: error: unknown placement policy 'x'; available: all\n"

    monkeypatch.setattr(cli, "cmd_list", _raising(TypeError("unsupported operand")))
    assert main(["list", "m"]) == 1
    err = capsys.readouterr().err
    assert "this is a bug" in err and "TypeError: unsupported operand" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

    monkeypatch.setenv("ODCONV_DEBUG", "1")
    with pytest.raises(TypeError, match="unsupported operand"):  # the traceback, for the report
        main(["list", "m"])

    with pytest.raises(SystemExit, match="2"):  # argparse: usage error, exit 2
        main(["apply", "m", "-n", "two", "-o", "x.pt"])
    assert capsys.readouterr().err == ("odconv-surgery apply: error: argument --kernel-num/-n: invalid int value: "
                                       "'two' (see 'odconv-surgery apply --help')\n")


def test_every_public_error_is_an_odconv_error_with_its_builtin_base():
    import odconv_surgery
    from odconv_surgery import errors

    builtins = (ValueError, TypeError, RuntimeError, KeyError, MemoryError, OSError, AssertionError, ArithmeticError)
    bases_only = {errors.ODConvError, errors.CliError, errors.InvalidArgumentError}  # raised as themselves or never
    for name in errors.PUBLIC_ERRORS:
        cls = getattr(odconv_surgery, name)
        assert issubclass(cls, errors.ODConvError) and name in odconv_surgery.__all__
        assert cls in bases_only or issubclass(cls, builtins), f"{name} has no built-in base for old except clauses"
    assert issubclass(errors.UnknownSettingError, TypeError) and issubclass(errors.UnknownSettingError, ValueError)
    assert str(errors.RecipeMismatchError("the recipe converts layers the model does not have")) == (
        "the recipe converts layers the model does not have")


def test_export_static_batch(plugin, tmp_path):
    """``--static-batch`` exports a batch-1 file, checked at batch 1 (issue 22, item 3: it was an internal error)."""
    import onnx

    assert main(["apply", SPEC, "--policy", "all_but_first", "-o", "tiny.pt", "--image-size", "16"]) == 0
    assert main(["export", "tiny.pt", "-o", "tiny.onnx", "--image-size", "16", "--static-batch"]) == 0
    dims = onnx.load(tmp_path / "tiny.onnx").graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 1


def test_export_tune_flags_reach_the_file(plugin, tmp_path, monkeypatch):
    """``--tune --threads 2`` tunes (the file says how its forms were chosen); ``--no-tune`` uses the cost model."""
    import json

    import onnx

    from odconv_surgery.passes.onnx.common import detect_nchwc_block

    if detect_nchwc_block() is None:
        pytest.skip("onnxruntime NCHWc contrib ops not usable here")
    monkeypatch.setenv("ODCONV_TUNING_CACHE", str(tmp_path / "tuning.json"))
    assert main(["apply", SPEC, "--policy", "all_but_first", "-o", "tiny.pt", "--image-size", "16"]) == 0
    assert main(["export", "tiny.pt", "-o", "tuned.onnx", "--image-size", "16", "--target", "ort-cpu", "--tune", "--threads", "2"]) == 0
    meta = {p.key: p.value for p in onnx.load(tmp_path / "tuned.onnx").metadata_props}
    assert "odconv.tuning" in meta and (tmp_path / "tuning.json").is_file()
    assert main(["export", "tiny.pt", "-o", "plain.onnx", "--image-size", "16", "--target", "ort-cpu", "--no-tune"]) == 0
    meta = {p.key: p.value for p in onnx.load(tmp_path / "plain.onnx").metadata_props}
    assert "odconv.tuning" not in meta
    assert all(v.endswith("(cost model)") for v in json.loads(meta["odconv.forms"]).values())


def test_place_writes_the_placed_model_its_side_file_and_the_report(plugin, tmp_path, capsys):
    """``place`` end to end on the tiny model (real costs and timings: only the structure is checked, since whether
    a 1x budget is met on a loaded machine is the timing's call)."""
    from odconv_surgery.checkpoint import read_checkpoint
    from odconv_surgery.passes.onnx.common import detect_nchwc_block

    if detect_nchwc_block() is None:
        pytest.skip("layer_costs needs onnxruntime's NCHWc contrib ops")
    assert main(["apply", SPEC, "--policy", "all", "-o", "tiny.pt", "--image-size", "16", "-q"]) == 0
    converted_layers = set(read_checkpoint(tmp_path / "tiny.pt")[0].layers)
    rc = main(["place", "tiny.pt", "--budget", "1x", "-o", "placed.pt", "--image-size", "16", "--limit", "32",
               "--calibration-batches", "1", "--max-steps", "1", "--max-checks", "2", "-q"])
    assert rc in (0, 1)
    report = json.loads((tmp_path / "placed.json").read_text())
    assert report["budget"] == "1x" and report["met"] is (rc == 0) and report["threads"] == 1
    assert set(report["chosen"]) | set(report["folded"]) == converted_layers and report["folded"]
    assert report["accuracy"]["finetuned"] is not None and report["command"][0] == "place"
    assert sorted(read_checkpoint(tmp_path / "placed.pt")[0].folded) == sorted(report["folded"])
    assert main(["export", "placed.pt", "-o", "placed.onnx", "--image-size", "16", "-q"]) == 0  # the side file names the model
    capsys.readouterr()

    with pytest.raises(SystemExit, match="^2$"):
        main(["place", "tiny.pt", "--budget", "1.2", "-o", "p.pt"])
    assert "'1.2x' for a ratio" in capsys.readouterr().err
    assert main(["place", SPEC, "--budget", "1.2x", "-o", "p.pt", "--image-size", "16"]) == 1
    assert "convert it first" in capsys.readouterr().err
    assert main(["place", "tiny.pt", "--budget", "1.2x", "-o", "tiny.pt"]) == 1  # never over its own input
    assert not (tmp_path / "p.pt").exists()


def test_stats_writes_json_and_figure(plugin, tmp_path, capsys):
    """``stats CKPT -o DIR``: the attention statistics of a checkpoint from ``apply`` on the digits test split."""
    from odconv_surgery import AttentionStats

    assert main(["apply", SPEC, "--policy", "all_but_first", "-n", "2", "-o", "tiny.pt", "--image-size", "16", "-q"]) == 0
    args = ["stats", "tiny.pt", "-o", "out", "--image-size", "12", "--batch-size", "8", "--max-batches", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    stats = AttentionStats.read(tmp_path / "out" / "stats.json")
    assert stats.samples == 16 and [layer.name for layer in stats.layers] == ["features.3", "features.6"]
    assert stats.layer("features.3").kernel_num == 2 and "features.6: 1x1 n=2" in printed
    assert (tmp_path / "out" / "stats.png").read_bytes().startswith(b"\x89PNG")
    assert main(args + ["-q"]) == 0 and capsys.readouterr().out == ""  # rewrites its own files
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "stats.json").write_text("my notes")
    assert main(args[:3] + ["notes"]) == 1 and "not replaced" in capsys.readouterr().err  # refused before any work
    assert main(["stats", SPEC, "-o", "out2", "--image-size", "12", "--max-batches", "1"]) == 1  # nothing converted
    assert "no ODConv2d layer" in capsys.readouterr().err and not (tmp_path / "out2").exists()
