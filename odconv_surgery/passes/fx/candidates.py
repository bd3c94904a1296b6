"""Every convolution (and Linear) of a model as a ``ConvLayer``: geometry, order, block, shortcut role, convertibility."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...nn.odconv import ODConv2d
from .graph_analysis import GraphStructure, analyse_graph
from .hook_order import record_conv_order
from .tracer import CONV_TYPES, LAYER_TYPES, trace_model
from ...errors import UntraceableModelError  # noqa: F401 - raised here, defined with every error


@dataclass(frozen=True)
class ConvLayer:
    """One convolution module of the model, as the placement policies see it; or one ``nn.Linear`` (``is_linear``:
    features as channels, no kernel or stride, one group), which only a policy marked ``linear_layers`` is offered."""

    name: str
    module: nn.Module
    order: int  # position in execution order (first call), convs and Linears together
    kernel_size: tuple[int, ...]  # () for a Linear
    stride: tuple[int, ...]  # () for a Linear
    groups: int
    in_channels: int
    out_channels: int
    block: str | None  # enclosing block module name
    is_first: bool  # the first conv executed (the stem)
    is_shortcut: bool  # projection shortcut of a residual add
    not_convertible: str | None  # why ODConv2d cannot replace it (None when it can)

    @property
    def type_name(self) -> str:
        return type(self.module).__name__

    @property
    def is_linear(self) -> bool:
        """Whether the layer is an ``nn.Linear`` (converted to an ``ODLinear``) rather than a convolution."""
        return isinstance(self.module, nn.Linear)


@dataclass
class ModelAnalysis:
    """All convs (and Linears) of a model in execution order, plus its blocks and how the structure was read."""

    layers: list[ConvLayer]
    blocks: list[str]
    method: str  # "fx" or "hooks"

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]


def _not_convertible(module: nn.Module) -> str | None:
    if isinstance(module, ODConv2d):
        return "already an ODConv2d"
    if isinstance(module, nn.Linear):
        if type(module).forward is not nn.Linear.forward:
            return f"{type(module).__name__} overrides Linear.forward; ODLinear cannot reproduce its custom behaviour"
        return "empty Linear" if module.in_features == 0 or module.out_features == 0 else None
    if not isinstance(module, nn.Conv2d):
        return f"{type(module).__name__} is not a 2-D convolution; ODConv2d replaces nn.Conv2d only"
    if type(module).forward is not nn.Conv2d.forward or type(module)._conv_forward is not nn.Conv2d._conv_forward:
        return f"{type(module).__name__} overrides Conv2d.forward; ODConv2d cannot reproduce its custom behaviour"
    if module.in_channels == 0 or module.out_channels == 0:
        return "empty convolution"
    return None


def _structure(model: nn.Module, example_inputs: Sequence[Any] | None) -> tuple[GraphStructure, str]:
    try:
        graph = trace_model(model)
    except Exception as err:  # fx raises many types (TraceError, TypeError, ...) on data-dependent code
        if example_inputs is None:
            raise UntraceableModelError(
                f"torch.fx could not trace {type(model).__name__} ({type(err).__name__}: {err}). Pass "
                "example_inputs=(tensor,) so the conv execution order can be recorded with forward hooks instead."
            ) from err
        warnings.warn(
            f"torch.fx could not trace {type(model).__name__} ({type(err).__name__}); using forward hooks on the "
            "example inputs. Block and projection-shortcut detection are unavailable: shortcuts are not kept static.",
            stacklevel=3,
        )
        order = record_conv_order(model, example_inputs, LAYER_TYPES)
        return GraphStructure(order, set(), []), "hooks"
    return analyse_graph(model, graph), "fx"


def tied_convs(model: nn.Module) -> dict[str, list[str]]:
    """conv (or Linear) name -> the other modules holding the same weight tensor (weights tied between two modules:
    two convs, or a Linear and the embedding whose weight it shares)."""
    holders: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        for tensor in {id(p): p for p in module.parameters(recurse=False)}.values():
            holders.setdefault(id(tensor), []).append(name)
    return {
        name: [n for n in holders[id(module.weight)] if n != name]
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and isinstance(module.weight, torch.Tensor)
        and len(holders.get(id(module.weight), ())) > 1
    }


def _tied_reason(others: list[str]) -> str:
    return (f"weight tied to {', '.join(others)}: converting would untie them (each ODConv2d owns its kernel bank); "
            "untie the weights first to convert them")


def analyse_model(model: nn.Module, example_inputs: Sequence[Any] | None = None) -> ModelAnalysis:
    """Trace ``model`` (fx, or hooks on ``example_inputs`` when fx fails) and describe each convolution."""
    structure, method = _structure(model, example_inputs)
    modules = dict(model.named_modules())
    tied = tied_convs(model)
    layers = []
    stem = next((name for name in structure.layer_order if not isinstance(modules[name], nn.Linear)), None)
    for order, name in enumerate(structure.layer_order):
        module = modules[name]
        block = structure.block_of.get(name)
        linear = isinstance(module, nn.Linear)
        layers.append(
            ConvLayer(
                name=name,
                module=module,
                order=order,
                kernel_size=() if linear else tuple(module.kernel_size),
                stride=() if linear else tuple(module.stride),
                groups=1 if linear else module.groups,
                in_channels=module.in_features if linear else module.in_channels,
                out_channels=module.out_features if linear else module.out_channels,
                block=block,
                is_first=name == stem,
                is_shortcut=name in structure.shortcuts,
                not_convertible=_not_convertible(module) or (_tied_reason(tied[name]) if name in tied else None),
            )
        )
    return ModelAnalysis(layers, structure.blocks, method)


def scripted_convs(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """Convolutions inside ``torch.jit.script`` submodules as (name, scripted conv, name of the scripted module):
    fx sees such a module as one call, and its compiled code cannot call a replaced layer."""
    found: list[tuple[str, nn.Module, str]] = []
    roots: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.jit.RecursiveScriptModule) or any(name.startswith(r + ".") for r in roots):
            continue
        roots.append(name)
        for sub_name, sub in module.named_modules():
            if getattr(sub, "original_name", None) in _SCRIPTED_CONV_NAMES:
                found.append((f"{name}.{sub_name}" if sub_name else name, sub, name))
    return found


#: ``original_name`` of a scripted torch convolution.
_SCRIPTED_CONV_NAMES = {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"}


def uncalled_convs(model: nn.Module, analysis: ModelAnalysis) -> list[str]:
    """Conv modules that exist in the model but are never called by forward."""
    seen = {id(layer.module) for layer in analysis.layers}
    inside_odconv = {id(sub) for m in model.modules() if isinstance(m, ODConv2d) for sub in m.modules()}
    return [
        n for n, m in model.named_modules()
        if isinstance(m, CONV_TYPES) and id(m) not in seen and id(m) not in inside_odconv
    ]
