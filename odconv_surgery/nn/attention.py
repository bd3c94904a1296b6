"""The multi-head attention pi(x) of ODConv (paper §3.2, Fig. 1b), and of its relatives CondConv and DyConv.

Average pool (to 1x1, or ``pool_size`` x ``pool_size``) -> FC (C_in -> A, no bias; a ``pool_size`` conv) -> norm ->
ReLU (the trunk), then up to four 1x1-conv heads: channel (C_in), filter (C_out), spatial (kh*kw), each with a
sigmoid or a softmax over its own values, and kernel (n, softmax over kernels or a sigmoid per kernel). Without the
trunk every head reads the pooled input (CondConv's routing). Each head's logits are divided by the temperature
before the activation. Which heads a layer has is ``head_widths``: the one place that decides it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from ..errors import BatchOneBatchNormError, InvalidValueError
from .options import ATTENTION_NORMS, LayerOptions

HEAD_NAMES = ("channel", "filter", "spatial", "kernel")  # the order of heads everywhere (modules, export, counts)


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


def head_widths(
    in_channels: int, out_channels: int, kernel_size: tuple[int, int], groups: int, options: LayerOptions
) -> dict[str, int]:
    """Output width of each head a layer has, in ``HEAD_NAMES`` order. A head is left out when ``options.attentions``
    leaves it out or when it could not vary anything: no spatial head for 1x1 kernels, no filter head for depthwise
    convs (the channel head already scales each filter's one input), no kernel head for a single kernel. Without
    attention sharing the channel, filter and spatial heads are n times wider (one set per kernel)."""
    per_kernel = 1 if options.share_attention else options.kernel_num
    kh, kw = kernel_size
    possible = {
        "channel": in_channels * per_kernel,
        "filter": None if in_channels == groups == out_channels else out_channels * per_kernel,
        "spatial": None if kh * kw == 1 else kh * kw * per_kernel,
        "kernel": None if options.kernel_num == 1 else options.kernel_num,
    }
    return {name: width for name, width in possible.items() if width is not None and name in options.attentions}


def attention_parameter_count(
    in_channels: int, out_channels: int, kernel_size: tuple[int, int], groups: int, options: LayerOptions
) -> int:
    """Parameters of the attention branch ``ODAttention`` builds for these arguments (0 without heads)."""
    widths = head_widths(in_channels, out_channels, kernel_size, groups, options)
    if not widths:
        return 0
    pooled = in_channels * options.pool_size**2
    if not options.attention_trunk:
        return sum((pooled + 1) * width for width in widths.values())
    hidden = attention_channels(in_channels, options)
    norm = {"bn": 2 * hidden, "ln": 2 * hidden}.get(options.attention_norm, 0)
    return pooled * hidden + norm + sum((hidden + 1) * width for width in widths.values())


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
    """Computes a layer's attentions (the heads of ``head_widths``) from the layer input."""

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
        self.activation = options.activation
        self.kernel_activation = options.kernel_activation
        self.pool_size = options.pool_size
        self.temperature_annealing = options.temperature_annealing
        self.temperature = 1.0
        widths = head_widths(in_channels, out_channels, self.kernel_size, groups, options)
        has_trunk = bool(widths) and options.attention_trunk
        hidden = attention_channels(in_channels, options) if has_trunk else 0
        self.hidden_channels = hidden  # 0: no trunk, the heads read the pooled input
        pool = options.pool_size

        self.avgpool = nn.AdaptiveAvgPool2d(pool)
        self.fc = nn.Conv2d(in_channels, hidden, pool, bias=False) if has_trunk else None
        self.norm = _make_norm(options.attention_norm, hidden) if has_trunk else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        features, head_kernel = (hidden, 1) if has_trunk else (in_channels, pool)

        def head(name: str) -> nn.Conv2d | None:
            return nn.Conv2d(features, widths[name], head_kernel) if name in widths else None

        self.channel_fc = head("channel")
        self.filter_fc = head("filter")
        self.spatial_fc = head("spatial")
        self.kernel_fc = head("kernel")

    def heads(self) -> dict[str, nn.Conv2d]:
        """The heads this layer has, by name, in ``HEAD_NAMES`` order."""
        named = {"channel": self.channel_fc, "filter": self.filter_fc, "spatial": self.spatial_fc, "kernel": self.kernel_fc}
        return {name: head for name, head in named.items() if head is not None}

    def neutral_values(self) -> dict[str, float]:
        """Each head's attention value when its logits are all zero: 0.5 for a sigmoid, 1/size for a softmax."""
        per_kernel = 1 if self.share_attention else self.kernel_num
        values = {}
        for name, head in self.heads().items():
            if name == "kernel":
                values[name] = 0.5 if self.kernel_activation == "sigmoid" else 1.0 / self.kernel_num
            else:
                values[name] = 0.5 if self.activation == "sigmoid" else per_kernel / head.out_channels
        return values

    def gain(self) -> float:
        """Factor between the layer's output with every logit zero and the plain conv of its mean kernel: the
        product of the neutral channel, filter and spatial values, times the sum of the n kernel weights."""
        values = self.neutral_values()
        gain = 1.0
        for name in ("channel", "filter", "spatial"):
            gain *= values.get(name, 1.0)
        return gain * values.get("kernel", 1.0) * (self.kernel_num if "kernel" in values else 1)

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
        if self.fc is None:  # heads on the pooled input: zero weights give zero logits, and still get gradient
            for head in self.heads().values():
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
            return
        hidden = self.hidden_channels
        if hidden < 2:
            raise InvalidValueError(
                f"the attention trunk has {hidden} hidden channel(s), a neutral or pretrained initialisation needs at "
                "least 2: set min_attention_channels >= 2 (or a larger reduction), or use init='scratch'"
            )
        with torch.no_grad():
            base = kaiming_fan_out(self.fc.weight.shape, generator)
            if self.attention_norm == "none":
                # No norm centres the trunk, so a unit's sign is the input's to decide: every second pair mirrors
                # the one before it (row -w for w), so for any input one pair of each two is active and passes
                # gradient (else a trunk of few units could start dead, all its ReLUs at zero: DyConv's C_in/4).
                mirrored = (hidden // 2) // 2
                base[2 : 4 * mirrored : 4] = -base[0 : 4 * mirrored : 4]
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

    def _activate(self, logits: Tensor, name: str, groups: int) -> Tensor:
        """The head's activation on (B, width) logits; a softmax runs over each of ``groups`` equal slices."""
        kind = self.kernel_activation if name == "kernel" else self.activation
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if kind == "sigmoid":
            return torch.sigmoid(logits)
        if groups == 1:
            return torch.softmax(logits, dim=-1)
        batch, width = logits.shape  # explicit sizes: an empty batch has nothing to infer a -1 from
        return torch.softmax(logits.view(batch, groups, width // groups), dim=-1).view(batch, width)

    def forward(self, x: Tensor) -> Attentions:
        self._check_batch(x)
        heads = self.heads()
        if not heads:
            return Attentions(None, None, None, None)
        batch = x.shape[0]
        h = self.avgpool(x)
        if self.fc is not None:
            h = self.relu(self.norm(self.fc(h)))
        n = self.kernel_num
        kh, kw = self.kernel_size
        per_kernel = 1 if self.share_attention else n
        # Explicit sizes (no -1): an empty batch (N = 0) has nothing to infer them from.
        raw = {name: self._activate(head(h).view(batch, head.out_channels), name, 1 if name == "kernel" else per_kernel)
               for name, head in heads.items()}
        channel, filt, spatial, kernel = (raw.get(name) for name in HEAD_NAMES)
        cin, cout = self.in_channels, self.out_channels
        kernel = None if kernel is None else kernel.view(batch, n, 1, 1, 1, 1)
        if self.share_attention:
            return Attentions(
                channel=None if channel is None else channel.view(batch, cin, 1, 1),
                filter=None if filt is None else filt.view(batch, cout, 1, 1),
                spatial=None if spatial is None else spatial.view(batch, 1, 1, 1, kh, kw),
                kernel=kernel,
            )
        return Attentions(
            channel=None if channel is None else channel.view(batch, n, cin),
            filter=None if filt is None else filt.view(batch, n, cout),
            spatial=None if spatial is None else spatial.view(batch, n, kh * kw),
            kernel=kernel,
        )
