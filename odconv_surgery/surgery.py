"""``apply_odconv``: pick convolutions with a placement policy and rewrite them into ``ODConv2d`` in place.

Pipeline: trace (torch.fx, convs as leaves) -> analyse with networkx (order, blocks, shortcuts) -> policy +
include/exclude/overrides -> swap modules by qualified name in the original module tree (every alias).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from .nn.odconv import INIT_MODES, ODConv2d
from .model_copy import copy_model
from .passes.fx.candidates import ConvLayer, ModelAnalysis, analyse_model, scripted_convs, uncalled_convs
from .passes.fx.swap_modules import aliases_of, swap_module
from .policies import PAPER_POLICIES, Policy, Selector, available_policies, decide, get_policy, select
from .policies.selectors import as_selector_list, describe
from .recipe import Recipe, attach_recipe, get_recipe
from .nn.validation import bank_bytes, check_bool, check_choice, check_int, check_layer_settings, check_memory, format_bytes

INIT_TEMPORARIES = 3  # banks of temporaries ODConv2d.from_conv holds at its peak: repeated kernel, noise, centred noise
from .report import ConversionReport, LayerReport, format_table
from .errors import AlreadyConvertedError  # noqa: F401 - raised here, defined with every error


class ConversionResult(NamedTuple):
    """``model, report = apply_odconv(...)``."""

    model: nn.Module
    report: ConversionReport


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """The module inside DataParallel / DistributedDataParallel (surgery must happen before wrapping)."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return model.module
    return model


def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _policy_label(policy: str | Policy | None) -> str | None:
    if policy is None or isinstance(policy, str):
        return policy
    return f"custom:{getattr(policy, '__name__', type(policy).__name__)}"


def _check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"apply_odconv expects a torch.nn.Module, got {type(model).__name__}; pass the model object itself")
    return unwrap_parallel(model)


def plan_conversion(
    analysis: ModelAnalysis,
    policy: str | Policy | None,
    include: Selector | Sequence[Selector] | None = None,
    exclude: Selector | Sequence[Selector] | None = None,
    overrides: Mapping[Selector, Mapping[str, Any] | None] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> tuple[dict[str, tuple[bool, str]], dict[str, dict[str, Any]]]:
    """Decide, without touching the model, which convs convert and with which settings.

    Returns ``decisions`` (name -> (converted, reason)) and ``settings`` (name -> ODConv2d kwargs) for the
    selected ones. Order of precedence: policy, then ``include``, then ``exclude``, then ``overrides``
    (a ``None`` value skips the layer, a mapping changes its settings).
    """
    resolved = None if policy is None else get_policy(policy)
    layers = analysis.layers
    decisions: dict[str, tuple[bool, str]] = {}
    for layer in layers:
        if layer.not_convertible:
            decisions[layer.name] = (False, layer.not_convertible)
        elif resolved is None:
            decisions[layer.name] = (False, "policy=None")
        else:
            decisions[layer.name] = decide(resolved, layer, analysis)
    by_name = {layer.name: layer for layer in layers}
    for selector in as_selector_list(include, "include"):
        names = select(selector, layers, "include")
        convertible = [n for n in names if not by_name[n].not_convertible]
        if not convertible:
            reasons = {n: by_name[n].not_convertible for n in names}
            raise ValueError(f"include selector {describe(selector)} matches only convs that cannot convert: {reasons}")
        for name in convertible:
            decisions[name] = (True, f"include {describe(selector)}")
    for selector in as_selector_list(exclude, "exclude"):
        for name in select(selector, layers, "exclude"):
            if decisions[name][0]:
                decisions[name] = (False, f"exclude {describe(selector)}")
    settings = {name: dict(defaults or {}) for name, (chosen, _) in decisions.items() if chosen}
    for selector, value in _check_overrides(overrides).items():
        for name in select(selector, layers, "overrides"):
            if value is None:
                if decisions[name][0]:
                    decisions[name] = (False, f"override {describe(selector)} -> None")
                    settings.pop(name, None)
                continue
            if name in settings:
                settings[name].update(value)
    return decisions, settings


def _check_overrides(overrides: Any) -> dict[Selector, dict[str, Any] | None]:
    """``{selector: settings dict or None}``, each settings dict checked like apply_odconv's arguments."""
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise TypeError(f"overrides must be a dict {{selector: settings dict or None}}, got {overrides!r} ({type(overrides).__name__})")
    checked: dict[Selector, dict[str, Any] | None] = {}
    for selector, value in overrides.items():
        where = f"overrides[{selector!r}]"
        if value is not None and not isinstance(value, Mapping):
            raise TypeError(f"{where} must be a dict of ODConv2d settings (e.g. {{'kernel_num': 4}}) or None, got {value!r} ({type(value).__name__})")
        checked[selector] = None if value is None else check_layer_settings(value, where)
    return checked


def apply_odconv(
    model: nn.Module,
    policy: str | Policy | None = "all_but_first",
    *,
    kernel_num: int = 1,
    reduction: float = 1 / 16,
    min_attention_channels: int = 16,
    share_attention: bool = True,
    attention_norm: str = "bn",
    init: str = "pretrained",
    include: Selector | Sequence[Selector] | None = None,
    exclude: Selector | Sequence[Selector] | None = None,
    overrides: Mapping[Selector, Mapping[str, Any] | None] | None = None,
    example_inputs: torch.Tensor | Sequence[Any] | None = None,
    inplace: bool = False,
    seed: int | None = 0,
) -> ConversionResult:
    """Rewrite the convolutions chosen by ``policy`` into ``ODConv2d`` and return ``(model, report)``.

    ``policy``: a registered name (``"all_but_first"``, ``"1x1"``, ``"3x3"``, ``"last:6"``, ``"all"``), a
    callable ``(layer, analysis) -> bool``, or ``None`` to convert only what ``include`` selects.
    ``init="pretrained"`` keeps the model's function at conversion (eval mode); ``"neutral"`` starts from the
    same neutral attention without rescaling the kernels (for training from scratch); ``"scratch"`` is the
    paper's initialisation. ``example_inputs`` (a tensor or a tuple of forward's arguments) are only needed when
    torch.fx cannot trace the model. The model keeps its class, methods and untouched weights; with
    ``inplace=False`` (default) a deep copy is converted. A model converted before can be converted further
    (e.g. ``"1x1"`` then ``"3x3"``): its recipe then describes the layers of every call.
    """
    model = _check_model(model)
    defaults = check_layer_settings(
        {
            "kernel_num": kernel_num,
            "reduction": reduction,
            "min_attention_channels": min_attention_channels,
            "share_attention": share_attention,
            "attention_norm": attention_norm,
        }
    )
    check_choice("init", init, INIT_MODES)
    check_bool("inplace", inplace)
    if seed is not None:
        check_int("seed", seed)
    example_inputs = as_example_inputs(example_inputs)
    if not inplace:
        model = copy_model(model)
    analysis = analyse_model(model, example_inputs)
    decisions, settings = plan_conversion(analysis, policy, include, exclude, overrides, defaults)
    if not settings:
        raise _nothing_selected(model, analysis, policy)
    check_bank_memory(analysis, settings)
    params_before = _count_params(model)
    uncalled = uncalled_convs(model, analysis)
    aliases = {layer.name: aliases_of(model, layer.module) for layer in analysis.layers}
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    for layer in analysis.layers:
        if layer.name in settings:
            with torch.no_grad():
                new = ODConv2d.from_conv(layer.module, init=init, generator=generator, **settings[layer.name])
            if keep_frozen(layer.module, new):
                decisions[layer.name] = (True, f"{decisions[layer.name][1]}; frozen (requires_grad=False kept)")
            swap_module(model, layer.module, new)

    rows = [_layer_row(layer, decisions[layer.name], aliases[layer.name]) for layer in analysis.layers]
    rows += [
        LayerReport(name, type(m).__name__, "-", "-", getattr(m, "groups", 1), getattr(m, "in_channels", 0),
                    getattr(m, "out_channels", 0), None, False, "never called in forward")
        for name in uncalled
        for m in [model.get_submodule(name)]
    ]
    rows += [
        LayerReport(name, f"{m.original_name} (scripted)", "x".join(map(str, m.kernel_size)), "x".join(map(str, m.stride)),
                    m.groups, m.in_channels, m.out_channels, None, False,
                    f"inside torch.jit.script module {root!r}: its compiled code cannot call a replaced layer; "
                    "convert the eager module, then script it")
        for name, m, root in scripted_convs(model)
    ]
    report = ConversionReport(_policy_label(policy), rows, params_before, _count_params(model), analysis.method)
    attach_recipe(model, _merged_recipe(get_recipe(model), policy, defaults, init, settings))
    return ConversionResult(model, report)


def keep_frozen(conv: nn.Conv2d, layer: ODConv2d) -> bool:
    """Carry the user's freezing over: a conv whose weight has ``requires_grad=False`` becomes an ODConv layer
    whose kernel bank and attention are frozen too (it then computes exactly the static conv, and unfreezing it
    later with ``requires_grad_(True)`` makes it a normal ODConv layer). The bias keeps its own flag.
    Returns whether the layer was frozen."""
    frozen = not conv.weight.requires_grad
    if frozen:
        layer.requires_grad_(False)
    if layer.bias is not None and conv.bias is not None:
        layer.bias.requires_grad_(conv.bias.requires_grad)
    return frozen


def as_example_inputs(example_inputs: Any) -> tuple[Any, ...] | None:
    """forward's positional arguments as a tuple: a bare tensor is one argument (as ``torch.onnx.export`` takes ``args``)."""
    if example_inputs is None:
        return None
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise TypeError(
        f"example_inputs must be a tensor or a tuple of forward's arguments, got {type(example_inputs).__name__}"
    )


def _odconv_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, ODConv2d)]


def _nothing_selected(model: nn.Module, analysis: ModelAnalysis, policy: str | Policy | None) -> Exception:
    """The error for a policy that selects nothing: says so when the model is already (fully) converted."""
    converted = _odconv_names(model)
    left = [layer.name for layer in analysis.layers if not layer.not_convertible]
    if converted and not left:
        shown = ", ".join(converted[:10]) + (f" ... (+{len(converted) - 10})" if len(converted) > 10 else "")
        return AlreadyConvertedError(
            f"model is already converted: {len(converted)} ODConv2d layers ({shown}) and no convolution is left to "
            f"convert; apply policy {_policy_label(policy)!r} to the original model instead"
        )
    already = f"; the model already holds {len(converted)} ODConv2d layers" if converted else ""
    return ValueError(
        f"policy {_policy_label(policy)!r} selects no convolution in {type(model).__name__} "
        f"({len(left)} convertible conv(s) found: {left[:10]}{already}). Choose another policy "
        f"({', '.join(available_policies())}) or name layers with include=."
    )


def check_bank_memory(analysis: ModelAnalysis, settings: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse before allocating when the new kernel banks would not fit in the memory their device has free.

    Counts every selected layer's bank plus, for the largest one, the temporaries its initialisation holds
    (the repeated static kernel and the perturbation noise, ``INIT_TEMPORARIES`` banks).
    """
    by_name = {layer.name: layer for layer in analysis.layers}
    per_device: dict[torch.device, list[tuple[int, str]]] = {}
    for name, layer_settings in settings.items():
        conv = by_name[name].module
        size = bank_bytes(layer_settings["kernel_num"], conv.out_channels, conv.in_channels // conv.groups,
                          tuple(conv.kernel_size), conv.weight.dtype)
        per_device.setdefault(conv.weight.device, []).append((size, name))
    for device, banks in per_device.items():
        largest, name = max(banks)
        check_memory(
            sum(size for size, _ in banks) + INIT_TEMPORARIES * largest, device,
            f"converting {len(banks)} layer(s) (largest bank: {name}, {format_bytes(largest)})",
            "lower kernel_num, convert fewer layers, or convert on a device with more memory",
        )


def _merged_recipe(
    previous: Recipe | None, policy: str | Policy | None, defaults: Mapping[str, Any], init: str,
    settings: Mapping[str, dict[str, Any]],
) -> Recipe:
    """This call's recipe, extended with the layers an earlier call converted (so save/load sees them all)."""
    labels = [label for label in (previous.policy if previous else None, _policy_label(policy)) if label]
    return Recipe(
        policy=" + ".join(labels) or None,
        layers={**(previous.layers if previous else {}), **settings},
        init=init,
        **defaults,
    )


def _layer_row(layer: ConvLayer, decision: tuple[bool, str], aliases: list[str]) -> LayerReport:
    kernel = "x".join(map(str, layer.kernel_size))
    stride = "x".join(map(str, layer.stride))
    return LayerReport(
        layer.name, layer.type_name, kernel, stride, layer.groups, layer.in_channels, layer.out_channels,
        layer.block, decision[0], decision[1], [a for a in aliases if a != layer.name],
    )


BUILTIN_POLICIES = (*PAPER_POLICIES, "all")


def list_candidates(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[Any] | None = None,
    policies: Sequence[str] = BUILTIN_POLICIES,
    *,
    print_table: bool = True,
) -> str:
    """Table of every conv (order, kernel, groups, block) and which of ``policies`` would convert it."""
    model = _check_model(model)
    analysis = analyse_model(model, as_example_inputs(example_inputs))
    columns: dict[str, dict[str, tuple[bool, str]]] = {}
    for policy in policies:
        try:
            columns[policy], _ = plan_conversion(analysis, policy)
        except ValueError as err:  # e.g. last:k on a model without blocks
            columns[policy] = {layer.name: (False, str(err)) for layer in analysis.layers}
    header = ("#", "conv", "type", "kernel", "groups", "in->out", "block", *policies, "note")
    rows = []
    for layer in analysis.layers:
        marks = tuple("x" if columns[p][layer.name][0] else "." for p in policies)
        note = layer.not_convertible or ("projection shortcut" if layer.is_shortcut else "stem" if layer.is_first else "")
        rows.append(
            (str(layer.order), layer.name, layer.type_name, "x".join(map(str, layer.kernel_size)), str(layer.groups),
             f"{layer.in_channels}->{layer.out_channels}", layer.block or "-", *marks, note)
        )
    totals = tuple(str(sum(columns[p][l.name][0] for l in analysis.layers)) for p in policies)
    rows.append(("", "selected", "", "", "", "", "", *totals, ""))
    table = format_table(header, rows) + f"\n(traced with {analysis.method}; {len(analysis.blocks)} blocks)"
    if print_table:
        print(table)
    return table
