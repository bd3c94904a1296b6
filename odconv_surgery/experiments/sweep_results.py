"""The sweep's ``results.jsonl``: one JSON object per finished configuration, appended, validated on read.

A process killed mid-write leaves a torn last line; hand edits can leave anything. Appends therefore always start
on a fresh line (so a torn line never swallows the next record), and reading skips every line that is not a
valid record with a ``SweepResultsWarning`` naming ``file:line`` and the reason: not JSON, an integer too long
for Python to read, nesting too deep, a line over ``MAX_LINE`` characters, or a field of the wrong type or out of
range (every numeric field the report reads is checked, so a bad line never stops the sweep after it trained). A
skipped configuration is not "done", so a resumed sweep runs it again. The file is read and appended to only as a
regular file, never through a link (``atomic_file``).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

from .sweep_variants import DEFAULT_VARIANT
from ..atomic_file import open_for_append, open_for_read

__all__ = ["RESULTS_FILE", "SweepResultsWarning", "append_record", "check_record", "config_key", "read_results"]

RESULTS_FILE = "results.jsonl"
MAX_LINE = 1 << 20  # a record is a few kB; a longer line is not one
MAX_DEPTH = 8  # records nest settings one level deep
#: Numeric fields of an "ok" record: (name, low, high, required). The report averages and prints these.
NUMERIC_FIELDS = (
    ("top1", 0, 100, True),
    ("top5", 0, 100, False),
    ("top1_static", 0, 100, False),
    ("top1_converted", 0, 100, False),
    ("latency_ms", 0, math.inf, False),
    ("params", 0, math.inf, False),
    ("madds", 0, math.inf, False),
    ("extra_madds", 0, math.inf, False),
    ("converted_layers", 0, math.inf, False),
    ("train_seconds", 0, math.inf, False),
    ("seconds", 0, math.inf, False),
)
#: Fields of any record that must be text when present.
TEXT_FIELDS = ("error", "traceback", "latency_backend", "dataset", "finished_at", "stats", "stats_error")


class SweepResultsWarning(UserWarning):
    """A line of a results file was skipped (torn by a crash, hand-edited, or holding impossible values)."""


def config_key(policy: str, n: int, seed: int, variant: str = DEFAULT_VARIANT) -> str:
    """A configuration's results key; the default variant adds nothing, so files from before variants resume."""
    key = f"{policy}|n={n}|seed={seed}"
    return key if variant == DEFAULT_VARIANT else f"{key}|variant={variant}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, counting no further than ``limit + 1`` (no recursion)."""
    stack, deepest = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_record(record: Any) -> str | None:
    """Why ``record`` is not a valid results record, or None when it is."""
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__} {json.dumps(record)[:40]}"
    if _depth(record, MAX_DEPTH) > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
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
    variant = record.get("variant", DEFAULT_VARIANT)
    if not isinstance(variant, str):
        return f"variant must be text, got {type(variant).__name__}"
    if record["key"] != config_key(record["policy"], record["kernel_num"], record["seed"], variant):
        return f"key {record['key']!r} does not match policy/kernel_num/seed/variant"
    for name in TEXT_FIELDS:
        if record.get(name) is not None and not isinstance(record[name], str):
            return f"{name} must be text, got {type(record[name]).__name__}"
    if record["status"] != "ok":
        return None
    for name, low, high, required in NUMERIC_FIELDS:
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
    with open_for_read(path) as fh:
        text = fh.read().decode("utf-8", errors="replace")
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        reason = None
        if len(line) > MAX_LINE:
            reason = f"line of {len(line)} characters, longer than any record ({MAX_LINE})"
        else:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                torn = number == len(lines) and not text.endswith("\n")
                reason = "torn last line (a write was interrupted)" if torn else f"not valid JSON ({exc.msg})"
            except ValueError as exc:  # an integer of more digits than Python converts
                reason = f"unreadable number ({str(exc).split(';')[0]})"
            except RecursionError:
                reason = "nested too deeply to read"
        if reason is None:
            reason = check_record(record)
        if reason is None:
            records.append(record)
        elif warn:
            warnings.warn(f"{path}:{number}: {reason}; line skipped (that configuration runs again)", SweepResultsWarning, stacklevel=2)
    return records


def _ends_mid_line(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a line, on a fresh line even after a torn one; flushed and fsynced. The file must be
    a regular file (no link followed, no FIFO)."""
    line = json.dumps(record, default=str) + "\n"
    with open_for_append(path) as fh:
        if _ends_mid_line(fh.fileno()):
            line = "\n" + line
        fh.write(line.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
