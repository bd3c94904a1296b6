"""What a budgeted placement did: per layer its value, cost and fate, the estimate, every measured check, the
accuracy when it was evaluated; ``summary()`` prints it, ``to_dict()`` is the JSON report."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .budget import Budget
from .choose import priority


@dataclass(frozen=True)
class PlacedLayer:
    """One converted layer: its value, its marginal cost (us; ``cost_measured=False``: not timed, the largest
    measured marginal stands in), whether it stayed dynamic, and, when folded, which step folded it
    (``"estimate"`` or ``"check N"``) and the relative output error the fold caused."""

    name: str
    value: float
    marginal_us: float
    dynamic: bool
    folded_by: str | None = None
    fold_error: float | None = None
    cost_measured: bool = True

    @property
    def value_per_us(self) -> float:
        return priority(self.value, self.marginal_us)


@dataclass(frozen=True)
class Check:
    """One measurement: how many layers were dynamic, the static and placed files' ms, and the verdict."""

    dynamic_layers: int
    static_ms: float
    placed_ms: float
    fits: bool

    @property
    def ratio(self) -> float:
        return self.placed_ms / self.static_ms


@dataclass(frozen=True)
class Accuracy:
    """Top-1 (%) on the labelled test set: the input model, after folding, after the brief fine-tuning (None when
    it did not run)."""

    input: float
    folded: float
    finetuned: float | None = None


@dataclass(frozen=True)
class PlacementResult:
    """The outcome of ``place_under_budget``. ``layers`` are in ranking order (best value per microsecond first);
    ``checks[0]`` is the input model (every layer dynamic), the last one the returned model."""

    budget: Budget
    value_measure: str
    cost_source: str
    threads: int
    target: str
    tolerance: float
    layers: tuple[PlacedLayer, ...]
    estimated_ms: float
    checks: tuple[Check, ...]
    met: bool
    note: str = ""
    accuracy: Accuracy | None = None
    finetune_steps: int = 0
    machine: str = ""

    @property
    def chosen(self) -> list[str]:
        """The layers that stay dynamic."""
        return [layer.name for layer in self.layers if layer.dynamic]

    @property
    def folded(self) -> list[str]:
        """The layers folded back into plain convolutions."""
        return [layer.name for layer in self.layers if not layer.dynamic]

    @property
    def measured(self) -> Check:
        """The returned model's measurement."""
        return self.checks[-1]

    @property
    def static_ms(self) -> float:
        return self.measured.static_ms

    @property
    def estimated_ratio(self) -> float:
        return self.estimated_ms / self.checks[0].static_ms

    def summary(self) -> str:
        first, last = self.checks[0], self.measured
        verdict = "met" if self.met else "NOT met"
        lines = [
            (f"budget {self.budget} (+{self.tolerance:.0%} noise) on {self.target}, {self.threads} thread(s), "
             f"batch 1: {verdict}; {len(self.chosen)} of {len(self.layers)} layers stay dynamic"),
            *([f"machine: {self.machine}"] if self.machine else []),
            (f"static model {last.static_ms:.3f} ms; input model ({first.dynamic_layers} dynamic layers) "
             f"{first.placed_ms:.3f} ms, {first.ratio:.2f}x"),
            (f"estimate {self.estimated_ms:.3f} ms, {self.estimated_ratio:.2f}x; measured {last.placed_ms:.3f} ms, "
             f"{last.ratio:.2f}x (check {len(self.checks) - 1})"),
        ]
        if self.note:
            lines.append(self.note)
        if self.accuracy is not None:
            tuned = "" if self.accuracy.finetuned is None else \
                f", fine-tuned {self.accuracy.finetuned:.2f} ({self.finetune_steps} step(s))"
            lines.append(f"top-1 %: input {self.accuracy.input:.2f}, folded {self.accuracy.folded:.2f}{tuned}")
        lines += ["", f"| rank | layer | value ({self.value_measure}) | marginal us | value/us | placement | fold error |",
                  "|---|---|---|---|---|---|---|"]
        for i, layer in enumerate(self.layers, 1):
            per_us = "free" if math.isinf(layer.value_per_us) else f"{layer.value_per_us:.3g}"
            where = "dynamic" if layer.dynamic else f"folded ({layer.folded_by})"
            error = "" if layer.fold_error is None else f"{layer.fold_error:.3g}"
            cost = f"{layer.marginal_us:.1f}{'' if layer.cost_measured else ' (not timed: the largest)'}"
            lines.append(f"| {i} | {layer.name} | {layer.value:.3g} | {cost} | {per_us} | {where} | {error} |")
        lines += ["", "| check | dynamic layers | static ms | placed ms | ratio | within budget |", "|---|---|---|---|---|---|"]
        for i, check in enumerate(self.checks):
            label = "input" if i == 0 else str(i)
            lines.append(f"| {label} | {check.dynamic_layers} | {check.static_ms:.3f} | {check.placed_ms:.3f} | "
                         f"{check.ratio:.3f} | {'yes' if check.fits else 'no'} |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The JSON report: every field, the budget as text, the derived figures beside them."""
        out = asdict(self)
        out["budget"] = str(self.budget)
        out["layers"] = [{**asdict(layer), "value_per_us": _finite(layer.value_per_us)} for layer in self.layers]
        out["checks"] = [{**asdict(check), "ratio": check.ratio} for check in self.checks]
        out.update(chosen=self.chosen, folded=self.folded, static_ms=self.static_ms, measured_ms=self.measured.placed_ms,
                   measured_ratio=self.measured.ratio, estimated_ratio=self.estimated_ratio)
        for layer in out["layers"]:
            layer["value"] = _finite(layer["value"])
        return out


def _finite(number: float) -> float | str:
    """JSON has no infinity: ``"inf"`` stands for it."""
    return number if math.isfinite(number) else str(number)


__all__ = ["Accuracy", "Check", "PlacedLayer", "PlacementResult"]
