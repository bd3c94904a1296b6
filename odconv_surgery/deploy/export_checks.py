"""What ``export_onnx`` checks before and around the passes: a supported opset, finite weights, and a numeric
check bound calibrated to the model.

A pass is checked by running onnxruntime before and after it on a random batch. A correct pass still changes the
output by rounding, and how much depends on the model: a deep network whose BatchNorm statistics come from data
can amplify float32 rounding far beyond 1e-4, where a fixed bound cannot tell a wrong pass from the model's own
arithmetic. So the bound is ``max(tolerance, CHECK_FACTOR * e)`` where ``e`` is the model's own float32 error: its
eager output against a float64 copy's on the same batch. Well-conditioned models keep the strict ``tolerance``.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..nn.temperature import temperature_at
from ..numerics import relative_error
from ..passes.onnx.common import ModelNumericsError
from .schema import MAX_OPSET, MIN_OPSET
from ..errors import UnsupportedOpsetError  # noqa: F401 - raised here, defined with every error

#: A pass may change the output by this multiple of the model's own float32 error; correct passes stay well inside
#: it on trained-like torchvision models (the measurements are in the commit that set it).
CHECK_FACTOR = 16


def check_opset(opset: int) -> None:
    """Refuse an opset outside ``MIN_OPSET..MAX_OPSET`` before anything is exported."""
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise UnsupportedOpsetError(
            f"opset {opset!r} is not supported: export_onnx supports opsets {MIN_OPSET} to {MAX_OPSET} (the passes "
            f"emit opset-{MIN_OPSET} operator forms; {MAX_OPSET} is the newest the TorchScript exporter writes)"
        )


def check_finite_weights(model: nn.Module) -> None:
    """Raise ``ModelNumericsError`` naming the parameters and buffers that hold NaN or inf."""
    bad = [
        name
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
        if tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ModelNumericsError(
            f"the model's own weights hold NaN or inf ({', '.join(bad[:5])}{more}): the model is broken before "
            "export (diverged training, a bad checkpoint); fix or reload its weights"
        )


@torch.no_grad()
def fp32_error(model: nn.Module, feed: np.ndarray, device: torch.device | str = "cpu") -> float:
    """The model's own float32 rounding error on ``feed`` (eval mode, temperature 1): the ``relative_error`` of
    its float32 outputs against a float64 deep copy's. Raises ``ModelNumericsError`` when the float32 outputs are not finite."""
    from .runtime import flatten_outputs

    x = torch.from_numpy(feed).to(device)
    was_training = model.training
    try:
        with temperature_at(model.eval(), 1.0):
            out32 = flatten_outputs(model(x))
            model64 = copy.deepcopy(model).double()
            out64 = flatten_outputs(model64(x.double()))
    finally:
        model.train(was_training)
    if not all(torch.isfinite(t).all() for t in out32):
        raise ModelNumericsError(
            "the model's own float32 outputs hold NaN or inf on the check input (a random batch shaped like "
            "example_input): the model overflows before export; check its weights and normalisation"
        )
    return relative_error([t.double().cpu().numpy() for t in out64], [t.double().cpu().numpy() for t in out32])


def check_bound(tolerance: float, model_error: float) -> float:
    """The numeric check's bound for one pass: ``tolerance`` or ``CHECK_FACTOR`` x the model's own error."""
    return max(tolerance, CHECK_FACTOR * model_error)


#: Above this own float32 error a model's outputs depend on the order of floating-point operations.
UNSTABLE_ERROR = 1e-2


def check_note(tolerance: float, model_error: float) -> str:
    """How the bound came about, for the check's error message (and what it means when the model is unstable)."""
    note = (f"bound = max(tolerance={tolerance:g}, {CHECK_FACTOR} x the model's own float32 error "
            f"{model_error:.3g} against float64 on the check batch)")
    if model_error > UNSTABLE_ERROR:
        note += ("; a model this far from float64 is numerically unstable in float32 (its outputs change with the "
                 "order of operations: check its BatchNorm statistics), so no check can tell a wrong pass from it")
    return note


__all__ = [
    "CHECK_FACTOR",
    "ModelNumericsError",
    "UnsupportedOpsetError",
    "check_bound",
    "check_finite_weights",
    "check_note",
    "check_opset",
    "fp32_error",
]
