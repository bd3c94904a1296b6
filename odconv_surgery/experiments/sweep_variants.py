"""Sweep variants: the method and layer settings a configuration converts with, the axis behind the paper's
method comparison (Table 1) and its ablations (Tables 7, 10, 11, 16).

A variant is text, so it fits a command line and a results key: a method name, then optional settings,
``METHOD[:key=value]...``. Examples: ``odconv``, ``dyconv``, ``condconv``, ``odconv:kernel_num=4``,
``odconv:attentions=spatial+channel:reduction=0.25``, ``odconv:activation=softmax``, ``odconv:pool_size=3``.
A list value (``attentions``) joins its items with ``+``. The sweep's ``--reduction`` and ``--attention-norm``
apply to ODConv variants that do not set them; CondConv and DyConv keep their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ..errors import SweepSettingsError
from ..methods import METHODS, method_options
from ..nn.options import LAYER_KEYS, LayerOptions

__all__ = ["DEFAULT_VARIANT", "Variant", "parse_variant"]

DEFAULT_VARIANT = "odconv"
_TRUE, _FALSE = ("true", "on", "yes", "1"), ("false", "off", "no", "0")


@dataclass(frozen=True)
class Variant:
    """A parsed variant: its text, method and the settings it names."""

    text: str
    method: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def fixed_kernel_num(self) -> int | None:
        """The kernel number the variant sets itself (or its method's preset does); None when the sweep's n axis
        applies."""
        return self.settings.get("kernel_num", METHODS[self.method].kernel_num)

    def apply_kwargs(self, n: int, reduction: float, attention_norm: str) -> dict[str, Any]:
        """``apply_odconv`` keywords for kernel number ``n`` and the sweep-wide ODConv settings."""
        kwargs: dict[str, Any] = {"method": self.method, **self.settings}
        if self.fixed_kernel_num is None:
            kwargs["kernel_num"] = n
        if self.method == "odconv":
            kwargs.setdefault("reduction", reduction)
            kwargs.setdefault("attention_norm", attention_norm)
        return kwargs

    def options(self, n: int, reduction: float, attention_norm: str) -> LayerOptions:
        kwargs = self.apply_kwargs(n, reduction, attention_norm)
        return method_options(kwargs.pop("method"), None, kwargs, f"variant {self.text!r}")

    def label(self, n: int) -> str:
        """``ODConv (4x)``, ``DyConv (4x)``, ``ODConv (1x) [attentions=spatial+channel]``: Table 1's and 7's rows."""
        text = f"{METHODS[self.method].title} ({n}x)"
        shown = {k: v for k, v in self.settings.items() if k != "kernel_num"}
        if shown:
            text += " [" + ", ".join(f"{k}={_format(v)}" for k, v in shown.items()) + "]"
        return text


def _format(value: Any) -> str:
    if isinstance(value, tuple):
        return "+".join(value)
    if isinstance(value, float):
        return str(Fraction(value).limit_denominator(64))
    return str(value)


def _parse_value(key: str, text: str, variant: str) -> Any:
    """A setting's value from text, by the type of its ``LayerOptions`` default."""
    default = LayerOptions.__dataclass_fields__[key].default
    try:
        if isinstance(default, bool):
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError(f"expected one of {', '.join(_TRUE + _FALSE)}")
            return text.lower() in _TRUE
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(Fraction(text))
        if isinstance(default, tuple):
            return tuple(item.strip() for item in text.split("+"))
        return text
    except (ValueError, ZeroDivisionError) as exc:
        raise SweepSettingsError(f"variant {variant!r}: {key}={text!r} is not a valid value ({exc})") from None


def parse_variant(text: str) -> Variant:
    """Parse and check ``METHOD[:key=value]...`` (``SweepSettingsError`` naming the fix otherwise)."""
    if not isinstance(text, str) or not text.strip():
        raise SweepSettingsError(f"a variant must be text such as 'odconv' or 'dyconv', got {text!r}")
    method, *parts = text.strip().split(":")
    if method not in METHODS:
        raise SweepSettingsError(f"variant {text!r} starts with unknown method {method!r}; methods: {', '.join(METHODS)} "
                                 "(e.g. 'odconv:kernel_num=4')")
    settings: dict[str, Any] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or key not in LAYER_KEYS:
            raise SweepSettingsError(f"variant {text!r}: {part!r} is not key=value with a layer setting as key; "
                                     f"settings: {', '.join(LAYER_KEYS)}")
        settings[key] = _parse_value(key, value, text)
    variant = Variant(text.strip(), method, settings)
    try:
        variant.options(1 if variant.fixed_kernel_num is None else variant.fixed_kernel_num, 1 / 16, "bn")
    except (ValueError, TypeError) as exc:
        raise SweepSettingsError(f"variant {text!r}: {exc}") from None
    return variant
