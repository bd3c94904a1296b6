"""Structure of a traced model, read with networkx: conv execution order, joins, blocks, projection shortcuts.

The structure is read from the convolutions alone; the Linear layers only join the execution order (and the block
that holds them), so that a model's blocks and shortcuts are the same whether or not it has Linears.

- A *join* is an ``add`` (residual) or ``cat`` (multi-branch) node with two or more tensor inputs.
- Its *region* is every node between the join's immediate dominator (the fork) and the join.
- A *projection shortcut* is the lone conv on one input branch of a two-input ``add`` whose other branch is a
  main path: a chain of two or more convs, one feeding the next (ResNet's ``downsample``); the paper keeps those
  static. The fork itself belongs to neither branch (a conv whose output feeds both the residual and the identity
  path is on the main path), and parallel branches summed (MobileOne, RepVGG: ``a(x) + b(x) + c(x)``) have no
  chain beside them, so none of them is a shortcut.
- A *block* is the smallest module holding a join region; every module of a class found that way is a block
  (so a MobileNetV2 ``InvertedResidual`` without a skip is a block too). When blocks nest (a UNet skip ``cat``
  makes the whole encoder a block around its residual blocks), the innermost ones win. A flat model (an fx
  ``GraphModule`` from onnx2torch, every module at the top level) has no such module: each join region is then
  a block named after its join node (``add_3``), and a conv belongs to the innermost region holding it.
- Nodes computed from parameters and buffers only (``get_attr``, and e.g. ``gamma.view(-1, 1, 1)``) are
  constants, not data flow: they never join anything, so they cannot make the root dominate a residual add.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import networkx as nx
import torch
from torch import fx, nn

from .tracer import CONV_TYPES, LAYER_TYPES

_ADD_TARGETS = {operator.add, operator.iadd, torch.add}
_CAT_TARGETS = {torch.cat, torch.concat, torch.concatenate}
_ROOT = "__root__"


@dataclass
class GraphStructure:
    """What the graph says about the model's convolutions."""

    layer_order: list[str]  # conv and Linear module names in order of first call
    shortcuts: set[str]  # projection-shortcut conv names
    blocks: list[str]  # block module names in execution order
    block_of: dict[str, str] = field(default_factory=dict)  # conv (or Linear) name -> block name


def constant_nodes(graph: fx.Graph) -> set[fx.Node]:
    """Nodes whose value depends on no graph input: ``get_attr`` and anything computed only from those
    (a layer-scale ``gamma.view(-1, 1, 1)``, ``torch.ones(...)``)."""
    constants: set[fx.Node] = set()
    for node in graph.nodes:  # topological order: inputs are classified before their users
        if node.op == "get_attr" or (
            node.op in ("call_function", "call_method", "call_module")
            and all(p in constants for p in node.all_input_nodes)
        ):
            constants.add(node)
    return constants


def _tensor_inputs(node: fx.Node, constants: set[fx.Node] = frozenset()) -> list[fx.Node]:
    """The data inputs of a join candidate (constants left out)."""
    if node.op == "call_function" and node.target in _CAT_TARGETS:
        seq = node.args[0] if node.args else node.kwargs.get("tensors", ())
        return [a for a in seq if isinstance(a, fx.Node) and a not in constants]
    return [a for a in node.args[:2] if isinstance(a, fx.Node) and a not in constants]


def _join_kind(node: fx.Node, constants: set[fx.Node] = frozenset()) -> str | None:
    if node.op == "call_function" and node.target in _ADD_TARGETS:
        kind = "add"
    elif node.op == "call_method" and node.target in ("add", "add_"):
        kind = "add"
    elif node.op == "call_function" and node.target in _CAT_TARGETS:
        kind = "cat"
    else:
        return None
    inputs = _tensor_inputs(node, constants)
    return kind if len(inputs) >= 2 and len(set(inputs)) >= 2 else None


def to_networkx(graph: fx.Graph, constants: set[fx.Node] | None = None) -> nx.DiGraph:
    """Data-flow DiGraph of an fx graph; every source hangs off a virtual root so dominators are defined.

    Edges out of constant nodes (``constant_nodes``) are left out: they are not data flow, and would otherwise
    make the root the dominator of every join that touches a parameter (ConvNeXt's ``gamma.view(-1, 1, 1)``).
    """
    constants = constant_nodes(graph) if constants is None else constants
    g = nx.DiGraph()
    g.add_node(_ROOT)
    for node in graph.nodes:
        g.add_node(node.name, node=node)
        preds = [p for p in node.all_input_nodes if p not in constants]
        if not preds:
            g.add_edge(_ROOT, node.name)
        for pred in preds:
            g.add_edge(pred.name, node.name)
    return g


def _common_module_prefix(names: list[str]) -> str:
    parts = [n.split(".") for n in names]
    prefix: list[str] = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    return ".".join(prefix)


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _owning_block(modules: dict[str, nn.Module], prefix: str) -> str | None:
    """The nearest module at or above ``prefix`` that is not a plain container (None for the root)."""
    while prefix:
        if prefix in modules and not isinstance(modules[prefix], _CONTAINERS) and not isinstance(modules[prefix], CONV_TYPES):
            return prefix
        prefix = prefix.rpartition(".")[0]
    return None


def _projection_shortcut(
    g: nx.DiGraph, join: fx.Node, inside: set[str], conv_nodes: dict[str, str], constants: set[fx.Node]
) -> str | None:
    """The projection-shortcut conv of a residual ``add`` (module name), or None.

    Each input's branch is what lies strictly between the fork and the join (the fork itself is on no branch).
    The shortcut is a branch's only conv when the other branch is a main path: a chain of at least two convs."""
    inputs = _tensor_inputs(join, constants)
    if len(inputs) != 2:
        return None
    branches = []
    for inp in inputs:
        nodes = (nx.ancestors(g, inp.name) | {inp.name}) & inside
        branches.append([n for n in nodes if n in conv_nodes])
    small, large = sorted(branches, key=len)
    if len(small) != 1 or conv_nodes[small[0]] in {conv_nodes[n] for n in large}:
        return None
    chained = any(nx.has_path(g, a, b) for a in large for b in large if a != b)
    return conv_nodes[small[0]] if chained else None


def _region_blocks(regions: list[tuple[str, set[str]]]) -> dict[str, str]:
    """conv name -> the join whose region is the smallest one holding it (blocks of a model without block modules)."""
    block_of: dict[str, str] = {}
    for join, convs in sorted(regions, key=lambda r: len(r[1]), reverse=True):  # smaller regions overwrite
        for conv in convs:
            block_of[conv] = join
    return block_of


def analyse_graph(model: nn.Module, graph: fx.Graph) -> GraphStructure:
    """Read conv order, projection shortcuts and blocks off an fx graph traced with ``ConvLeafTracer``."""
    modules = dict(model.named_modules())
    constants = constant_nodes(graph)
    g = to_networkx(graph, constants)
    conv_nodes: dict[str, str] = {}  # fx node name -> module name
    layer_order: list[str] = []
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), LAYER_TYPES):
            if isinstance(modules[node.target], CONV_TYPES):
                conv_nodes[node.name] = node.target
            if node.target not in layer_order:  # a module called twice keeps its first position
                layer_order.append(node.target)

    idom = nx.immediate_dominators(g, _ROOT)
    shortcuts: set[str] = set()
    region_prefixes: list[str] = []
    regions: list[tuple[str, set[str]]] = []  # (join node, convs inside its region)
    for node in graph.nodes:
        kind = _join_kind(node, constants)
        if kind is None:
            continue
        fork = idom[node.name]
        inside = nx.descendants(g, fork) & nx.ancestors(g, node.name)
        region_convs = [conv_nodes[n] for n in inside if n in conv_nodes]
        if region_convs:
            region_prefixes.append(_common_module_prefix(region_convs))
        regions.append((node.name, {conv_nodes[n] for n in inside if n in conv_nodes}))
        if kind == "add":
            shortcut = _projection_shortcut(g, node, inside, conv_nodes, constants)
            if shortcut is not None:
                shortcuts.add(shortcut)

    block_types = {type(modules[b]) for b in filter(None, map(lambda p: _owning_block(modules, p), region_prefixes))}
    candidates = [name for name, m in model.named_modules() if name and type(m) in block_types]
    # Inner blocks win: drop a block that holds another (an encoder around its residual blocks).
    inner = [b for b in candidates if not any(o.startswith(b + ".") for o in candidates)]
    block_of: dict[str, str] = {}
    for conv in set(conv_nodes.values()):
        for block in inner:
            if conv.startswith(block + "."):
                block_of[conv] = block
                break
    if not block_of and regions:  # a flat model: the join regions themselves are the blocks
        block_of = _region_blocks(regions)
    first_use = {conv: i for i, conv in enumerate(layer_order)}
    used_blocks = {b for b in block_of.values()}
    blocks = sorted(used_blocks, key=lambda b: min(first_use[c] for c, bb in block_of.items() if bb == b))
    for linear in set(layer_order) - set(conv_nodes.values()):  # a Linear in a block module the convs found
        block_of.update({linear: b for b in blocks if linear.startswith(b + ".")})
    return GraphStructure(layer_order, shortcuts, blocks, block_of)
