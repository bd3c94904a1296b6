"""What ``fold_static``, ``kernel_dynamism`` and ``attention_statistics`` share: calibration data read into input
batches, the converted layers a call names, one eval pass at temperature 1 with a hook on each of them, and the
per-sample aggregated kernels with their running spread (``KernelSpread``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import Tensor, nn

from .errors import EmptySelectionError, InvalidTypeError, InvalidValueError
from .moments import RunningMoments
from .nn.converted import ConvertedLayer, converted_layers, inner_conv
from .nn.odconv import ODConv2d
from .nn.temperature import temperature_at

__all__ = ["CHUNK_ELEMENTS", "KernelSpread", "calibration_batches", "calibration_inputs", "per_sample_kernels", "require_ran",
           "run_with_hooks", "select_converted"]


def per_sample_kernels(layer: ODConv2d, x: Tensor) -> Tensor:
    """The aggregated kernel of each sample of ``x`` (B, C_out, C_in/groups, kh, kw): every attention and the fixed
    ``kernel_scale`` folded in, so that ``conv(x[b], kernel[b]) + bias`` is the layer's output for sample b."""
    kernel = layer.sample_kernels(layer.compute_attentions(x))
    return kernel.expand(x.shape[0], *kernel.shape[1:])


#: Per-sample kernels are built this many elements at a time at most (a chunk of the batch), so a wide layer's
#: B x |W| kernels never sit in memory at once.
CHUNK_ELEMENTS = 1 << 24


class KernelSpread:
    """The running mean of one layer's per-sample aggregated kernels and their spread around it
    (``moments.RunningMoments``, float64): the mean is what ``fold_static`` folds to, ``dynamism()`` what
    ``kernel_dynamism`` reports."""

    def __init__(self) -> None:
        self.moments = RunningMoments()

    @property
    def count(self) -> int:
        return self.moments.count

    def add(self, layer: ODConv2d, x: Tensor) -> None:
        """Add the kernels of the samples of ``x`` (the layer's input), a chunk of samples at a time."""
        for part in x.split(max(1, CHUNK_ELEMENTS // max(1, layer.weight[0].numel()))):
            self.moments.add(per_sample_kernels(layer, part))

    def mean(self) -> Tensor:
        """The mean kernel, in the layer's kernel shape (float64)."""
        return self.moments.mean

    def dynamism(self) -> float:
        """RMS over samples of ``||K_b - mean K||`` over ``||mean K||`` (inf when the mean kernel is zero)."""
        norm = float(self.moments.mean.norm())
        return float(self.moments.variance().sum()) ** 0.5 / norm if norm else float("inf")


def calibration_inputs(batch) -> tuple:
    """The model's positional inputs from one calibration item: a tensor, a tuple whose first item is the input
    (``(x, y)`` from a DataLoader), or a dict with ``"x"``/``"input"``."""
    if isinstance(batch, Tensor):
        return (batch,)
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return (batch[0],)
    if isinstance(batch, dict):
        for key in ("x", "input", "inputs", "pixel_values"):
            if isinstance(batch.get(key), Tensor):
                return (batch[key],)
    raise InvalidTypeError(f"calibration data items must be tensors or (input, target) pairs, got {type(batch).__name__}")


def select_converted(model: nn.Module, layers: Sequence[str] | None) -> dict[str, ConvertedLayer]:
    """The converted layers named by ``layers`` (None: every one), by name, refusing names that are not."""
    converted = converted_layers(model)
    if not converted:
        raise EmptySelectionError("the model has no ODConv2d layer; convert it with apply_odconv (or load a converted "
                                  "checkpoint) first")
    if layers is None:
        return converted
    if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
        raise InvalidTypeError(f"layers must be a list of layer names (or None for every ODConv2d), got {layers!r}")
    unknown = [n for n in layers if n not in converted]
    if unknown:
        raise InvalidValueError(f"not ODConv2d layers (nor ODLinear) of this model: {unknown}; converted layers: "
                                f"{list(converted)[:10]}")
    return {n: converted[n] for n in dict.fromkeys(layers)}


def calibration_batches(data: Iterable, max_batches: int | None) -> list[tuple]:
    """The model's positional inputs of the first ``max_batches`` items of ``data`` (None: all), refusing none."""
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1):
        raise InvalidValueError(f"max_batches must be an int >= 1 or None, got {max_batches!r}")
    batches = []
    for i, batch in enumerate(data):
        if max_batches is not None and i >= max_batches:
            break
        batches.append(calibration_inputs(batch))
    if not batches:
        raise InvalidValueError("the calibration data is empty: pass a few batches of the model's inputs")
    return batches


def require_ran(counts: dict[str, int]) -> None:
    """Refuse a result for a layer the calibration data never reached (``counts``: samples seen per layer)."""
    never = [name for name, n in counts.items() if not n]
    if never:
        raise InvalidValueError(f"layer {never[0]!r} never ran on the calibration data; give data that reaches it")


def run_with_hooks(model: nn.Module, chosen: dict[str, ConvertedLayer], batches: list[tuple], record) -> None:
    """Run ``model`` (eval, temperature 1) on ``batches`` with ``record(name, layer, x, y)`` called after each chosen
    layer's forward on a non-empty batch, ``layer`` being the ``ODConv2d`` that computes it (``inner_conv``)."""
    def hook(name: str):
        def call(module: ODConv2d, args, output: Tensor) -> None:
            if args[0].shape[0]:
                record(name, module, args[0].detach(), output.detach())
        return call

    was_training = model.training
    handles = [inner_conv(m).register_forward_hook(hook(name)) for name, m in chosen.items()]
    try:
        with temperature_at(model.eval(), 1.0):
            for inputs in batches:
                model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
