"""``fuse_batchnorm``: fold eval-mode BatchNorms into the convolutions before them, ODConv layers included.

Deploy code written for ``nn.Conv2d`` (ultralytics' ``fuse()``, ``torch.nn.utils.fusion.fuse_conv_bn_weights``)
scales ``conv.weight`` as a 4-D (C_out, C_in/g, kh, kw) kernel. On an ODConv layer that tensor is the 5-D bank
(n, C_out, C_in/g, kh, kw): the fold broadcasts over the wrong axis and changes the outputs (``ODConv2d``'s forward
then refuses the bank with ``KernelBankError``). This fold knows the bank: BN(y) = s * y + (beta - s * mean) with
s = gamma / sqrt(var + eps) per output channel, and an ODConv output is linear in every kernel of the bank (the
attentions multiply, they do not add), so scaling every kernel's output channel by s and folding the shift into
the bias is exact. Each ODConv layer's own attention BatchNorm is folded into the trunk's 1x1 conv the same way.

After it the model holds no BatchNorm that follows a convolution, so deploy code that folds BatchNorm itself
(ultralytics' ``fuse()``) finds nothing to fold and leaves the model alone. It is an inference transform, like
any BN fold.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import Tensor, fx, nn

from .errors import InvalidValueError
from .nn.odconv import ODConv2d
from .passes.fx.swap_modules import aliases_of, swap_module
from .passes.fx.tracer import trace_model

logger = logging.getLogger(__name__)


def bn_affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as y = scale * x + shift per channel, in float64 so the fold adds no rounding."""
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    shift = -mean * scale
    if bn.weight is not None:
        scale = scale * bn.weight.double()
        shift = shift * bn.weight.double()
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


@torch.no_grad()
def fold_into_conv(conv: nn.Conv2d | ODConv2d, scale: Tensor, shift: Tensor) -> None:
    """Make ``conv`` compute scale * conv(x) + shift per output channel. The output channel is the fourth axis
    from the end for a 4-D kernel and for the 5-D bank alike, so every kernel of the bank is scaled. Parameters are
    updated in place (optimizers and requires_grad flags keep pointing at them); a missing bias is created."""
    weight = conv.weight
    weight.copy_((weight.double() * scale.view(-1, 1, 1, 1).to(weight.device)).to(weight.dtype))
    if conv.bias is None:
        bias = shift.to(device=weight.device, dtype=weight.dtype)
        conv.bias = nn.Parameter(bias, requires_grad=weight.requires_grad)
    else:
        conv.bias.copy_((conv.bias.double() * scale.to(weight.device) + shift.to(weight.device)).to(conv.bias.dtype))


def _is_plain_conv(module: nn.Module) -> bool:
    if isinstance(module, ODConv2d):
        return True
    return isinstance(module, nn.Conv2d) and type(module).forward is nn.Conv2d.forward


def _conv_bn_pairs(root: nn.Module, graph: fx.Graph, prefix: str) -> list[tuple[str, str]]:
    """(conv, bn) qualified names where the BN's only input is the conv's output and nothing else reads it."""
    modules = dict(root.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        source = node.args[0] if node.args else None
        if not (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1):
            continue
        conv, bn = modules.get(source.target), modules[node.target]
        if not _is_plain_conv(conv) or bn.running_mean is None or bn.num_features != conv.out_channels:
            continue
        if calls[source.target] == 1 and calls[node.target] == 1:
            pairs.append((prefix + source.target, prefix + node.target))
    return pairs


def _find_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Trace the whole model; when torch.fx cannot, trace the module that owns each BatchNorm (ultralytics'
    ``Conv`` runs ``bn(conv(x))`` in a traceable forward even when the detection model around it is not).
    Returns the pairs and the owners fx could not trace either (name -> the error)."""
    try:
        return _conv_bn_pairs(model, trace_model(model), ""), {}
    except Exception as exc:  # noqa: BLE001 - fx raises many types on data-dependent code
        name = type(model).__name__
        logger.debug("fuse_batchnorm: torch.fx cannot trace %s (%s); tracing each BatchNorm's owner", name, exc)
    owners = {name.rpartition(".")[0] for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    pairs: list[tuple[str, str]] = []
    untraced: dict[str, str] = {}
    for owner in sorted(owners):
        module = model.get_submodule(owner)
        if isinstance(module, ODConv2d):
            continue  # the attention norm is folded separately
        try:
            graph = trace_model(module)
        except Exception as exc:  # noqa: BLE001
            untraced[owner or type(model).__name__] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            continue
        pairs += _conv_bn_pairs(module, graph, owner + "." if owner else "")
    return pairs, untraced


def _warn_untraced(untraced: dict[str, str], folded: int, total: int) -> None:
    """Say which BatchNorm owners fx could not trace, so their BatchNorms stay (the fold is not silently partial)."""
    shown = ", ".join(f"{name!r} ({why})" for name, why in list(untraced.items())[:3])
    more = f" and {len(untraced) - 3} more" if len(untraced) > 3 else ""
    warnings.warn(
        f"fuse_batchnorm folded {folded} of {total} BatchNorm2d: torch.fx could not trace the model nor "
        f"{len(untraced)} module(s) that own the rest ({shown}{more}), so their BatchNorms are left in place. "
        "Make those forwards traceable (no data-dependent Python control flow) or fold them yourself.",
        stacklevel=3,
    )


def _remove_bn(model: nn.Module, bn_name: str, bn: nn.BatchNorm2d) -> None:
    """Take a folded BN out of the forward. A module following the YOLO convention (a ``forward_fuse`` method,
    the forward without its BN: ultralytics' ``Conv``) is finished as its own fuse() does: the BN attribute is
    deleted and ``forward = forward_fuse``, so that fuse() (whose ``is_fused()`` looks for a ``bn`` attribute)
    finds nothing left to fold. Anywhere else the BN becomes ``nn.Identity``."""
    owner_name, _, attr = bn_name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    if callable(getattr(owner, "forward_fuse", None)):
        delattr(owner, attr)
        owner.forward = owner.forward_fuse
    else:
        swap_module(model, bn, nn.Identity())


def _fold_attention_norm(layer: ODConv2d) -> bool:
    att = layer.attention
    if not isinstance(att.norm, nn.BatchNorm2d) or att.norm.running_mean is None:
        return False
    fold_into_conv(att.fc, *bn_affine(att.norm))
    att.norm = nn.Identity()
    att.attention_norm = layer.attention_norm = "none"
    return True


def fuse_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows an ``nn.Conv2d`` or ``ODConv2d`` into that conv,
    and each ODConv layer's attention BatchNorm into its trunk conv; each folded BN becomes ``nn.Identity`` (or
    is removed from a module with a YOLO-style ``forward_fuse``, see ``_remove_bn``).

    In place, exact (float64 arithmetic) and for inference: the running statistics become part of the weights.
    Run it before deploy code that folds BatchNorm itself (ultralytics' ``model.fuse()``, which YOLO's predict,
    val and export call): such code only knows 4-D kernels. Returns the (conv, bn) names folded.
    A BN whose conv output is also read elsewhere, or whose conv or BN is called more than once, is left alone.
    Logs how many it folded; warns, naming them, when torch.fx can trace neither the model nor the modules that
    own some BatchNorms (those are left in place).
    """
    training = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and m.training]
    if training:
        raise InvalidValueError(
            f"fuse_batchnorm folds BatchNorm running statistics, valid in eval mode only, but {training[:3]} "
            "are training: call model.eval() first"
        )
    folded = []
    pairs, untraced = _find_pairs(model)
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if len(aliases_of(model, conv)) != 1 or len(aliases_of(model, bn)) != 1:
            continue  # a module registered twice may be called from elsewhere
        fold_into_conv(conv, *bn_affine(bn))
        _remove_bn(model, bn_name, bn)
        folded.append((conv_name, bn_name))
    total = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) + len(folded)
    total -= sum(isinstance(m, ODConv2d) and isinstance(m.attention.norm, nn.BatchNorm2d) for m in model.modules())
    if untraced:
        _warn_untraced(untraced, len(folded), total)
    logger.info("fuse_batchnorm: folded %d of %d BatchNorm2d after a conv", len(folded), total)
    for name, module in list(model.named_modules()):
        if isinstance(module, ODConv2d) and _fold_attention_norm(module):
            folded.append((f"{name}.attention.fc", f"{name}.attention.norm"))
    return folded


__all__ = ["bn_affine", "fold_into_conv", "fuse_batchnorm"]
