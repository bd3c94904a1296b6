"""Numeric check helper for the passes: ORT outputs (all of them) before vs after a pass, on random batches.

A graph that still holds ``odconv.surgery::ODConv2d`` markers is made runnable for the check by lowering a copy
with the naive (reference) form. The error is measured relative to the output scale (max |reference|).

The check runs on one feed per batch size, so that every branch a file has is run: a dynamic-batch file takes
an ``If`` on the batch size (``lower_by_batch_regime``), whose batch-1 branch only a batch of 1 reaches. A feed is
one array per graph input (models with several inputs, inputs of any rank). Sessions log fatal errors only: a
graph that does not run raises, and the raised error says what it means (no raw onnxruntime log lines).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort

from ...numerics import DEFAULT_TOLERANCE, relative_error
from .common import PassNumericsError, has_odconv_nodes
from .lowering import lower
from ...errors import ModelNumericsError, OnnxModelError, StaticBatchGraphError

#: Batch size of the check's random input when one batch is checked (2: the any-batch branch).
CHECK_BATCH = 2

#: onnxruntime's log level for the check's sessions: fatal only (a failed run raises; its log line adds nothing).
QUIET = 4

Feed = list[np.ndarray]


def runnable(model: onnx.ModelProto) -> onnx.ModelProto:
    if has_odconv_nodes(model):
        return lower(model, "naive", prefix="check/")
    return model


def session(model: onnx.ModelProto, threads: int = 0) -> ort.InferenceSession:
    """A quiet CPU session on ``model`` (markers lowered naively first)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = QUIET
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(runnable(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run_feed(sess: ort.InferenceSession, feed: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """Every output of ``sess`` on ``feed`` (one array, or one per graph input in order)."""
    arrays = [feed] if isinstance(feed, np.ndarray) else list(feed)
    names = [i.name for i in sess.get_inputs()]
    if len(arrays) != len(names):
        raise OnnxModelError(f"the graph takes {len(names)} input(s) ({names}) but {len(arrays)} array(s) were given")
    return sess.run(None, dict(zip(names, arrays)))


def ort_run(model: onnx.ModelProto, feed: np.ndarray | Sequence[np.ndarray], threads: int = 0) -> list[np.ndarray]:
    """Every output of ``model`` on ``feed`` (markers lowered naively first)."""
    return run_feed(session(model, threads), feed)


def random_batch(shape, batch: int = CHECK_BATCH, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, *tuple(shape)[1:])).astype(np.float32)


def random_feed(examples: Sequence[np.ndarray], batch: int, seed: int = 0) -> Feed:
    """One array per input at ``batch``: floating inputs random normal in their dtype and per-sample shape;
    others (token ids, masks) repeat the example's first sample, as random values need not be valid for them."""
    rng = np.random.default_rng(seed)
    feed = []
    for example in examples:
        shape = (batch, *example.shape[1:])
        if np.issubdtype(example.dtype, np.floating):
            feed.append(rng.standard_normal(shape).astype(example.dtype))
        else:
            feed.append(np.repeat(example[:1], batch, axis=0) if example.shape[0] else np.zeros(shape, example.dtype))
    return feed


def as_examples(check_input: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """The check input as one array per graph input."""
    return [check_input] if isinstance(check_input, np.ndarray) else [np.asarray(a) for a in check_input]


def reference_outputs(
    model: onnx.ModelProto, examples: Sequence[np.ndarray], batches: Sequence[int]
) -> tuple[dict[int, Feed], dict[int, list[np.ndarray]]]:
    """Feeds and outputs of ``model`` (before any pass) at each batch size it runs at.

    Batch 0 is left out where the model's own graph does not run on an empty batch. Raises
    ``StaticBatchGraphError`` when the graph runs at the example's batch but not at another one (the model's code
    fixes the batch), ``OnnxModelError`` when it does not run at all, ``ModelNumericsError`` on NaN/inf outputs."""
    sess = session(model)
    feeds: dict[int, Feed] = {}
    outputs: dict[int, list[np.ndarray]] = {}
    failed: dict[int, str] = {}
    for batch in batches:
        feed = random_feed(examples, batch)
        try:
            outputs[batch] = run_feed(sess, feed)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            if batch:
                failed[batch] = str(exc).splitlines()[0]
            continue
        if not all(np.isfinite(out).all() for out in outputs[batch]):
            raise ModelNumericsError(
                f"the exported model's outputs are NaN or inf on the check batch of {batch} before any pass ran: the "
                "model's weights or arithmetic, not a pass (export_onnx names NaN/inf weights)"
            )
        feeds[batch] = feed
    if failed:
        raise _not_running(sess, examples, failed, sorted(feeds))
    return feeds, outputs


def _not_running(sess: ort.InferenceSession, examples: Sequence[np.ndarray], failed: dict[int, str], ran: list[int]) -> Exception:
    """The error for a model whose own graph does not run at some check batches."""
    example_batch = int(examples[0].shape[0]) if examples[0].ndim else 1
    if not ran and example_batch not in failed:
        try:
            run_feed(sess, random_feed(examples, example_batch))
            ran = [example_batch]
        except Exception:  # noqa: BLE001
            pass
    bad = ", ".join(map(str, failed))
    why = next(iter(failed.values()))
    if not ran:
        return OnnxModelError(
            f"the exported model does not run in onnxruntime at batch {bad}, before any pass of ours ran (the "
            f"model's own graph as torch.onnx exported it): {why}"
        )
    return StaticBatchGraphError(
        f"the exported model runs at batch {', '.join(map(str, ran))} but not at batch {bad}, before any pass of ours "
        "ran: the model's own code fixes the batch size (a reshape or view with a literal batch such as "
        "x.view(1, -1), or a constant of the example's batch). Export with dynamic_batch=False for a file that "
        "takes the example's batch only, or write those reshapes with x.shape[0] or -1 for the batch. "
        f"onnxruntime said: {why}"
    )


def check_pass(
    pass_name: str,
    reference: dict[int, list[np.ndarray]] | list[np.ndarray],
    after: onnx.ModelProto,
    feeds: dict[int, Feed] | np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[int, list[np.ndarray]] | list[np.ndarray]:
    """Run ``after`` on every feed (batch size -> feed; or one feed); raise ``PassNumericsError`` naming the pass
    and the batch if any output drifted from ``reference`` (the outputs before the pass) or the model does not run."""
    if not isinstance(feeds, dict):  # one feed, one reference
        return check_pass(pass_name, {-1: reference}, after, {-1: [feeds]}, tolerance)[-1]
    try:
        sess = session(after)
    except Exception as exc:  # noqa: BLE001 - an unloadable result is a broken pass too
        raise PassNumericsError(pass_name, float("inf"), tolerance, f"the rewritten model does not load: {exc}") from exc
    outputs = {}
    for batch, feed in feeds.items():
        where = "" if batch < 0 else f" at batch {batch}"
        try:
            outputs[batch] = run_feed(sess, feed)
        except Exception as exc:  # noqa: BLE001 - an unrunnable result is a broken pass too
            raise PassNumericsError(
                pass_name, float("inf"), tolerance, f"the rewritten model does not run{where}: {str(exc).splitlines()[0]}"
            ) from exc
        err = relative_error(reference[batch], outputs[batch])
        if not err <= tolerance:
            raise PassNumericsError(pass_name, err, tolerance, where.strip())
    return outputs
