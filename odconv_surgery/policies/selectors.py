"""Overrides on top of a policy, in the torchao style: include / exclude selectors and per-layer settings.

A selector is one of: a regex string (``re.fullmatch`` on the qualified name), a module class, a kernel size
(``1``, ``3`` or ``(1, 7)``), or a callable ``(name, module) -> bool``. A selector that matches no conv is an
error, so a typo never passes silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Union

from torch import nn

from ..passes.fx.candidates import ConvLayer

Selector = Union[str, type, int, tuple, Callable[[str, nn.Module], bool]]


class EmptySelectionError(ValueError):
    """A selector matched no convolution."""


def _matcher(selector: Selector) -> Callable[[ConvLayer], bool]:
    if isinstance(selector, str):
        pattern = re.compile(selector)
        return lambda layer: pattern.fullmatch(layer.name) is not None
    if isinstance(selector, type):
        return lambda layer: isinstance(layer.module, selector)
    if isinstance(selector, int) and not isinstance(selector, bool):
        return lambda layer: layer.kernel_size == (selector, selector)
    if isinstance(selector, tuple) and all(isinstance(v, int) for v in selector):
        return lambda layer: layer.kernel_size == tuple(selector)
    if callable(selector):
        return lambda layer: bool(selector(layer.name, layer.module))
    raise TypeError(
        f"unsupported selector {selector!r}: use a name regex, a module class, a kernel size or a callable (name, module) -> bool"
    )


def as_selector_list(selectors: Selector | Iterable[Selector] | None) -> list[Selector]:
    if selectors is None:
        return []
    if isinstance(selectors, (str, type, int)) or callable(selectors):
        return [selectors]
    if isinstance(selectors, tuple) and all(isinstance(v, int) for v in selectors):
        return [selectors]
    return list(selectors)


def select(selector: Selector, layers: list[ConvLayer], role: str) -> set[str]:
    """Names of the layers ``selector`` matches; raises ``EmptySelectionError`` listing valid names if none."""
    match = _matcher(selector)
    chosen = {layer.name for layer in layers if match(layer)}
    if not chosen:
        names = ", ".join(layer.name for layer in layers[:40])
        more = f" ... (+{len(layers) - 40} more)" if len(layers) > 40 else ""
        raise EmptySelectionError(f"{role} selector {selector!r} matches no convolution. Conv names: {names}{more}")
    return chosen


def describe(selector: Any) -> str:
    if isinstance(selector, type):
        return selector.__name__
    if callable(selector) and not isinstance(selector, (str, tuple)):
        return getattr(selector, "__name__", repr(selector))
    return repr(selector)
