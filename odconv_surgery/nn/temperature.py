"""Softmax/sigmoid temperature of ODConv attentions, and the paper's annealing schedule.

The paper (after DyConv) divides head logits by T and anneals T linearly from 30 to 1 over the first 10 of
100 epochs; evaluation and export use T = 1.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from torch import nn

from .attention import ODAttention
from .validation import check_int, check_number


def set_temperature(model: nn.Module, temperature: float) -> int:
    """Set T on every ODConv attention in ``model`` that anneals (``temperature_annealing``; the others stay at 1);
    returns how many layers were updated."""
    temperature = check_number("temperature", temperature, above=0)
    count = 0
    for module in model.modules():
        if isinstance(module, ODAttention) and module.temperature_annealing:
            module.temperature = float(temperature)
            count += 1
    return count


def get_temperature(model: nn.Module) -> float | None:
    """The temperature of the first ODConv attention in ``model`` (None when it has none)."""
    for module in model.modules():
        if isinstance(module, ODAttention):
            return module.temperature
    return None


@contextlib.contextmanager
def temperature_at(model: nn.Module, temperature: float) -> Iterator[None]:
    """Every ODConv attention of ``model`` at ``temperature`` inside the block (export and evaluation use T = 1);
    each attention gets its own previous value back on exit."""
    saved = [(m, m.temperature) for m in model.modules() if isinstance(m, ODAttention)]
    try:
        for m, _ in saved:
            m.temperature = float(temperature)
        yield
    finally:
        for m, t in saved:
            m.temperature = t


@dataclass
class TemperatureSchedule:
    """Linear annealing from ``start`` to ``end`` over ``anneal_steps`` steps, then ``end``.

    Call ``schedule.step(model)`` once per step (or epoch) from any training loop; ``schedule.value(step)``
    gives the temperature at a step. The paper: start=30, end=1, anneal_steps = 10% of training.
    """

    anneal_steps: int
    start: float = 30.0
    end: float = 1.0
    current_step: int = 0

    def __post_init__(self) -> None:
        check_int("anneal_steps", self.anneal_steps, minimum=0)
        check_number("start", self.start, above=0)
        check_number("end", self.end, above=0)

    def value(self, step: int) -> float:
        if self.anneal_steps == 0 or step >= self.anneal_steps:
            return self.end
        frac = max(step, 0) / self.anneal_steps
        return self.start + (self.end - self.start) * frac

    def step(self, model: nn.Module) -> float:
        """Apply the temperature for the current step to ``model``, then advance; returns the value applied."""
        t = self.value(self.current_step)
        set_temperature(model, t)
        self.current_step += 1
        return t
