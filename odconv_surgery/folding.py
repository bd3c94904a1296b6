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

from .errors import EmptySelectionError, InvalidTypeError, InvalidValueError
from .moments import RunningMoments
from .nn.converted import ConvertedLayer, converted_layers, inner_conv
from .nn.linear import ODLinear, linear_from_pointwise
from .nn.odconv import ODConv2d
from .nn.temperature import temperature_at
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


def per_sample_kernels(layer: ODConv2d, x: Tensor) -> Tensor:
    """The aggregated kernel of each sample of ``x`` (B, C_out, C_in/groups, kh, kw): every attention and the fixed
    ``kernel_scale`` folded in, so that ``conv(x[b], kernel[b]) + bias`` is the layer's output for sample b."""
    att = layer.compute_attentions(x)
    if not layer.share_attention and layer.has_per_sample_kernel():
        return layer._aggregate_unshared(att)
    kernel = layer.aggregate_weight(att) * layer._channel_as_weight(layer.channel_scale(att))
    if att.filter is not None:
        kernel = kernel * att.filter.unsqueeze(-1)
    return kernel.expand(x.shape[0], *kernel.shape[1:])


#: Per-sample kernels are built this many elements at a time at most (a chunk of the batch), so a wide layer's
#: B x |W| kernels never sit in memory at once.
CHUNK_ELEMENTS = 1 << 24


class KernelSpread:
    """The running mean of one layer's per-sample aggregated kernels and their spread around it
    (``moments.RunningMoments``, float64): the mean is what ``fold_static`` folds to, ``dynamism()`` what
    ``kernel_dynamism`` reports."""

    def __init__(self) -> None:
        self.moments = RunningMoments()

    @property
    def count(self) -> int:
        return self.moments.count

    def add(self, layer: ODConv2d, x: Tensor) -> None:
        """Add the kernels of the samples of ``x`` (the layer's input), a chunk of samples at a time."""
        for part in x.split(max(1, CHUNK_ELEMENTS // max(1, layer.weight[0].numel()))):
            self.moments.add(per_sample_kernels(layer, part))

    def mean(self) -> Tensor:
        """The mean kernel, in the layer's kernel shape (float64)."""
        return self.moments.mean

    def dynamism(self) -> float:
        """RMS over samples of ``||K_b - mean K||`` over ``||mean K||`` (inf when the mean kernel is zero)."""
        norm = float(self.moments.mean.norm())
        return float(self.moments.variance().sum()) ** 0.5 / norm if norm else float("inf")


def _inputs(batch) -> tuple:
    """The model's positional inputs from one calibration item: a tensor, a tuple whose first item is the input
    (``(x, y)`` from a DataLoader), or a dict with ``"x"``/``"input"``."""
    if isinstance(batch, Tensor):
        return (batch,)
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return (batch[0],)
    if isinstance(batch, dict):
        for key in ("x", "input", "inputs", "pixel_values"):
            if isinstance(batch.get(key), Tensor):
                return (batch[key],)
    raise InvalidTypeError(f"calibration data items must be tensors or (input, target) pairs, got {type(batch).__name__}")


def _select(model: nn.Module, layers: Sequence[str] | None) -> dict[str, ConvertedLayer]:
    converted = converted_layers(model)
    if not converted:
        raise EmptySelectionError("the model has no ODConv2d layer; convert it with apply_odconv (or load a converted "
                                  "checkpoint) first")
    if layers is None:
        return converted
    if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
        raise InvalidTypeError(f"layers must be a list of layer names (or None for every ODConv2d), got {layers!r}")
    unknown = [n for n in layers if n not in converted]
    if unknown:
        raise InvalidValueError(f"not ODConv2d layers (nor ODLinear) of this model: {unknown}; converted layers: "
                                f"{list(converted)[:10]}")
    return {n: converted[n] for n in dict.fromkeys(layers)}


def _calibration_batches(data: Iterable, max_batches: int | None) -> list[tuple]:
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1):
        raise InvalidValueError(f"max_batches must be an int >= 1 or None, got {max_batches!r}")
    batches = []
    for i, batch in enumerate(data):
        if max_batches is not None and i >= max_batches:
            break
        batches.append(_inputs(batch))
    if not batches:
        raise InvalidValueError("the calibration data is empty: pass a few batches of the model's inputs")
    return batches


def _require_ran(counts: dict[str, int]) -> None:
    never = [name for name, n in counts.items() if not n]
    if never:
        raise InvalidValueError(f"layer {never[0]!r} never ran on the calibration data; give data that reaches it")


def _run_with_hooks(model: nn.Module, chosen: dict[str, ConvertedLayer], batches: list[tuple], record) -> None:
    """Run ``model`` (eval, temperature 1) on ``batches`` with ``record(name, layer, x, y)`` called after each chosen
    layer's forward on a non-empty batch, ``layer`` being the ``ODConv2d`` that computes it (``inner_conv``)."""
    def hook(name: str):
        def call(module: ODConv2d, args, output: Tensor) -> None:
            if args[0].shape[0]:
                record(name, module, args[0].detach(), output.detach())
        return call

    was_training = model.training
    handles = [inner_conv(m).register_forward_hook(hook(name)) for name, m in chosen.items()]
    try:
        with temperature_at(model.eval(), 1.0):
            for inputs in batches:
                model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


@torch.no_grad()
def fold_static(model: nn.Module, data: Iterable, layers: Sequence[str] | None = None, *,
                max_batches: int | None = None) -> tuple[nn.Module, FoldReport]:
    """Replace the ODConv layers ``layers`` (names; None: every one) of ``model``, in place, by plain convolutions
    whose kernel is the layer's mean aggregated kernel over ``data`` (an iterable of input batches or
    ``(input, target)`` pairs, e.g. a DataLoader; ``max_batches`` caps it). Runs in eval mode at temperature 1.
    Returns the model and a ``FoldReport`` with each folded layer's relative output error on the same data."""
    chosen = _select(model, layers)
    batches = _calibration_batches(data, max_batches)
    spreads = {name: KernelSpread() for name in chosen}
    seen: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in chosen}

    def record(name: str, module: ODConv2d, x: Tensor, y: Tensor) -> None:
        spreads[name].add(module, x)
        seen[name].append((x, y))

    _run_with_hooks(model, chosen, batches, record)
    report = []
    _require_ran({name: spread.count for name, spread in spreads.items()})
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
        folded = [n for n in chosen]
        attach_recipe(model, dataclasses.replace(
            recipe, layers={k: v for k, v in recipe.layers.items() if k not in folded},
            folded=sorted(set(recipe.folded) | set(folded))))
    return model, FoldReport(tuple(report))


@torch.no_grad()
def kernel_dynamism(model: nn.Module, data: Iterable, layers: Sequence[str] | None = None, *,
                    max_batches: int | None = None) -> dict[str, float]:
    """How much each ODConv layer's aggregated kernel varies across the samples of ``data``: the root mean square,
    over samples, of ``||K_b - mean K||`` divided by ``||mean K||`` (0: the layer is static on this data and folds
    exactly). A first measure of what a layer's dynamism is worth (``fold_static`` folds the low ones)."""
    chosen = _select(model, layers)
    batches = _calibration_batches(data, max_batches)
    spreads = {name: KernelSpread() for name in chosen}
    _run_with_hooks(model, chosen, batches, lambda name, module, x, y: spreads[name].add(module, x))
    _require_ran({name: spread.count for name, spread in spreads.items()})
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


__all__ = ["FoldReport", "FoldedLayer", "fold_static", "kernel_dynamism", "per_sample_kernels"]
