"""What a converted layer's dynamism is worth, measured on labelled data: the test top-1 and the test loss lost when
that layer alone is folded back into a plain convolution (``folding.fold_static``). The reference that cheaper
value measures (``kernel_dynamism``) are validated against (``agreement.py``), and a value measure of its own.

Cost: one calibration pass on a copy folds every layer at once (a layer's folded kernel depends only on its own
inputs in the unfolded model, so folding them together or one at a time gives the same convs), then one pass over
the test data per layer, with that layer's folded conv swapped into a second copy and swapped out again. The test
batches are built once; ``max_samples`` caps them. The caller's model is not modified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..errors import DatasetError, InvalidTypeError, InvalidValueError
from ..folding import fold_static
from ..model_copy import copy_model
from ..nn.temperature import temperature_at
from ..nn.validation import check_int
from ..passes.fx.swap_modules import swap_module


@dataclass(frozen=True)
class FoldDrop:
    """One layer folded alone: test top-1 points lost (negative: the fold helped), mean cross-entropy gained, and the
    fold's relative output error on the calibration data (``fold_static``'s report)."""

    name: str
    top1_drop: float
    loss_increase: float
    fold_error: float


@dataclass(frozen=True)
class _Score:
    top1: float
    loss: float


@torch.no_grad()
def fold_drops(model: nn.Module, calibration: Iterable, test: Dataset | Iterable, *,
               layers: Sequence[str] | None = None, max_batches: int | None = None, max_samples: int | None = None,
               batch_size: int = 256) -> dict[str, FoldDrop]:
    """Per converted layer of ``model`` (``layers``: names; None: every ``ODConv2d``), what folding that layer alone
    costs on ``test``: a ``FoldDrop``. ``calibration``: input batches or ``(input, target)`` pairs the folds are
    calibrated on (training data; ``max_batches`` caps them). ``test``: held-out labelled data, a ``Dataset`` of
    ``(image, label)`` pairs or an iterable of ``(input, target)`` batches (``max_samples`` caps it). Eval mode,
    temperature 1, as ``fold_static`` folds."""
    if max_samples is not None:
        check_int("max_samples", max_samples, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    batches = _labelled_batches(test, batch_size, max_samples)
    folded, report = fold_static(copy_model(model), calibration, layers, max_batches=max_batches)
    work = copy_model(model).eval()
    base = _score(work, batches)
    out = {}
    for layer in report.layers:
        dynamic, conv = work.get_submodule(layer.name), folded.get_submodule(layer.name)
        swap_module(work, dynamic, conv)
        try:
            score = _score(work, batches)
        finally:
            swap_module(work, conv, dynamic)
        out[layer.name] = FoldDrop(layer.name, base.top1 - score.top1, score.loss - base.loss, layer.relative_error)
    return out


def _labelled_batches(test: Dataset | Iterable, batch_size: int, max_samples: int | None) -> list[tuple[Tensor, Tensor]]:
    """The test data as a list of (input, label) batches, at most ``max_samples`` samples in all."""
    if isinstance(test, (str, bytes)) or not isinstance(test, (Dataset, Iterable)):
        raise InvalidTypeError(f"test must be a Dataset of (image, label) pairs or an iterable of (input, target) "
                               f"batches (labelled held-out data), got {type(test).__name__}")
    source = DataLoader(test, batch_size=batch_size, shuffle=False) if isinstance(test, Dataset) else test
    out, seen = [], 0
    for item in source:
        if not (isinstance(item, (tuple, list)) and len(item) >= 2 and isinstance(item[0], Tensor)
                and isinstance(item[1], Tensor) and item[1].dtype in (torch.int64, torch.int32)):
            raise InvalidValueError("the test data must hold (input, integer class label) pairs: the fold's accuracy "
                                    "drop needs labels (pass DataBundle.test, or a DataLoader of (x, y))")
        x, y = item[0], item[1].long()
        if max_samples is not None:
            x, y = x[:max_samples - seen], y[:max_samples - seen]
        if len(y):
            out.append((x, y))
            seen += len(y)
        if max_samples is not None and seen >= max_samples:
            break
    if not seen:
        raise DatasetError("the test data for the accuracy drop is empty; pass held-out labelled samples")
    return out


def _score(model: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> _Score:
    """Top-1 (%) and mean cross-entropy of ``model`` on ``batches``, eval mode, temperature 1."""
    correct, loss, total = 0, 0.0, 0
    with temperature_at(model.eval(), 1.0):
        for x, y in batches:
            logits = model(x)
            correct += int((logits.argmax(dim=1) == y).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            total += len(y)
    return _Score(100.0 * correct / total, loss / total)


__all__ = ["FoldDrop", "fold_drops"]
