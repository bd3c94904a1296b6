"""Parameter and MAdds accounting, per layer and in total, before and after ODConv conversion.

Static convolution / linear MAdds come from torch's own ``torch.utils.flop_counter`` (it counts FLOPs = 2 x
MAdds for conv and matmul; we halve them). ODConv's extra MAdds follow the paper's Appendix A.1:

    Eq. 3 (n = 1):  hw c_in + A (2 c_in + c_out + k^2)     + k^2 c_in (1 + 2 c_out)
    Eq. 4 (n > 1):  hw c_in + A (2 c_in + c_out + k^2 + n) + k^2 c_in (1 + c_out + 2 n c_out)

where A = c_in r is the attention width (the paper's c_in / r with r = 16; we use the layer's actual
``attention.hidden_channels``, which the reference code floors at 16) and hw is the output map size, as in the
paper's h w k^2 c_in c_out for the static convolution (using the input map the GAP really pools instead adds
~1-2% to the extra MAdds and moves away from the paper's published totals).
The equations are written for dense convolutions; we account for the layer as built:

* kernel-aggregation terms use the kernel's real input depth c_in / groups (a depthwise kernel has depth 1);
* the head term counts only the heads the layer has (``nn.attention.head_widths``): heads are n times wider when
  attention is not shared between kernels; without the trunk (CondConv) the heads read the pooled input, and with
  ``pool_size`` p the first FC reads p^2 c_in values;
* a layer whose only attention is the kernel one (CondConv, DyConv) aggregates with n |W| MAdds, a weighted sum of
  its n kernels; a single-kernel layer with one attention with |W| (one multiply per kernel weight). Both
  reproduce the paper's counts (Tables 1, 2, 7); its multi-attention rows of Table 7 follow no single rule, and
  we keep Eq. 3/4 for them.

The flop counter also sees the attention's own 1x1 convolutions inside an ``ODConv2d``; those are excluded from
the static count (the equations above already include them), so ``madds = static + extra`` is not double
counted. An ``ODLinear`` is one layer (kind ``"odlinear"``), counted as the 1x1 ``ODConv2d`` it holds on a 1 x 1
map: the matmul of its aggregated kernel, plus the routing and the n |W| aggregation of a kernel-only layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from collections.abc import Mapping
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import InvalidValueError, LayerNotFoundError
from .nn.converted import CONVERTED_TYPES, inner_conv
from .nn.linear import ODLinear
from .nn.odconv import ODConv2d

__all__ = [
    "LayerCost",
    "ModelCost",
    "count_cost",
    "odconv_extra_madds",
    "compare_costs",
    "format_count",
]


@dataclass
class LayerCost:
    """Cost of one convolution / linear / ODConv layer for one forward pass of a single sample."""

    name: str
    kind: str  # "conv", "linear", "odconv" or "odlinear"
    params: int  # all parameters of the layer (for ODConv, ODLinear: kernel bank + bias + attention)
    static_madds: int  # the (aggregated) convolution / matmul itself, from torch's flop counter
    extra_madds: int = 0  # ODConv attention + kernel aggregation, paper Eq. 3/4
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()
    geometry: str = ""

    @property
    def madds(self) -> int:
        return self.static_madds + self.extra_madds


@dataclass
class ModelCost:
    """Totals and per-layer costs of a model at one input size (batch 1)."""

    params: int
    static_madds: int  # every op torch's flop counter counts, minus ODConv attention internals
    extra_madds: int  # sum of ODConv extras (Eq. 3/4)
    input_shape: tuple[int, ...]  # the first input's, at batch 1
    layers: list[LayerCost] = field(default_factory=list)
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)  # every input's, when there are several

    @property
    def madds(self) -> int:
        return self.static_madds + self.extra_madds

    def layer(self, name: str) -> LayerCost:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise LayerNotFoundError(f"no layer named {name!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["madds"] = self.madds
        for row, layer in zip(out["layers"], self.layers):
            row["madds"] = layer.madds
        return out

    def table(self) -> str:
        """A markdown table of the layers and the totals."""
        lines = [
            f"input {', '.join(map(str, self.input_shapes)) or tuple(self.input_shape)}: params {format_count(self.params)}, MAdds {format_count(self.madds)} "
            f"(static {format_count(self.static_madds)} + ODConv extra {format_count(self.extra_madds)})",
            "",
            "| layer | kind | geometry | params | static MAdds | extra MAdds |",
            "|---|---|---|---:|---:|---:|",
        ]
        for layer in self.layers:
            lines.append(
                f"| {layer.name} | {layer.kind} | {layer.geometry} | {format_count(layer.params)} | "
                f"{format_count(layer.static_madds)} | {format_count(layer.extra_madds) if layer.extra_madds else '-'} |"
            )
        return "\n".join(lines)


def format_count(value: float) -> str:
    """Human-readable count: 311.8M, 1.838G, 4.94M, 723K."""
    value = float(value)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            digits = 3 if unit == "G" else (2 if unit == "M" and abs(value) < 1e7 else 1)
            return f"{value / scale:.{digits}f}{unit}"
    return f"{int(value)}"


def odconv_extra_madds(layer: ODConv2d, out_hw: tuple[int, int]) -> int:
    """Extra MAdds of one ODConv layer over its static convolution (paper Eq. 3/4, groups accounted).

    ``out_hw`` is the spatial size of the layer output: the paper's h, w (same notation as h w k^2 c_in c_out).
    """
    att = layer.attention
    heads = att.heads()
    if not heads:
        return 0
    c_in, c_out, groups, n = layer.in_channels, layer.out_channels, layer.groups, layer.kernel_num
    kh, kw = layer.kernel_size
    k2 = kh * kw
    gap = out_hw[0] * out_hw[1] * c_in
    pooled = c_in * att.pool_size**2
    head_outputs = sum(head.out_channels for head in heads.values())
    hidden = att.hidden_channels
    # trunk FC (pooled c_in -> A) + heads (A -> outputs); without a trunk the heads read the pooled input
    attention = hidden * (pooled + head_outputs) if hidden else pooled * head_outputs
    c_in_kernel = c_in // groups
    kernel_size = c_out * c_in_kernel * k2
    if set(heads) == {"kernel"}:
        aggregation = n * kernel_size  # CondConv / DyConv: a weighted sum of n kernels
    elif n == 1 and len(heads) == 1:
        aggregation = kernel_size  # one attention: one multiply per kernel weight (Table 7's single-head rows)
    elif n == 1:
        aggregation = k2 * c_in_kernel * (1 + 2 * c_out)
    else:
        aggregation = k2 * c_in_kernel * (1 + c_out + 2 * n * c_out)
    return int(gap + attention + aggregation)


def _geometry(module: nn.Module) -> str:
    if isinstance(module, (nn.Conv2d, ODConv2d)):
        kh, kw = module.kernel_size
        text = f"{module.in_channels}->{module.out_channels} {kh}x{kw}"
        stride = tuple(module.stride)
        if stride != (1, 1):
            text += f" s{stride[0]}" if stride[0] == stride[1] else f" s{stride}"
        if module.groups == module.in_channels == module.out_channels and module.groups > 1:
            text += " dw"
        elif module.groups > 1:
            text += f" g{module.groups}"
        if isinstance(module, ODConv2d):
            text += f" n={module.kernel_num}"
        return text
    if isinstance(module, (nn.Linear, ODLinear)):
        text = f"{module.in_features}->{module.out_features}"
        return text + (f" n={module.conv.kernel_num}" if isinstance(module, ODLinear) else "")
    return ""


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _unique_params(model: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _example_input(model: nn.Module, input_shape: Sequence[int]) -> Tensor:
    ref = next(iter(model.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    return torch.zeros(tuple(input_shape), device=device, dtype=dtype)


@torch.no_grad()
def count_cost(
    model: nn.Module,
    input_shape: Sequence[int] = (1, 3, 224, 224),
    *,
    example_input: Tensor | Sequence[Tensor] | Mapping[str, Tensor] | None = None,
) -> ModelCost:
    """Params and MAdds of ``model`` for one sample, per conv / linear / ODConv layer and in total.

    Runs one eval-mode forward under ``FlopCounterMode`` (the model's train/eval mode is restored). Pass
    ``input_shape`` (batch 1, e.g. ``(1, 3, 224, 224)``) or an ``example_input``: a tensor of any rank, a tuple of
    forward's positional arguments or a dict of its keyword arguments (models with several inputs). The first
    tensor's dimension 0 is the batch; MAdds are per sample: a batch larger than 1 is divided out.
    """
    if example_input is None:
        if len(input_shape) < 2:
            raise InvalidValueError(f"input_shape must include the batch dimension, e.g. (1, 3, 224, 224); got {input_shape}")
        example_input = _example_input(model, input_shape)
    args, kwargs = _as_call(example_input)
    tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, Tensor)]
    if not tensors:
        raise TypeError("example_input holds no tensor: pass a tensor, a tuple of forward's arguments or a dict of them")
    batch = int(tensors[0].shape[0]) if tensors[0].dim() > 0 else 1
    if batch < 1:
        raise InvalidValueError("example_input has an empty batch")

    tracked, attentions = _tracked_layers(model)
    records, total_flops, attention_flops = _record_flops(model, args, kwargs, tracked, attentions)
    layers = _layer_costs(tracked, records, batch)
    return ModelCost(
        params=_unique_params(model),
        static_madds=int((total_flops - attention_flops) // (2 * batch)),
        extra_madds=int(sum(layer.extra_madds for layer in layers)),
        input_shape=(1, *tuple(tensors[0].shape[1:])),
        layers=layers,
        input_shapes=[(1, *tuple(t.shape[1:])) for t in tensors] if len(tensors) > 1 else [],
    )


def _as_call(example_input: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """forward's (args, kwargs) for ``example_input``: a tensor, a tuple/list of arguments or a dict of keywords."""
    if isinstance(example_input, Tensor):
        return (example_input,), {}
    if isinstance(example_input, (tuple, list)):
        return tuple(example_input), {}
    if isinstance(example_input, Mapping):
        return (), dict(example_input)
    raise TypeError(
        f"example_input must be a tensor, a tuple of forward's arguments or a dict of them, got {type(example_input).__name__}"
    )


def _tracked_layers(model: nn.Module) -> tuple[dict[nn.Module, str], dict[nn.Module, str]]:
    """The conv / linear / ODConv / ODLinear modules to count (not those inside an ODConv or ODLinear) by name, and
    the ODConv attentions, named after their layer."""
    tracked: dict[nn.Module, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, *CONVERTED_TYPES)) and module not in tracked:
            inside_odconv = any(isinstance(m, CONVERTED_TYPES) and name.startswith(n + ".") for m, n in tracked.items())
            if not inside_odconv:
                tracked[module] = name
    attentions = {inner_conv(m).attention: n for m, n in tracked.items() if isinstance(m, CONVERTED_TYPES)}
    return tracked, attentions


def _record_flops(
    model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], tracked: dict[nn.Module, str], attentions: dict[nn.Module, str]
) -> tuple[dict[str, dict[str, Any]], int, int]:
    """One eval-mode forward under ``FlopCounterMode`` with hooks on the tracked layers: per layer name its flops
    (attention flops apart), calls and shapes; plus the total and the attention flops. Restores train/eval."""
    records: dict[str, dict[str, Any]] = {}
    attention_flops = 0
    counter = FlopCounterMode(display=False)
    starts: dict[int, list[int]] = {}

    def pre_hook(module: nn.Module, args: tuple) -> None:
        starts.setdefault(id(module), []).append(counter.get_total_flops())

    def post_hook(module: nn.Module, args: tuple, output: Any) -> None:
        nonlocal attention_flops
        flops = counter.get_total_flops() - starts[id(module)].pop()
        if module in attentions:
            attention_flops += flops
            records[attentions[module]]["attention_flops"] += flops
            return
        name = tracked[module]
        rec = records.setdefault(name, {"flops": 0, "attention_flops": 0, "calls": 0, "in": (), "out": ()})
        rec["flops"] += flops
        rec["calls"] += 1
        x = args[0] if args else None
        if isinstance(x, Tensor):
            rec["in"] = tuple(x.shape[1:])
        if isinstance(output, Tensor):
            rec["out"] = tuple(output.shape[1:])

    handles = []
    for module in list(tracked) + list(attentions):
        if module in attentions:
            records.setdefault(attentions[module], {"flops": 0, "attention_flops": 0, "calls": 0, "in": (), "out": ()})
        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(post_hook))
    was_training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with counter:
            model(*args, **kwargs)
        total_flops = counter.get_total_flops()
    finally:
        for h in handles:
            h.remove()
        for m, mode in was_training.items():
            m.training = mode
    return records, total_flops, attention_flops


def _layer_costs(tracked: dict[nn.Module, str], records: dict[str, dict[str, Any]], batch: int) -> list[LayerCost]:
    """One ``LayerCost`` per tracked layer that ran, MAdds per sample."""
    layers: list[LayerCost] = []
    for module, name in tracked.items():
        rec = records.get(name)
        if rec is None or rec["calls"] == 0:
            continue  # not used in forward
        static = (rec["flops"] - rec["attention_flops"]) // (2 * batch)
        extra = 0
        kind = "linear" if isinstance(module, nn.Linear) else "conv"
        if isinstance(module, CONVERTED_TYPES):
            kind = "odlinear" if isinstance(module, ODLinear) else "odconv"
            out_hw = rec["out"][-2:] if len(rec["out"]) >= 2 else (1, 1)  # an ODLinear's (N, C) output: a 1 x 1 map
            extra = odconv_extra_madds(inner_conv(module), (int(out_hw[0]), int(out_hw[1]))) * rec["calls"]
        layers.append(
            LayerCost(
                name=name,
                kind=kind,
                params=_own_params(module),
                static_madds=int(static),
                extra_madds=int(extra),
                in_shape=rec["in"],
                out_shape=rec["out"],
                geometry=_geometry(module),
            )
        )
    return layers


def compare_costs(before: ModelCost, after: ModelCost) -> str:
    """A markdown table of per-layer params/MAdds before and after conversion, with totals."""
    after_by_name = {layer.name: layer for layer in after.layers}
    lines = [
        "| layer | before | after | params before | params after | MAdds before | MAdds after |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    seen: set[str] = set()
    for layer in before.layers:
        other = after_by_name.get(layer.name)
        seen.add(layer.name)
        if other is None:
            lines.append(
                f"| {layer.name} | {layer.kind} | - | {format_count(layer.params)} | - | {format_count(layer.madds)} | - |"
            )
            continue
        lines.append(
            f"| {layer.name} | {layer.kind} | {other.kind} | {format_count(layer.params)} | {format_count(other.params)} "
            f"| {format_count(layer.madds)} | {format_count(other.madds)} |"
        )
    for layer in after.layers:
        if layer.name not in seen:
            lines.append(f"| {layer.name} | - | {layer.kind} | - | {format_count(layer.params)} | - | {format_count(layer.madds)} |")
    lines.append(
        f"| **total** | | | {format_count(before.params)} | {format_count(after.params)} "
        f"| {format_count(before.madds)} | {format_count(after.madds)} |"
    )
    return "\n".join(lines)
