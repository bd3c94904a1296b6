"""Is the machine quiet enough to time anything? The load average, read before and after a benchmark.

On a small shared machine, anything running beside a benchmark (a test suite, another job) slows the static
model as much as the converted one and squeezes every ratio toward 1, so the benchmarks refuse to start on a busy
machine unless told otherwise, and record the load at start and end beside their numbers.
"""

from __future__ import annotations

import os


class BusyMachineError(RuntimeError):
    """The machine is too busy for timings to mean anything."""


#: One-minute load average per CPU core above which the machine counts as busy.
BUSY_LOAD_PER_CORE = 0.5


def load_average() -> float | None:
    """The one-minute load average, or None where the OS does not report it."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy_threshold() -> float:
    return BUSY_LOAD_PER_CORE * (os.cpu_count() or 1)


def describe_load(load: float | None) -> str:
    if load is None:
        return "load average unknown"
    return f"load average {load:.2f} on {os.cpu_count()} cores (busy above {busy_threshold():.2f})"


def require_quiet(allow_busy: bool = False, warn=print) -> float | None:
    """The load average now; raise ``BusyMachineError`` above the busy threshold unless ``allow_busy`` (then
    ``warn`` says the figures will be squeezed toward 1)."""
    load = load_average()
    if load is not None and load > busy_threshold():
        message = (
            f"the machine is busy ({describe_load(load)}): something else running beside a benchmark slows the "
            "static model too and squeezes every ratio toward 1. Stop the other work (see `uptime`, `top`) and "
            "wait a minute, or pass --allow-busy to time anyway"
        )
        if not allow_busy:
            raise BusyMachineError(message)
        warn(f"WARNING: {message}; timing anyway (--allow-busy)")
    return load
