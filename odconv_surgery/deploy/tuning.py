"""The last word of ``export_onnx(tune=True)``: the file built from the measured per-layer forms ships only when it
is faster, as a whole, than the file built from the cost model's forms; and a batch > 1 runs in the faster of
the per-sample graph and the per-layer forms where that is in doubt.

Each layer's form is timed alone (``passes/onnx/lowering/plan.py``); a network's speed also depends on what the
layers do to each other (a form that breaks a fusion, cache effects), so both files are timed end to end at batch
1 on this machine, at the deployment's thread count, in interleaved rounds, and the faster one is kept.

A batch > 1 runs the batch-1 graph once per sample by default (``lower_by_batch_regime``), which reads every
layer's kernel bank once per sample; the per-layer forms mix each bank once per batch. Where some layer holds
several kernels, both files are timed at ``BATCH_FORM_TUNING_BATCH`` and the faster ships (CondConv's 8-kernel
banks favour the per-layer forms, DyConv and ODConv the per-sample graph: ``benchmarks/onnx_batch_forms_*.md``).
"""

from __future__ import annotations

import gc
import json
import logging
from typing import Sequence

import numpy as np
import onnx
from torch import Tensor, nn

from .schema import (
    BATCH_FORMS, META_BATCH_FORM, META_BATCH_TUNING, META_FORMS, META_FORMS_DEPART, META_TUNING, metadata, set_metadata,
)

LOGGER = logging.getLogger("odconv_surgery.export")

#: The measured forms must be faster than the cost model's by more than this fraction (timing noise).
WHOLE_FILE_MARGIN = 0.02
#: The batch at which the batch > 1 forms are timed against each other.
BATCH_FORM_TUNING_BATCH = 8
#: Files whose weights add up to more than this are timed one at a time, one onnxruntime session alive (two
#: sessions of resnet50 CondConv's 1 GB files side by side peaked near 13 GB); below it, in interleaved rounds.
INTERLEAVED_MAX_BYTES = 512 * 2**20


def same_as_cost_model(proto: onnx.ModelProto) -> bool:
    """Whether every layer of a tuned file got the cost model's form (then the file is the ``tune=False`` one); the
    verdict goes into its ``odconv.tuning`` metadata."""
    same = metadata(proto).get(META_FORMS_DEPART) == "0"
    if same:
        set_metadata(proto, {META_TUNING: "the measured forms are the cost model's"})
    return same


def faster_file(tuned: onnx.ModelProto, modelled: onnx.ModelProto, inputs: Sequence[Tensor], threads: int,
                rounds: int = 5, round_s: float = 0.05) -> onnx.ModelProto:
    """``tuned`` when it runs faster than ``modelled`` at batch 1 (both are the same model, forms apart), else
    ``modelled``; the choice and both times go into the file's ``odconv.tuning`` metadata."""
    forms_tuned = json.loads(metadata(tuned).get(META_FORMS, "{}"))
    forms_modelled = json.loads(metadata(modelled).get(META_FORMS, "{}"))
    if {k: v.split(" (")[0] for k, v in forms_tuned.items()} == {k: v.split(" (")[0] for k, v in forms_modelled.items()}:
        set_metadata(tuned, {META_TUNING: "the measured forms are the cost model's"})
        return tuned
    ms = time_files([tuned, modelled], inputs, threads, rounds, round_s)
    keep_tuned = ms[0] < ms[1] * (1 - WHOLE_FILE_MARGIN)
    chosen = tuned if keep_tuned else modelled
    what = "measured forms kept" if keep_tuned else "cost model's forms kept"
    note = f"{what}: {ms[0]:.3f} ms measured forms vs {ms[1]:.3f} ms cost model (batch 1, {threads} thread(s))"
    LOGGER.info("tuning: %s", note)
    set_metadata(chosen, {META_TUNING: note})
    return chosen


def times_batch_forms(proto: onnx.ModelProto, model: nn.Module) -> bool:
    """Whether the batch > 1 form is in doubt: the file runs a batch as the per-sample graph and some layer of
    ``model`` holds several kernels. With one kernel per layer the per-sample graph reads no more weights than the
    static model, and it measured faster wherever the two were compared."""
    per_sample = metadata(proto).get(META_BATCH_FORM) == BATCH_FORMS[0]
    return per_sample and any(int(getattr(m, "kernel_num", 1) or 1) > 1 for m in model.modules())


def faster_batch_form(per_sample: onnx.ModelProto, per_layer: onnx.ModelProto, inputs: Sequence[Tensor],
                      threads: int, rounds: int = 3, round_s: float = 0.05) -> onnx.ModelProto:
    """``per_layer`` when it runs a batch of ``BATCH_FORM_TUNING_BATCH`` faster than ``per_sample`` (the same model,
    batch > 1 forms apart), else ``per_sample``; the choice and both times go into ``odconv.batch_tuning``."""
    ms = time_files([per_sample, per_layer], inputs, threads, rounds, round_s, batch=BATCH_FORM_TUNING_BATCH)
    chosen = per_layer if ms[1] < ms[0] * (1 - WHOLE_FILE_MARGIN) else per_sample
    form = metadata(chosen).get(META_BATCH_FORM, "")
    note = (f"{form} kept: {ms[0]:.2f} ms per-sample graph vs {ms[1]:.2f} ms per-layer "
            f"(batch {BATCH_FORM_TUNING_BATCH}, {threads} thread(s))")
    LOGGER.info("tuning: %s", note)
    set_metadata(chosen, {META_BATCH_TUNING: note, META_TUNING: metadata(per_sample).get(META_TUNING, "")})
    return chosen


def time_files(protos: Sequence[onnx.ModelProto], inputs: Sequence[Tensor], threads: int, rounds: int = 5,
               round_s: float = 0.05, batch: int = 1) -> list[float]:
    """Milliseconds per run of each file at ``batch``: the fastest of interleaved rounds of about ``round_s`` each
    (files larger than ``INTERLEAVED_MAX_BYTES`` together: each file's rounds in turn, one session at a time)."""
    from ..passes.onnx.weights_aside import weight_bytes
    from .session_timing import fastest_round_seconds

    rng = np.random.default_rng(0)

    def session(proto: onnx.ModelProto):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return sess, {t.name: rng.standard_normal((batch, *x.shape[1:])).astype(np.float32)
                      for t, x in zip(sess.get_inputs(), inputs)}

    if sum(weight_bytes(p.graph) for p in protos) <= INTERLEAVED_MAX_BYTES:
        seconds = fastest_round_seconds({i: session(p) for i, p in enumerate(protos)}, rounds, round_s, min_runs=3)
        return [seconds[i] * 1e3 for i in range(len(protos))]
    ms = []
    for proto in protos:
        ms.append(fastest_round_seconds({0: session(proto)}, rounds, round_s, min_runs=3)[0] * 1e3)
        gc.collect()  # the session's weights go before the next file's arrive
    return ms
