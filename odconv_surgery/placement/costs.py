"""What each converted layer costs in the target runtime: its marginal latency (the ODConv form's time minus the
static conv's, microseconds at batch 1), measured by ``deploy.layer_costs`` or given (a table computed once and
reused across budgets, or injected by tests).

A layer ``layer_costs`` cannot time (NaN: its form has no NCHWc timing graph, e.g. a stem conv on 3 channels under
``all``) is given the largest marginal measured on the other layers: it ranks low and is folded early when the
budget is tight, and the measured check of the whole file has the last word. The result marks such layers.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from torch import Tensor, nn

from ..errors import InvalidTypeError, InvalidValueError
from .tables import per_layer_numbers


def marginal_costs(model: nn.Module, layers: Sequence[str], costs: Mapping | None, *,
                   example_input: Tensor | Sequence[Tensor], threads: int,
                   tune: bool) -> tuple[dict[str, float], str, list[str]]:
    """Per layer of ``layers``, its marginal microseconds, where they came from, and the layers whose cost was not
    measured (NaN, replaced by the largest measured one). ``costs``: None (measure them with ``layer_costs`` on
    this machine), or a mapping of layer name -> ``LayerLatency`` or marginal microseconds."""
    if costs is None:
        from ..deploy.layer_costs import layer_costs

        costs = layer_costs(model, example_input, threads=threads, tune=tune)
        source = f"layer_costs ({threads} thread(s), {'tuned' if tune else 'cost-model'} forms)"
    elif isinstance(costs, Mapping):
        source = "given"
    else:
        raise InvalidTypeError(f"costs must be None (measure them) or a mapping of layer name -> LayerLatency or "
                               f"marginal microseconds, got {type(costs).__name__}")
    out = per_layer_numbers(costs, layers, "the cost table", "give each converted layer a LayerLatency or its "
                            "marginal microseconds (costs=None measures them)", refuse=math.isinf,
                            read=lambda cost: getattr(cost, "marginal_us", cost))
    unmeasured = [name for name, us in out.items() if math.isnan(us)]
    measured = [us for us in out.values() if not math.isnan(us)]
    if unmeasured and not measured:
        raise InvalidValueError(f"no converted layer has a measured cost ({unmeasured[:5]} are NaN): layer_costs needs "
                                "onnxruntime's NCHWc CPU forms; pass costs= (layer name -> marginal microseconds)")
    out.update(dict.fromkeys(unmeasured, max(measured, default=0.0)))
    return out, source, unmeasured


__all__ = ["marginal_costs"]
