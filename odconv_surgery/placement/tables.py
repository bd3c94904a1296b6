"""Per-layer tables (costs, values): one real number for every converted layer, checked in one place."""

from __future__ import annotations

import numbers
from typing import Any, Callable, Mapping, Sequence

from ..errors import InvalidTypeError, InvalidValueError


def per_layer_numbers(table: Any, layers: Sequence[str], what: str, need: str, *,
                      refuse: Callable[[float], bool], read: Callable[[Any], Any] = lambda entry: entry) -> dict[str, float]:
    """``read(table[name])`` as a float for each of ``layers``; ``InvalidValueError`` naming ``what`` and ``need``
    (the fix) when a layer is missing, or its entry is not a real number or is one ``refuse`` refuses."""
    if not isinstance(table, Mapping):
        raise InvalidTypeError(f"{what} must be a mapping of layer name -> number, got {type(table).__name__}; {need}")
    missing = [name for name in layers if name not in table]
    if missing:
        raise InvalidValueError(f"{what} has no entry for the converted layer(s) {missing[:5]}; {need}")
    out = {}
    for name in layers:
        number = read(table[name])
        if isinstance(number, bool) or not isinstance(number, numbers.Real) or refuse(number):
            raise InvalidValueError(f"{what} gives {number!r} for {name!r}; {need}")
        out[name] = float(number)
    return out


__all__ = ["per_layer_numbers"]
