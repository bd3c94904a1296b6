"""The model's own error, and the one tolerance rule the export check and ``check_parity`` share.

A correct rewrite still changes the outputs by rounding, by about as much as the model's outputs already move
when only the order of floating-point operations changes. Two measures of that, on the check's own batches:

- ``fp32``: the model's eager float32 outputs against a float64 copy's (None when the model cannot run in
  float64, e.g. it creates float32 tensors in forward);
- ``runtime``: onnxruntime's outputs on a plain export of the model (torch.onnx's own graph, every ODConv layer in
  its generic PyTorch form, none of our passes) against eager float32. Where the outputs are tiny (sigmoid
  outputs near 1e-5) onnxruntime's own rounding moves them by percents, which eager float64 does not show.

The bound is ``max(tolerance, CHECK_FACTOR * worst measure)``: well-conditioned models keep the strict
``tolerance``. The runtime measure costs one more export, so it is taken only when a result exceeds the bound
without it (or when ``fp32`` cannot be measured).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from ..nn.temperature import temperature_at
from ..numerics import relative_error
from ..errors import ModelNumericsError
from .outputs import flatten_outputs

LOGGER = logging.getLogger("odconv_surgery.export")

#: A rewrite may change the output by this multiple of the model's own error; correct passes stay well inside it
#: on trained-like torchvision models (the measurements are in the commit that set it).
CHECK_FACTOR = 16

#: Above this own float32 error a model's outputs depend on the order of floating-point operations.
UNSTABLE_ERROR = 1e-2


@dataclass(frozen=True)
class OwnError:
    """The model's own error on the check batches; None where it was not (or could not be) measured."""

    fp32: float | None = None
    runtime: float | None = None

    @property
    def worst(self) -> float:
        return max((e for e in (self.fp32, self.runtime) if e is not None), default=0.0)

    def bound(self, tolerance: float) -> float:
        """``tolerance`` or ``CHECK_FACTOR`` x the worst own error, whichever is larger."""
        return max(tolerance, CHECK_FACTOR * self.worst)

    def note(self, tolerance: float) -> str:
        """How the bound came about, for error messages (and what it means when the model is unstable)."""
        parts = []
        if self.fp32 is not None:
            parts.append(f"float32 vs float64 {self.fp32:.3g}")
        if self.runtime is not None:
            parts.append(f"onnxruntime vs eager on a plain export {self.runtime:.3g}")
        own = ", ".join(parts) or "not measurable"
        note = f"bound = max(tolerance={tolerance:g}, {CHECK_FACTOR} x the model's own error: {own})"
        if (self.fp32 or 0.0) > UNSTABLE_ERROR:
            note += ("; a model this far off is numerically unstable in float32 (its outputs change with the order "
                     "of operations: check its BatchNorm statistics), so no check can tell a wrong rewrite from it")
        elif (self.runtime or 0.0) > UNSTABLE_ERROR:
            note += ("; onnxruntime's own kernels already move this model's outputs that much (typically outputs "
                     "far smaller than 1, e.g. sigmoid scores near 0), so the check cannot be stricter than that")
        return note


def warn_if_unstable(own: OwnError, tolerance: float, what: str) -> None:
    """Warn that ``what`` (a check that passed) could not tell a wrong result from the model's own noise."""
    if (own.fp32 or 0.0) > UNSTABLE_ERROR:
        warnings.warn(f"{what} passed under a bound of {own.bound(tolerance):.3g} only: {own.note(tolerance)}", stacklevel=3)


def _tensors(feed: np.ndarray | Sequence[np.ndarray], device: torch.device | str) -> list[torch.Tensor]:
    arrays = [feed] if isinstance(feed, np.ndarray) else list(feed)
    return [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays]


@torch.no_grad()
def eager_outputs(model: nn.Module, feed: np.ndarray | Sequence[np.ndarray], device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """The model's outputs on ``feed`` (eval mode, temperature 1), flattened as the exporter flattens them."""
    was_training = model.training
    try:
        with temperature_at(model.eval(), 1.0):
            return flatten_outputs(model(*_tensors(feed, device)))
    finally:
        model.train(was_training)


@torch.no_grad()
def fp32_error(model: nn.Module, feed: np.ndarray | Sequence[np.ndarray], device: torch.device | str = "cpu") -> float | None:
    """The model's own float32 rounding error on ``feed``: the ``relative_error`` of its float32 outputs against a
    float64 deep copy's. None when the copy cannot run in float64 (a forward that makes float32 tensors).
    Raises ``ModelNumericsError`` when the float32 outputs are not finite."""
    out32 = eager_outputs(model, feed, device)
    if not all(torch.isfinite(t).all() for t in out32 if t.is_floating_point()):
        raise ModelNumericsError(
            "the model's own float32 outputs hold NaN or inf on the check input (a random batch shaped like "
            "example_input): the model overflows before export; check its weights and normalisation"
        )
    wide = [a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a for a in
            ([feed] if isinstance(feed, np.ndarray) else list(feed))]
    try:
        out64 = eager_outputs(copy.deepcopy(model).double(), wide, device)
    except Exception as exc:  # noqa: BLE001 - whatever the model's forward raises in float64
        LOGGER.debug("the model's float64 copy does not run (%s: %s); float32 error not measured", type(exc).__name__, exc)
        return None
    return relative_error([t.double().cpu().numpy() for t in out64], [t.double().cpu().numpy() for t in out32])


def worst_fp32_error(model: nn.Module, feeds: Sequence[np.ndarray | Sequence[np.ndarray]],
                     device: torch.device | str = "cpu") -> float | None:
    """``fp32_error`` over several feeds (batch sizes: a layer's eager form depends on the batch), the worst; feeds
    the eager model does not run on (its code fixes the batch) are left out. None when none could be measured."""
    errors = []
    for feed in feeds:
        try:
            errors.append(fp32_error(model, feed, device))
        except ModelNumericsError:
            raise
        except Exception as exc:  # noqa: BLE001 - the model's own code refuses this batch size
            LOGGER.debug("the model does not run on a check batch (%s: %s)", type(exc).__name__, exc)
    measured = [e for e in errors if e is not None]
    return max(measured) if measured else None


def runtime_error(
    model: nn.Module, example: Sequence[torch.Tensor], feeds: Sequence[np.ndarray | Sequence[np.ndarray]],
    plain_export: Callable[[nn.Module, Sequence[torch.Tensor]], Any],
) -> float | None:
    """onnxruntime's own error on the model: a plain export (no markers, no passes) run on each feed against eager
    float32, the worst over the feeds. None when the plain export does not export or run (logged at DEBUG)."""
    from ..passes.onnx.check import run_feed, session

    try:
        proto = plain_export(model, example)
        sess = session(proto)
        errors = []
        for feed in feeds:
            ref = [t.detach().cpu().numpy() for t in eager_outputs(model, feed, example[0].device)]
            errors.append(relative_error(ref, run_feed(sess, feed)))
    except Exception as exc:  # noqa: BLE001 - a measurement only: the caller falls back to the other one
        LOGGER.debug("plain export for the runtime's own error failed (%s: %s)", type(exc).__name__, exc)
        return None
    return max(errors, default=0.0)


def with_runtime(own: OwnError, model: nn.Module, example: Sequence[torch.Tensor], feeds,
                 plain_export: Callable[[nn.Module, Sequence[torch.Tensor]], Any]) -> OwnError:
    """``own`` with the runtime's error measured (once) on ``plain_export(model, example)``: the model exported
    with no marker and no pass (``deploy.export.plain_export``, handed in so this module imports no exporter)."""
    if own.runtime is not None:
        return own
    return replace(own, runtime=runtime_error(model, example, feeds, plain_export))


__all__ = [
    "CHECK_FACTOR", "OwnError", "UNSTABLE_ERROR", "eager_outputs", "fp32_error", "runtime_error", "warn_if_unstable",
    "worst_fp32_error",
    "with_runtime",
]
