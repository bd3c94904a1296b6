"""Which layers stay dynamic: a greedy knapsack by value per microsecond.

The layers are ranked by value / marginal cost (a marginal of 0 or less, the ODConv form timed no slower than the
static conv, counts as free and ranks first); walking the ranking, a layer stays dynamic when its marginal still
fits the allowance, else it is folded and the walk goes on to cheaper ones. Greedy is not the exact 0/1 knapsack
optimum: it can leave part of the allowance unused where a different set would fill it. The rest of the pipeline
(the measured check) only ever folds from the bottom of the same ranking.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence


def priority(value: float, marginal_us: float) -> float:
    """Value per microsecond of marginal cost; a free layer (marginal <= 0) ranks above every paid one."""
    return math.inf if marginal_us <= 0 else value / marginal_us


def rank(layers: Sequence[str], values: Mapping[str, float], costs_us: Mapping[str, float]) -> list[str]:
    """``layers`` best first: highest value per microsecond, then higher value, then the model's order."""
    return sorted(layers, key=lambda n: (-priority(values[n], costs_us[n]), -values[n]))


def choose_dynamic(ranked: Sequence[str], costs_us: Mapping[str, float], allowance_us: float) -> tuple[list[str], list[str]]:
    """The layers that stay dynamic (in ranking order) and those to fold, for ``allowance_us`` microseconds over
    the static model's latency."""
    keep, fold, spent = [], [], 0.0
    for name in ranked:
        cost = max(costs_us[name], 0.0)
        if spent + cost <= allowance_us:
            keep.append(name)
            spent += cost
        else:
            fold.append(name)
    return keep, fold


def worst_to_cover(kept_ranked: Sequence[str], costs_us: Mapping[str, float], excess_us: float) -> list[str]:
    """The lowest-ranked kept layers whose marginals add up to ``excess_us`` (at least one): what to fold next when
    the measured file is over budget by ``excess_us``."""
    out, covered = [], 0.0
    for name in reversed(kept_ranked):
        out.append(name)
        covered += max(costs_us[name], 0.0)
        if covered >= excess_us:
            break
    return out


__all__ = ["choose_dynamic", "priority", "rank", "worst_to_cover"]
