"""``ODConv2d``: omni-dimensional dynamic convolution (paper Eq. 2), a drop-in for ``nn.Conv2d``.

y = (sum_i alpha_wi * alpha_fi * alpha_ci * alpha_si * W_i) * x + b

Channel attention scales the input and filter attention scales the output (equivalent to scaling the kernel,
and cheaper); spatial and kernel attentions build one aggregated kernel per sample, run as a single grouped
convolution over the batch, or, for batched n = 1 dense layers where that is cheaper, a sum of static 1x1 convs
over the kernel taps. A 1x1 layer with one kernel has no per-sample kernel and runs as a plain conv.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from .geometry import conv_output_size, same_padding
from .attention import Attentions, ODAttention, kaiming_fan_out
from .options import LAYER_KEYS, LayerOptions
from .validation import bank_bytes, check_choice, check_int
from .validation import check_memory as check_bank_memory
from ..errors import InvalidTypeError, InvalidValueError, KernelBankError

InitMode = Literal["pretrained", "neutral", "scratch"]
INIT_MODES: tuple[str, ...] = get_args(InitMode)


class ODConv2d(nn.Module):
    """Omni-dimensional dynamic 2-D convolution with the full ``nn.Conv2d`` argument set.

    ``weight`` is the kernel bank of shape (n, C_out, C_in/groups, kh, kw); ``attention`` computes the four
    attentions. The layer settings (``kernel_num`` n, ``reduction`` r, ...) come from ``options`` (a
    ``LayerOptions``), or as keywords (``ODConv2d(8, 16, 3, kernel_num=4)``), which replace the options' values;
    each is also an attribute (``layer.kernel_num``). ``check_memory=False`` skips the free-memory probe, for a
    caller that checked every layer's bank at once (``apply_odconv``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        padding_mode: str = "zeros",
        *,
        options: LayerOptions | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        check_memory: bool = True,
        **settings: Any,
    ) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, minimum=1)
        out_channels = check_int("out_channels", out_channels, minimum=1)
        groups = check_int("groups", groups, minimum=1)
        if in_channels % groups or out_channels % groups:
            raise InvalidValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})")
        options = (LayerOptions() if options is None else options).merged(settings, "ODConv2d")
        kernel_num = options.kernel_num
        if check_memory:
            check_bank_memory(
                bank_bytes(kernel_num, out_channels, in_channels // groups, _pair(kernel_size), dtype), device,
                f"the ODConv2d kernel bank (kernel_num={kernel_num} x {out_channels} x {in_channels // groups} x "
                f"{'x'.join(map(str, _pair(kernel_size)))})", "lower kernel_num",
            )
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise InvalidValueError(f"padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular', got {padding_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        if isinstance(self.padding, str) and self.padding not in ("same", "valid"):
            raise InvalidValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        if self.padding == "same" and any(s != 1 for s in self.stride):
            raise InvalidValueError("padding='same' is not supported for strided convolutions (as in nn.Conv2d)")
        self.dilation = _pair(dilation)
        for name, pair, low in (("stride", self.stride, 1), ("dilation", self.dilation, 1),
                                ("padding", () if isinstance(self.padding, str) else self.padding, 0)):
            for value in pair:
                check_int(f"ODConv2d {name}", value, minimum=low)
        self.groups = groups
        self.padding_mode = padding_mode
        for key, value in options.as_dict().items():  # layer.kernel_num, layer.reduction, ...
            setattr(self, key, value)
        factory = {"device": device, "dtype": dtype}
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(kernel_num, out_channels, in_channels // groups, kh, kw, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        # Fixed (not trained) factor on the aggregated kernel: 1 / attention gain after the function-preserving
        # init, so the bank keeps the trained kernels' scale (and their learning dynamics); 1 otherwise.
        self.register_buffer("kernel_scale", torch.ones((), **factory))
        self.attention = ODAttention(
            in_channels,
            out_channels,
            self.kernel_size,
            groups=groups,
            options=options,
        ).to(**factory)
        self._padding_for_pad = self._explicit_padding()
        self.reset_parameters()

    @property
    def options(self) -> LayerOptions:
        """The layer's settings, read from its attributes (which code such as ``fuse_batchnorm`` may change)."""
        return LayerOptions.from_settings({key: getattr(self, key) for key in LAYER_KEYS})

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        *,
        options: LayerOptions | None = None,
        init: InitMode = "pretrained",
        generator: torch.Generator | None = None,
        check_memory: bool = True,
        **settings: Any,
    ) -> "ODConv2d":
        """Build an ODConv2d with ``conv``'s geometry and ``options`` (or the settings as keywords, e.g. ``kernel_num=4``).

        ``init="pretrained"`` makes it function-preserving: at conversion its output equals ``conv``'s and its
        kernels keep their trained scale (see ``load_static_weight``). ``init="neutral"`` is the same without the
        fixed ``kernel_scale``: the layer starts as the constant multiple ``attention_gain()`` of ``conv`` (absorbed
        by a following BatchNorm). ``init="scratch"`` uses the paper's Kaiming initialisation.
        """
        if not isinstance(conv, nn.Conv2d):
            raise InvalidTypeError(f"ODConv2d.from_conv expects an nn.Conv2d, got {type(conv).__name__}")
        check_choice("init", init, INIT_MODES)
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            options=options,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            check_memory=check_memory,
            **settings,
        )
        if init == "scratch":
            layer.reset_parameters(generator)
        else:
            layer.load_static_weight(conv.weight, conv.bias, generator=generator, preserve_function=init == "pretrained")
        layer.train(conv.training)
        return layer

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Paper/reference initialisation: each kernel Kaiming normal (fan_out, relu); attention likewise.

        Drawn on the CPU in float32, so a seeded ``generator`` gives the same layer on every device and dtype."""
        self.weight.copy_(torch.stack([kaiming_fan_out(self.weight.shape[1:], generator) for _ in range(self.kernel_num)]))
        self.kernel_scale.fill_(1.0)
        if self.bias is not None:
            fan_in = self.weight[0, 0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            self.bias.copy_(torch.empty(self.bias.shape).uniform_(-bound, bound, generator=generator))
        self.attention.reset_parameters_scratch(generator)

    def attention_gain(self) -> float:
        """Output of the layer with every head at zero logits, relative to the plain conv of its mean kernel (e.g.
        0.5**3 with sigmoid channel, filter and spatial heads); see ``ODAttention.gain``."""
        return self.attention.gain()

    @torch.no_grad()
    def load_static_weight(
        self,
        weight: Tensor,
        bias: Tensor | None = None,
        *,
        divergence: float = 1e-2,
        generator: torch.Generator | None = None,
        preserve_function: bool = True,
    ) -> None:
        """Initialise from a static kernel ``weight`` (C_out, C_in/g, kh, kw), keeping its scale.

        Heads get zero logits for every input (``ODAttention.reset_parameters_neutral``), so the attentions are
        the constants sigmoid(0)=0.5 and softmax(0)=1/n, whose product is ``attention_gain()``. Each kernel is
        W_i = W + d_i with zero-sum perturbations d_i, so the uniform mixture is exactly W while the kernels (and
        the kernel attention) receive different gradients and diverge in training. ``divergence`` is the size of
        d_i relative to W's std. ``preserve_function`` sets the fixed ``kernel_scale`` to 1/gain, so the output
        equals the static conv's; the bank itself is never rescaled, because dividing it by the gain would divide
        its effective learning rate under a following BatchNorm by gain^2 (64x with three sigmoid heads).
        Random draws happen on the CPU in float32, so a seed gives the same layer on every device and dtype.
        """
        expected = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        if tuple(weight.shape) != expected:
            raise InvalidValueError(f"static weight has shape {tuple(weight.shape)}, expected {expected}")
        self.attention.reset_parameters_neutral(generator)
        if self.weight.is_meta:  # a model built on the meta device (for accounting) has no values to copy
            return
        if weight.is_meta:
            raise InvalidValueError("the static weight is on the meta device (it has no values): load real weights "
                                    "into the model first, or build the ODConv2d on the meta device too")
        base = weight.detach().to(device="cpu", dtype=torch.float32)
        bank = base.unsqueeze(0).repeat(self.kernel_num, 1, 1, 1, 1)
        if self.kernel_num > 1:
            noise = torch.randn(bank.shape, generator=generator)
            noise = noise - noise.mean(dim=0, keepdim=True)
            bank += noise * (divergence * base.std().clamp_min(1e-12))
        self.weight.copy_(bank)
        self.kernel_scale.fill_(1.0 / self.attention_gain() if preserve_function else 1.0)
        if self.bias is not None:
            if bias is None:
                self.bias.zero_()
            else:
                self.bias.copy_(bias)

    def _apply(self, fn, recurse=True):
        """Apply ``fn`` to the 5-D kernel bank as the 4-D (n * C_out, C_in/g, kh, kw) stack of its kernels, so that
        ``to(memory_format=torch.channels_last)`` lays every kernel out like an ``nn.Conv2d`` weight (torch applies
        a 4-D memory format to 4-D and 5-D tensors alike and refuses channels_last on the 5-D bank)."""

        def per_kernel(t: Tensor) -> Tensor:
            if isinstance(t, Tensor) and t.dim() == 5:
                return fn(t.flatten(0, 1)).unflatten(0, t.shape[:2])
            return fn(t)

        return super()._apply(per_kernel, recurse)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # Checkpoints from before ``kernel_scale`` existed stored the bank already divided by the gain: scale 1.
        state_dict.setdefault(prefix + "kernel_scale", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    # ------------------------------------------------------------------ forward
    def _pads(self) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) padding of the input, for ``F.pad``."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            (top, bottom), (left, right) = same_padding(self.kernel_size, self.dilation)
            return (left, right, top, bottom)
        ph, pw = self.padding
        return (pw, pw, ph, ph)

    def _explicit_padding(self) -> tuple[int, int, int, int] | None:
        """``_pads()`` when padding_mode is not 'zeros' (the input is padded before the conv), else None."""
        return None if self.padding_mode == "zeros" else self._pads()

    def _conv(self, x: Tensor, weight: Tensor, groups: int) -> Tensor:
        if self._padding_for_pad is not None:
            x = F.pad(x, self._padding_for_pad, mode=self.padding_mode)
            return F.conv2d(x, weight, None, self.stride, 0, self.dilation, groups)
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, groups)

    def channel_scale(self, att: Attentions) -> Tensor:
        """What scales the input channels: the channel attention from ``attentions`` (``kernel_scale`` folded in), or
        ``kernel_scale`` alone (a 0-d tensor) for a layer without a channel attention."""
        return self.kernel_scale if att.channel is None else att.channel

    def has_per_sample_kernel(self) -> bool:
        """Whether forward needs a per-sample aggregated kernel (spatial or kernel attention, or attentions not
        shared between kernels); a layer without any head has none."""
        if not self.attention.heads():
            return False
        return self.attention.spatial_fc is not None or self.kernel_num > 1 or not self.share_attention

    def aggregate_weight(self, att: Attentions) -> Tensor:
        """Per-sample kernels (B, C_out, C_in/g, kh, kw) for the shared-attention case (no channel/filter)."""
        if att.kernel is None:  # n = 1: no mixture to sum
            weight = self.weight[0].unsqueeze(0)
            return weight * att.spatial[:, 0] if att.spatial is not None else weight
        weight = self.weight.unsqueeze(0)  # (1, n, C_out, C_in/g, kh, kw)
        if att.spatial is not None:
            weight = weight * att.spatial
        return (weight * att.kernel).sum(dim=1)

    def sample_kernels(self, att: Attentions) -> Tensor:
        """The aggregated kernel of each sample, every attention and ``kernel_scale`` folded in: (B, C_out, C_in/g,
        kh, kw), or (1, ...) when it is the same for every sample; ``conv(x[b], K[b]) + bias`` is the output for
        sample b. ``att``: ``compute_attentions(x)``."""
        if not self.share_attention and self.has_per_sample_kernel():
            return self._aggregate_unshared(att)
        kernel = self.aggregate_weight(att) * self._channel_as_weight(self.channel_scale(att))
        return kernel * att.filter.unsqueeze(-1) if att.filter is not None else kernel

    def _aggregate_unshared(self, att: Attentions) -> Tensor:
        """Per-sample kernels when each kernel has its own channel/filter/spatial attention (Table 12)."""
        n = self.kernel_num
        batch = next(a.shape[0] for a in att if a is not None)  # has_per_sample_kernel: some head exists
        kh, kw = self.kernel_size
        cin_g = self.in_channels // self.groups
        weight = self.weight.view(1, n, self.groups, self.out_channels // self.groups, cin_g, kh * kw)
        if att.channel is not None:
            channel = att.channel.view(batch, n, self.groups, 1, cin_g)  # per input channel, grouped
            weight = weight * channel.unsqueeze(-1)
        weight = weight.expand(batch, *weight.shape[1:]).reshape(batch, n, self.out_channels, cin_g, kh, kw)
        if att.filter is not None:
            weight = weight * att.filter.view(batch, n, self.out_channels, 1, 1, 1)
        if att.spatial is not None:
            weight = weight * att.spatial.view(batch, n, 1, 1, kh, kw)
        if att.kernel is not None:
            weight = weight * att.kernel
        return weight.sum(dim=1) if att.channel is not None else weight.sum(dim=1) * self.kernel_scale

    def _grouped_per_sample_conv(self, x: Tensor, weight: Tensor) -> Tensor:
        """Convolve each sample with its own kernel: one conv with the batch folded into the groups."""
        batch, _, height, width = x.shape
        out = self._conv(
            x.reshape(1, batch * self.in_channels, height, width),
            weight.reshape(batch * self.out_channels, self.in_channels // self.groups, *self.kernel_size),
            groups=self.groups * batch,
        )
        return out.view(batch, self.out_channels, out.shape[-2], out.shape[-1])

    def _output_size(self, height: int, width: int) -> tuple[int, int]:
        """Output (H, W) for an input of (height, width)."""
        left, right, top, bottom = self._pads()
        return (conv_output_size(height, self.kernel_size[0], self.stride[0], self.dilation[0], top, bottom),
                conv_output_size(width, self.kernel_size[1], self.stride[1], self.dilation[1], left, right))

    def _use_tap_sum(self, x: Tensor) -> bool:
        """Whether the tap-sum form touches fewer elements than per-sample kernels: n = 1 dense layers with a
        spatial head and a batch, when B x |W| (per-sample kernels, e.g. deep layers in batch training) exceeds the
        taps' shifted inputs and scaled outputs (kh*kw x B x (C_in + C_out) x output pixels)."""
        batch, _, height, width = x.shape
        if not (batch > 1 and self.kernel_num == 1 and self.groups == 1 and self.attention.spatial_fc is not None
                and self.padding_mode == "zeros"):
            return False  # at batch 1 the per-sample kernel is one ordinary conv: fewer, larger ops
        out_h, out_w = self._output_size(height, width)
        taps = self.kernel_size[0] * self.kernel_size[1]
        per_sample_kernel = batch * self.out_channels * self.in_channels * taps
        tap_sum = taps * batch * (self.in_channels + self.out_channels) * out_h * out_w
        return tap_sum < per_sample_kernel

    def _forward_tap_sum(self, x: Tensor, att: Attentions) -> Tensor:
        """y = sum over kernel taps t of alpha_s[t] * (W[:, :, t] * shifted x): static-weight 1x1 convs whose outputs
        the spatial attention scales per sample, so no per-sample kernel (or its B x |W| gradient) is built."""
        batch = x.shape[0]
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        out_h, out_w = self._output_size(x.shape[-2], x.shape[-1])
        x = F.pad(x * self.channel_scale(att), self._pads())
        spatial = att.spatial.reshape(batch, kh * kw, 1, 1, 1)
        out = None
        for i in range(kh):
            for j in range(kw):
                shifted = x[:, :, i * dh : i * dh + sh * (out_h - 1) + 1 : sh, j * dw : j * dw + sw * (out_w - 1) + 1 : sw]
                term = F.conv2d(shifted, self.weight[0, :, :, i : i + 1, j : j + 1]) * spatial[:, i * kw + j]
                out = term if out is None else out + term
        return out

    def _channel_as_weight(self, channel: Tensor) -> Tensor:
        """Channel attention (B, C_in, 1, 1) laid out as a per-sample kernel factor (B, C_out, C_in/g, 1, 1); a 0-d
        ``channel_scale`` (no channel attention) is returned as is."""
        if channel.dim() == 0:
            return channel
        batch = channel.shape[0]
        cin_g, cout_g = self.in_channels // self.groups, self.out_channels // self.groups
        grouped = channel.view(batch, self.groups, 1, cin_g).expand(batch, self.groups, cout_g, cin_g)
        return grouped.reshape(batch, self.out_channels, cin_g, 1, 1)

    def _scale_kernel_not_activations(self, x: Tensor) -> bool:
        """Whether folding channel/filter attention into the per-sample kernel touches fewer elements than
        scaling the input and output activations (true for early, high-resolution layers and depthwise convs)."""
        kernel = self.out_channels * (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
        activations = (self.in_channels + self.out_channels) * x.shape[-2] * x.shape[-1]
        return kernel < activations

    def _forward_pointwise(self, x: Tensor, att: Attentions) -> Tensor | None:
        """1x1, n=1, dense, stride 1, no padding: one batched matmul with per-sample scaled weights, or None."""
        if not (
            self.groups == 1 and self.stride == (1, 1) and self.padding in ((0, 0), "valid", "same")
            and self.padding_mode == "zeros" and x.is_contiguous()
        ):
            return None
        batch, _, height, width = x.shape
        channel = self.channel_scale(att)
        weight = self.weight[0].view(1, self.out_channels, self.in_channels)
        weight = weight * (channel if channel.dim() == 0 else channel.view(batch, 1, self.in_channels))
        if att.filter is not None:
            weight = weight * att.filter.view(batch, -1, 1)
        out = torch.matmul(weight, x.view(batch, self.in_channels, height * width))
        return out.view(batch, self.out_channels, height, width)

    def _forward_empty(self, x: Tensor) -> Tensor:
        """An empty batch (N = 0: RoI heads when no box survives) gives ``nn.Conv2d``'s empty output. Every
        attention still runs (on zero samples), so backward leaves zero gradients everywhere, as for nn.Conv2d."""
        out = self._conv(x, self.weight[0], self.groups)
        for attention in self.attention(x):
            if attention is not None:
                out = out + attention.sum()  # a zero that ties the head into the graph
        return self._add_bias(out)

    def _add_bias(self, out: Tensor) -> Tensor:
        """``out`` plus the bias, in ``out``'s dtype: under autocast the output stays in the low dtype, as
        ``nn.Conv2d``'s does (an fp32 bias would promote it to fp32 and double the activation memory)."""
        if self.bias is None:
            return out
        return out + self.bias.to(out.dtype).view(1, -1, 1, 1)

    def _check_bank(self) -> None:
        """Refuse a bank that foreign code reshaped, e.g. a BatchNorm fold written for 4-D kernels (ultralytics'
        ``fuse()`` broadcasts the BN scale over the kernel axis), instead of computing wrong outputs."""
        expected = (self.kernel_num, self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        bias_ok = self.bias is None or tuple(self.bias.shape) == (self.out_channels,)
        if tuple(self.weight.shape) != expected or not bias_ok:
            got = f"weight {tuple(self.weight.shape)}" + ("" if bias_ok else f", bias {tuple(self.bias.shape)}")
            raise KernelBankError(
                f"ODConv2d kernel bank has {got}, expected weight {expected} (n, C_out, C_in/groups, kh, kw) and "
                f"bias ({self.out_channels},). Code written for nn.Conv2d rewrote it, typically a Conv+BatchNorm "
                "fold (ultralytics' model.fuse(), torch.nn.utils.fusion). Reload the weights and call "
                "odconv_surgery.fuse_batchnorm(model) before such code: it folds BatchNorm into every kernel of "
                "the bank, and leaves no BatchNorm for the foreign fold to touch."
            )

    def compute_attentions(self, x: Tensor) -> Attentions:
        """The layer's attentions for input ``x``, with the fixed ``kernel_scale`` carried by the channel attention
        (every formulation is linear in it, and it is the smallest tensor to scale)."""
        att = self.attention(x)
        return att if att.channel is None else att._replace(channel=att.channel * self.kernel_scale)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise InvalidValueError(f"ODConv2d expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
        self._check_bank()
        if x.shape[0] == 0:
            return self._forward_empty(x)
        att = self.compute_attentions(x)
        if not self.share_attention and self.has_per_sample_kernel():
            out = self._grouped_per_sample_conv(x, self.sample_kernels(att))
        elif self._use_tap_sum(x):
            out = self._forward_tap_sum(x, att)
            if att.filter is not None:
                out = out * att.filter
        elif self._scale_kernel_not_activations(x):
            # Same maths, fewer elements touched: the attentions scale a per-sample kernel instead of activations.
            out = None if self.has_per_sample_kernel() else self._forward_pointwise(x, att)
            if out is None:
                weight = self.sample_kernels(att)
                out = self._grouped_per_sample_conv(x, weight.expand(x.shape[0], *weight.shape[1:]))
        else:
            if att.channel is not None:
                x = x * att.channel
            scale = 1.0 if att.channel is not None else self.kernel_scale  # kernel_scale on the kernel, not on x
            if self.has_per_sample_kernel():
                out = self._grouped_per_sample_conv(x, self.aggregate_weight(att) * scale)
            else:
                out = self._conv(x, self.weight[0] * scale, self.groups)
            if att.filter is not None:
                out = out * att.filter
        return self._add_bias(out)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        s += f", kernel_num={self.kernel_num}, reduction={self.reduction:g}"
        if not self.share_attention:
            s += ", share_attention=False"
        defaults = LayerOptions()
        for key in ("attention_norm", "attentions", "activation", "kernel_activation", "pool_size", "attention_trunk"):
            if getattr(self, key) != getattr(defaults, key):
                s += f", {key}={getattr(self, key)}"
        return s
