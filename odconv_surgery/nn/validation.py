"""Argument checks at the door: each error names the argument and what it accepts, before anything is built.

Also the memory check for ODConv kernel banks: a bank is n x C_out x C_in/groups x kh x kw elements, so a large
``kernel_num`` can ask for more memory than the device has; estimating it first turns an allocator failure deep
inside initialisation into an error that says how many bytes were asked for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ..errors import InvalidTypeError, InvalidValueError, KernelBankMemoryError

__all__ = [
    "KernelBankMemoryError",
    "available_memory",
    "check_bool",
    "check_choice",
    "check_int",
    "check_memory",
    "check_number",
    "format_bytes",
]


def _kind(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """An ``int`` (not a bool, not a float such as 2.5 or a string such as '4'), at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"{name} must be an int, got {_kind(value)}")
    if minimum is not None and value < minimum:
        raise InvalidValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_number(
    name: str, value: Any, *, above: float | None = None, at_most: float | None = None, at_least: float | None = None
) -> float:
    """A finite real number (int or float, not a bool) within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(f"{name} must be a number, got {_kind(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidValueError(f"{name} must be a finite number, got {value}")
    if above is not None and not value > above:
        raise InvalidValueError(f"{name} must be > {above}, got {value}")
    if at_least is not None and value < at_least:
        raise InvalidValueError(f"{name} must be >= {at_least}, got {value}")
    if at_most is not None and value > at_most:
        raise InvalidValueError(f"{name} must be <= {at_most}, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``True`` or ``False`` only: a string such as 'no' is truthy, so it is refused rather than guessed."""
    if not isinstance(value, bool):
        raise InvalidTypeError(f"{name} must be True or False, got {_kind(value)}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """One of ``choices`` (strings), exactly."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise InvalidValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------- memory
def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _cpu_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_memory(device: torch.device | str | None) -> int | None:
    """Bytes that can still be allocated on ``device`` (None when unknown, e.g. the meta device)."""
    device = torch.device("cpu" if device is None else device)
    if device.type == "cpu":
        return _cpu_available()
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return None


def bank_bytes(kernel_num: int, out_channels: int, in_per_group: int, kernel_size: tuple[int, int], dtype: torch.dtype | None) -> int:
    """Bytes of a kernel bank of shape (n, C_out, C_in/groups, kh, kw)."""
    itemsize = (dtype or torch.get_default_dtype()).itemsize
    return kernel_num * out_channels * in_per_group * kernel_size[0] * kernel_size[1] * itemsize


def check_memory(needed: int, device: torch.device | str | None, what: str, fix: str) -> None:
    """Refuse with ``KernelBankMemoryError`` when ``needed`` bytes exceed what ``device`` has available."""
    free = available_memory(device)
    if free is not None and needed > free:
        raise KernelBankMemoryError(
            f"{what} needs {format_bytes(needed)} ({needed} bytes) but only {format_bytes(free)} are available on "
            f"{torch.device('cpu' if device is None else device)}; {fix}"
        )
