"""``apply_odconv``: pick convolutions with a placement policy and rewrite them into ``ODConv2d`` in place.

Pipeline: trace (torch.fx, convs as leaves) -> analyse with networkx (order, blocks, shortcuts) -> policy +
include/exclude/overrides -> swap modules by qualified name in the original module tree (every alias).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from .nn.odconv import ODConv2d
from .passes.fx.candidates import ConvLayer, ModelAnalysis, analyse_model, uncalled_convs
from .passes.fx.swap_modules import aliases_of, swap_module
from .policies import Policy, Selector, available_policies, decide, get_policy, select
from .policies.selectors import as_selector_list, describe
from .recipe import LAYER_KEYS, Recipe, attach_recipe
from .report import ConversionReport, LayerReport, format_table


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
    for selector in as_selector_list(include):
        names = select(selector, layers, "include")
        convertible = [n for n in names if not by_name[n].not_convertible]
        if not convertible:
            reasons = {n: by_name[n].not_convertible for n in names}
            raise ValueError(f"include selector {describe(selector)} matches only convs that cannot convert: {reasons}")
        for name in convertible:
            decisions[name] = (True, f"include {describe(selector)}")
    for selector in as_selector_list(exclude):
        for name in select(selector, layers, "exclude"):
            if decisions[name][0]:
                decisions[name] = (False, f"exclude {describe(selector)}")
    settings = {name: dict(defaults or {}) for name, (chosen, _) in decisions.items() if chosen}
    for selector, value in (overrides or {}).items():
        for name in select(selector, layers, "overrides"):
            if value is None:
                if decisions[name][0]:
                    decisions[name] = (False, f"override {describe(selector)} -> None")
                    settings.pop(name, None)
                continue
            unknown = set(value) - set(LAYER_KEYS)
            if unknown:
                raise ValueError(f"override for {describe(selector)} has unknown settings {sorted(unknown)}; allowed: {LAYER_KEYS}")
            if name in settings:
                settings[name].update(value)
    return decisions, settings


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
    example_inputs: Sequence[Any] | None = None,
    inplace: bool = False,
    seed: int | None = 0,
) -> ConversionResult:
    """Rewrite the convolutions chosen by ``policy`` into ``ODConv2d`` and return ``(model, report)``.

    ``policy``: a registered name (``"all_but_first"``, ``"1x1"``, ``"3x3"``, ``"last:6"``, ``"all"``), a
    callable ``(layer, analysis) -> bool``, or ``None`` to convert only what ``include`` selects.
    ``init="pretrained"`` keeps the model's function at conversion (eval mode); ``"neutral"`` starts from the
    same neutral attention without rescaling the kernels (for training from scratch); ``"scratch"`` is the
    paper's initialisation. ``example_inputs`` are only needed when torch.fx cannot trace the model. The model keeps
    its class, methods and untouched weights; with ``inplace=False`` (default) a deep copy is converted.
    """
    model = _check_model(model)
    if init not in ("pretrained", "neutral", "scratch"):
        raise ValueError(f"init must be 'pretrained', 'neutral' or 'scratch', got {init!r}")
    if not inplace:
        model = copy.deepcopy(model)
    analysis = analyse_model(model, example_inputs)
    defaults = {
        "kernel_num": kernel_num,
        "reduction": reduction,
        "min_attention_channels": min_attention_channels,
        "share_attention": share_attention,
        "attention_norm": attention_norm,
    }
    decisions, settings = plan_conversion(analysis, policy, include, exclude, overrides, defaults)
    if not settings:
        raise ValueError(
            f"policy {_policy_label(policy)!r} selects no convolution in {type(model).__name__} "
            f"({len(analysis.layers)} conv(s) found: {analysis.names[:10]}). Choose another policy "
            f"({', '.join(available_policies())}) or name layers with include=."
        )
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
    report = ConversionReport(_policy_label(policy), rows, params_before, _count_params(model), analysis.method)
    recipe = Recipe(
        policy=_policy_label(policy),
        kernel_num=kernel_num,
        reduction=reduction,
        layers=settings,
        share_attention=share_attention,
        attention_norm=attention_norm,
        min_attention_channels=min_attention_channels,
        init=init,
    )
    attach_recipe(model, recipe)
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


def _layer_row(layer: ConvLayer, decision: tuple[bool, str], aliases: list[str]) -> LayerReport:
    kernel = "x".join(map(str, layer.kernel_size))
    stride = "x".join(map(str, layer.stride))
    return LayerReport(
        layer.name, layer.type_name, kernel, stride, layer.groups, layer.in_channels, layer.out_channels,
        layer.block, decision[0], decision[1], [a for a in aliases if a != layer.name],
    )


BUILTIN_POLICIES = ("all_but_first", "1x1", "3x3", "last:6", "all")


def list_candidates(
    model: nn.Module,
    example_inputs: Sequence[Any] | None = None,
    policies: Sequence[str] = BUILTIN_POLICIES,
    *,
    print_table: bool = True,
) -> str:
    """Table of every conv (order, kernel, groups, block) and which of ``policies`` would convert it."""
    model = _check_model(model)
    analysis = analyse_model(model, example_inputs)
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
