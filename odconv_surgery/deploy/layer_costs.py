"""What each converted layer costs in onnxruntime on this CPU: its batch-1 NCHWc form against the static conv it
replaced, each timed as a small graph at the layer's real shape, blocked on both sides as inside the chain
(``passes/onnx/lowering/plan.py``'s timing). The marginal cost is what placing ODConv there adds; a budgeted
placement (issue #19) weighs it against what the layer's dynamism is worth (``folding.kernel_dynamism``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import Tensor, nn

from ..errors import UnavailableFeatureError


@dataclass(frozen=True)
class LayerLatency:
    """One layer: its chosen form, its time and the static conv's (microseconds, batch 1) and the difference, beside
    its parameters and its MAdds (``accounting.count_cost``: the layer's, attention included)."""

    form: str
    odconv_us: float
    static_us: float
    params: int = 0
    madds: int = 0

    @property
    def marginal_us(self) -> float:
        return self.odconv_us - self.static_us


def layer_costs(model: nn.Module, example_input: Tensor | Sequence[Tensor], *, threads: int = 1,
                tune: bool = False) -> dict[str, LayerLatency]:
    """Per converted layer of ``model`` (by module name), its ``LayerLatency`` in onnxruntime's CPU NCHWc form on this
    machine, at ``threads`` threads; ``tune`` picks each layer's form by timing (as ``export_onnx(tune=True)``),
    else the cost model's form."""
    from ..accounting import count_cost
    from ..passes.onnx import run_pipeline
    from ..passes.onnx.common import detect_nchwc_block, import_graph, odconv_layers
    from ..passes.onnx.lowering.plan import STATIC, Planner, time_forms
    from ..passes.onnx.pipeline import PIPELINE
    from .export import export_marked

    blk = detect_nchwc_block()
    if blk is None:
        raise UnavailableFeatureError("layer_costs times onnxruntime's NCHWc CPU ops, which this onnxruntime cannot "
                                      "run; use odconv_surgery.accounting.count_cost for parameters and MAdds")
    folds = PIPELINE[:PIPELINE.index("lower_by_batch_regime")]
    graph = import_graph(run_pipeline(export_marked(model, example_input), passes=folds))
    accounted = {layer.name: layer for layer in count_cost(model, example_input=example_input).layers}
    planner = Planner(blk, tune=tune, threads=threads)
    costs = {}
    try:
        for layer in odconv_layers(graph):
            form = planner.choose(layer).form
            times = time_forms(layer, blk, [form, STATIC], threads)
            name = layer.name.split("/call")[0]
            if name not in accounted and name.endswith(".conv") and name[: -len(".conv")] in accounted:
                name = name[: -len(".conv")]  # an ODLinear: its marker is its inner 1x1 conv's, ".conv"
            counted = accounted.get(name)
            costs[name] = LayerLatency(form, times.get(form, float("nan")), times.get(STATIC, float("nan")),
                                       counted.params if counted else 0, counted.madds if counted else 0)
    finally:
        planner.close()
    return costs


__all__ = ["LayerLatency", "layer_costs"]
