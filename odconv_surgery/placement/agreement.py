"""Does a cheap value measure rank the layers as the measured one does? Spearman's rank correlation between two
value measures over the converted layers, per seed (each seed a separately trained model), and its mean over seeds.

The budgeted placement only uses a value measure's ranking (value per microsecond), so a rank correlation is the
fitting check: ``kernel_dynamism`` (cheap, no labels) against the accuracy lost when each layer alone is folded
(``fold_drop.fold_drops``: labels, one evaluation per layer). Ties get their average rank; a measure that is
constant over the layers of a seed gives no ranking, and that seed's correlation is NaN (left out of the mean).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Hashable, Mapping, Sequence

from torch import nn

from ..errors import InvalidTypeError, InvalidValueError
from .tables import per_layer_numbers
from .values import ValueMeasure, measure_values, resolve_value

if TYPE_CHECKING:
    from ..experiments.data import DataBundle


def average_ranks(values: Sequence[float]) -> list[float]:
    """The rank of each value, 1 for the smallest; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long sequences of numbers (infinities rank as the largest or
    smallest): the Pearson correlation of their average ranks, in [-1, 1]; NaN when either is constant."""
    if isinstance(a, (str, bytes)) or isinstance(b, (str, bytes)) or not isinstance(a, Sequence) \
            or not isinstance(b, Sequence):
        raise InvalidTypeError(f"spearman needs two sequences of numbers, got {type(a).__name__} and {type(b).__name__}")
    if len(a) != len(b):
        raise InvalidValueError(f"spearman needs sequences of one length, got {len(a)} and {len(b)} values")
    if len(a) < 2:
        raise InvalidValueError(f"a rank correlation needs at least 2 pairs, got {len(a)}")
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v) for v in (*a, *b)):
        raise InvalidValueError("spearman needs real numbers without NaN; drop the pairs that have none")
    ra, rb = average_ranks(a), average_ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    if va == 0 or vb == 0:
        return math.nan
    return max(-1.0, min(1.0, cov / math.sqrt(va * vb)))


@dataclass(frozen=True)
class RankAgreement:
    """Spearman's rho between a ``cheap`` and a ``reference`` value measure over the converted layers: per seed, and
    the mean and sample standard deviation over the seeds where it is defined (``None`` when none is)."""

    cheap: str
    reference: str
    per_seed: dict[Hashable, float]
    layers: dict[Hashable, int] = field(default_factory=dict)

    @property
    def defined(self) -> list[float]:
        return [rho for rho in self.per_seed.values() if not math.isnan(rho)]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.defined) if self.defined else None

    @property
    def std(self) -> float | None:
        defined = self.defined
        return (statistics.stdev(defined) if len(defined) > 1 else 0.0) if defined else None

    def summary(self) -> str:
        seeds = ", ".join(f"seed {seed}: {rho:+.2f}" for seed, rho in self.per_seed.items())
        mean = "undefined" if self.mean is None else f"{self.mean:+.2f} ± {self.std:.2f}"
        return f"Spearman rho of {self.cheap} against {self.reference}: mean {mean} ({seeds})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN per seed becomes None."""
        return {"cheap": self.cheap, "reference": self.reference, "mean": self.mean, "std": self.std,
                "per_seed": {str(s): (None if math.isnan(r) else r) for s, r in self.per_seed.items()},
                "layers": {str(s): n for s, n in self.layers.items()}}


def rank_agreement(cheap: Mapping[Hashable, Mapping[str, float]], reference: Mapping[Hashable, Mapping[str, float]],
                   *, names: tuple[str, str] = ("dynamism", "accuracy_drop")) -> RankAgreement:
    """Per seed (the keys, the same in both), Spearman's rho between ``cheap[seed]`` and ``reference[seed]`` (layer
    name -> value) over the layers of ``reference[seed]`` (which ``cheap[seed]`` must all have); ``names`` labels
    the two measures."""
    if not isinstance(cheap, Mapping) or not isinstance(reference, Mapping):
        raise InvalidTypeError("rank_agreement takes two mappings of seed -> {layer name: value}")
    if set(cheap) != set(reference) or not reference:
        raise InvalidValueError(f"rank_agreement needs the same, non-empty seeds in both measures, got "
                                f"{sorted(map(str, cheap))} and {sorted(map(str, reference))}")
    per_seed, layers = {}, {}
    for seed, ref in reference.items():
        ref_values = per_layer_numbers(ref, list(ref), f"{names[1]} (seed {seed})", "give every layer a number",
                                       refuse=math.isnan)
        cheap_values = per_layer_numbers(cheap[seed], list(ref_values), f"{names[0]} (seed {seed})",
                                         f"measure every layer of {names[1]}", refuse=math.isnan)
        per_seed[seed] = spearman([cheap_values[n] for n in ref_values], list(ref_values.values()))
        layers[seed] = len(ref_values)
    return RankAgreement(names[0], names[1], per_seed, layers)


def value_agreement(models: Mapping[Hashable, nn.Module], calibration: Sequence, labelled: DataBundle | None, *,
                    cheap: str | ValueMeasure = "dynamism",
                    reference: str | ValueMeasure = "accuracy_drop") -> RankAgreement:
    """Both value measures on each seed's converted model (``models``: seed -> model, e.g. ``all_but_first`` and
    fine-tuned), then ``rank_agreement``. ``calibration``: the batches the measures (and the folds) run on;
    ``labelled``: the ``DataBundle`` a label-based measure evaluates on (its test set)."""
    if not isinstance(models, Mapping) or not models:
        raise InvalidTypeError("models must be a non-empty mapping of seed -> converted model")
    calibration = list(calibration)
    (cheap_name, cheap_fn), (ref_name, ref_fn) = resolve_value(cheap), resolve_value(reference)
    cheap_values = {seed: measure_values(cheap_fn, model, calibration, labelled) for seed, model in models.items()}
    ref_values = {seed: measure_values(ref_fn, model, calibration, labelled) for seed, model in models.items()}
    return rank_agreement(cheap_values, ref_values, names=(cheap_name, ref_name))


__all__ = ["RankAgreement", "average_ranks", "rank_agreement", "spearman", "value_agreement"]
