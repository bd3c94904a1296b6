"""The registered ONNX passes, their orders, and ``run_pipeline`` with the numeric check after every pass.

Order of the fused pipeline (each pass's module docstring states the invariant it keeps):
``find_odconv`` (validate, no change) -> ``fold_output_bn`` -> ``fold_attention_norm`` -> ``merge_attention_heads``
-> ``lower_by_batch_regime`` (lower twice, ``If`` on the batch size) or ``lower_odconv`` (any-batch form only)
-> ``block_static_convs`` -> ``chain_nchwc`` -> ``guard_nchwc_block`` (ort-cpu only: the model's convs blocked
beside the NCHWc ODConv layers, reorders and fusions, the block guard) -> ``check_and_infer_shapes`` (cleanup,
toposort, checker, shape inference). ``NAIVE_PIPELINE`` lowers without fusing. Pass names are verbs; they are recorded in the exported file's ``odconv.passes`` metadata.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import onnx

from ...deploy.schema import META_NCHWC_BLOCK, META_PASSES, META_TARGET, NCHWC_DOMAIN, set_metadata
from ...errors import InvalidValueError
from ...numerics import DEFAULT_TOLERANCE
from .base import FunctionPass, OnnxPass, PassContext
from .check import CHECK_BATCH, as_examples, check_pass, reference_outputs
from .block_static_convs import BlockStaticConvs
from .chain_nchwc import ChainNchwc
from .check_and_infer_shapes import CheckAndInferShapes
from .guard_nchwc_block import GuardNchwcBlock
from .common import load_model
from .find_odconv import FindODConv
from .fold_attention_norm import FoldAttentionNorm
from .fold_output_bn import FoldOutputBN
from .gs_logging import graphsurgeon_to_logging
from .lower_by_batch_regime import LowerByBatchRegime
from .lower_odconv import LowerODConv
from .merge_attention_heads import MergeAttentionHeads

REGISTRY: dict[str, OnnxPass] = {
    p.NAME: p
    for p in (
        FindODConv(),
        FoldOutputBN(),
        FoldAttentionNorm(),
        MergeAttentionHeads(),
        LowerODConv("lower_odconv", "any"),
        LowerODConv("lower_naive", "naive"),
        LowerByBatchRegime(),
        BlockStaticConvs(),
        ChainNchwc(),
        GuardNchwcBlock(),
        CheckAndInferShapes(),
    )
}

_FOLDS = ["find_odconv", "fold_output_bn", "fold_attention_norm", "merge_attention_heads"]
#: The whole-graph NCHWc steps (``target="ort-cpu"``; no-ops for the portable target).
_NCHWC = ["block_static_convs", "chain_nchwc", "guard_nchwc_block"]
PIPELINE: list[str] = [*_FOLDS, "lower_by_batch_regime", *_NCHWC, "check_and_infer_shapes"]
PIPELINE_NO_BATCH1: list[str] = [*_FOLDS, "lower_odconv", *_NCHWC, "check_and_infer_shapes"]
NAIVE_PIPELINE: list[str] = ["find_odconv", "lower_naive", "check_and_infer_shapes"]


def register_pass(name: str, fn: "OnnxPass | Callable[[onnx.ModelProto], onnx.ModelProto]") -> None:
    """Register an ``OnnxPass`` (or a plain ``fn(model) -> model``) under ``name`` for ``run_pipeline``."""
    if name in REGISTRY:
        raise InvalidValueError(f"ONNX pass {name!r} is already registered")
    REGISTRY[name] = fn if isinstance(fn, OnnxPass) else FunctionPass(name, fn)


@graphsurgeon_to_logging()
def run_pipeline(
    model,
    passes: Sequence[str] | None = None,
    *,
    fuse: bool = True,
    batch1_branch: bool = True,
    check_input: np.ndarray | Sequence[np.ndarray] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    check_batch: int = CHECK_BATCH,
    target: str = "portable",
    tune: bool = False,
    threads: int = 1,
    check_batches: Sequence[int] | None = None,
    batch_form: str | None = None,
) -> onnx.ModelProto:
    """Run ``passes`` (default: the fused or naive pipeline) over ``model`` (ModelProto, path or bytes).

    ``target="ort-cpu"`` lets the batch-1 branch use onnxruntime's CPU-only NCHWc contrib ops for every conv
    layer (see ``PassContext``; ``tune`` times each layer's candidate forms at ``threads`` threads instead of using
    the cost model; ``batch_form`` how a batch > 1 runs, see ``PassContext``); the default "portable" uses
    standard ONNX ops only.
    With ``check_input`` (an array, or one per graph input, whose shapes past the batch give the inputs') every
    pass is followed by the numeric check on a random batch of each of ``check_batches`` (default: ``check_batch``
    only; batch 0 is skipped where the model's own graph cannot run it): ``PassNumericsError`` names the first
    pass that drifts beyond ``tolerance`` and the batch. ``check.reference_outputs`` says which errors the
    unpassed graph raises.
    """
    proto = load_model(model)
    if passes is None:
        passes = (PIPELINE if batch1_branch else PIPELINE_NO_BATCH1) if fuse else NAIVE_PIPELINE
    unknown = [p for p in passes if p not in REGISTRY]
    if unknown:
        raise InvalidValueError(f"unknown ONNX pass(es) {unknown}; registered: {sorted(REGISTRY)}")
    feeds = reference = None
    if check_input is not None:
        batches = tuple(check_batches) if check_batches is not None else (check_batch,)
        feeds, reference = reference_outputs(proto, as_examples(check_input), batches)
    ctx = PassContext.for_target(target, tune=tune, threads=threads, batch_form=batch_form)
    applied = []
    for name in passes:
        proto = REGISTRY[name](proto, ctx)
        applied.append(name)
        if feeds is not None:
            reference = check_pass(name, reference, proto, feeds, tolerance)
    meta = {META_PASSES: ",".join(applied), META_TARGET: target}
    if ctx.nchwc_block and any(o.domain == NCHWC_DOMAIN for o in proto.opset_import):
        meta[META_NCHWC_BLOCK] = str(ctx.nchwc_block)
    set_metadata(proto, meta)
    return proto
