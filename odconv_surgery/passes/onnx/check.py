"""Numeric check helper for the passes: ORT outputs (all of them) before vs after a pass on a random batch.

A graph that still holds ``odconv.surgery::ODConv2d`` markers is made runnable for the check by lowering a copy
with the naive (reference) form. The error is measured relative to the output scale (max |reference|).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from ...numerics import DEFAULT_TOLERANCE, relative_error
from .common import PassNumericsError, has_odconv_nodes
from .lowering import lower


def runnable(model: onnx.ModelProto) -> onnx.ModelProto:
    if has_odconv_nodes(model):
        return lower(model, "naive", prefix="check/")
    return model


#: Batch size of the check's random input (2: the any-batch branch, not the batch-1 one, is what most runs use).
CHECK_BATCH = 2


def ort_run(model: onnx.ModelProto, feed: np.ndarray, threads: int = 0) -> list[np.ndarray]:
    """Every output of ``model`` on ``feed`` (markers lowered naively first)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(runnable(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: feed})


def random_batch(shape, batch: int = CHECK_BATCH, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, *tuple(shape)[1:])).astype(np.float32)


def check_pass(
    pass_name: str,
    reference: list[np.ndarray],
    after: onnx.ModelProto,
    feed: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[np.ndarray]:
    """Run ``after`` on ``feed``; raise ``PassNumericsError`` naming the pass if any output drifted from
    ``reference`` (the outputs before the pass)."""
    try:
        out = ort_run(after, feed)
    except Exception as exc:  # noqa: BLE001 - an unrunnable result is a broken pass too
        raise PassNumericsError(pass_name, float("inf"), tolerance, f"the rewritten model does not run: {exc}") from exc
    err = relative_error(reference, out)
    if not err <= tolerance:
        raise PassNumericsError(pass_name, err, tolerance)
    return out
