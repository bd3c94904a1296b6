"""A latency budget: a ratio to the static model on the target runtime (``"1.2x"``) or an absolute time (``"3.5ms"``,
``"800us"``), or ``"unlimited"``. The ratio is the portable form: it travels between machines as long as ODConv's
overhead scales like the rest of the network; an absolute time holds on the machine it was measured on only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import BudgetError, InvalidTypeError

RATIO = "ratio"
MS = "ms"
FORMS = "'1.2x' (a ratio to the static model), '3.5ms' or '800us' (an absolute time at batch 1) or 'unlimited'"
_UNITS = {"x": (RATIO, 1.0), "ms": (MS, 1.0), "us": (MS, 1e-3), "µs": (MS, 1e-3)}
_PATTERN = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf|nan)\s*([a-zµ]*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    """A latency budget: ``kind`` is ``"ratio"`` (``value`` times the static model's latency measured in the same
    run) or ``"ms"`` (``value`` milliseconds at batch 1); ``Budget("ratio", inf)`` is no budget at all."""

    kind: str
    value: float

    def limit_ms(self, static_ms: float) -> float:
        """The latency allowed, in ms, when the static model measures ``static_ms``."""
        return self.value * static_ms if self.kind == RATIO else self.value

    def fits(self, static_ms: float, placed_ms: float, tolerance: float) -> bool:
        """Whether ``placed_ms`` (measured beside ``static_ms``) is within the budget, ``tolerance`` (a fraction:
        timing noise) above it included."""
        return placed_ms <= self.limit_ms(static_ms) * (1 + tolerance)

    def __str__(self) -> str:
        if math.isinf(self.value):
            return "unlimited"
        return f"{self.value:g}x" if self.kind == RATIO else f"{self.value:g}ms"


def parse_budget(budget: str | Budget) -> Budget:
    """A ``Budget`` from text: ``"1.2x"`` (a ratio >= 1 to the static model), ``"3.5ms"`` or ``"3500us"`` (an
    absolute time > 0), ``"unlimited"``; a ``Budget`` passes through. ``BudgetError`` names the accepted forms."""
    if isinstance(budget, Budget):
        return _checked(budget.kind, budget.value, str(budget))
    if isinstance(budget, (bool, int, float)):
        raise BudgetError(f"budget {budget!r} has no unit: write '{budget}x' for a ratio to the static model or "
                          f"'{budget}ms' for an absolute time")
    if not isinstance(budget, str):
        raise InvalidTypeError(f"budget must be a string such as {FORMS}, got {type(budget).__name__}")
    if budget.strip().lower() in ("unlimited", "none", "inf", "infx"):
        return Budget(RATIO, math.inf)
    match = _PATTERN.match(budget)
    if match is None:
        raise BudgetError(f"cannot read the budget {budget[:40]!r}; write {FORMS}")
    number, unit = float(match.group(1)), match.group(2).lower()
    if not unit:
        raise BudgetError(f"budget {budget!r} has no unit: write '{match.group(1)}x' for a ratio to the static model "
                          f"or '{match.group(1)}ms' for an absolute time")
    if unit not in _UNITS:
        raise BudgetError(f"budget {budget!r}: unknown unit {unit!r} (known: x, ms, us); write {FORMS}")
    kind, scale = _UNITS[unit]
    return _checked(kind, number * scale, budget)


def _checked(kind: str, value: float, text: str) -> Budget:
    if kind not in (RATIO, MS):
        raise BudgetError(f"budget kind must be {RATIO!r} or {MS!r}, got {kind!r}")
    if math.isnan(value) or value <= 0 or (kind == MS and math.isinf(value)):
        raise BudgetError(f"budget {text!r} must be a positive finite number; write {FORMS}")
    if kind == RATIO and value < 1:
        raise BudgetError(f"budget {text!r} asks for less than the static model's latency, which no placement reaches "
                          "(folding every layer gives the static model); give 1x or more")
    return Budget(kind, float(value))


__all__ = ["Budget", "parse_budget"]
