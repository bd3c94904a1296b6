"""Budgeted placement (issue #19): keep dynamic the converted layers worth the most per microsecond within a
latency budget, fold the rest back, and check the budget on the exported file. In pipeline order: ``budget``
(parse), ``costs`` and ``values`` (per layer), ``choose`` (the knapsack), ``measure`` (the exported file's check),
``place`` (the whole), ``result`` (the report); ``fold_drop`` (what folding one layer alone loses on labelled data)
and ``agreement`` (how well a cheap value measure ranks the layers against it)."""

from .agreement import RankAgreement, rank_agreement, spearman, value_agreement
from .budget import Budget, parse_budget
from .fold_drop import FoldDrop, fold_drops
from .measure import ExportedFileTimer, Measurement
from .place import NOISE_TOLERANCE, brief_finetune, place_under_budget
from .result import Accuracy, Check, PlacedLayer, PlacementResult
from .values import VALUE_MEASURES, register_value_measure

__all__ = [
    "NOISE_TOLERANCE", "VALUE_MEASURES", "Accuracy", "Budget", "Check", "ExportedFileTimer", "FoldDrop", "Measurement",
    "PlacedLayer", "PlacementResult", "RankAgreement", "brief_finetune", "fold_drops", "parse_budget",
    "place_under_budget", "rank_agreement", "register_value_measure", "spearman", "value_agreement",
]
