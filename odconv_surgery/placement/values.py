"""What a converted layer's dynamism is worth: the value side of a budgeted placement, pluggable.

A value measure is a callable ``(model, batches) -> {layer name: value}`` (higher: keep it dynamic); ``batches`` is
the calibration data as given (input batches or ``(input, target)`` pairs). A measure that also needs held-out
labelled data declares a ``labelled`` keyword: it then gets ``place_under_budget``'s ``labelled`` (a
``DataBundle``, or None when none was given).

Built in: ``"dynamism"`` is ``folding.kernel_dynamism``: how much the layer's aggregated kernel varies across
samples (0: the layer is static on this data and folds exactly); cheap, no labels. ``"accuracy_drop"`` (test top-1
points lost) and ``"loss_increase"`` (test cross-entropy gained) fold each layer alone (``fold_drop.fold_drops``:
calibrated on the batches, evaluated on ``labelled.test``); they need labels and one evaluation per layer.
"""

from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from torch import nn

from ..errors import InvalidTypeError, InvalidValueError
from .tables import per_layer_numbers

if TYPE_CHECKING:
    from ..experiments.data import DataBundle

#: Test samples the label-based measures evaluate per layer at most (the first ones of ``labelled.test``).
MAX_DROP_SAMPLES = 2048

ValueMeasure = Callable[[nn.Module, Sequence], Mapping[str, float]]


def dynamism(model: nn.Module, batches: Sequence) -> dict[str, float]:
    """``kernel_dynamism`` on the calibration batches."""
    from ..folding import kernel_dynamism

    return kernel_dynamism(model, batches)


def accuracy_drop(model: nn.Module, batches: Sequence, labelled: DataBundle | None = None) -> dict[str, float]:
    """Test top-1 points lost when each layer alone is folded (calibrated on ``batches``, evaluated on
    ``labelled.test``, its first ``MAX_DROP_SAMPLES`` samples)."""
    return {name: drop.top1_drop for name, drop in _drops(model, batches, labelled, "accuracy_drop").items()}


def loss_increase(model: nn.Module, batches: Sequence, labelled: DataBundle | None = None) -> dict[str, float]:
    """Test cross-entropy gained when each layer alone is folded: ``accuracy_drop``'s finer-grained twin (a top-1
    drop on a few hundred images ties many layers at 0)."""
    return {name: drop.loss_increase for name, drop in _drops(model, batches, labelled, "loss_increase").items()}


def _drops(model: nn.Module, batches: Sequence, labelled: DataBundle | None, name: str) -> dict:
    from ..experiments.data import DataBundle
    from .fold_drop import fold_drops

    if labelled is None:
        raise InvalidValueError(f"value measure {name!r} folds each layer and measures the accuracy lost on labelled "
                                "held-out data: pass labelled=DataBundle(...) (e.g. load_dataset()), or use "
                                "value='dynamism', which needs no labels")
    if not isinstance(labelled, DataBundle):
        raise InvalidTypeError(f"value measure {name!r} needs labelled to be a DataBundle (train and test sets of "
                               f"(image, label) pairs, e.g. load_dataset()), got {type(labelled).__name__}")
    return fold_drops(model, batches, labelled.test, max_samples=MAX_DROP_SAMPLES)


VALUE_MEASURES: dict[str, ValueMeasure] = {"dynamism": dynamism, "accuracy_drop": accuracy_drop,
                                           "loss_increase": loss_increase}


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


def measure_values(measure: ValueMeasure, model: nn.Module, batches: Sequence,
                   labelled: DataBundle | None = None) -> Mapping[str, float]:
    """``measure(model, batches)``, with ``labelled=labelled`` when the measure declares that keyword."""
    return measure(model, batches, labelled=labelled) if takes_labelled(measure) else measure(model, batches)


def takes_labelled(measure: ValueMeasure) -> bool:
    """Whether ``measure`` accepts a ``labelled`` keyword (by name, or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(measure).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable without a signature: the two-argument form
        return False
    return any(p.name == "labelled" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) or p.kind == p.VAR_KEYWORD
               for p in parameters)


def checked_values(values: Mapping[str, float], layers: Sequence[str], label: str) -> dict[str, float]:
    """One value per layer, each a number that is not NaN (``InvalidValueError`` naming the layers otherwise)."""
    return per_layer_numbers(values, layers, f"value measure {label!r}", "a value measure returns a number for "
                             "every converted layer", refuse=math.isnan)


__all__ = ["MAX_DROP_SAMPLES", "VALUE_MEASURES", "accuracy_drop", "dynamism", "loss_increase", "measure_values",
           "register_value_measure", "resolve_value", "takes_labelled"]
