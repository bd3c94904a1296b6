"""The paper's placement policies (Table 9) plus ``all``.

The paper's ResNets keep projection-shortcut convs static, so every built-in policy except ``all`` leaves
them alone (Table 2 parameter counts depend on it); ``include=`` brings them back. Linear layers are offered to
``condconv`` alone, which converts the classifier as CondConv does; ``include=`` naming a Linear converts it.
"""

from __future__ import annotations

import re

from ..errors import PolicyError
from ..passes.fx.candidates import ConvLayer, ModelAnalysis
from .registry import Decision, Policy, register_policy, register_policy_factory

#: The four placement policies of the paper's Table 9 (the benchmarks' and the sweep's default set).
PAPER_POLICIES = ("all_but_first", "1x1", "3x3", "last:6")

_SHORTCUT = (False, "projection shortcut (kept static, as in the paper)")
_STEM = (False, "first conv (stem) stays static")


def _kept_static(layer: ConvLayer) -> Decision | None:
    """The stem and projection shortcuts stay static under every paper policy; None for other layers."""
    if layer.is_first:
        return _STEM
    if layer.is_shortcut:
        return _SHORTCUT
    return None


@register_policy("all")
def convert_all(layer: ConvLayer, analysis: ModelAnalysis) -> Decision:
    """Every convertible conv, stem and shortcuts included."""
    return True, "all convs"


@register_policy("all_but_first")
def all_but_first(layer: ConvLayer, analysis: ModelAnalysis) -> Decision:
    """The paper's default (after DyConv): every conv except the first one."""
    return _kept_static(layer) or (True, "all but first")


@register_policy("1x1")
def pointwise_only(layer: ConvLayer, analysis: ModelAnalysis) -> Decision:
    """All 1x1 convs (Table 9, row 3)."""
    if kept := _kept_static(layer):
        return kept
    if layer.kernel_size != (1, 1):
        return False, f"kernel {layer.kernel_size[0]}x{layer.kernel_size[1]} is not 1x1"
    return True, "1x1 conv"


@register_policy("3x3")
def spatial_only(layer: ConvLayer, analysis: ModelAnalysis) -> Decision:
    """All convs with a spatial kernel (3x3 and any k>1, e.g. 5x5, 1x7), the stem excepted (Table 9, row 4)."""
    if kept := _kept_static(layer):
        return kept
    if layer.kernel_size == (1, 1):
        return False, "1x1 kernel has no spatial extent"
    return True, "spatial kernel"


def last_k_blocks(k: int) -> Policy:
    """Convs in the last ``k`` blocks and every conv after them (the head), as CondConv places its layers
    (Table 9, row 5: last 6 residual blocks of MobileNetV2)."""
    if k < 1:
        raise PolicyError(f"last_k needs k >= 1, got {k}")

    def policy(layer: ConvLayer, analysis: ModelAnalysis) -> Decision:
        if not analysis.blocks:
            raise PolicyError(
                "policy 'last:k' needs residual/multi-branch blocks, but none were found "
                f"({'the model was not traceable by torch.fx' if analysis.method != 'fx' else 'the model has no add/cat joins'}); "
                "select layers with include=/exclude= or another policy instead"
            )
        if k > len(analysis.blocks):
            raise PolicyError(f"policy 'last:{k}' asks for {k} blocks but the model has {len(analysis.blocks)}")
        first_block = analysis.blocks[-k]
        start = min(l.order for l in analysis.layers if l.block == first_block)
        if layer.is_shortcut:
            return _SHORTCUT
        if layer.order < start:
            return False, f"before the last {k} blocks"
        return True, f"in the last {k} blocks" if layer.block else f"after the last {k} blocks (head)"

    policy.__name__ = f"last_{k}_blocks"
    return policy


def _parse_last(arg: str) -> Policy:
    if not re.fullmatch(r"\d+", arg):
        raise PolicyError(f"policy 'last:K' needs an integer K, got {arg!r} (e.g. 'last:6')")
    return last_k_blocks(int(arg))


register_policy_factory("last", _parse_last)
register_policy_factory("last_k", _parse_last)
register_policy("last_k", last_k_blocks(6))  # bare name: the paper's k = 6


@register_policy("all_but_stem")
def all_but_stem(layer: ConvLayer, analysis: ModelAnalysis) -> Decision:
    """Every conv except the stem, projection shortcuts included: DyConv's placement (its Table 1/2 counts)."""
    return _STEM if layer.is_first else (True, "all but the stem (shortcuts included)")


def condconv_block_count(analysis: ModelAnalysis) -> int:
    """How many final blocks CondConv converts: 6 in a network with depthwise convs (its MobileNetV2 setting), 3
    otherwise (its ResNet setting)."""
    depthwise = any(l.groups > 1 and l.groups == l.in_channels == l.out_channels for l in analysis.layers)
    return 6 if depthwise else 3


@register_policy("condconv", linear_layers=True)
def condconv_blocks(layer: ConvLayer, analysis: ModelAnalysis) -> Decision:
    """CondConv's placement: the convs inside the last blocks (``condconv_block_count``), not the head convs after
    them, projection shortcuts static; and the classifier, the model's last Linear in execution order."""
    if not analysis.blocks:
        raise PolicyError("policy 'condconv' needs the model's blocks, but none were found; select layers with "
                          "include= or use policy 'last:K' / 'all_but_first'")
    if layer.is_linear:
        last = max(l.order for l in analysis.layers if l.is_linear)
        if layer.order != last:
            return False, "a Linear before the classifier (CondConv converts the model's last Linear only)"
        return True, "the classifier (the model's last Linear)"
    k = min(condconv_block_count(analysis), len(analysis.blocks))
    if layer.is_shortcut:
        return _SHORTCUT
    if layer.block not in analysis.blocks[-k:]:
        return False, f"outside the last {k} blocks"
    return True, f"in the last {k} blocks"
