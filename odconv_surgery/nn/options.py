"""``LayerOptions``: the ODConv layer settings, each defined once (name, default, check, help).

``ODConv2d``, ``apply_odconv`` (its keyword arguments and ``overrides``), the recipe and the CLI all read the fields
of this one frozen dataclass, so a new setting is one field here: its ``metadata`` carries the check that
validates it and the help text (and optional short flag or choices) the CLI shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidTypeError, InvalidValueError, UnknownSettingError
from .validation import check_bool, check_choice, check_int, check_number

__all__ = [
    "ACTIVATIONS", "ATTENTION_NORMS", "ATTENTION_TYPES", "KERNEL_ACTIVATIONS", "LAYER_KEYS", "LayerOptions",
    "check_layer_settings",
]

ATTENTION_NORMS = ("bn", "ln", "none")
ATTENTION_TYPES = ("spatial", "channel", "filter", "kernel")  # the paper's alpha_s, alpha_c, alpha_f, alpha_w
ACTIVATIONS = ("sigmoid", "softmax")
KERNEL_ACTIVATIONS = ("softmax", "sigmoid")


def check_attentions(name: str, value: Any) -> tuple[str, ...]:
    """A non-empty subset of ``ATTENTION_TYPES`` (a sequence, or a comma-separated string), in canonical order."""
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
    if isinstance(items, (bytes, Mapping)) or not isinstance(items, (list, tuple, set, frozenset)):
        raise InvalidTypeError(f"{name} must be a list of attention types drawn from {', '.join(ATTENTION_TYPES)}, "
                               f"got {value!r} ({type(value).__name__})")
    unknown = [v for v in items if v not in ATTENTION_TYPES]
    if unknown or not items:
        raise InvalidValueError(f"{name} must be a non-empty subset of {', '.join(ATTENTION_TYPES)}, got {value!r}")
    return tuple(t for t in ATTENTION_TYPES if t in items)


def _setting(default: Any, check: Callable[[str, Any], Any], help: str, **cli: Any) -> Any:
    """A field with its validator and its CLI help (``short``: a short flag; ``choices``: allowed values)."""
    return field(default=default, metadata={"check": check, "help": help, **cli})


@dataclass(frozen=True)
class LayerOptions:
    """The settings of one ODConv layer; every value is checked when the object is made."""

    kernel_num: int = _setting(
        1, lambda name, v: check_int(name, v, minimum=1), "number of kernels n in the bank", short="-n"
    )
    reduction: float = _setting(
        1 / 16, lambda name, v: check_number(name, v, above=0, at_most=1),
        "attention trunk ratio r: A = max(int(C_in * r), min_attention_channels)", short="-r",
    )
    min_attention_channels: int = _setting(
        16, lambda name, v: check_int(name, v, minimum=1), "lower bound on the attention trunk width A"
    )
    share_attention: bool = _setting(
        True, check_bool, "one channel/filter/spatial attention for all kernels (the paper's); off: one per kernel"
    )
    attention_norm: str = _setting(
        "bn", lambda name, v: check_choice(name, v, ATTENTION_NORMS),
        "normalisation in the attention trunk", choices=ATTENTION_NORMS,
    )
    attentions: tuple[str, ...] = _setting(
        ATTENTION_TYPES, check_attentions,
        "which attentions the layers may have, comma-separated (the paper's Table 7); a layer still has no spatial "
        "attention when 1x1, no filter attention when depthwise, no kernel attention when kernel_num is 1",
    )
    activation: str = _setting(
        "sigmoid", lambda name, v: check_choice(name, v, ACTIVATIONS),
        "activation of the spatial, channel and filter attentions (the paper's Table 11)", choices=ACTIVATIONS,
    )
    kernel_activation: str = _setting(
        "softmax", lambda name, v: check_choice(name, v, KERNEL_ACTIVATIONS),
        "activation of the kernel attention: softmax over the n kernels (DyConv, ODConv) or a sigmoid per kernel "
        "(CondConv's routing)", choices=KERNEL_ACTIVATIONS,
    )
    pool_size: int = _setting(
        1, lambda name, v: check_int(name, v, minimum=1),
        "the attention pools its input to pool_size x pool_size (the paper's Table 16); the first FC is then a "
        "pool_size x pool_size conv",
    )
    temperature_annealing: bool = _setting(
        True, check_bool,
        "divide the attention logits by the training temperature (annealed 30 -> 1, after DyConv); off: temperature 1 "
        "throughout (CondConv; the paper's Table 10)",
    )
    attention_trunk: bool = _setting(
        True, check_bool,
        "the hidden FC + norm + ReLU before the heads; off: every head reads the pooled input (CondConv's routing)",
    )

    def __post_init__(self) -> None:
        for key, value in check_layer_settings(self.as_dict()).items():
            object.__setattr__(self, key, value)  # normalised (e.g. an int reduction becomes a float)
        if self.kernel_num > 1 and "kernel" not in self.attentions:
            raise InvalidValueError(
                f"kernel_num={self.kernel_num} without the kernel attention would add the kernels with fixed weights "
                "(one static kernel, n times the parameters): add 'kernel' to attentions, or set kernel_num=1"
            )
        if self.attentions == ("kernel",) and self.kernel_num == 1:
            raise InvalidValueError(
                "attentions=('kernel',) with kernel_num=1 leaves the layers no attention: set kernel_num > 1 "
                "(the paper uses 4), or choose other attentions"
            )

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], where: str = "") -> "LayerOptions":
        """Options from a mapping of any subset of the settings (the rest default); errors are prefixed ``where``."""
        return cls(**check_layer_settings(settings, where))

    def merged(self, settings: Mapping[str, Any], where: str = "") -> "LayerOptions":
        """These options with ``settings`` (any subset, checked) replacing their values."""
        return dataclasses.replace(self, **check_layer_settings(settings, where))

    def as_dict(self) -> dict[str, Any]:
        """``{setting: value}``: the keyword arguments of ``ODConv2d`` and the recipe's per-layer entries."""
        return {key: getattr(self, key) for key in LAYER_KEYS}


LAYER_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(LayerOptions))


def check_layer_settings(settings: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Validate any subset of the layer settings; ``where`` prefixes argument names in errors."""
    if not isinstance(settings, Mapping):
        raise InvalidTypeError(f"{where or 'settings'} must be a dict of ODConv2d settings, got {settings!r} ({type(settings).__name__})")
    unknown = sorted(set(settings) - set(LAYER_KEYS), key=str)
    if unknown:
        raise UnknownSettingError(f"{where or 'settings'} has unknown settings {unknown}; allowed: {', '.join(LAYER_KEYS)}")
    prefix = f"{where}: " if where else ""
    checks = {f.name: f.metadata["check"] for f in dataclasses.fields(LayerOptions)}
    return {key: checks[key](f"{prefix}{key}", value) for key, value in settings.items()}
