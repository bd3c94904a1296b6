"""Which files in a sweep's output directory the sweep wrote, so it never overwrites one it did not.

``DIR/.odconv-sweep.json`` lists every output the sweep wrote (results file, CSV, JSON, markdown, PNGs, the
pretrained cache, the attention statistics) with the sha256 of what it wrote. Before anything runs,
``foreign_outputs`` names each file at an output path that is not in the manifest or was changed since (a
``summary.json`` of another tool, a hand-edited ``table.md``); the sweep refuses to start rather than replace it. ``results.jsonl`` only grows by appends, so it
is owned by name. A directory of an older version (no manifest, but a results file) is adopted as it stands.
Every write goes through ``write_owned`` (``atomic_file``: temp + fsync + rename, no links followed).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import BinaryIO, Callable

from ..atomic_file import atomic_write, open_for_read
from ..errors import SweepOutputError  # noqa: F401 - raised here, defined with every error
from .sweep_results import RESULTS_FILE, read_results

__all__ = ["MANIFEST", "OUTPUT_DIRS", "OUTPUT_NAMES", "STATS_DIR", "foreign_outputs", "record_owned", "write_owned"]

MANIFEST = ".odconv-sweep.json"
FORMAT = "odconv-surgery/sweep-manifest-v1"
#: Files the sweep writes at the top of its directory (the pretrained cache lives under ``pretrained/``, the
#: attention statistics under ``stats/``).
OUTPUT_NAMES = (RESULTS_FILE, "results.csv", "summary.json", "table.md", "acc_vs_latency.png", "acc_vs_params.png")
STATS_DIR = "stats"
OUTPUT_DIRS = ("pretrained", STATS_DIR)
APPEND_ONLY = (RESULTS_FILE,)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open_for_read(path) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load(out: Path) -> dict[str, str] | None:
    """The manifest's {relative name: sha256}, None when there is none; a damaged one is an error."""
    path = out / MANIFEST
    if not os.path.lexists(path):
        return None
    try:
        with open_for_read(path) as fh:
            data = json.loads(fh.read(1 << 20).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SweepOutputError(f"{path} is not a sweep manifest ({type(exc).__name__}); move it away or use another output directory") from None
    files = data.get("files") if isinstance(data, dict) and data.get("format") == FORMAT else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise SweepOutputError(f"{path} is not a sweep manifest; move it away or use another output directory")
    return files


def _candidates(out: Path) -> list[str]:
    names = [name for name in OUTPUT_NAMES if os.path.lexists(out / name)]
    for folder in OUTPUT_DIRS:
        sub = out / folder
        if sub.is_dir() and not sub.is_symlink():
            names += sorted(f"{folder}/{p.name}" for p in sub.iterdir() if not p.name.startswith("."))
        elif os.path.lexists(sub):
            names.append(folder)
    return names


def foreign_outputs(out: Path) -> list[str]:
    """Names at the sweep's output paths that it did not write (or that changed since it wrote them)."""
    if not out.is_dir():
        return []
    owned = _load(out)
    present = _candidates(out)
    if owned is None:
        if os.path.lexists(out / RESULTS_FILE) and read_results(out / RESULTS_FILE, warn=False):
            return []  # written by a version without a manifest: adopted on the next write
        return [name for name in present if not (name == RESULTS_FILE and (out / name).stat().st_size == 0)]
    foreign = []
    for name in present:
        path = out / name
        if name not in owned or path.is_symlink() or not path.is_file():
            foreign.append(name)
        elif name not in APPEND_ONLY and _digest(path) != owned[name]:
            foreign.append(f"{name} (changed since the sweep wrote it)")
    return foreign


def record_owned(out: Path, *paths: Path) -> None:
    """Add ``paths`` (inside ``out``) to the manifest with their current digests."""
    files = _load(out) or {}
    for path in paths:
        name = path.relative_to(out).as_posix()
        files[name] = "" if name in APPEND_ONLY else _digest(path)
    text = json.dumps({"format": FORMAT, "files": dict(sorted(files.items()))}, indent=1).encode()
    atomic_write(out / MANIFEST, lambda fh: fh.write(text), replaces="json")


def write_owned(out: Path, name: str, write: Callable[[BinaryIO], object], replaces: str) -> Path:
    """Write ``out/name`` through the careful writer and record it in the manifest."""
    path = atomic_write(out / name, write, replaces=replaces)
    record_owned(out, path)
    return path
