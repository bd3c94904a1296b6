"""Non-trivial attention logits, so tests see input-dependent attentions rather than the neutral init's constants."""

from __future__ import annotations

import torch


def randomise_attention(model: torch.nn.Module, scale: float = 0.5) -> None:
    """Give every ODConv attention head non-trivial logits so tests see input-dependent attentions."""
    from odconv_surgery import ODConv2d

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ODConv2d):
                for head in m.attention.heads().values():
                    head.weight.add_(torch.randn(head.weight.shape, generator=g) * scale)
                    head.bias.add_(torch.randn(head.bias.shape, generator=g) * scale)
