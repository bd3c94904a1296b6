"""What ``export_onnx`` checks before any pass: a supported opset, float32 parameters and finite weights.

The numeric check's bound, calibrated to the model's own error, is ``own_error.py``'s.
"""

from __future__ import annotations

import torch
from torch import nn

from ..passes.onnx.common import ModelNumericsError
from .schema import MAX_OPSET, MIN_OPSET
from ..errors import UnsupportedDtypeError, UnsupportedOpsetError  # noqa: F401 - raised here, defined with every error

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


def check_dtype(model: nn.Module) -> None:
    """Refuse a model whose floating parameters are not float32 (``UnsupportedDtypeError``, naming ``model.float()``):
    the lowering writes float32 constants beside them, which onnxruntime refuses to bind to one Conv."""
    dtypes = sorted({str(p.dtype) for p in model.parameters() if p.is_floating_point() and p.dtype != torch.float32})
    if dtypes:
        raise UnsupportedDtypeError(
            f"export_onnx writes float32 files, but this model's parameters are {', '.join(dtypes)}: export a float32 "
            "copy, export_onnx(copy.deepcopy(model).float(), ...) (an fp16/bf16-trained model's weights are exact "
            "in float32), and feed it float32 inputs; convert the file to float16 afterwards (e.g. onnxconverter-"
            "common's float16 converter) if a half-precision file is needed"
        )


__all__ = [
    "ModelNumericsError",
    "UnsupportedDtypeError",
    "UnsupportedOpsetError",
    "check_dtype",
    "check_finite_weights",
    "check_opset",
]
