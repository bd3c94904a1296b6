"""``apply_odconv``: pick convolutions with a placement policy and rewrite them into ``ODConv2d`` in place (and the
Linear layers CondConv's policy or ``include=`` picks into ``ODLinear``).

Pipeline: trace (torch.fx, convs as leaves) -> analyse with networkx (order, blocks, shortcuts) -> policy +
include/exclude/overrides -> swap modules by qualified name in the original module tree (every alias).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from .errors import AlreadyConvertedError, EmptySelectionError, InvalidTypeError, PolicyError
from .nn.converted import ConvertedLayer, as_conv, convert_layer, converted_layers, inner_conv
from .nn.odconv import INIT_MODES
from .methods import DEFAULT_METHOD, METHOD_POLICY, method_options, resolve_policy
from .model_copy import copy_model
from .nn.memory import check_conversion_memory
from .nn.options import LayerOptions, check_layer_settings
from .nn.validation import check_bool, check_choice, check_int
from .passes.fx.candidates import ConvLayer, ModelAnalysis, analyse_model, scripted_convs, uncalled_convs
from .passes.fx.swap_modules import aliases_of, swap_module
from .policies import PAPER_POLICIES, Policy, Selector, available_policies, decide, get_policy, select
from .policies.registry import offers_linear_layers
from .policies.selectors import as_selector_list, describe
from .recipe import Recipe, attach_recipe, get_recipe
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
        raise InvalidTypeError(f"apply_odconv expects a torch.nn.Module, got {type(model).__name__}; pass the model object itself")
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
        elif layer.is_linear and not offers_linear_layers(resolved):
            decisions[layer.name] = (False, f"a Linear: policy {_policy_label(policy)!r} places convolutions only "
                                            "(include= naming it converts it)")
        else:
            decisions[layer.name] = decide(resolved, layer, analysis)
    by_name = {layer.name: layer for layer in layers}
    for selector in as_selector_list(include, "include"):
        names = select(selector, layers, "include")
        convertible = [n for n in names if not by_name[n].not_convertible]
        if not convertible:
            reasons = {n: by_name[n].not_convertible for n in names}
            raise EmptySelectionError(f"include selector {describe(selector)} matches only convs that cannot convert: {reasons}")
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
        raise InvalidTypeError(f"overrides must be a dict {{selector: settings dict or None}}, got {overrides!r} ({type(overrides).__name__})")
    checked: dict[Selector, dict[str, Any] | None] = {}
    for selector, value in overrides.items():
        where = f"overrides[{selector!r}]"
        if value is not None and not isinstance(value, Mapping):
            raise InvalidTypeError(f"{where} must be a dict of ODConv2d settings (e.g. {{'kernel_num': 4}}) or None, got {value!r} ({type(value).__name__})")
        checked[selector] = None if value is None else check_layer_settings(value, where)
    return checked


def apply_odconv(
    model: nn.Module,
    policy: str | Policy | None = METHOD_POLICY,
    *,
    method: str = DEFAULT_METHOD,
    options: LayerOptions | None = None,
    init: str = "pretrained",
    include: Selector | Sequence[Selector] | None = None,
    exclude: Selector | Sequence[Selector] | None = None,
    overrides: Mapping[Selector, Mapping[str, Any] | None] | None = None,
    example_inputs: torch.Tensor | Sequence[Any] | None = None,
    inplace: bool = False,
    seed: int | None = 0,
    **settings: Any,
) -> ConversionResult:
    """Rewrite the convolutions chosen by ``policy`` into ``ODConv2d`` and return ``(model, report)``.

    ``method``: ``"odconv"`` (default), ``"dyconv"`` or ``"condconv"`` (``odconv_surgery.methods``): the layer
    settings and placement of that method, which keywords and ``policy`` replace.
    ``policy``: ``"default"`` (the method's placement: ``"all_but_first"`` for ODConv), a registered name
    (``"all_but_first"``, ``"1x1"``, ``"3x3"``, ``"last:6"``, ``"all"``, ``"all_but_stem"``, ``"condconv"``), a
    callable ``(layer, analysis) -> bool``, or ``None`` to convert only what ``include`` selects.
    Linear layers become ``ODLinear`` (a 1x1 ``ODConv2d`` on (N, C) inputs) where ``include`` names them or the
    policy is ``"condconv"`` (the classifier); the other policies leave them static.
    The layer settings are ``options`` (a ``LayerOptions``) or keywords naming its fields (``kernel_num=4``,
    ``reduction=0.25``, ``share_attention``, ``min_attention_channels``, ``attention_norm``), which replace the
    options' values; ``overrides`` changes them per layer.
    ``init="pretrained"`` keeps the model's function at conversion (eval mode); ``"neutral"`` starts from the
    same neutral attention without rescaling the kernels (for training from scratch); ``"scratch"`` is the
    paper's initialisation. ``example_inputs`` (a tensor or a tuple of forward's arguments) are only needed when
    torch.fx cannot trace the model. The model keeps its class, methods and untouched weights; with
    ``inplace=False`` (default) a deep copy is converted. A model converted before can be converted further
    (e.g. ``"1x1"`` then ``"3x3"``): its recipe then describes the layers of every call.
    """
    model = _check_model(model)
    options = method_options(method, options, settings, "apply_odconv")
    policy = resolve_policy(policy, method)
    defaults = options.as_dict()
    check_choice("init", init, INIT_MODES)
    check_bool("inplace", inplace)
    if seed is not None:
        check_int("seed", seed, minimum=-(2**63))
        if seed >= 2**64:  # torch.Generator.manual_seed takes 64 bits
            raise ValueError(f"seed must be below 2**64, got {seed}")
    example_inputs = as_example_inputs(example_inputs)
    if not inplace:
        model = copy_model(model)
    analysis = analyse_model(model, example_inputs)
    decisions, layer_settings = plan_conversion(analysis, policy, include, exclude, overrides, defaults)
    if not layer_settings:
        raise _nothing_selected(model, analysis, policy)
    by_name = {layer.name: layer.module for layer in analysis.layers}
    check_conversion_memory((name, as_conv(by_name[name]), s) for name, s in layer_settings.items())
    params_before = _count_params(model)
    uncalled = uncalled_convs(model, analysis)
    aliases = {layer.name: aliases_of(model, layer.module) for layer in analysis.layers}
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    for layer in analysis.layers:
        if layer.name in layer_settings:
            with torch.no_grad():
                new = convert_layer(layer.module, init=init, generator=generator, check_memory=False,
                                    options=LayerOptions(**layer_settings[layer.name]))
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
    attach_recipe(model, _merged_recipe(get_recipe(model), policy, options, init, layer_settings))
    return ConversionResult(model, report)


def keep_frozen(conv: nn.Conv2d | nn.Linear, layer: ConvertedLayer) -> bool:
    """Carry the user's freezing over: a conv (or Linear) whose weight has ``requires_grad=False`` becomes an ODConv
    layer whose kernel bank and attention are frozen too (it then computes exactly the static layer, and unfreezing
    it later with ``requires_grad_(True)`` makes it a normal ODConv layer). The bias keeps its own flag.
    Returns whether the layer was frozen."""
    frozen = not conv.weight.requires_grad
    if frozen:
        layer.requires_grad_(False)
    bias = inner_conv(layer).bias
    if bias is not None and conv.bias is not None:
        bias.requires_grad_(conv.bias.requires_grad)
    return frozen


def as_example_inputs(example_inputs: Any) -> tuple[Any, ...] | None:
    """forward's positional arguments as a tuple: a bare tensor is one argument (as ``torch.onnx.export`` takes ``args``)."""
    if example_inputs is None:
        return None
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise InvalidTypeError(
        f"example_inputs must be a tensor or a tuple of forward's arguments, got {type(example_inputs).__name__}"
    )


def _nothing_selected(model: nn.Module, analysis: ModelAnalysis, policy: str | Policy | None) -> Exception:
    """The error for a policy that selects nothing: says so when the model is already (fully) converted."""
    converted = list(converted_layers(model))
    left = [layer.name for layer in analysis.layers if not layer.not_convertible and not layer.is_linear]
    if converted and not left:
        shown = ", ".join(converted[:10]) + (f" ... (+{len(converted) - 10})" if len(converted) > 10 else "")
        return AlreadyConvertedError(
            f"model is already converted: {len(converted)} ODConv2d layers ({shown}) and no convolution is left to "
            f"convert; apply policy {_policy_label(policy)!r} to the original model instead"
        )
    already = f"; the model already holds {len(converted)} ODConv2d layers" if converted else ""
    return EmptySelectionError(
        f"policy {_policy_label(policy)!r} selects no convolution in {type(model).__name__} "
        f"({len(left)} convertible conv(s) found: {left[:10]}{already}). Choose another policy "
        f"({', '.join(available_policies())}) or name layers with include=."
    )


def _merged_recipe(
    previous: Recipe | None, policy: str | Policy | None, options: LayerOptions, init: str,
    settings: Mapping[str, dict[str, Any]],
) -> Recipe:
    """This call's recipe, extended with the layers an earlier call converted (so save/load sees them all)."""
    labels = [label for label in (previous.policy if previous else None, _policy_label(policy)) if label]
    return Recipe(
        policy=" + ".join(labels) or None,
        options=options,
        layers={**(previous.layers if previous else {}), **settings},
        init=init,
    )


def _shape(size: tuple[int, ...]) -> str:
    """A kernel size or stride as ``3x3``; ``-`` for a Linear's (it has none)."""
    return "x".join(map(str, size)) or "-"


def _layer_row(layer: ConvLayer, decision: tuple[bool, str], aliases: list[str]) -> LayerReport:
    return LayerReport(
        layer.name, layer.type_name, _shape(layer.kernel_size), _shape(layer.stride), layer.groups, layer.in_channels,
        layer.out_channels, layer.block, decision[0], decision[1], [a for a in aliases if a != layer.name],
        "linear" if layer.is_linear else "conv",
    )


BUILTIN_POLICIES = (*PAPER_POLICIES, "all")


def list_candidates(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[Any] | None = None,
    policies: Sequence[str] = BUILTIN_POLICIES,
    *,
    print_table: bool = True,
) -> str:
    """Table of every conv and Linear (order, kernel, groups, block) and which of ``policies`` would convert it."""
    model = _check_model(model)
    analysis = analyse_model(model, as_example_inputs(example_inputs))
    columns: dict[str, dict[str, tuple[bool, str]]] = {}
    for policy in policies:
        try:
            columns[policy], _ = plan_conversion(analysis, policy)
        except PolicyError as err:  # e.g. last:k on a model without blocks
            columns[policy] = {layer.name: (False, str(err)) for layer in analysis.layers}
    header = ("#", "conv", "type", "kernel", "groups", "in->out", "block", *policies, "note")
    rows = []
    for layer in analysis.layers:
        marks = tuple("x" if columns[p][layer.name][0] else "." for p in policies)
        note = layer.not_convertible or ("projection shortcut" if layer.is_shortcut else "stem" if layer.is_first
                                         else "Linear: condconv's classifier, or include=" if layer.is_linear else "")
        rows.append(
            (str(layer.order), layer.name, layer.type_name, _shape(layer.kernel_size), str(layer.groups),
             f"{layer.in_channels}->{layer.out_channels}", layer.block or "-", *marks, note)
        )
    totals = tuple(str(sum(columns[p][l.name][0] for l in analysis.layers)) for p in policies)
    rows.append(("", "selected", "", "", "", "", "", *totals, ""))
    table = format_table(header, rows) + f"\n(traced with {analysis.method}; {len(analysis.blocks)} blocks)"
    if print_table:
        print(table)
    return table
