"""Fallback for models torch.fx cannot trace: record the execution order of convs (and Linears) with forward hooks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .tracer import CONV_TYPES


def record_conv_order(
    model: nn.Module, example_inputs: Sequence[Any], types: tuple[type[nn.Module], ...] = CONV_TYPES
) -> list[str]:
    """Qualified names of conv modules (of ``types``: ``LAYER_TYPES`` adds the Linears) in the order of their first
    call during one forward of ``example_inputs``.

    Runs in eval mode under ``no_grad`` (restoring the training flags after) so BatchNorm statistics are untouched.
    The convs inside a converted layer (its attention's) are not the model's: they are left out, as fx leaves them.
    """
    from ...nn.odconv import ODConv2d

    inside = {id(sub) for m in model.modules() if isinstance(m, ODConv2d) for sub in m.modules()}
    names = {}
    for name, module in model.named_modules():
        if isinstance(module, types) and id(module) not in inside:
            names.setdefault(id(module), name)
    order: list[str] = []
    seen: set[int] = set()

    def hook(module: nn.Module, _inputs: Any) -> None:
        if id(module) not in seen:
            seen.add(id(module))
            order.append(names[id(module)])

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if id(m) in names]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return order
