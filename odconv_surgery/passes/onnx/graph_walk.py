"""Walking an ONNX graph's subgraphs (``If`` branches, ``Scan`` / ``Loop`` bodies) at any depth: one home for the
walk that the passes (and the weight store, which ``common`` itself uses) share."""

from __future__ import annotations

import onnx


def subgraphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """Every graph attribute (``If`` branch, ``Scan`` body, a list of graphs) under ``graph``, at any depth."""
    found = []
    for node in graph.node:
        for attr in node.attribute:
            children = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else (
                list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else [])
            for g in children:
                found += [g, *subgraphs(g)]
    return found
