"""Where the ODConv model's extra time goes in onnxruntime: an operator profile of the static model and of the
converted model's ``ort-cpu`` export, side by side (CPU, one thread, batch 1).

    python benchmarks/profile_onnx.py [--model mobilenet_v2_0.5] [--policy 1x1] [-n 1] [--runs 100] [--md out.md]
    python benchmarks/profile_onnx.py --model mobilenet_v2_1.0 --method condconv     # Table 8's CondConv row

Times are onnxruntime's per-node kernel times (``enable_profiling``), summed per operator type and divided by the
number of runs; profiling adds a few microseconds per node, so read the node counts beside the times. ``If`` holds
its branch's nodes and is left out of the totals. Below the table: the nodes that cost most, and the weight traffic
(bytes of constant initialisers each run reads, against this machine's one-thread read bandwidth): at batch 1 a
multi-kernel layer reads every kernel of its bank to mix them, which no lowering avoids. Run it alone on the machine
(check ``uptime``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import torch

from lab.machine_load import describe_load, load_average
from odconv_surgery.deploy.machine import describe_cpu
from lab.paper import static_model
from odconv_surgery import apply_odconv
from odconv_surgery.methods import METHOD_POLICY, METHODS
from odconv_surgery.deploy.export import export_onnx
from odconv_surgery.deploy.runtime import OrtRunner


def op_profile(proto, runs: int) -> tuple[dict[str, tuple[float, float]], float, dict[str, float]]:
    """{op type: (nodes per run, ms per run)}, the median ``model_run`` ms and {node name: ms per run}."""
    prefix = os.path.join(tempfile.gettempdir(), "odconv_profile")  # an interrupted run leaves no file in the tree
    runner = OrtRunner(proto, device="cpu", threads=1, warmup=5, profile_prefix=prefix)
    x = runner.example(1)
    for _ in range(runs):
        runner(x)
    path = runner.end_profiling()
    with open(path) as fh:
        events = json.load(fh)
    os.remove(path)
    # Every profiled run counts, the runner's warm-up runs included: divide by the runs the profile holds.
    model_runs = sorted(e["dur"] / 1e3 for e in events if e.get("name") == "model_run")
    profiled = len(model_runs)
    per_op: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    per_node: dict[str, float] = collections.defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"].get("op_name", "?")
            if op == "If":
                continue
            per_op[op][0] += 1 / profiled
            per_op[op][1] += event["dur"] / 1e3 / profiled
            per_node[f"{event['name'][:-len('_kernel_time')]} ({op})"] += event["dur"] / 1e3 / profiled
    return {op: (n, ms) for op, (n, ms) in per_op.items()}, model_runs[profiled // 2], dict(per_node)


def weight_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of the constant initialisers one run reads: subgraphs included, of an ``If`` only its larger branch
    (one of the two runs: the batch-1 or the any-batch form)."""
    def graph_bytes(graph: onnx.GraphProto) -> int:
        total = sum(onnx.numpy_helper.to_array(t).nbytes for t in graph.initializer)
        for node in graph.node:
            branches = [graph_bytes(a.g) for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
            total += (max(branches, default=0) if node.op_type == "If" else sum(branches))
        return total
    return graph_bytes(proto.graph)


def read_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """One thread's read bandwidth in GB/s (the best of ``repeats`` sums over an array larger than any cache)."""
    data = np.ones(megabytes * 2**20 // 8, dtype=np.float64)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - start)
    return data.nbytes / best / 1e9


def render_per_layer(static: dict, converted: dict, static_run: float, converted_run: float, layers: int) -> str:
    """The fixed cost per converted layer: extra nodes, extra kernel time and extra time between kernels (dispatch,
    allocation: what a node costs beyond its work, the floor at small inputs)."""
    nodes = sum(v[0] for v in converted.values()) - sum(v[0] for v in static.values())
    kernels = sum(v[1] for v in converted.values()) - sum(v[1] for v in static.values())
    between = (converted_run - static_run) - kernels
    return (f"Per converted layer ({layers}): {nodes / layers:.1f} extra nodes, {kernels / layers * 1e3:.1f} us extra "
            f"kernel time, {between / layers * 1e3:.1f} us extra between kernels "
            f"({between / max(nodes, 1) * 1e3:.2f} us per extra node); "
            f"{(converted_run - static_run) / layers * 1e3:.1f} us in all.")


def render_traffic(static_bytes: int, converted_bytes: int, bandwidth: float, extra_ms: float) -> str:
    extra_mb = (converted_bytes - static_bytes) / 1e6
    floor_ms = extra_mb / 1e3 / bandwidth * 1e3
    return (f"Weight traffic per run: static {static_bytes / 1e6:.1f} MB, converted {converted_bytes / 1e6:.1f} MB "
            f"(+{extra_mb:.1f} MB); one-thread read bandwidth {bandwidth:.1f} GB/s, so reading the extra weights "
            f"alone takes about {floor_ms:.2f} ms of the {extra_ms:.2f} ms extra per run.")


def render_top(converted: dict[str, float], count: int = 12) -> str:
    """The converted model's costliest nodes."""
    lines = ["| node (op) | ms per run |", "|---|---:|"]
    for name, ms in sorted(converted.items(), key=lambda kv: -kv[1])[:count]:
        lines.append(f"| `{name}` | {ms:.3f} |")
    return "\n".join(lines)


def render(static: dict, converted: dict, static_run: float, converted_run: float) -> str:
    lines = ["| operator | static nodes | static ms | ODConv nodes | ODConv ms | extra ms |", "|---|---:|---:|---:|---:|---:|"]
    for op in sorted(set(static) | set(converted), key=lambda o: -(converted.get(o, (0, 0))[1] - static.get(o, (0, 0))[1])):
        sn, sm = static.get(op, (0, 0.0))
        cn, cm = converted.get(op, (0, 0.0))
        lines.append(f"| {op} | {sn:.0f} | {sm:.3f} | {cn:.0f} | {cm:.3f} | {cm - sm:+.3f} |")
    st, ct = sum(v[1] for v in static.values()), sum(v[1] for v in converted.values())
    lines.append(f"| **kernels, total** | {sum(v[0] for v in static.values()):.0f} | {st:.3f} | "
                 f"{sum(v[0] for v in converted.values()):.0f} | {ct:.3f} | {ct - st:+.3f} |")
    lines.append(f"| model_run (median, profiled) | | {static_run:.3f} | | {converted_run:.3f} | {converted_run - static_run:+.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mobilenet_v2_0.5")
    p.add_argument("--method", default="odconv", choices=sorted(METHODS), help="dynamic-convolution method")
    p.add_argument("--policy", default=None, help="placement (default: 1x1 for odconv, the method's own otherwise)")
    p.add_argument("-n", "--kernel-num", type=int, default=None, help="kernels per layer (default: the method's; 1)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--md", default=None, help="also write the table to this markdown file")
    args = p.parse_args(argv)
    load = load_average()
    static = static_model(args.model)
    policy = args.policy or ("1x1" if args.method == "odconv" else METHOD_POLICY)
    kernel_num = args.kernel_num or METHODS[args.method].kernel_num or 1
    converted, report = apply_odconv(static, policy=policy, method=args.method, kernel_num=kernel_num)
    x = torch.randn(1, 3, args.input_size, args.input_size)
    s_proto = export_onnx(static, None, x, check=False, target="ort-cpu")
    c_proto = export_onnx(converted.eval(), None, x, check=False, target="ort-cpu")
    s_ops, s_run, _ = op_profile(s_proto, args.runs)
    c_ops, c_run, c_nodes = op_profile(c_proto, args.runs)
    traffic = render_traffic(weight_bytes(s_proto), weight_bytes(c_proto), read_bandwidth_gbs(), c_run - s_run)
    per_layer = render_per_layer(s_ops, c_ops, s_run, c_run, len(report.converted))
    title = (f"# onnxruntime operator profile: {args.model}, {METHODS[args.method].title}, policy {policy}, "
             f"n={kernel_num}, ort-cpu, "
             f"CPU, 1 thread, batch 1, {args.input_size} px, {args.runs} runs\n\nMachine: {describe_cpu()}\n\n"
             f"Command: `python benchmarks/profile_onnx.py {' '.join(argv if argv is not None else sys.argv[1:])}`; "
             f"{describe_load(load)} at start.\n")
    text = (f"{title}\n{render(s_ops, c_ops, s_run, c_run)}\n\n{per_layer}\n\n{traffic}\n\nCostliest nodes of the converted model:\n\n"
            f"{render_top(c_nodes)}\n")
    print(text)
    if args.md:
        with open(args.md, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
