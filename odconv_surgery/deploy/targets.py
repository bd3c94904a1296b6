"""``ExportTarget``: the runtimes an exported file can be made for, listed once (export, passes, CLI)."""

from __future__ import annotations

from enum import Enum
from typing import Any

from ..errors import InvalidValueError

__all__ = ["ExportTarget", "LOWERING_TARGETS", "TARGET_HELP", "check_target"]


class ExportTarget(str, Enum):
    """Where an exported ODConv file is meant to run; ``export_onnx(target=...)`` takes a member or its value."""

    AUTO = "auto"
    PORTABLE = "portable"
    ORT_CPU = "ort-cpu"

    def __str__(self) -> str:  # the value, as for a plain string, on every Python version
        return self.value


TARGET_HELP = {
    ExportTarget.AUTO: "the fastest form for the onnxruntime installed here (ort-cpu on a CPU with NCHWc, else portable)",
    ExportTarget.PORTABLE: "standard ONNX ops, for any runtime",
    ExportTarget.ORT_CPU: "onnxruntime's CPU NCHWc contrib ops (tied to this CPU's NCHWc block)",
}

#: The targets the ONNX passes lower for: ``auto`` is resolved to one of these first (``resolve_target``).
LOWERING_TARGETS: tuple[str, ...] = tuple(t.value for t in ExportTarget if t is not ExportTarget.AUTO)


def check_target(target: Any, allowed: tuple[str, ...] = tuple(t.value for t in ExportTarget)) -> str:
    """``target`` (a member or its value) as a plain string, if it is one of ``allowed``."""
    value = target.value if isinstance(target, ExportTarget) else target
    if not isinstance(value, str) or value not in allowed:
        raise InvalidValueError(f"target must be one of {', '.join(repr(t) for t in allowed)}, got {target!r}")
    return value
