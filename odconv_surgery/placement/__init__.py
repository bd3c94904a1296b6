"""Budgeted placement (issue #19): keep dynamic the converted layers worth the most per microsecond within a
latency budget, fold the rest back, and check the budget on the exported file. In pipeline order: ``budget``
(parse), ``costs`` and ``values`` (per layer), ``choose`` (the knapsack), ``measure`` (the exported file's check),
``place`` (the whole), ``result`` (the report)."""

from .budget import Budget, parse_budget
from .measure import ExportedFileTimer, Measurement
from .place import NOISE_TOLERANCE, brief_finetune, place_under_budget
from .result import Accuracy, Check, PlacedLayer, PlacementResult
from .values import VALUE_MEASURES, register_value_measure

__all__ = [
    "NOISE_TOLERANCE", "VALUE_MEASURES", "Accuracy", "Budget", "Check", "ExportedFileTimer", "Measurement",
    "PlacedLayer", "PlacementResult", "brief_finetune", "parse_budget", "place_under_budget", "register_value_measure",
]
