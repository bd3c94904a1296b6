"""Issue #21: what can run code, what the writers may destroy, and inputs that must fail fast and in one line.

Each test names the finding it covers (F1..F13); every one failed on 9735d6d.
"""

from __future__ import annotations

import os
import stat
import threading

import pytest
import torch
from torch import nn

from odconv_surgery import apply_odconv, load, save
from odconv_surgery.atomic_file import atomic_write, open_for_append, open_lock_file
from odconv_surgery.errors import ForeignFileError, InputOverwriteError, NotRegularFileError, ODConvError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Tiny(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


@pytest.fixture
def converted():
    return apply_odconv(Tiny().eval(), "1x1")[0]


def _finishes(fn, seconds: float = 10.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) when it blocks."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"blocked for more than {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


# ---- F4: save() and every writer write regular files only -----------------------------------------------------
def test_f4_save_refuses_devices_fifos_and_links(converted, tmp_path):
    # A private copy of /dev/null's device node: a test run against the old code must not replace the real one.
    device = tmp_path / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError):
        device = None
    if device is not None:
        with pytest.raises(NotRegularFileError, match="character device"):
            save(converted, device)
        assert stat.S_ISCHR(os.lstat(device).st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFileError, match="FIFO"):
        save(converted, fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "m.pt"
    link.symlink_to(victim)
    with pytest.raises(NotRegularFileError, match="symbolic link"):
        save(converted, link)
    assert link.is_symlink() and victim.read_text() == "keep me"


def test_f4_writers_refuse_files_of_another_kind(tmp_path):
    ckpt = tmp_path / "ck.pt"
    torch.save({"w": torch.zeros(2)}, ckpt)
    before = ckpt.read_bytes()
    for kind in ("json", "png", "onnx", "text"):
        with pytest.raises(ForeignFileError, match="holds a checkpoint"):
            atomic_write(ckpt, lambda fh: fh.write(b"{}"), replaces=kind)
    assert ckpt.read_bytes() == before
    with pytest.raises(InputOverwriteError, match="is the input file"):
        atomic_write(ckpt, lambda fh: fh.write(b"x"), inputs=[tmp_path / "." / "ck.pt"])
    js = tmp_path / "a.json"
    js.write_text("{}")
    atomic_write(js, lambda fh: fh.write(b"[1]"), replaces="json")
    assert js.read_text() == "[1]"


def test_f4_append_and_lock_never_follow_links(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "results.jsonl"
    link.symlink_to(victim)
    with pytest.raises(NotRegularFileError, match="symbolic link"):
        open_for_append(link)
    with pytest.raises(NotRegularFileError, match="symbolic link"):
        open_lock_file(link)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFileError, match="FIFO"):
        _finishes(lambda: open_for_append(fifo))
    hard = tmp_path / ".lock"
    os.link(victim, hard)  # a hard link is the victim itself
    with pytest.raises(NotRegularFileError, match="hard links"):
        open_lock_file(hard)
    assert victim.read_text() == "precious"


# ---- F11: reading a FIFO fails at once ---------------------------------------------------------------------------
def test_f11_load_from_a_fifo_fails_at_once(tmp_path):
    fifo = tmp_path / "m.pt"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFileError, match="FIFO"):
        _finishes(lambda: load(Tiny(), fifo))


# ---- sweeps: shared helpers ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data():
    from odconv_surgery.experiments.data import load_digits_dataset

    return load_digits_dataset(12, limit=48)


def _sweep_config(**kw):
    from odconv_surgery.experiments.sweep import SweepConfig

    base = dict(model="tests:Tiny", policies=["baseline"], seeds=[0], epochs=1, image_size=12, limit=48,
                max_steps_per_epoch=1, batch_size=16, latency=False, quiet=True, pretrain_epochs=0)
    base.update(kw)
    return SweepConfig(**base)


# ---- F2: --nproc workers never import from the working directory ------------------------------------------------
def test_f2_torchrun_relaunch_ignores_modules_planted_in_the_working_directory(tmp_path, monkeypatch):
    from odconv_surgery.cli import _relaunch_torchrun, torchrun_command

    for name in ("argparse", "tqdm", "networkx", "odconv_surgery"):
        (tmp_path / f"{name}.py").write_text(f"open({str(tmp_path / ('PLANTED_' + name))!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", ROOT)  # the workers import this tree's package, as an installed one would be
    command = torchrun_command(2, ["list", "--help", "--nproc", "2"])
    assert "--nproc" not in command and command.count("-P" if command[1] == "-P" else "-I") == 2
    assert _finishes(lambda: _relaunch_torchrun(1, ["list", "--help"]), 300) == 0
    assert not list(tmp_path.glob("PLANTED_*"))


# ---- F5: the lock and the results file are never written through a planted link ---------------------------------
@pytest.mark.parametrize("name", [".lock", "results.jsonl"])
def test_f5_sweep_never_writes_through_a_planted_link(tmp_path, tiny_data, name):
    from odconv_surgery.experiments.sweep import run_sweep

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(victim)
    with pytest.raises(ODConvError, match="link|not a regular file"):
        run_sweep(_sweep_config(), out, model_factory=Tiny, data=tiny_data)
    assert victim.read_text() == "precious" and (out / name).is_symlink()


# ---- F6: the pretrained cache is keyed on everything that shapes the model --------------------------------------
def test_f6_pretrained_cache_is_not_reused_for_other_data_or_model(tmp_path, monkeypatch):
    from odconv_surgery.experiments import pretrain
    from odconv_surgery.experiments.data import load_digits_dataset
    from odconv_surgery.experiments.distributed import DistContext
    from odconv_surgery.experiments.training import TrainConfig

    trained = []
    real = pretrain.train_and_evaluate
    monkeypatch.setattr(pretrain, "train_and_evaluate", lambda model, data, *a, **k: trained.append(len(data.train)) or real(model, data, *a, **k))
    recipe = TrainConfig(epochs=1, batch_size=8, max_steps_per_epoch=1, progress=False)
    smoke, real_run = load_digits_dataset(12, limit=16), load_digits_dataset(12, limit=48)
    ctx = DistContext()
    pretrain.trained_static_model(Tiny, smoke, 0, recipe, tmp_path, ctx)
    pretrain.trained_static_model(Tiny, smoke, 0, recipe, tmp_path, ctx)  # same everything: reused
    pretrain.trained_static_model(Tiny, real_run, 0, recipe, tmp_path, ctx)  # the real run: retrained
    assert trained == [len(smoke.train), len(real_run.train)]

    class Wider(Tiny):
        def __init__(self, num_classes: int = 10) -> None:
            super().__init__(num_classes)
            self.features[0].weight.data.mul_(2)  # same shapes, other model

    pretrain.trained_static_model(Wider, real_run, 0, recipe, tmp_path, ctx)
    assert len(trained) == 3


# ---- F8: outputs only into files the sweep owns -----------------------------------------------------------------
def test_f8_sweep_refuses_to_overwrite_files_it_did_not_write(tmp_path, tiny_data):
    from odconv_surgery.experiments.sweep import SweepOutputError, run_sweep

    (tmp_path / "summary.json").write_text('{"mine": true}')
    (tmp_path / "table.md").write_text("my notes")
    with pytest.raises(SweepOutputError, match="did not write.*summary.json, table.md"):
        run_sweep(_sweep_config(), tmp_path, model_factory=Tiny, data=tiny_data)
    assert (tmp_path / "summary.json").read_text() == '{"mine": true}' and (tmp_path / "table.md").read_text() == "my notes"
    assert not (tmp_path / "results.jsonl").exists()
    # Its own outputs it rewrites; one changed by hand afterwards is left alone.
    out = tmp_path / "own"
    run_sweep(_sweep_config(), out, model_factory=Tiny, data=tiny_data)
    run_sweep(_sweep_config(), out, model_factory=Tiny, data=tiny_data)
    (out / "table.md").write_text("edited")
    with pytest.raises(SweepOutputError, match=r"table.md \(changed since the sweep wrote it\)"):
        run_sweep(_sweep_config(), out, model_factory=Tiny, data=tiny_data)
    assert (out / "table.md").read_text() == "edited"


# ---- F9: hostile results lines are skipped with a warning, never fatal -----------------------------------------
def test_f9_hostile_result_lines_are_skipped(tmp_path):
    import json

    from odconv_surgery.experiments.sweep import SweepResultsWarning, read_results, summarise

    good = {"key": "baseline|n=0|seed=0", "policy": "baseline", "kernel_num": 0, "seed": 0, "status": "ok",
            "settings": {}, "top1": 50.0}
    lines = [
        json.dumps(good),
        '{"key": "x", "top1": ' + "9" * 5000 + "}",
        "[" * 100_000 + "]" * 100_000,
        json.dumps(good | {"train_seconds": "slow"}),
        json.dumps(good | {"latency_ms": [1, 2]}),
        json.dumps(good | {"top1_static": {"a": 1}}),
        json.dumps(good | {"error": ["not", "text"]}),
        json.dumps(good | {"settings": {"a": [[[[[[[[[[1]]]]]]]]]]}}),
    ]
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.warns(SweepResultsWarning) as caught:
        records = _finishes(lambda: read_results(tmp_path))
    assert records == [good] and len(caught) == len(lines) - 1
    assert summarise(records)[0]["top1_mean"] == 50.0


# ---- F10: settings checked up front (nothing written); divergence after the last step caught --------------------
@pytest.mark.parametrize("setting", [
    {"lr": float("nan")}, {"lr": float("inf")}, {"lr": -1.0}, {"attention_lr_scale": float("nan")},
    {"pretrain_lr": float("nan")}, {"epochs": 0}, {"batch_size": 1}, {"policies": ["bogus"]}, {"policies": ["last:0"]},
    {"policies": ["baseline", "baseline"]}, {"reduction": 0.0}, {"kernel_nums": [100_000_000]}, {"kernel_nums": [0]},
    {"seeds": [2**70]}, {"seeds": [-1]}, {"max_steps_per_epoch": 0}, {"image_size": 100_000}, {"limit": 0},
    {"weight_decay": float("nan")}, {"grad_clip": float("inf")}, {"from_checkpoint": "/etc/passwd"},
    {"init": "bogus"}, {"latency_runs": 0},
])
def test_f10_bad_settings_are_refused_before_anything_runs(setting, tmp_path):
    from odconv_surgery.errors import SweepSettingsError

    if setting.get("from_checkpoint") == "/etc/passwd":  # readable but not a checkpoint: refused before training
        from odconv_surgery.experiments.sweep import run_sweep

        with pytest.raises(ODConvError, match="passwd"):
            run_sweep(_sweep_config(**setting), tmp_path / "out", model_factory=Tiny)
        assert not (tmp_path / "out").exists()
        return
    with pytest.raises(SweepSettingsError) as err:
        _sweep_config(**setting)
    message = str(err.value)
    assert "\n" not in message and next(iter(setting)) in message


def test_f10_cli_refuses_nan_lr_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from odconv_surgery.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "resnet18", "--lr", "nan", "--no-latency", "-q", "-o", "out"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--lr" in err and "nan" in err
    assert not (tmp_path / "out").exists()


def test_f10_cli_sweep_options_come_from_the_dataclass():
    from dataclasses import fields

    from odconv_surgery.cli import build_parser, sweep_config_from_args
    from odconv_surgery.experiments.sweep import SweepConfig

    args = build_parser().parse_args(["sweep"])
    assert sweep_config_from_args(args) == SweepConfig()
    defaults = {f.name: f.default for f in fields(SweepConfig)}
    help_text = build_parser()._subparsers._group_actions[0].choices["sweep"].format_help()
    assert f"default {defaults['batch_size']})" in help_text
    words = " ".join(help_text.split())  # the pretraining's default depends on the data (SCRATCH_LR)
    assert f"(default {SweepConfig().pretrain_lr} ({SweepConfig(data='textures').pretrain_lr} on textures))" in words


def test_f10_non_finite_weights_after_the_last_step_are_divergence(tiny_data):
    from odconv_surgery.errors import TrainingDivergedError
    from odconv_surgery.experiments.training import TrainConfig, train_and_evaluate

    class Loud(Tiny):  # finite loss at the only step, then a step that overflows the weights
        def forward(self, x):
            return super().forward(x) * 1e30

    config = TrainConfig(epochs=1, batch_size=16, lr=1e10, max_steps_per_epoch=1, progress=False)
    with pytest.raises(TrainingDivergedError, match="not finite after epoch 0, step 0"):
        train_and_evaluate(Loud(), tiny_data, config)


def test_sweep_report_does_not_import_the_sweep():
    import ast

    source = open(os.path.join(ROOT, "odconv_surgery", "experiments", "sweep_report.py")).read()
    imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)}
    assert "sweep" not in imported


# ---- F7: export and bench never destroy an input or a file of another kind -------------------------------------
@pytest.fixture
def plugin(tmp_path, monkeypatch):
    import sys

    from helpers.plugins import write_plugin_package
    from test_cli import TINY

    write_plugin_package(tmp_path, "sec_tiny_models", TINY, {"sec_tiny": "sec_tiny_models:tiny"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield "entrypoint:sec_tiny"
    sys.modules.pop("sec_tiny_models", None)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_f7_export_never_overwrites_its_input_or_a_checkpoint(plugin, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    from odconv_surgery.cli import main

    assert main(["apply", plugin, "-p", "1x1", "-o", "m.pt", "--image-size", "16", "-q"]) == 0
    ckpt = (tmp_path / "m.pt").read_bytes()
    assert main(["export", "m.pt", "-o", "m.pt", "--image-size", "16", "-q"]) == 1
    assert "is the input file" in _error_line(capsys) and (tmp_path / "m.pt").read_bytes() == ckpt
    (tmp_path / "other.pt").write_bytes(ckpt)
    assert main(["export", "m.pt", "-o", "other.pt", "--image-size", "16", "-q"]) == 1
    assert "holds a checkpoint" in _error_line(capsys) and (tmp_path / "other.pt").read_bytes() == ckpt
    # A full disk while writing leaves the previous .onnx whole (temp + rename), and a read-only one is refused.
    assert main(["export", "m.pt", "-o", "m.onnx", "--image-size", "16", "--target", "portable", "-q"]) == 0
    onnx_bytes = (tmp_path / "m.onnx").read_bytes()
    import odconv_surgery.atomic_file as atomic_file

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_file.os, "fsync", full_disk)
    assert main(["export", "m.pt", "-o", "m.onnx", "--image-size", "16", "--target", "portable", "-q"]) == 1
    assert "No space left" in _error_line(capsys) and (tmp_path / "m.onnx").read_bytes() == onnx_bytes
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.onnx").chmod(0o444)  # refused as root too, like save()
    assert main(["export", "m.pt", "-o", "m.onnx", "--image-size", "16", "-q"]) == 1
    assert "read-only" in _error_line(capsys) and (tmp_path / "m.onnx").read_bytes() == onnx_bytes


def test_f7_bench_json_refuses_a_checkpoint_before_benchmarking(plugin, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    from odconv_surgery.cli import main
    from odconv_surgery.deploy import benchmark

    torch.save({"w": torch.zeros(1)}, tmp_path / "ck.pt")
    before = (tmp_path / "ck.pt").read_bytes()
    monkeypatch.setattr(benchmark, "run_case", lambda *a, **k: pytest.fail("benchmarked before refusing --json"))
    assert main(["bench", plugin, "--json", "ck.pt", "--image-size", "16", "-q"]) == 1
    assert "holds a checkpoint" in _error_line(capsys) and (tmp_path / "ck.pt").read_bytes() == before


# ---- F1: model sources never unpickle -----------------------------------------------------------------------------
def test_f1_torchvision_specs_load_no_backbone_weights_unless_named(monkeypatch):
    import torchvision.models._api as tv_api

    from odconv_surgery.experiments.model_spec import build_model

    loads = []
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", lambda url, *a, **k: loads.append(url) or {})
    build_model("torchvision:lraspp_mobilenet_v3_large")  # weights_backbone defaults to ImageNet in torchvision
    assert loads == []


class _Planted:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_f1_named_weights_load_with_weights_only(tmp_path, monkeypatch):
    import pickle

    import torchvision.models as tvm

    from odconv_surgery.experiments.model_spec import ModelSpecError, build_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    marker = tmp_path / "PWNED"
    (cache / url.rsplit("/", 1)[1]).write_bytes(pickle.dumps(_Planted(str(marker)), protocol=2))
    with pytest.raises(ModelSpecError, match="refused") as err:
        build_model("torchvision:mobilenet_v3_small?weights=IMAGENET1K_V1")
    assert not marker.exists() and "\n" not in str(err.value)
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") is None  # restored after the build


# ---- F3: --allow-import says it runs arbitrary code; refusals name what they refused ---------------------------
def test_f3_allow_import_is_described_as_running_arbitrary_code():
    from odconv_surgery.cli import build_parser
    from odconv_surgery.experiments import model_sources
    from odconv_surgery.experiments.model_spec import ImportNotAllowedError, build_model

    help_text = build_parser()._subparsers._group_actions[0].choices["apply"].format_help()
    assert "arbitrary code" in " ".join(help_text.split())
    assert "not a sandbox" in model_sources.__doc__ and "runs arbitrary code" in model_sources.__doc__
    with pytest.raises(ImportNotAllowedError, match="runs that code") as refused:
        build_model("pkg.models:factory")
    assert "\n" not in str(refused.value)
    with pytest.raises(ImportNotAllowedError) as err:
        build_model("torch.hub:load", allow_import=True)
    assert "torch.hub.load" in str(err.value) and "is torch.load" not in str(err.value)


# ---- F11: selector regexes are time-guarded -----------------------------------------------------------------------
def test_f11_catastrophic_regex_fails_fast():
    import time

    from odconv_surgery.errors import RegexTimeoutError

    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleDict({"a" * 40 + "b": nn.Conv2d(3, 8, 3, padding=1), "c": nn.Conv2d(8, 8, 1)})

        def forward(self, x):
            for m in self.blocks.values():
                x = m(x)
            return x

    start = time.monotonic()
    with pytest.raises(RegexTimeoutError, match="catastrophic backtracking"):
        _finishes(lambda: apply_odconv(Named(), None, include=r"blocks\.(a|aa)+"), 20)
    assert time.monotonic() - start < 10
    with pytest.raises(ValueError, match="at most 1000"):
        apply_odconv(Named(), None, include="a" * 5000)


# ---- F12 / F13: recipes are checked like arguments; memory counts the init's peak and every size ---------------
def _crafted(converted, tmp_path, **changes):
    """A checkpoint of ``converted`` whose recipe (and each layer's settings) is rewritten with ``changes``."""
    from odconv_surgery.checkpoint import FORMAT
    from odconv_surgery.recipe import get_recipe

    recipe = get_recipe(converted).to_dict()
    layers = changes.pop("layers", None)
    recipe.update(changes)
    recipe["layers"] = layers if layers is not None else {
        name: {**settings, **{k: v for k, v in changes.items() if k in settings}} for name, settings in recipe["layers"].items()}
    path = tmp_path / "crafted.pt"
    torch.save({"format": FORMAT, "recipe": recipe, "state_dict": converted.state_dict()}, path)
    return path


def test_f12_crafted_recipe_memory_counts_the_init_peak(converted, tmp_path, monkeypatch):
    from odconv_surgery.errors import KernelBankMemoryError
    from odconv_surgery.nn import validation
    from odconv_surgery.nn.validation import bank_bytes

    path = _crafted(converted, tmp_path, kernel_num=64)
    bank = bank_bytes(64, 16, 8, (1, 1), torch.float32)  # the 1x1 layer's bank at n = 64
    monkeypatch.setattr(validation, "available_memory", lambda device: 2 * bank)  # one bank fits, the init's peak does not
    with pytest.raises(KernelBankMemoryError, match="attention branches included"):
        load(Tiny(), path)
    monkeypatch.undo()
    huge = _crafted(converted, tmp_path, min_attention_channels=10**12)
    with pytest.raises(KernelBankMemoryError, match="min_attention_channels"):
        load(Tiny(), huge)


@pytest.mark.parametrize("changes, message", [
    ({"layers": ["features.3"]}, "layers must be a dict"),
    ({"policy": ["all"]}, "policy"),
    ({"reduction": float("nan")}, "reduction"),
    ({"layers": {"features.3": {"kernel_num": -1}}}, "kernel_num"),
    ({"layers": {"features.3": {"attention_norm": "evil"}}}, "attention_norm"),
    ({"init": 3}, "init"),
])
def test_f13_recipe_values_are_checked_on_load(converted, tmp_path, changes, message):
    from odconv_surgery.errors import CheckpointMismatchError

    with pytest.raises(CheckpointMismatchError, match=message) as err:
        load(Tiny(), _crafted(converted, tmp_path, **changes))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("argv, message", [
    (["bench", "resnet18", "--repeats", "0"], "--repeats"),
    (["list", "resnet18", "--num-classes", "0"], "--num-classes"),
    (["apply", "resnet18", "-o", "x.pt", "--image-size", "100000"], "--image-size"),
    (["sweep", "resnet18", "--max-steps", "0"], "--max-steps"),
    (["sweep", "resnet18", "--seed-list", str(2**70)], "seeds"),
    (["sweep", "resnet18", "--policies", "1x1", "1x1"], "repeat"),
])
def test_f13_cli_arguments_fail_in_one_line_naming_the_argument(argv, message, tmp_path, monkeypatch, capsys):
    from odconv_surgery.cli import main

    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse: usage line + error line
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code in (1, 2) and message in err
    assert not list(tmp_path.iterdir())


def test_f13_list_refuses_unknown_and_repeated_policies(capsys):
    from odconv_surgery.cli import main

    assert main(["list", "resnet18", "--policies", "bogus"]) == 1
    assert "unknown placement policy 'bogus'" in _error_line(capsys)
    assert main(["list", "resnet18", "--policies", "1x1", "1x1"]) == 1
    assert "more than once" in _error_line(capsys)


def test_f13_library_arguments_are_checked():
    from odconv_surgery import ODConv2d

    with pytest.raises(ValueError, match="stride must be >= 1"):
        ODConv2d(4, 4, 3, stride=0)
    with pytest.raises(ValueError, match="seed must be below 2\\*\\*64"):
        apply_odconv(Tiny(), "1x1", seed=2**70)
    pytest.importorskip("onnx")
    from odconv_surgery.deploy.export import export_onnx

    with pytest.raises(TypeError, match="fuse must be True or False"):
        export_onnx(Tiny().eval(), None, torch.randn(1, 3, 8, 8), fuse="no")
    with pytest.raises(ValueError, match="tolerance"):
        export_onnx(Tiny().eval(), None, torch.randn(1, 3, 8, 8), tolerance=-1)


def test_f13_cli_messages_are_one_short_line(capsys, monkeypatch):
    from odconv_surgery import cli
    from odconv_surgery.errors import CliError

    def boom(args):
        raise CliError("frame 1\n" * 12 + "x" * 1_300_000)

    monkeypatch.setattr(cli, "cmd_list", boom)
    assert cli.main(["list", "resnet18"]) == 1
    line = _error_line(capsys)
    assert len(line) <= 700 and "ODCONV_DEBUG=1" in line


def test_f10_divergence_is_recorded_as_diverged(tmp_path, tiny_data, monkeypatch):
    from odconv_surgery.errors import TrainingDivergedError
    from odconv_surgery.experiments import sweep as sweep_module

    def diverges(*args, **kwargs):
        raise TrainingDivergedError("training diverged: fc.weight is not finite after epoch 0, step 0")

    monkeypatch.setattr(sweep_module, "train_and_evaluate", diverges)
    result = sweep_module.run_sweep(_sweep_config(), tmp_path, model_factory=Tiny, data=tiny_data)
    assert [r["status"] for r in result.records] == ["diverged"] and result.failures


def test_f11_sweep_from_a_fifo_fails_at_once(tmp_path):
    from odconv_surgery.errors import SweepSettingsError

    fifo = tmp_path / "weights.pt"
    os.mkfifo(fifo)
    with pytest.raises(SweepSettingsError, match="regular file"):
        _finishes(lambda: _sweep_config(from_checkpoint=str(fifo)))


def test_f8_a_sweep_directory_of_an_older_version_is_adopted(tmp_path, tiny_data):
    import json

    from odconv_surgery.experiments.sweep import read_results, run_sweep

    run_sweep(_sweep_config(), tmp_path, model_factory=Tiny, data=tiny_data)
    (tmp_path / ".odconv-sweep.json").unlink()  # as written before manifests existed
    (tmp_path / "table.md").write_text("old table")
    result = run_sweep(_sweep_config(), tmp_path, model_factory=Tiny, data=tiny_data)
    assert result.skipped == 1 and len(read_results(tmp_path)) == 1
    assert (tmp_path / "table.md").read_text() != "old table"
    assert "table.md" in json.loads((tmp_path / ".odconv-sweep.json").read_text())["files"]
