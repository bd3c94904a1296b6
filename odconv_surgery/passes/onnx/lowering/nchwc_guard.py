"""The block-size guard of an NCHWc batch-1 graph: its float outputs turn NaN on a machine whose onnxruntime uses
another NCHWc block than the one the kernels were laid out for.

An ``ort-cpu`` file stores kernels already in onnxruntime's blocked filter layout, whose block (8 with AVX2, 16 with
AVX-512) depends on the CPU. Run elsewhere, those kernels would be read in the wrong order and give plausible but
wrong numbers. The guard reorders a constant probe with ``ReorderInput`` and compares it with the layout expected
for the export's block; every float output is multiplied by 1 when they match and by NaN when not. onnxruntime
does not constant-fold the contrib ``ReorderInput``, so the guard's few small nodes run on every call (measured a
few microseconds; one guard per file, pass ``guard_nchwc_block``). ``OrtRunner`` refuses such a file with a clear
error before it runs (``deploy/runtime.py``); the guard covers a bare InferenceSession.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ....deploy.schema import NCHWC_DOMAIN
from .builder import Builder

#: Probe channels: a multiple of every NCHWc block onnxruntime uses (8, 16).
PROBE_CHANNELS = 32


def blocked_probe(blk: int) -> tuple[np.ndarray, np.ndarray]:
    """A (1, C, 1, 2) probe and its memory after ``ReorderInput`` with block ``blk``, read back as NCHW."""
    probe = np.arange(PROBE_CHANNELS * 2, dtype=np.float32).reshape(1, PROBE_CHANNELS, 1, 2)
    blocked = probe.reshape(1, PROBE_CHANNELS // blk, blk, 1, 2).transpose(0, 1, 3, 4, 2).reshape(probe.shape)
    return probe, np.ascontiguousarray(blocked)


def uses_nchwc(graph: gs.Graph) -> bool:
    """Whether ``graph`` or a subgraph of one of its nodes (a ``Scan`` body, an ``If`` branch) has an NCHWc node."""
    return any(node.domain == NCHWC_DOMAIN for g in (graph, *graph.subgraphs(recursive=True)) for node in g.nodes)


def guard_block_size(graph: gs.Graph, blk: int, prefix: str = "") -> int:
    """Multiply every float32 output of ``graph`` by the guard for block ``blk``; the number of outputs guarded."""
    outputs = [o for o in graph.outputs if o.dtype == np.float32 and len(o.inputs) == 1]
    if not outputs or not uses_nchwc(graph):
        return 0
    b = Builder(graph, f"{prefix}nchwc_guard")
    probe, expected = blocked_probe(blk)
    reordered = b.op("ReorderInput", [b.const("probe", probe)], {"channels_last": 0}, domain=NCHWC_DOMAIN)
    diff = b.op("ReduceMax", [b.op("Abs", [b.op("Sub", [reordered, b.const("expected", expected)])])], {"keepdims": 0})
    same = b.op("Equal", [diff, b.const("zero", np.float32(0))], dtype=np.bool_)
    guard = b.op("Where", [same, b.const("one", np.float32(1)), b.const("nan", np.float32(np.nan))])
    for out in outputs:
        producer = out.inputs[0]
        raw = gs.Variable(f"{out.name}/unguarded", dtype=out.dtype, shape=out.shape)
        producer.outputs[producer.outputs.index(out)] = raw
        graph.nodes.append(gs.Node("Mul", f"{b.prefix}/{out.name}/Mul", {}, [raw, guard], [out]))
    return len(outputs)
