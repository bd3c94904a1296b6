"""Large constants set aside while graphs are copied, and put back once the copying is done.

Protobuf copies a subgraph, weights included, each time it is nested: ``make_graph``, ``make_attribute``, the node,
the enclosing graph. The ort-cpu file holds its weights two or three levels down (the ``If`` on the batch size, the
per-sample ``Scan``), so every pass that exported it copied them four to six times: lowering resnet18 CondConv
(a 650 MB file) spent most of its 70 s in those copies. Here each constant of at least ``ASIDE_MIN_BYTES`` is
replaced by a placeholder that keeps its name, type and dims (so shape inference still sees them) and carries a
short token instead of its data; ``WeightStore.refill`` puts the data back by token, in every graph of the model,
once. Each caller refills what it set aside before returning, and ``refill`` raises on a token its store does not
hold (onnxruntime would also refuse a placeholder: its data is shorter than its dims say).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import Callable, Iterator

import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

from ...errors import ODConvError
from .graph_walk import subgraphs

#: Constants smaller than this are copied as they are (attention vectors, shapes, axes: cheap, and shape
#: inference may read their values).
ASIDE_MIN_BYTES = 1 << 16
_TOKEN = b"\x00odconv-surgery weight set aside #"
_MAX_TOKEN_BYTES = len(_TOKEN) + 20


class WeightStore:
    """Tokens and the data they stand for: bytes (a proto's ``raw_data``) or a function that builds the tensor."""

    _ids = itertools.count()

    def __init__(self) -> None:
        self._data: dict[bytes, bytes | Callable[[], onnx.TensorProto]] = {}

    def __len__(self) -> int:
        return len(self._data)

    def put(self, data: bytes | Callable[[], onnx.TensorProto]) -> bytes:
        token = _TOKEN + str(next(self._ids)).encode()
        self._data[token] = data
        return token

    def set_aside(self, graph: onnx.GraphProto) -> None:
        """Replace the ``raw_data`` of every large initializer of ``graph`` and its subgraphs by a token (a tensor
        that already holds one is left as it is, so setting a graph aside twice is harmless)."""
        for g in _graphs(graph):
            for tensor in g.initializer:
                raw = tensor.raw_data  # a copy of the bytes: read once
                if (tensor.data_location != onnx.TensorProto.EXTERNAL and len(raw) >= max(ASIDE_MIN_BYTES, 1)
                        and not raw.startswith(_TOKEN)):
                    tensor.raw_data = self.put(raw)

    def refill(self, graph: onnx.GraphProto) -> None:
        """Put the data back into every placeholder under ``graph`` (initializers and tensor attributes)."""
        for tensor in _tensors(graph):
            raw = tensor.raw_data
            if len(raw) > _MAX_TOKEN_BYTES or not raw.startswith(_TOKEN):
                continue
            if raw not in self._data:
                raise ODConvError(f"tensor {tensor.name!r} holds a placeholder whose data was not kept; this is a bug "
                                  "in odconv-surgery: please report it with the model")
            data = self._data[raw]
            if isinstance(data, bytes):
                tensor.raw_data = data
            else:
                name = tensor.name
                tensor.CopyFrom(data())
                tensor.name = name

    @contextlib.contextmanager
    def aside_in(self, graph: gs.Graph) -> Iterator[None]:
        """While the block runs, every large constant of ``graph`` and its subgraphs exports as a placeholder (gs
        exports a lazily loaded constant as its proto, copied as it is); their values are restored on exit."""
        from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

        replaced: dict[int, tuple[gs.Constant, object]] = {}
        try:
            for g in (graph, *graph.subgraphs(recursive=True)):
                for tensor in g.tensors().values():
                    if not isinstance(tensor, gs.Constant) or id(tensor) in replaced:
                        continue
                    values = tensor._values
                    if isinstance(values, SparseValues) or getattr(values, "nbytes", 0) < ASIDE_MIN_BYTES:
                        continue
                    if isinstance(values, LazyValues):
                        if values.tensor.data_location == onnx.TensorProto.EXTERNAL:
                            continue
                        build: Callable[[], onnx.TensorProto] = lambda source=values.tensor: source
                    else:
                        build = lambda t=tensor, v=values: _exported(OnnxExporter, t, v)
                    placeholder = onnx.TensorProto(name=tensor.name, dims=list(tensor.shape),
                                                   data_type=_onnx_dtype(tensor), raw_data=self.put(build))
                    replaced[id(tensor)] = (tensor, values)
                    tensor._values = LazyValues(placeholder)
            yield
        finally:
            for tensor, values in replaced.values():
                tensor._values = values


def weight_bytes(graph: onnx.GraphProto) -> int:
    """The bytes of every initializer under ``graph``, from their dims (no data is read: ``ByteSize`` of a 1 GB
    model takes seconds)."""
    return sum(math.prod(t.dims) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
               for g in _graphs(graph) for t in g.initializer if t.data_type != onnx.TensorProto.STRING)


def _exported(exporter, tensor: gs.Constant, values) -> onnx.TensorProto:
    """The tensor gs would have exported for ``tensor`` holding ``values`` (export dtype and location kept)."""
    held = tensor._values
    tensor._values = values
    try:
        return exporter.export_tensor_proto(tensor)
    finally:
        tensor._values = held


def _onnx_dtype(tensor: gs.Constant) -> int:
    from onnx_graphsurgeon.exporters.onnx_exporter import dtype_to_onnx

    return dtype_to_onnx(tensor.export_dtype)


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    return [graph, *subgraphs(graph)]


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    for g in _graphs(graph):
        yield from g.initializer
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    yield from attr.tensors
