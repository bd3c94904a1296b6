"""What every ONNX pass shares (after onnxruntime's ``fusion_base.Fusion``): the options it runs under and the
scaffolding around its rewrite.

A pass subclasses ``OnnxPass``, sets ``NAME`` and implements ``rewrite(graph, ctx) -> int`` (the number of
units it rewrote); the base imports the graph, calls it, and when something changed cleans up, sorts the nodes
topologically and exports with the original model's metadata and opsets. Every run logs one line
``<name>: <count> <unit>`` on the ``odconv_surgery.passes.onnx`` logger. Passes that work on the ``ModelProto``
itself (validation, building an ``If`` around two lowered copies, the final checks) override ``transform``.
Options travel in a ``PassContext`` handed to every call, so pipelines with different targets can run side by
side (no module state).
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from typing import Callable, ClassVar

import onnx
import onnx_graphsurgeon as gs

from ...deploy.schema import BATCH_FORMS
from ...deploy.targets import LOWERING_TARGETS
from ...errors import InvalidValueError
from .common import detect_nchwc_block, export_graph, import_graph
from .weights_aside import weight_bytes

logger = logging.getLogger("odconv_surgery.passes.onnx")

TARGETS = LOWERING_TARGETS


@dataclass(frozen=True)
class PassContext:
    """Options of one pipeline run.

    ``target``: "portable" (standard ONNX ops only) or "ort-cpu" (the batch-1 branch may use onnxruntime's
    CPU-only ``com.microsoft.nchwc`` contrib ops). ``nchwc_block``: onnxruntime's NCHWc block size (8 on AVX2,
    16 on AVX-512) when the NCHWc forms are wanted, else None; a file lowered with it is specific to
    onnxruntime's CPU EP and that block size. ``tune``: choose each layer's NCHWc form by timing it here
    (``lowering/plan.py``; cached), else by the cost model. ``threads``: the thread count the timings use.
    ``batch_form``: how an NCHWc file runs a batch > 1, one of ``BATCH_FORMS`` (None: the per-sample graph where
    the model's outputs allow it, ``lower_by_batch_regime``).
    """

    target: str = "portable"
    nchwc_block: int | None = None
    tune: bool = False
    threads: int = 1
    batch_form: str | None = None

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise InvalidValueError(
                f"target must be one of {', '.join(map(repr, TARGETS))}, got {self.target!r} ('auto' is resolved by "
                "export_onnx: odconv_surgery.deploy.export.resolve_target)"
            )
        if self.batch_form is not None and self.batch_form not in BATCH_FORMS:
            raise InvalidValueError(f"batch_form must be one of {BATCH_FORMS} or None, got {self.batch_form!r}")

    @classmethod
    def for_target(cls, target: str = "portable", tune: bool = False, threads: int = 1,
                   batch_form: str | None = None) -> "PassContext":
        """The context for ``target``; "ort-cpu" probes onnxruntime for its NCHWc block (None if unusable)."""
        ctx = cls(target, tune=tune, threads=threads, batch_form=batch_form)  # validates before probing
        return cls(target, detect_nchwc_block(), tune, threads, batch_form) if target == "ort-cpu" else ctx


#: Models whose weights are at least this large are followed by a garbage collection after each pass (one costs
#: about 0.3 s in a process that has imported torch: too much for every small model).
COLLECT_MIN_BYTES = 64 * 2**20


class OnnxPass:
    """One ONNX pass: ``pass_(model, ctx)`` returns the rewritten model (or ``model`` itself when nothing changed)."""

    NAME: ClassVar[str]
    #: What ``rewrite`` counts, for the log line.
    UNIT: ClassVar[str] = "layers"

    def __call__(self, model: onnx.ModelProto, ctx: PassContext | None = None) -> onnx.ModelProto:
        out, count = self.transform(model, ctx or PassContext())
        self._log(count)
        if out is not model and weight_bytes(out.graph) >= COLLECT_MIN_BYTES:
            # A gs graph is a web of reference cycles (nodes <-> tensors): its constants outlive the pass until the
            # cyclic collector happens to run (lowering resnet50 CondConv grew by 1 GB, a model's worth, per pass).
            gc.collect()
        return out

    def apply(self, graph: gs.Graph, ctx: PassContext | None = None) -> int:
        """``rewrite`` on a graph that the caller owns (a pass run inside another one), logged like a call."""
        count = self.rewrite(graph, ctx or PassContext())
        self._log(count)
        return count

    def _log(self, count: int) -> None:
        logger.info("%s: %d %s", self.NAME, count, self.UNIT)

    def transform(self, model: onnx.ModelProto, ctx: PassContext) -> tuple[onnx.ModelProto, int]:
        """Import, ``rewrite``, and when anything changed: cleanup, toposort, export."""
        graph = import_graph(model)
        count = self.rewrite(graph, ctx)
        if not count:
            return model, 0
        return export_sorted(graph, model), count

    def rewrite(self, graph: gs.Graph, ctx: PassContext) -> int:
        """Rewrite ``graph`` in place; return how many units (``UNIT``) changed."""
        raise NotImplementedError(f"{type(self).__name__} must implement rewrite() or transform()")

    def __repr__(self) -> str:
        return f"<ONNX pass {self.NAME}>"


def export_sorted(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Remove dead nodes, sort topologically and export with ``like``'s metadata and opsets."""
    graph.cleanup().toposort()
    return export_graph(graph, like)


class FunctionPass(OnnxPass):
    """A plain ``fn(model) -> model`` registered as a pass (``register_pass``); it takes no options."""

    UNIT = "runs"

    def __init__(self, name: str, fn: Callable[[onnx.ModelProto], onnx.ModelProto]) -> None:
        self.NAME = name  # type: ignore[misc] - per instance: the name it was registered under
        self.fn = fn

    def transform(self, model: onnx.ModelProto, ctx: PassContext) -> tuple[onnx.ModelProto, int]:
        return self.fn(model), 1
