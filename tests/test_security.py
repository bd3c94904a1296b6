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
    with pytest.raises(NotRegularFileError, match="character device"):
        save(converted, "/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
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
    assert victim.read_text() == "precious"


# ---- F11: reading a FIFO fails at once ---------------------------------------------------------------------------
def test_f11_load_from_a_fifo_fails_at_once(tmp_path):
    fifo = tmp_path / "m.pt"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFileError, match="FIFO"):
        _finishes(lambda: load(Tiny(), fifo))
