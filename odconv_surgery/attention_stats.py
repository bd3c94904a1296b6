"""Attention statistics of a converted model over data (the paper's Fig. 6): for every ODConv layer and every
attention it has, the mean and the spread across samples of the attention values, and how much the layer's
aggregated kernel varies across samples (its dynamism, ``calibration.KernelSpread``).

Per layer and attention type (``AttentionSummary``): the mean and standard deviation over samples of every
element (spatial: the kh*kw kernel positions; kernel: the n kernels; channel: the C_in input channels; filter:
the C_out filters; one row per kernel when the attention is not shared across kernels), the distribution over
samples of each sample's mean attention (``sample_means``), and the distribution over elements of their mean over
samples (``element_means``: the paper's per-channel and per-filter distributions). Values are the heads' own
outputs (sigmoid or softmax, in [0, 1]), without the layer's fixed ``kernel_scale``; the model runs in eval mode
at temperature 1. A head a layer does not have (spatial for 1x1, filter for depthwise, kernel for n = 1, any
that the ``attentions`` option leaves out) is None.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .atomic_file import atomic_write, open_for_read
from .errors import AttentionStatsFileError, LayerNotFoundError, ModelNumericsError
from .calibration import KernelSpread, calibration_batches, require_ran, run_with_hooks, select_converted
from .moments import RunningMoments
from .nn.attention import HEAD_NAMES
from .nn.odconv import ODConv2d

__all__ = ["AttentionStats", "AttentionSummary", "Distribution", "LayerAttentionStats", "attention_statistics"]

FORMAT = "odconv-surgery/attention-stats-v1"
#: The attention types, in the layer's head order (and that of every table and figure).
KINDS: tuple[str, ...] = HEAD_NAMES
MAX_FILE_BYTES = 1 << 28


def _floats(values: Any) -> tuple:
    """Nested sequences of numbers as nested tuples of floats (what JSON lists come back as, made comparable)."""
    if isinstance(values, (list, tuple)):
        return tuple(_floats(v) for v in values)
    if isinstance(values, bool) or not isinstance(values, (int, float)):
        raise TypeError(f"expected a number, got {type(values).__name__}")
    return float(values)


@dataclasses.dataclass(frozen=True)
class Distribution:
    """A set of values summarised: how many, mean, standard deviation, minimum, quartiles and maximum (a box
    plot's numbers)."""

    count: int
    mean: float
    std: float
    min: float
    q1: float
    median: float
    q3: float
    max: float

    @classmethod
    def of(cls, values: Tensor) -> "Distribution":
        """The summary of every value of ``values`` (population standard deviation: 0 for one value)."""
        v = values.detach().double().flatten().cpu().numpy()
        q1, median, q3 = np.quantile(v, [0.25, 0.5, 0.75])
        return cls(int(v.size), float(v.mean()), float(v.std()), float(v.min()), float(q1), float(median), float(q3),
                   float(v.max()))


@dataclasses.dataclass(frozen=True)
class AttentionSummary:
    """One attention type of one layer over the samples. ``mean`` and ``std``: per element, over samples, as rows
    (one per kernel when the attention is not shared across kernels, else one) of kh*kw positions (spatial),
    n kernels (kernel), C_in channels (channel) or C_out filters (filter). ``sample_means``: the distribution
    over samples of each sample's mean over the elements; ``element_means``: the distribution over elements of
    ``mean``."""

    mean: tuple[tuple[float, ...], ...]
    std: tuple[tuple[float, ...], ...]
    sample_means: Distribution
    element_means: Distribution

    @property
    def spread(self) -> float:
        """The mean over elements of their standard deviation across samples (0: the attention is constant)."""
        values = [s for row in self.std for s in row]
        return sum(values) / len(values)


@dataclasses.dataclass(frozen=True)
class LayerAttentionStats:
    """One converted layer: its geometry, the samples it saw, its kernel ``dynamism`` (RMS over samples of
    ``||K_b - mean K|| / ||mean K||``, ``folding.kernel_dynamism``'s figure; None when the mean kernel is zero)
    and one ``AttentionSummary`` per attention type (None for a head the layer does not have)."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    groups: int
    kernel_num: int
    share_attention: bool
    samples: int
    dynamism: float | None
    channel: AttentionSummary | None
    filter: AttentionSummary | None
    spatial: AttentionSummary | None
    kernel: AttentionSummary | None

    def attentions(self) -> dict[str, AttentionSummary]:
        """The attention types this layer has, by name, in ``KINDS`` order."""
        return {kind: getattr(self, kind) for kind in KINDS if getattr(self, kind) is not None}


@dataclasses.dataclass(frozen=True)
class AttentionStats:
    """Attention statistics of every measured layer, in the order the model runs them; ``samples``: the input
    samples the model was run on. ``to_json`` / ``from_json`` and ``write`` / ``read`` keep every value."""

    layers: tuple[LayerAttentionStats, ...]
    samples: int

    def layer(self, name: str) -> LayerAttentionStats:
        """The statistics of the layer called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise LayerNotFoundError(f"no layer {name!r} in these statistics; measured layers: {[l.name for l in self.layers][:10]}")

    def summary(self) -> str:
        """One line per layer: its kernel dynamism and, per attention type, the mean attention and its spread
        across samples (``AttentionSummary.spread``)."""
        rows = [f"attention statistics of {len(self.layers)} layer(s) over {self.samples} samples "
                "(per type: mean attention, +- its mean std across samples)"]
        for layer in self.layers:
            dynamism = "-" if layer.dynamism is None else f"{layer.dynamism:.3g}"
            heads = "  ".join(f"{kind} {att.element_means.mean:.3f} +-{att.spread:.3f}"
                              for kind, att in layer.attentions().items())
            kh, kw = layer.kernel_size
            rows.append(f"{layer.name}: {kh}x{kw} n={layer.kernel_num} dynamism {dynamism}  {heads}")
        return "\n".join(rows)

    def to_json(self) -> str:
        """The statistics as JSON text (``from_json`` reads it back)."""
        data = {"format": FORMAT, "samples": self.samples, "layers": [dataclasses.asdict(l) for l in self.layers]}
        return json.dumps(data, indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "the text") -> "AttentionStats":
        """Statistics from ``to_json``'s text; anything else is refused (``AttentionStatsFileError``)."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} object")
            return cls(tuple(_layer_from_dict(layer) for layer in data["layers"]), _count(data["samples"]))
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise AttentionStatsFileError(
                f"{source} is not attention statistics written by odconv-surgery ({type(exc).__name__}: {exc}); "
                "write them again with attention_statistics(...).write(path) or 'odconv-surgery stats'"
            ) from None

    def write(self, path: str | os.PathLike, *, inputs: Sequence[str | os.PathLike] = ()) -> Path:
        """Write ``to_json()`` to ``path`` atomically (``atomic_file``: an existing file that is not JSON, or one of
        ``inputs``, is refused, never replaced)."""
        payload = self.to_json().encode("utf-8")
        return atomic_write(path, lambda fh: fh.write(payload), inputs=inputs, replaces="json")

    @classmethod
    def read(cls, path: str | os.PathLike) -> "AttentionStats":
        """Statistics from a file ``write`` wrote."""
        path = Path(path).expanduser()
        with open_for_read(path) as fh:
            return cls.from_json(fh.read(MAX_FILE_BYTES), str(path))


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a count, got {value!r}")
    return value


def _number(value: Any) -> float | None:
    return None if value is None else _floats(value)


def _distribution(data: dict) -> Distribution:
    fields = {f.name: data[f.name] for f in dataclasses.fields(Distribution)}
    return Distribution(_count(fields.pop("count")), **{k: _floats(v) for k, v in fields.items()})


def _summary_from_dict(data: dict | None) -> AttentionSummary | None:
    if data is None:
        return None
    return AttentionSummary(_floats(data["mean"]), _floats(data["std"]), _distribution(data["sample_means"]),
                            _distribution(data["element_means"]))


def _layer_from_dict(data: dict) -> LayerAttentionStats:
    kh, kw = (_count(k) for k in data["kernel_size"])
    if not isinstance(data["name"], str) or not isinstance(data["share_attention"], bool):
        raise ValueError("a layer's name must be text and share_attention true or false")
    return LayerAttentionStats(
        name=data["name"], in_channels=_count(data["in_channels"]), out_channels=_count(data["out_channels"]),
        kernel_size=(kh, kw), groups=_count(data["groups"]), kernel_num=_count(data["kernel_num"]),
        share_attention=data["share_attention"], samples=_count(data["samples"]), dynamism=_number(data["dynamism"]),
        **{kind: _summary_from_dict(data[kind]) for kind in KINDS},
    )


# ------------------------------------------------------------------------------------------------- collection
class _HeadMoments:
    """One head's per-element running moments over samples, and each sample's mean attention."""

    def __init__(self) -> None:
        self.moments = RunningMoments()
        self.sample_means: list[Tensor] = []

    def add(self, values: Tensor) -> None:
        """``values``: (B, rows, size) attentions of B samples."""
        self.moments.add(values)
        self.sample_means.append(values.detach().double().flatten(1).mean(dim=1).cpu())

    def summary(self, where: str) -> AttentionSummary:
        mean, std = self.moments.mean.cpu(), self.moments.variance().sqrt().cpu()
        if not (bool(mean.isfinite().all()) and bool(std.isfinite().all())):
            raise ModelNumericsError(f"{where} is not finite on this data: the model (or its input) holds NaN or "
                                     "inf; check the weights and the data")
        return AttentionSummary(_floats(mean.tolist()), _floats(std.tolist()), Distribution.of(torch.cat(self.sample_means)),
                                Distribution.of(mean))


def _rows(kind: str, values: Tensor, share_attention: bool) -> Tensor:
    """An attention tensor of ``Attentions`` as (B, rows, size): one row per kernel for attention not shared across
    kernels (channel, filter, spatial), else one row."""
    rows = 1 if share_attention or kind == "kernel" else values.shape[1]
    return values.reshape(values.shape[0], rows, -1)


class _LayerCollector:
    """Everything measured on one layer: its heads' moments and its kernel spread."""

    def __init__(self) -> None:
        self.heads: dict[str, _HeadMoments] = {}
        self.kernels = KernelSpread()

    def add(self, layer: ODConv2d, x: Tensor) -> None:
        att = layer.attention(x)  # the heads' own values (``layer.attentions`` carries kernel_scale in channel)
        for kind in KINDS:
            values = getattr(att, kind)
            if values is not None:
                self.heads.setdefault(kind, _HeadMoments()).add(_rows(kind, values, layer.share_attention))
        self.kernels.add(layer, x)

    def result(self, name: str, layer: ODConv2d) -> LayerAttentionStats:
        dynamism = self.kernels.dynamism()
        return LayerAttentionStats(
            name=name, in_channels=layer.in_channels, out_channels=layer.out_channels,
            kernel_size=tuple(layer.kernel_size), groups=layer.groups, kernel_num=layer.kernel_num,
            share_attention=bool(layer.share_attention), samples=self.kernels.count,
            dynamism=dynamism if math.isfinite(dynamism) else None,
            **{kind: (self.heads[kind].summary(f"the {kind} attention of layer {name!r}") if kind in self.heads else None)
               for kind in KINDS},
        )


@torch.no_grad()
def attention_statistics(model: nn.Module, data: Iterable, layers: Sequence[str] | None = None, *,
                         max_batches: int | None = None) -> AttentionStats:
    """Run ``model`` on ``data`` (input batches or ``(input, target)`` pairs, e.g. a DataLoader, on the model's
    device; ``max_batches`` caps it) in eval mode at temperature 1 and return the attention statistics of the
    ODConv layers ``layers`` (names; None: every one), in the order the model runs them. The model is left in the
    mode and at the temperature it had."""
    chosen = select_converted(model, layers)
    batches = calibration_batches(data, max_batches)
    collectors = {name: _LayerCollector() for name in chosen}
    order: dict[str, None] = {}

    def record(name: str, module: ODConv2d, x: Tensor, y: Tensor) -> None:
        order.setdefault(name)
        collectors[name].add(module, x)

    run_with_hooks(model, chosen, batches, record)
    require_ran({name: c.kernels.count for name, c in collectors.items()})
    samples = sum(inputs[0].shape[0] for inputs in batches)
    return AttentionStats(tuple(collectors[name].result(name, chosen[name]) for name in order), samples)
