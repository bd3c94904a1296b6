"""Pass ``chain_nchwc``: keep the batch-1 network in NCHWc between NCHWc convs (``target="ort-cpu"``).

Invariant: function unchanged; only ``com.microsoft.nchwc`` reorders, default-domain ``Relu`` / ``Clip`` and
``Add`` nodes are removed, and they are absorbed into the ``com.microsoft.nchwc::Conv`` that feeds them; pools
behind a reorder become their NCHWc kernels. The rules
run to a fixpoint, each returning how many rewrites it made:

* ``fuse_activations``: ``Relu`` / ``Clip`` right after ``ReorderOutput(Conv)`` -> the conv's ``activation``.
* ``fuse_residual_adds``: ``Add(ReorderOutput(Conv(..)), t)`` -> ``t`` in NCHWc as the conv's ``Sum`` input
  (as ORT's own NchwcTransformer does for static convs). A conv takes at most one ``Sum`` (the contrib op's
  schema: X, W, B, Sum), so ``a(x) + b(x) + x`` fuses its first Add only.
* ``pool_blocked``: ``MaxPool`` / ``GlobalAveragePool`` after a ``ReorderOutput`` -> its NCHWc kernel on the
  blocked tensor, the reorder after it (padded channels pool to finite values no consumer reads).
* ``drop_reorder_round_trips``: ``ReorderInput(ReorderOutput(t))`` -> ``t``. The round trip is the identity on
  the real channels; where the channels are padded to the block, ``t``'s padding channels hold finite values
  (0, or an activation of 0) that every consumer ignores (zero kernel columns, zero ``fc`` columns).

It runs after the lowering when the context has an NCHWc block, on every graph (main graph or subgraph: the
batch-1 branch, the per-sample graph of a batch) that holds NCHWc Convs.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ...deploy.schema import NCHWC_DOMAIN
from .base import OnnxPass, PassContext
from .common import constant_value


class ChainNchwc(OnnxPass):
    NAME = "chain_nchwc"
    UNIT = "rewrites"

    def rewrite(self, graph: gs.Graph, ctx: PassContext) -> int:
        from .block_static_convs import graphs_with_nchwc_convs

        return sum(chain_nchwc(g) for g in graphs_with_nchwc_convs(graph))


def chain_nchwc(graph: gs.Graph) -> int:
    """Apply ``RULES`` until none rewrites anything; the total number of rewrites."""
    total = 0
    while True:
        count = 0
        for rule in RULES:
            count += rule(graph)
        graph.cleanup()
        if not count:
            return total
        total += count


#: ``com.microsoft.nchwc::Conv`` inputs: X, W, B, Sum (onnxruntime refuses a node with more).
MAX_CONV_INPUTS = 4


def _is(node: gs.Node, op: str, domain: str = NCHWC_DOMAIN) -> bool:
    return node.op == op and (node.domain or "") == domain


def _single_producer(t):
    return t.inputs[0] if isinstance(t, gs.Variable) and len(t.inputs) == 1 else None


def _conv_behind(reorder_out: gs.Node) -> gs.Node | None:
    """The nchwc Conv feeding ``reorder_out`` when its blocked output feeds nothing else."""
    conv = _single_producer(reorder_out.inputs[0])
    if conv is None or not _is(conv, "Conv") or len(conv.outputs[0].outputs) != 1:
        return None
    return conv


def _fusable_reorder(graph: gs.Graph, t) -> tuple[gs.Node, gs.Node] | None:
    """(ReorderOutput, Conv) behind ``t`` when ``t`` is that reorder's only use, not a graph output, and the conv
    has no activation yet; else None."""
    r = _single_producer(t)
    if r is None or not _is(r, "ReorderOutput") or len(t.outputs) != 1 or any(t is o for o in graph.outputs):
        return None
    conv = _conv_behind(r)
    if conv is None or "activation" in conv.attrs:
        return None
    return r, conv


def _absorb(reorder_out: gs.Node, node: gs.Node) -> None:
    """``node`` disappears: the reorder now produces its outputs."""
    reorder_out.outputs = list(node.outputs)
    node.inputs.clear()
    node.outputs.clear()


def fuse_activations(graph: gs.Graph) -> int:
    count = 0
    for node in list(graph.nodes):
        if node.op not in ("Relu", "Clip") or node.domain or not node.outputs:
            continue
        found = _fusable_reorder(graph, node.inputs[0])
        if found is None:
            continue
        r, conv = found
        if node.op == "Clip":
            bounds = _clip_bounds(node)
            if bounds is None:
                continue
            conv.attrs["activation"] = "Clip"
            conv.attrs["activation_params"] = bounds
        else:
            conv.attrs["activation"] = "Relu"
        _absorb(r, node)
        count += 1
    return count


def _clip_bounds(node: gs.Node) -> list[float] | None:
    """[min, max] of a Clip (inputs from opset 11, attributes before); None when not constant."""
    lo = constant_value(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1].name else node.attrs.get("min")
    hi = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else node.attrs.get("max")
    if lo is None or hi is None:
        return None
    return [float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0])]


def fuse_residual_adds(graph: gs.Graph) -> int:
    count = 0
    for node in list(graph.nodes):
        if node.op != "Add" or node.domain or len(node.inputs) != 2 or not node.outputs:
            continue
        s0, s1 = node.inputs[0].shape, node.inputs[1].shape
        if s0 is not None and s1 is not None and list(s0) != list(s1):
            continue
        count += any(_fuse_add(graph, node, k) for k in (1, 0))  # any() stops at the first addend that fuses
    return count


def _fuse_add(graph: gs.Graph, node: gs.Node, k: int) -> bool:
    """Fuse ``node`` (an Add) into the conv behind its addend ``k``; False when that addend does not qualify."""
    found = _fusable_reorder(graph, node.inputs[k])
    if found is None:
        return False
    r, conv = found
    if len(conv.inputs) != MAX_CONV_INPUTS - 1:  # no bias slot (the lowering always gives one), or a Sum already
        return False
    summand = _blocked(graph, node, node.inputs[1 - k], r.attrs.get("channels"))
    if summand is None:
        return False
    conv.inputs.append(summand)
    _absorb(r, node)
    return True


def _blocked(graph: gs.Graph, node: gs.Node, t, channels) -> gs.Variable | None:
    """The other addend ``t`` in NCHWc: the blocked tensor behind its ReorderOutput, the output of an nchwc
    ReorderInput already made of it (e.g. a MaxPool output that feeds the next ODConv), or a new ReorderInput
    when its channels match (e.g. a static downsample Conv: one reorder here beats an unfused Add + Relu)."""
    other = _single_producer(t)
    if other is not None and _is(other, "ReorderOutput") and other.attrs.get("channels") == channels:
        return other.inputs[0]
    ri = [c for c in t.outputs if _is(c, "ReorderInput") and c.attrs.get("channels_last", 0) == 0 and c.outputs]
    if ri:
        return ri[0].outputs[0]
    if t.shape is not None and len(t.shape) == 4 and t.shape[1] == channels:
        summand = gs.Variable(f"{node.name}/sum_nchwc", dtype=np.float32)
        graph.nodes.append(gs.Node("ReorderInput", f"{node.name}/ReorderInput", {"channels_last": 0}, [t], [summand], domain=NCHWC_DOMAIN))
        return summand
    return None


def drop_reorder_round_trips(graph: gs.Graph) -> int:
    count = 0
    for node in list(graph.nodes):
        if not _is(node, "ReorderInput") or not node.outputs or node.attrs.get("channels_last", 0) != 0:
            continue
        r = _single_producer(node.inputs[0])
        if r is None or not _is(r, "ReorderOutput") or r.attrs.get("channels_last", 0) != 0:
            continue
        src, dst = r.inputs[0], node.outputs[0]
        for consumer in list(dst.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is dst:
                    consumer.inputs[i] = src
        node.inputs.clear()
        node.outputs.clear()
        count += 1
    return count


#: The model's pools that onnxruntime has NCHWc kernels for, with the attributes those kernels take.
NCHWC_POOLS = {"MaxPool": ("auto_pad", "kernel_shape", "dilations", "strides", "pads", "ceil_mode"),
               "GlobalAveragePool": ()}


def pool_blocked(graph: gs.Graph) -> int:
    """``Pool(ReorderOutput(t))`` -> ``ReorderOutput(nchwc Pool(t))``: the pool runs on the blocked tensor, as
    onnxruntime's own NCHWc transformer runs the static model's pools, and the reorder moves past it (where the
    next ReorderInput cancels it: a resnet stem's MaxPool stays between two blocked convs)."""
    count = 0
    for node in list(graph.nodes):
        if (node.domain or node.op not in NCHWC_POOLS or len(node.outputs) != 1
                or any(k not in NCHWC_POOLS[node.op] for k in node.attrs)):  # e.g. storage_order: left alone
            continue
        r = _single_producer(node.inputs[0])
        if r is None or not _is(r, "ReorderOutput") or r.attrs.get("channels_last", 0) != 0:
            continue
        blocked = gs.Variable(f"{node.name}/y_nchwc", dtype=np.float32)
        y = node.outputs[0]
        node.inputs.clear()
        node.outputs.clear()
        graph.nodes += [
            gs.Node(node.op, f"{node.name}/nchwc", dict(node.attrs), [r.inputs[0]], [blocked], domain=NCHWC_DOMAIN),
            gs.Node("ReorderOutput", f"{node.name}/ReorderOutput", {"channels": r.attrs["channels"], "channels_last": 0},
                    [blocked], [y], domain=NCHWC_DOMAIN),
        ]
        count += 1
    return count


RULES = (fuse_activations, fuse_residual_adds, pool_blocked, drop_reorder_round_trips)
