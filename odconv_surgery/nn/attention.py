"""The multi-head attention pi(x) of ODConv (paper §3.2, Fig. 1b).

GAP -> 1x1 conv (C_in -> A, no bias) -> norm -> ReLU, then up to four 1x1-conv heads:
channel (C_in, sigmoid), filter (C_out, sigmoid), spatial (kh*kw, sigmoid), kernel (n, softmax).
Each head's logits are divided by the temperature before the activation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from ..errors import BatchOneBatchNormError, InvalidValueError
from .options import ATTENTION_NORMS, LayerOptions


class Attentions(NamedTuple):
    """Per-sample attentions; a head that a layer does not have is ``None``.

    Shapes for batch B, n kernels, shared attention:
    channel (B, C_in, 1, 1), filter (B, C_out, 1, 1), spatial (B, 1, 1, 1, kh, kw), kernel (B, n, 1, 1, 1, 1).
    Without sharing, channel/filter/spatial carry one set per kernel: (B, n, C_in), (B, n, C_out), (B, n, kh*kw).
    """

    channel: Tensor | None
    filter: Tensor | None
    spatial: Tensor | None
    kernel: Tensor | None


def attention_channels(in_channels: int, options: LayerOptions) -> int:
    """Width A of the attention trunk: ``max(int(C_in * r), min_attention_channels)`` as in the reference code."""
    return max(int(in_channels * options.reduction), options.min_attention_channels)


def kaiming_fan_out(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
    """Kaiming normal (fan_out, relu) weights drawn on the CPU in float32, so a seeded ``generator`` gives the same
    values whatever device and dtype they are copied into."""
    weight = torch.empty(shape)
    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu", generator=generator)
    return weight


def _make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "ln":
        # GroupNorm with one group over a (B, A, 1, 1) tensor is a LayerNorm over the A features:
        # batch-independent, so it trains with a batch of 1.
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise AssertionError(f"attention_norm {kind!r} is not one of {ATTENTION_NORMS}: LayerOptions should have refused it")


class ODAttention(nn.Module):
    """Computes ODConv's four attentions from the layer input."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        groups: int = 1,
        options: LayerOptions | None = None,
    ) -> None:
        super().__init__()
        options = LayerOptions() if options is None else options
        kernel_num, share_attention = options.kernel_num, options.share_attention
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = tuple(kernel_size)
        self.kernel_num = kernel_num
        self.share_attention = share_attention
        self.attention_norm = options.attention_norm
        self.temperature = 1.0
        hidden = attention_channels(in_channels, options)
        self.hidden_channels = hidden
        per_kernel = 1 if share_attention else kernel_num
        kh, kw = self.kernel_size

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.norm = _make_norm(options.attention_norm, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.channel_fc = nn.Conv2d(hidden, in_channels * per_kernel, 1)
        is_depthwise = in_channels == groups == out_channels
        self.filter_fc = None if is_depthwise else nn.Conv2d(hidden, out_channels * per_kernel, 1)
        self.spatial_fc = None if kh * kw == 1 else nn.Conv2d(hidden, kh * kw * per_kernel, 1)
        self.kernel_fc = None if kernel_num == 1 else nn.Conv2d(hidden, kernel_num, 1)

    def heads(self) -> dict[str, nn.Conv2d]:
        """The heads this layer has, by name, in a fixed order (channel, filter, spatial, kernel)."""
        named = {"channel": self.channel_fc, "filter": self.filter_fc, "spatial": self.spatial_fc, "kernel": self.kernel_fc}
        return {name: head for name, head in named.items() if head is not None}

    @torch.no_grad()
    def reset_parameters_scratch(self, generator: torch.Generator | None = None) -> None:
        """The reference code's initialisation: Kaiming normal (fan_out, relu), zero biases, unit norm scale
        (``kaiming_fan_out``: the same seed gives the same layer on any device)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.copy_(kaiming_fan_out(module.weight.shape, generator))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def reset_parameters_neutral(self, generator: torch.Generator | None = None) -> None:
        """Initialise so every head outputs zero logits for any input, yet every parameter gets gradient.

        Hidden units are made in groups of identical copies (same ``fc`` row, same norm parameters), and each
        head's weight columns for a group sum to zero; so ``head(h) == bias == 0`` for all inputs, while the
        gradient reaching each copy is non-zero and of opposite sign, so the copies diverge after one step.
        Zero logits give sigmoid 0.5 and softmax 1/n: constant attentions that ``ODConv2d`` compensates.
        Weights from ``kaiming_fan_out``: the same seed gives the same layer on any device.
        """
        hidden = self.hidden_channels
        if hidden < 2:
            raise InvalidValueError(
                f"the attention trunk has {hidden} hidden channel(s), a neutral or pretrained initialisation needs at "
                "least 2: set min_attention_channels >= 2 (or a larger reduction), or use init='scratch'"
            )
        with torch.no_grad():
            base = kaiming_fan_out(self.fc.weight.shape, generator)
            base[1::2] = base[0 : hidden - hidden % 2 : 2].clone()  # unit 2i+1 copies unit 2i
            if hidden % 2:  # odd width: the last unit joins the last pair, making a triple
                base[-1] = base[-3]
            self.fc.weight.copy_(base)
            if isinstance(self.norm, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(self.norm.weight)
                nn.init.zeros_(self.norm.bias)
            if isinstance(self.norm, nn.BatchNorm2d):
                self.norm.reset_running_stats()
            for head in self.heads().values():
                weight = kaiming_fan_out(head.weight.shape, generator)
                # Columns of each group of copies sum to zero: pairs (a, -a), and a triple (a, b, -(a+b)).
                pairs_end = hidden - 3 if hidden % 2 else hidden
                weight[:, 1:pairs_end:2] = -weight[:, 0:pairs_end:2]
                if hidden % 2:
                    weight[:, -1] = -(weight[:, -3] + weight[:, -2])
                head.weight.copy_(weight)
                nn.init.zeros_(head.bias)

    def _check_batch(self, x: Tensor) -> None:
        if self.training and self.attention_norm == "bn" and x.shape[0] == 1:
            raise BatchOneBatchNormError(
                "ODConv attention BatchNorm cannot train on a batch of 1. Use a batch of 2 or more, call "
                "model.eval() for inference, or convert with attention_norm='ln' (batch-independent)."
            )

    def forward(self, x: Tensor) -> Attentions:
        self._check_batch(x)
        batch = x.shape[0]
        h = self.relu(self.norm(self.fc(self.avgpool(x))))
        t = self.temperature
        scale = (lambda logits: logits) if t == 1.0 else (lambda logits: logits / t)
        n = self.kernel_num
        kh, kw = self.kernel_size

        channel = torch.sigmoid(scale(self.channel_fc(h)))
        filt = None if self.filter_fc is None else torch.sigmoid(scale(self.filter_fc(h)))
        spatial = None if self.spatial_fc is None else torch.sigmoid(scale(self.spatial_fc(h)))
        kernel = None if self.kernel_fc is None else torch.softmax(scale(self.kernel_fc(h)).view(batch, n), dim=1)

        # Explicit sizes (no -1): an empty batch (N = 0) has nothing to infer them from.
        cin, cout = self.in_channels, self.out_channels
        if self.share_attention:
            return Attentions(
                channel=channel.view(batch, cin, 1, 1),
                filter=None if filt is None else filt.view(batch, cout, 1, 1),
                spatial=None if spatial is None else spatial.view(batch, 1, 1, 1, kh, kw),
                kernel=None if kernel is None else kernel.view(batch, n, 1, 1, 1, 1),
            )
        return Attentions(
            channel=channel.view(batch, n, cin),
            filter=None if filt is None else filt.view(batch, n, cout),
            spatial=None if spatial is None else spatial.view(batch, n, kh * kw),
            kernel=None if kernel is None else kernel.view(batch, n, 1, 1, 1, 1),
        )
