"""Optimizer parameter groups for training ODConv models.

The attention branches start neutral (zero logits) and, at the kernels' learning rate, move the per-sample
scaling of every converted layer faster than the kernels adapt, which costs accuracy when fine-tuning a trained
model and from scratch alike (see the README's training section for the measurements). Giving the attention a
fraction of the learning rate keeps training close to the static model's trajectory while the attention grows in.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import InvalidValueError
from .attention import ODAttention

ATTENTION_LR_SCALE = 0.1


def param_groups(
    model: nn.Module, lr: float, weight_decay: float = 0.0, attention_lr_scale: float = ATTENTION_LR_SCALE
) -> list[dict[str, Any]]:
    """Groups for ``torch.optim``: weight decay on weights only (not biases or norm parameters), and every ODConv
    attention branch at ``lr * attention_lr_scale``. Frozen parameters are left out.

    ``torch.optim.SGD(param_groups(model, lr=0.01, weight_decay=4e-5), lr=0.01, momentum=0.9)``
    """
    if lr <= 0 or attention_lr_scale < 0 or weight_decay < 0:
        raise InvalidValueError(f"need lr > 0, attention_lr_scale >= 0 and weight_decay >= 0; got {lr}, {attention_lr_scale}, {weight_decay}")
    attention = {id(p) for m in model.modules() if isinstance(m, ODAttention) for p in m.parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in attention, p.ndim > 1), []).append(p)
    return [
        {"params": params, "lr": lr * (attention_lr_scale if is_attention else 1.0), "weight_decay": weight_decay if decays else 0.0}
        for (is_attention, decays), params in groups.items()
    ]
