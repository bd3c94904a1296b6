import os
import stat
import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from helpers.randomise import randomise_attention
from odconv_surgery import CheckpointMismatchError, ODConv2d, apply_odconv, load, save
from odconv_surgery.atomic_file import ReadOnlyTargetError
from odconv_surgery.surgery import AlreadyConvertedError


def test_save_load_roundtrip(tmp_path):
    base = torchvision.models.resnet18(num_classes=10).eval()
    model, _ = apply_odconv(base, "last:2", kernel_num=2, overrides={r"layer4\.1\.conv2": {"kernel_num": 3}})
    randomise_attention(model)
    path = save(model, tmp_path / "ckpt" / "m.pt")
    restored = load(torchvision.models.resnet18(num_classes=10).eval(), path)
    assert restored.layer4[1].conv2.kernel_num == 3 and isinstance(restored.layer4[0].conv1, ODConv2d)
    assert not isinstance(restored.layer3[1].conv2, ODConv2d)
    assert restored.odconv_recipe.policy == "last:2"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x))


def test_mismatched_checkpoint_lists_keys(tmp_path):
    model, _ = apply_odconv(torchvision.models.resnet18(num_classes=10))
    path = save(model, tmp_path / "m.pt")
    with pytest.raises(CheckpointMismatchError, match=r"Shape mismatches: fc.bias.*fc.weight: checkpoint \(10, 512\)"):
        load(torchvision.models.resnet18(num_classes=5), path)
    with pytest.raises(CheckpointMismatchError, match="does not have"):
        load(nn.Sequential(nn.Conv2d(3, 3, 3)), path)


def test_bad_files_and_unconverted_models(tmp_path):
    with pytest.raises(ValueError, match="apply_odconv"):
        save(nn.Conv2d(3, 3, 3), tmp_path / "x.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable odconv-surgery checkpoint"):
        load(nn.Conv2d(3, 3, 3), junk)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="odconv_surgery.save"):
        load(nn.Conv2d(3, 3, 3), tmp_path / "other.pt")


class Tiny(nn.Module):
    """Stem 3x3, then 3x3 and 1x1 convs: enough for two conversion calls."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU(),
        )
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def _converted_twice() -> nn.Module:
    first, _ = apply_odconv(Tiny().eval(), "1x1", kernel_num=2)
    model, _ = apply_odconv(first, "3x3", kernel_num=3)
    return model


def test_two_conversion_calls_save_and_load(tmp_path):
    model = _converted_twice()
    randomise_attention(model)
    assert model.odconv_recipe.policy == "1x1 + 3x3"
    assert set(model.odconv_recipe.layers) == {"features.3", "features.6"}
    restored = load(Tiny().eval(), save(model, tmp_path / "m.pt"))
    assert restored.features[6].kernel_num == 2 and restored.features[3].kernel_num == 3
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x))


def test_converting_a_converted_model_says_so():
    model, _ = apply_odconv(Tiny().eval(), "all")
    with pytest.raises(AlreadyConvertedError, match="model is already converted: 3 ODConv2d layers"):
        apply_odconv(model, "all_but_first")
    partly, _ = apply_odconv(Tiny().eval(), "1x1")
    with pytest.raises(ValueError, match="already holds 1 ODConv2d layers"):
        apply_odconv(partly, "1x1")


def test_save_refuses_a_recipe_that_misses_layers(tmp_path):
    model, _ = apply_odconv(Tiny().eval(), "1x1")
    model.features[3] = ODConv2d.from_conv(model.features[3])  # swapped by hand: not in the recipe
    with pytest.raises(ValueError, match=r"ODConv2d layers the recipe does not name: \['features.3'\]"):
        save(model, tmp_path / "m.pt")
    assert not list(tmp_path.iterdir())


@pytest.fixture
def converted():
    model, _ = apply_odconv(Tiny().eval(), "1x1")
    return model


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_save_respects_umask(converted, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = save(converted, tmp_path / "m.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_save_keeps_mode_and_refuses_read_only(converted, tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"old": 1}, path)  # an older checkpoint (save() refuses to replace files of other kinds)
    old = path.read_bytes()
    path.chmod(0o640)
    save(converted, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_bytes() != old
    path.chmod(0o444)
    before = path.read_bytes()
    with pytest.raises(ReadOnlyTargetError, match=r"read-only \(mode 0444\).*chmod u\+w"):
        save(converted, path)
    assert path.read_bytes() == before
    with pytest.raises(IsADirectoryError, match="is a directory"):
        save(converted, tmp_path)


def test_failed_save_leaves_old_file_and_no_partial(converted, tmp_path, monkeypatch):
    path = save(converted, tmp_path / "m.pt")
    good = path.read_bytes()

    def torn(obj, fh, *args, **kwargs):
        fh.write(b"half a checkpoint")
        raise KeyboardInterrupt  # a kill in the middle of the write

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(KeyboardInterrupt, match="^$"):
        save(converted, path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_stale_partials_of_killed_writers_are_removed(converted, tmp_path):
    from odconv_surgery.atomic_file import _host

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".m.pt.{_host()}.{dead.pid}.0badf00d.tmp"
    live = tmp_path / f".m.pt.{_host()}.{os.getpid()}.0badf00d.tmp"  # a writer still running: left alone
    other_host = tmp_path / f".m.pt.otherhost.{dead.pid}.0badf00d.tmp"  # cannot tell on another host: left alone
    for p in (stale, live, other_host):
        p.write_bytes(b"partial")
    save(converted, tmp_path / "m.pt")
    assert not stale.exists() and live.exists() and other_host.exists()


def test_save_fsyncs_file_then_renames_then_fsyncs_dir(converted, tmp_path, monkeypatch):
    from odconv_surgery import atomic_file

    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src, dst):
        calls.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(atomic_file.os, "fsync", fsync)
    monkeypatch.setattr(atomic_file.os, "replace", replace)
    save(converted, tmp_path / "m.pt")
    assert calls == ["fsync-file", "replace", "fsync-dir"]


def test_paths_expand_user(converted, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    save(converted, "~/ckpts/m.pt")
    assert (tmp_path / "ckpts" / "m.pt").is_file() and not (tmp_path / "~").exists()
    assert isinstance(load(Tiny().eval(), "~/ckpts/m.pt").features[6], ODConv2d)
