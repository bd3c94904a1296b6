"""Where the ODConv model's extra time goes in onnxruntime: an operator profile of the static model and of the
converted model's ``ort-cpu`` export, side by side (CPU, one thread, batch 1).

    python benchmarks/profile_onnx.py [--model mobilenet_v2_0.5] [--policy 1x1] [-n 1] [--runs 100] [--md out.md]

Times are onnxruntime's per-node kernel times (``enable_profiling``), summed per operator type and divided by the
number of runs; profiling adds a few microseconds per node, so read the node counts beside the times. ``If`` holds
its branch's nodes and is left out of the totals. Run it alone on the machine (check ``uptime``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile

import torch

from lab.machine_load import describe_load, load_average
from odconv_surgery.deploy.machine import describe_cpu
from lab.paper import static_model
from odconv_surgery import apply_odconv
from odconv_surgery.deploy.export import export_onnx
from odconv_surgery.deploy.runtime import OrtRunner


def op_profile(proto, runs: int) -> tuple[dict[str, tuple[float, float]], float]:
    """{op type: (nodes per run, ms per run)} and the median ``model_run`` ms."""
    prefix = os.path.join(tempfile.gettempdir(), "odconv_profile")  # an interrupted run leaves no file in the tree
    runner = OrtRunner(proto, device="cpu", threads=1, warmup=5, profile_prefix=prefix)
    x = runner.example(1)
    for _ in range(runs):
        runner(x)
    path = runner.end_profiling()
    with open(path) as fh:
        events = json.load(fh)
    os.remove(path)
    per_op: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    model_runs = []
    for event in events:
        if event.get("name") == "model_run":
            model_runs.append(event["dur"] / 1e3)
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"].get("op_name", "?")
            if op == "If":
                continue
            per_op[op][0] += 1 / runs
            per_op[op][1] += event["dur"] / 1e3 / runs
    model_runs.sort()
    return {op: (n, ms) for op, (n, ms) in per_op.items()}, model_runs[len(model_runs) // 2]


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
    p.add_argument("--policy", default="1x1")
    p.add_argument("-n", "--kernel-num", type=int, default=1)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--md", default=None, help="also write the table to this markdown file")
    args = p.parse_args(argv)
    load = load_average()
    static = static_model(args.model)
    converted, _ = apply_odconv(static, policy=args.policy, kernel_num=args.kernel_num)
    x = torch.randn(1, 3, args.input_size, args.input_size)
    s_ops, s_run = op_profile(export_onnx(static, None, x, check=False, target="ort-cpu"), args.runs)
    c_ops, c_run = op_profile(export_onnx(converted.eval(), None, x, check=False, target="ort-cpu"), args.runs)
    title = (f"# onnxruntime operator profile: {args.model}, policy {args.policy}, n={args.kernel_num}, ort-cpu, "
             f"CPU, 1 thread, batch 1, {args.input_size} px, {args.runs} runs\n\nMachine: {describe_cpu()}\n\n"
             f"Command: `python benchmarks/profile_onnx.py {' '.join(argv if argv is not None else sys.argv[1:])}`; "
             f"{describe_load(load)} at start.\n")
    text = f"{title}\n{render(s_ops, c_ops, s_run, c_run)}\n"
    print(text)
    if args.md:
        with open(args.md, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
