"""ONNX pass pipeline over exported ODConv graphs (onnx-graphsurgeon).

Each pass is a module with ``NAME`` and ``run(model: onnx.ModelProto) -> onnx.ModelProto``; its docstring states
the invariant it keeps. ``PIPELINE`` is the fused order; ``NAIVE_PIPELINE`` lowers without fusing.
``run_pipeline`` runs a list of passes with the numeric check (ORT before vs after) after each one.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import onnx

from ...deploy.schema import OD_DOMAIN, OD_OP, set_metadata
from . import batch_regime, fold_attention_norm, fold_output_bn, finalize, find_odconv, lower_odconv, merge_attention_heads
from .check import check_pass, ort_run, random_batch, relative_error
from .common import detect_nchwc_block, OnnxModelError, PassNumericsError, load_model

Pass = Callable[[onnx.ModelProto], onnx.ModelProto]


def _lower_naive(model: onnx.ModelProto) -> onnx.ModelProto:
    return lower_odconv.lower(model, "naive")


REGISTRY: dict[str, Pass] = {
    find_odconv.NAME: find_odconv.run,
    fold_output_bn.NAME: fold_output_bn.run,
    fold_attention_norm.NAME: fold_attention_norm.run,
    merge_attention_heads.NAME: merge_attention_heads.run,
    lower_odconv.NAME: lower_odconv.run,
    "lower_naive": _lower_naive,
    batch_regime.NAME: batch_regime.run,
    finalize.NAME: finalize.run,
}

PIPELINE: list[str] = ["find_odconv", "fold_output_bn", "fold_attention_norm", "merge_attention_heads", "batch_regime", "finalize"]
PIPELINE_NO_BATCH1: list[str] = ["find_odconv", "fold_output_bn", "fold_attention_norm", "merge_attention_heads", "lower_odconv", "finalize"]
NAIVE_PIPELINE: list[str] = ["find_odconv", "lower_naive", "finalize"]


def register_pass(name: str, fn: Pass) -> None:
    if name in REGISTRY:
        raise ValueError(f"ONNX pass {name!r} is already registered")
    REGISTRY[name] = fn


def run_pipeline(
    model,
    passes: Sequence[str] | None = None,
    *,
    fuse: bool = True,
    batch1_branch: bool = True,
    check_input: np.ndarray | None = None,
    tolerance: float = 1e-4,
    check_batch: int = 2,
    target: str = "portable",
) -> onnx.ModelProto:
    """Run ``passes`` (default: the fused or naive pipeline) over ``model`` (ModelProto, path or bytes).

    ``target="ort-cpu"`` lets the batch-1 branch use onnxruntime's CPU-only NCHWc contrib ops for every conv
    layers (see ``lower_odconv.NCHWC_BLOCK``); the default "portable" uses standard ONNX ops only.
    With ``check_input`` (an array whose shape gives C, H, W) every pass is followed by the numeric check on a
    random batch of ``check_batch``: ``PassNumericsError`` names the first pass that drifts beyond ``tolerance``.
    """
    proto = load_model(model)
    if passes is None:
        passes = (PIPELINE if batch1_branch else PIPELINE_NO_BATCH1) if fuse else NAIVE_PIPELINE
    unknown = [p for p in passes if p not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown ONNX pass(es) {unknown}; registered: {sorted(REGISTRY)}")
    feed = reference = None
    if check_input is not None:
        feed = random_batch(np.shape(check_input), batch=check_batch)
        reference = ort_run(proto, feed)
    if target not in ("portable", "ort-cpu"):
        raise ValueError(f"target must be 'portable' or 'ort-cpu', got {target!r}")
    applied = []
    saved_block = lower_odconv.NCHWC_BLOCK
    lower_odconv.NCHWC_BLOCK = detect_nchwc_block() if target == "ort-cpu" else None
    try:
        for name in passes:
            proto = REGISTRY[name](proto)
            applied.append(name)
            if feed is not None:
                reference = check_pass(name, reference, proto, feed, tolerance)
    finally:
        lower_odconv.NCHWC_BLOCK = saved_block
    set_metadata(proto, {"odconv.passes": ",".join(applied), "odconv.target": target})
    return proto


__all__ = [
    "NAIVE_PIPELINE",
    "OD_DOMAIN",
    "OD_OP",
    "OnnxModelError",
    "PIPELINE",
    "PassNumericsError",
    "REGISTRY",
    "check_pass",
    "load_model",
    "ort_run",
    "register_pass",
    "relative_error",
    "run_pipeline",
]
