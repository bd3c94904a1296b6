"""The sweep's ``results.jsonl``: one JSON object per finished configuration, appended, validated on read.

A process killed mid-write leaves a torn last line; hand edits can leave anything. Appends therefore always start
on a fresh line (so a torn line never swallows the next record), and reading skips every line that is not a
valid record with a ``SweepResultsWarning`` naming ``file:line`` and the reason. A skipped configuration is not
"done", so a resumed sweep runs it again.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

__all__ = ["RESULTS_FILE", "SweepResultsWarning", "append_record", "check_record", "config_key", "read_results"]

RESULTS_FILE = "results.jsonl"


class SweepResultsWarning(UserWarning):
    """A line of a results file was skipped (torn by a crash, hand-edited, or holding impossible values)."""


def config_key(policy: str, n: int, seed: int) -> str:
    return f"{policy}|n={n}|seed={seed}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_record(record: Any) -> str | None:
    """Why ``record`` is not a valid results record, or None when it is."""
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__} {json.dumps(record)[:40]}"
    for name, ok, what in (
        ("key", isinstance(record.get("key"), str), "a string"),
        ("policy", isinstance(record.get("policy"), str), "a string"),
        ("kernel_num", _is_int(record.get("kernel_num")) and record.get("kernel_num") >= 0, "an int >= 0"),
        ("seed", _is_int(record.get("seed")), "an int"),
        ("status", isinstance(record.get("status"), str), "a string"),
        ("settings", isinstance(record.get("settings"), dict), "an object"),
    ):
        if not ok:
            return f"{name} must be {what}, got {record.get(name)!r}"
    if record["key"] != config_key(record["policy"], record["kernel_num"], record["seed"]):
        return f"key {record['key']!r} does not match policy/kernel_num/seed"
    if record["status"] != "ok":
        return None
    for name, low, high, required in (
        ("top1", 0, 100, True),
        ("top5", 0, 100, False),
        ("latency_ms", 0, math.inf, False),
        ("params", 0, math.inf, False),
        ("madds", 0, math.inf, False),
    ):
        value = record.get(name)
        if value is None and not required:
            continue
        if not _is_number(value) or not low <= value <= high:
            bounds = f"in [{low}, {high}]" if high != math.inf else f">= {low}"
            return f"impossible {name}={value!r} (expected a number {bounds})"
    return None


def read_results(path: str | os.PathLike, *, warn: bool = True) -> list[dict[str, Any]]:
    """Valid records of a results file (``path`` or its directory); every other line is skipped with a warning."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.exists():
        return []
    if not path.is_file():
        raise IsADirectoryError(f"{path} is not a regular file; move it away so the sweep can write its results there")
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            torn = number == len(lines) and not text.endswith("\n")
            reason = "torn last line (a write was interrupted)" if torn else f"not valid JSON ({exc.msg})"
        else:
            reason = check_record(record)
        if reason is None:
            records.append(record)
        elif warn:
            warnings.warn(f"{path}:{number}: {reason}; line skipped (that configuration runs again)", SweepResultsWarning, stacklevel=2)
    return records


def _ends_mid_line(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except FileNotFoundError:
        return False


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a line, on a fresh line even after a torn one; flushed and fsynced."""
    line = json.dumps(record, default=str) + "\n"
    if _ends_mid_line(path):
        line = "\n" + line
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
