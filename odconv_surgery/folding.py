"""Fold converted layers back into plain convolutions: each ODConv layer becomes an ``nn.Conv2d`` (an ``ODLinear`` an
``nn.Linear``) whose kernel is the layer's mean aggregated kernel over calibration data, every attention (channel,
filter, spatial, kernel) folded in. After fine-tuning, a layer whose kernel hardly varies across inputs costs an ODConv layer's fixed
overhead for little; folding it keeps what it learned at a static conv's price.

A layer whose attentions are constant folds exactly. For the others the report gives, per layer, the relative
error of the folded layer's output against the layer's own, on the same data (max |y_fold - y| / max |y|, the
measure of ``numerics.relative_error``). The folded layers are recorded in the model's recipe (``Recipe.folded``),
so ``save`` / ``load`` rebuild them as plain convs; export and ``fuse_batchnorm`` see ordinary convs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from .calibration import KernelSpread, calibration_batches, require_ran, run_with_hooks, select_converted
from .nn.converted import inner_conv
from .nn.linear import ODLinear, linear_from_pointwise
from .nn.odconv import ODConv2d
from .passes.fx.swap_modules import swap_module
from .recipe import attach_recipe, get_recipe


@dataclasses.dataclass(frozen=True)
class FoldedLayer:
    """One folded layer: its name and the relative error its fold causes on the calibration data."""

    name: str
    relative_error: float
    samples: int


@dataclasses.dataclass(frozen=True)
class FoldReport:
    layers: tuple[FoldedLayer, ...]

    def summary(self) -> str:
        rows = [f"{layer.name}: relative output error {layer.relative_error:.3g} ({layer.samples} samples)"
                for layer in self.layers]
        return f"folded {len(self.layers)} layer(s) back into plain convolutions\n" + "\n".join(rows)


@torch.no_grad()
def fold_static(model: nn.Module, data: Iterable, layers: Sequence[str] | None = None, *,
                max_batches: int | None = None) -> tuple[nn.Module, FoldReport]:
    """Replace the ODConv layers ``layers`` (names; None: every one) of ``model``, in place, by plain convolutions
    whose kernel is the layer's mean aggregated kernel over ``data`` (an iterable of input batches or
    ``(input, target)`` pairs, e.g. a DataLoader; ``max_batches`` caps it). Runs in eval mode at temperature 1.
    Returns the model and a ``FoldReport`` with each folded layer's relative output error on the same data."""
    chosen = select_converted(model, layers)
    batches = calibration_batches(data, max_batches)
    spreads = {name: KernelSpread() for name in chosen}
    seen: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in chosen}

    def record(name: str, module: ODConv2d, x: Tensor, y: Tensor) -> None:
        spreads[name].add(module, x)
        seen[name].append((x, y))

    run_with_hooks(model, chosen, batches, record)
    report = []
    require_ran({name: spread.count for name, spread in spreads.items()})
    for name, layer in chosen.items():
        inner = inner_conv(layer)
        conv = _plain_conv(inner, spreads[name].mean().to(inner.weight.dtype))
        worst_diff = worst_ref = 0.0
        for x, y in seen[name]:
            diff = (conv(x) - y).abs().max().item()
            worst_diff, worst_ref = max(worst_diff, diff), max(worst_ref, y.abs().max().item())
        report.append(FoldedLayer(name, worst_diff / worst_ref if worst_ref else worst_diff, spreads[name].count))
        swap_module(model, layer, linear_from_pointwise(conv) if isinstance(layer, ODLinear) else conv)
    recipe = get_recipe(model)
    if recipe is not None:
        attach_recipe(model, recipe.with_folded(chosen))
    return model, FoldReport(tuple(report))


@torch.no_grad()
def kernel_dynamism(model: nn.Module, data: Iterable, layers: Sequence[str] | None = None, *,
                    max_batches: int | None = None) -> dict[str, float]:
    """How much each ODConv layer's aggregated kernel varies across the samples of ``data``: the root mean square,
    over samples, of ``||K_b - mean K||`` divided by ``||mean K||`` (0: the layer is static on this data and folds
    exactly). A first measure of what a layer's dynamism is worth (``fold_static`` folds the low ones)."""
    chosen = select_converted(model, layers)
    batches = calibration_batches(data, max_batches)
    spreads = {name: KernelSpread() for name in chosen}
    run_with_hooks(model, chosen, batches, lambda name, module, x, y: spreads[name].add(module, x))
    require_ran({name: spread.count for name, spread in spreads.items()})
    return {name: spread.dynamism() for name, spread in spreads.items()}


def _plain_conv(layer: ODConv2d, kernel: Tensor) -> nn.Conv2d:
    """An ``nn.Conv2d`` with ``layer``'s geometry, ``kernel`` and bias (gradients as the layer's bank had them)."""
    conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                     layer.dilation, layer.groups, bias=layer.bias is not None, padding_mode=layer.padding_mode,
                     device=layer.weight.device, dtype=layer.weight.dtype)
    conv.weight.copy_(kernel)
    conv.weight.requires_grad_(layer.weight.requires_grad)
    if layer.bias is not None:
        conv.bias.copy_(layer.bias)
        conv.bias.requires_grad_(layer.bias.requires_grad)
    return conv


__all__ = ["FoldReport", "FoldedLayer", "fold_static", "kernel_dynamism"]
