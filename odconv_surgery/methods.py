"""The dynamic-convolution methods as presets of one machinery: ODConv, and the two it improves on, CondConv and
DyConv, each as its paper defines it (the ODConv paper's Tables 1, 2 and 8 compare the three).

A method is a set of ``LayerOptions`` values plus a placement policy, nothing else: the same ``ODConv2d`` layer,
export, lowering, accounting and training serve all three. ``apply_odconv(model, method="dyconv")`` uses them;
settings given as keywords replace the method's.

* ``odconv``: four attentions (spatial, channel, filter, kernel), r = 1/16, every conv but the first.
* ``dyconv``: kernel attention only, a softmax over n = 4 kernels, trunk C_in -> C_in/4 -> n without
  normalisation (at least 4 hidden units: two mirrored pairs keep the neutral init's trunk alive, see
  ``ODAttention.reset_parameters_neutral``; no layer of the paper's networks is that narrow), temperature annealed;
  every conv but the stem, projection shortcuts included.
* ``condconv``: kernel attention only, a sigmoid per kernel ("routing") read straight from the pooled input, n = 8,
  no temperature; the convs of the last 6 blocks of a network with depthwise convs (MobileNetV2) or of the last
  3 otherwise (ResNets), and the classifier (an ``ODLinear``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidValueError
from .nn.options import LayerOptions
from .nn.validation import check_choice

__all__ = ["DEFAULT_METHOD", "METHODS", "METHOD_POLICY", "Method", "method_options", "resolve_policy"]


@dataclass(frozen=True)
class Method:
    """A dynamic-convolution method: layer settings and the placement its paper uses."""

    name: str
    title: str  # as the paper's tables print it
    settings: Mapping[str, Any] = field(default_factory=dict)
    policy: str = "all_but_first"

    @property
    def kernel_num(self) -> int | None:
        """The kernel number the method fixes (DyConv 4, CondConv 8); None when it leaves n to the caller."""
        return self.settings.get("kernel_num")

    def options(self) -> LayerOptions:
        return LayerOptions.from_settings(self.settings, f"method {self.name!r}")


METHODS: dict[str, Method] = {
    "odconv": Method("odconv", "ODConv"),
    "dyconv": Method(
        "dyconv", "DyConv",
        {"attentions": ("kernel",), "kernel_num": 4, "reduction": 0.25, "min_attention_channels": 4,
         "attention_norm": "none"},
        "all_but_stem",
    ),
    "condconv": Method(
        "condconv", "CondConv",
        {"attentions": ("kernel",), "kernel_num": 8, "kernel_activation": "sigmoid", "attention_trunk": False,
         "temperature_annealing": False},
        "condconv",
    ),
}
DEFAULT_METHOD = "odconv"
METHOD_POLICY = "default"  # the policy argument's default: the method's own placement


def method_options(method: str, options: LayerOptions | None, settings: Mapping[str, Any], where: str) -> LayerOptions:
    """The layer options of a call: the method's (or ``options``, for the default method), with ``settings``
    (keywords naming ``LayerOptions`` fields) replacing their values."""
    check_choice("method", method, METHODS)
    if options is not None and method != DEFAULT_METHOD:
        raise InvalidValueError(
            f"{where}: options= sets every layer setting, which would silently replace method={method!r}'s; pass "
            f"the settings to change as keywords instead (e.g. kernel_num=4), or options=METHODS[{method!r}]"
            ".options().merged({...}) with method left at its default"
        )
    base = METHODS[method].options() if options is None else options
    return base.merged(settings, where)


def resolve_policy(policy: Any, method: str) -> Any:
    """``policy``, or the method's placement when it is ``METHOD_POLICY``."""
    return METHODS[method].policy if policy == METHOD_POLICY else policy
