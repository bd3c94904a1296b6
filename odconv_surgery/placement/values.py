"""What a converted layer's dynamism is worth: the value side of a budgeted placement, pluggable.

A value measure is a callable ``(model, batches) -> {layer name: value}`` (higher: keep it dynamic); ``batches`` is
the calibration data as given (input batches or ``(input, target)`` pairs), so a measure that needs the labels
(the accuracy lost when a layer alone is folded) can read them. ``"dynamism"`` is ``folding.kernel_dynamism``: how
much the layer's aggregated kernel varies across samples (0: the layer is static on this data and folds exactly).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

from torch import nn

from ..errors import InvalidTypeError, InvalidValueError
from .tables import per_layer_numbers

ValueMeasure = Callable[[nn.Module, Sequence], Mapping[str, float]]


def dynamism(model: nn.Module, batches: Sequence) -> dict[str, float]:
    """``kernel_dynamism`` on the calibration batches."""
    from ..folding import kernel_dynamism

    return kernel_dynamism(model, batches)


VALUE_MEASURES: dict[str, ValueMeasure] = {"dynamism": dynamism}


def register_value_measure(name: str, measure: ValueMeasure, *, overwrite: bool = False) -> ValueMeasure:
    """Make ``measure`` available to ``place_under_budget(value=name)`` and ``odconv-surgery place --value``."""
    if not isinstance(name, str) or not name:
        raise InvalidTypeError(f"a value measure's name must be a non-empty string, got {name!r}")
    if not callable(measure):
        raise InvalidTypeError(f"a value measure must be callable (model, batches) -> {{layer: value}}, got {measure!r}")
    if name in VALUE_MEASURES and not overwrite:
        raise InvalidValueError(f"value measure {name!r} exists; pass overwrite=True to replace it")
    VALUE_MEASURES[name] = measure
    return measure


def resolve_value(value: str | ValueMeasure | Mapping[str, float]) -> tuple[str, ValueMeasure]:
    """The label and the callable of ``value``: a registered name, a callable, or a mapping of precomputed values
    (computed once and reused across budgets)."""
    if isinstance(value, str):
        if value not in VALUE_MEASURES:
            raise InvalidValueError(f"unknown value measure {value!r}; known: {sorted(VALUE_MEASURES)} (or pass a "
                                    "callable (model, batches) -> {layer: value})")
        return value, VALUE_MEASURES[value]
    if isinstance(value, Mapping):
        given = dict(value)
        return "given", lambda model, batches: given
    if callable(value):
        return getattr(value, "__name__", type(value).__name__), value
    raise InvalidTypeError(f"value must be a measure's name {sorted(VALUE_MEASURES)}, a callable or a mapping of "
                           f"layer name -> value, got {type(value).__name__}")


def checked_values(values: Mapping[str, float], layers: Sequence[str], label: str) -> dict[str, float]:
    """One value per layer, each a number that is not NaN (``InvalidValueError`` naming the layers otherwise)."""
    return per_layer_numbers(values, layers, f"value measure {label!r}", "a value measure returns a number for "
                             "every converted layer", refuse=math.isnan)


__all__ = ["VALUE_MEASURES", "dynamism", "register_value_measure", "resolve_value"]
