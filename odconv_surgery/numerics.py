"""How two outputs of the same model are compared, everywhere: the error relative to the output scale and the
default bound on it (the ONNX pass checks, ORT vs PyTorch parity, the demo's function-preserving check)."""

from __future__ import annotations

import numpy as np

#: Default bound on ``relative_error`` for a rewrite that must not change the function (float32 rounding only).
DEFAULT_TOLERANCE = 1e-4


def relative_error(reference, output) -> float:
    """max |reference - output| / max |reference| (numpy arrays or CPU tensors); inf when the shapes differ.
    For lists of a model's outputs, the worst output (inf when their numbers differ)."""
    if isinstance(reference, (list, tuple)) or isinstance(output, (list, tuple)):
        if len(reference) != len(output):
            return float("inf")
        return max((relative_error(r, o) for r, o in zip(reference, output)), default=0.0)
    reference, output = np.asarray(reference), np.asarray(output)
    if reference.shape != output.shape:
        return float("inf")
    if not reference.size:
        return 0.0
    scale = float(np.max(np.abs(reference)))
    return float(np.max(np.abs(reference - output))) / max(scale, 1e-12)
