"""Overrides on top of a policy, in the torchao style: include / exclude selectors and per-layer settings.

A selector is one of: a regex string (``fullmatch`` on the qualified name), a module class, a kernel size
(``1``, ``3`` or ``(1, 7)``), or a callable ``(name, module) -> bool``. A selector that matches no conv is an
error, so a typo never passes silently. Regexes run on the ``regex`` package with a time budget per selector
(``REGEX_BUDGET_S`` over all layer names) and a length limit, so a pattern with catastrophic backtracking
(``(a|aa)+$``) fails in a second with ``RegexTimeoutError`` instead of running for minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Union

import regex
from torch import nn

from ..errors import InvalidTypeError, InvalidValueError
from ..passes.fx.candidates import ConvLayer
from ..errors import EmptySelectionError, RegexTimeoutError  # noqa: F401 - raised here, defined with every error

Selector = Union[str, type, int, tuple, Callable[[str, nn.Module], bool]]
REGEX_BUDGET_S = 1.0  # matching one selector against every layer name
MAX_REGEX_LENGTH = 1000


def _regex_matcher(selector: str, role: str) -> Callable[[ConvLayer], bool]:
    if len(selector) > MAX_REGEX_LENGTH:
        raise InvalidValueError(f"{role} selector regex is {len(selector)} characters long (at most {MAX_REGEX_LENGTH}); "
                         "use a shorter pattern or a callable selector")
    try:
        pattern = regex.compile(selector)
    except (regex.error, OverflowError, RecursionError) as err:
        raise InvalidValueError(f"{role} selector {selector!r} is not a valid regular expression ({err}); escape special "
                         "characters with re.escape or a backslash") from None
    deadline: list[float] = []

    def match(layer: ConvLayer) -> bool:
        if not deadline:
            deadline.append(time.monotonic() + REGEX_BUDGET_S)
        try:
            return pattern.fullmatch(layer.name, timeout=max(deadline[0] - time.monotonic(), 1e-3)) is not None
        except TimeoutError:
            raise RegexTimeoutError(
                f"{role} selector regex {selector[:80]!r} took over {REGEX_BUDGET_S:g} s to match the layer names "
                "(catastrophic backtracking, e.g. nested or overlapping repeats); simplify it or use a callable selector"
            ) from None

    return match


def _matcher(selector: Selector, role: str) -> Callable[[ConvLayer], bool]:
    if isinstance(selector, str):
        return _regex_matcher(selector, role)
    if isinstance(selector, type):
        if not issubclass(selector, nn.Module):
            raise InvalidTypeError(f"{role} selector {selector.__name__} is a class but not an nn.Module subclass")
        return lambda layer: isinstance(layer.module, selector)
    if _is_kernel_size(selector):
        size = (selector, selector) if isinstance(selector, int) else tuple(selector)
        return lambda layer: layer.kernel_size == size
    if callable(selector):
        return lambda layer: bool(selector(layer.name, layer.module))
    raise InvalidTypeError(
        f"unsupported {role} selector {selector!r} ({type(selector).__name__}): use a name regex, a module class, "
        "a kernel size (3 or (1, 7)) or a callable (name, module) -> bool"
    )


def _is_kernel_size(value: Any) -> bool:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    return is_int(value) or (isinstance(value, tuple) and len(value) > 0 and all(is_int(v) for v in value))


def as_selector_list(selectors: Selector | Iterable[Selector] | None, role: str = "selector") -> list[Selector]:
    """One selector or a list/tuple/set of them, as a list; anything else is a ``TypeError`` naming ``role``."""
    if selectors is None:
        return []
    if isinstance(selectors, (str, type)) or _is_kernel_size(selectors) or callable(selectors):
        return [selectors]
    if isinstance(selectors, (list, tuple, set, frozenset)):
        return list(selectors)
    raise InvalidTypeError(
        f"{role} must be a selector (name regex, module class, kernel size, callable (name, module) -> bool) or a "
        f"list of them, got {selectors!r} ({type(selectors).__name__})"
    )


def select(selector: Selector, layers: list[ConvLayer], role: str) -> set[str]:
    """Names of the layers ``selector`` matches; raises ``EmptySelectionError`` listing valid names if none."""
    match = _matcher(selector, role)
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
