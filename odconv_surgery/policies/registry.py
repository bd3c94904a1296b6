"""Named placement policies: which convolutions become ODConv.

A policy is a callable ``(layer, analysis) -> bool | (bool, reason)``: whether to convert one ``ConvLayer``,
given the whole ``ModelAnalysis`` (execution order, blocks). Only convertible layers are offered to it, and the
model's Linear layers only to a policy registered with ``linear_layers=True`` (CondConv's, which converts the
classifier): a policy written for convolutions never converts a Linear by accident.
Parameterised policies are factories registered with a ``name:arg`` form, e.g. ``"last:6"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import numpy as np

from ..errors import InvalidTypeError, InvalidValueError, PolicyError
from ..passes.fx.candidates import ConvLayer, ModelAnalysis

Decision = Union[bool, tuple[bool, str]]
Policy = Callable[[ConvLayer, ModelAnalysis], Decision]

_POLICIES: dict[str, Policy] = {}
_FACTORIES: dict[str, Callable[[str], Policy]] = {}


def register_policy(name: str, policy: Policy | None = None, *, overwrite: bool = False, linear_layers: bool = False):
    """Register ``policy`` under ``name`` (usable as a decorator). Names are case-insensitive. ``linear_layers``:
    the policy is offered the model's Linear layers too (``layer.is_linear``), not only its convolutions."""

    def add(fn: Policy) -> Policy:
        key = name.lower()
        if not overwrite and key in _POLICIES:
            raise InvalidValueError(f"a policy named {name!r} is already registered; pass overwrite=True to replace it")
        if linear_layers:
            fn.linear_layers = True
        _POLICIES[key] = fn
        return fn

    return add(policy) if policy is not None else add


def register_policy_factory(prefix: str, factory: Callable[[str], Policy]) -> None:
    """Register a parameterised policy: ``"prefix:arg"`` calls ``factory("arg")``."""
    _FACTORIES[prefix.lower()] = factory


def available_policies() -> list[str]:
    """Registered policy names; parameterised ones are shown as ``prefix:<arg>``."""
    return sorted(_POLICIES) + sorted(f"{p}:<arg>" for p in _FACTORIES)


def get_policy(policy: str | Policy) -> Policy:
    """Resolve a policy name (``"all_but_first"``, ``"last:6"``) or pass a callable through."""
    if callable(policy):
        return policy
    if not isinstance(policy, str):
        raise InvalidTypeError(f"policy must be a name, a callable or None, got {type(policy).__name__}")
    key = policy.strip().lower()
    if key in _POLICIES:
        return _POLICIES[key]
    prefix, sep, arg = key.partition(":")
    if sep and prefix in _FACTORIES:
        return _FACTORIES[prefix](arg)
    raise PolicyError(f"unknown placement policy {policy!r}; available: {', '.join(available_policies())}")


def offers_linear_layers(policy: Policy) -> bool:
    """Whether ``policy`` is offered Linear layers: registered with ``linear_layers=True``, or a callable with a
    true ``linear_layers`` attribute."""
    return getattr(policy, "linear_layers", False) is True


def decide(policy: Policy, layer: ConvLayer, analysis: ModelAnalysis) -> tuple[bool, str]:
    """Run a policy on one layer and normalise its answer to ``(selected, reason)``.

    The answer must be a bool (or ``(bool, reason)``): a string such as ``"no"`` is truthy, so it is refused
    rather than taken as a yes.
    """
    answer = policy(layer, analysis)
    reason = None
    selected = answer
    if isinstance(answer, tuple):
        if len(answer) != 2:
            raise _bad_answer(policy, layer, answer)
        selected, reason = answer
    if isinstance(selected, np.bool_):
        selected = bool(selected)
    if not isinstance(selected, bool):
        raise _bad_answer(policy, layer, answer)
    if reason is None:
        reason = "selected by policy" if selected else "not selected by policy"
    return selected, str(reason)


def _bad_answer(policy: Policy, layer: ConvLayer, answer: object) -> InvalidTypeError:
    name = getattr(policy, "__name__", type(policy).__name__)
    return InvalidTypeError(
        f"policy {name} returned {answer!r} ({type(answer).__name__}) for conv {layer.name!r}; a policy must return "
        "True/False or (True/False, reason)"
    )
