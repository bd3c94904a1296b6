"""How should an ort-cpu file run a batch > 1? The per-sample graph against the per-layer forms, and thread scaling.

An ort-cpu file runs a batch > 1 either as its batch-1 graph once per sample (one ``Scan``, blocked end to end:
``per-sample graph``) or with the per-layer any-batch forms (``per-layer``). The per-sample graph reads every kernel
bank once per sample; the per-layer forms mix each bank once per batch but leave the blocked chain. This times, in
the same interleaved rounds, the static model and both files (the cost model's layer forms, ``tune=False``, so
the two differ only in the batch form) at ``--batch`` with one thread and with all threads; the batch-1 rows show
how each file scales from one thread to all.

``export_onnx(tune=True)`` (the default) makes this choice by timing both files where some layer holds several
kernels (``deploy/tuning.py``); this script shows why that rule and where the batch > 1 time goes.

    python benchmarks/bench_batch_forms.py
    python benchmarks/bench_batch_forms.py --cases resnet50:condconv:condconv:8 --md out.md

Run it alone on the machine: it refuses to start above a load of 0.5 per core (``--allow-busy`` overrides).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from lab.bench_cli import add_timing_args, loads_line, quiet_start
from lab.onnx_tables import write_markdown
from lab.paper import static_model
from odconv_surgery.deploy.benchmark import ratios_to, time_variant_rounds
from odconv_surgery.deploy.export import export_marked, export_onnx
from odconv_surgery.passes.onnx import run_pipeline
from odconv_surgery.surgery import apply_odconv

#: model:method:policy:kernel_num
DEFAULT_CASES = (
    "mobilenet_v2_0.5:odconv:all_but_first:1", "mobilenet_v2_1.0:odconv:all_but_first:1",
    "mobilenet_v2_0.5:odconv:all_but_first:4", "mobilenet_v2_1.0:odconv:all_but_first:4",
    "mobilenet_v2_1.0:dyconv:all_but_first:4", "mobilenet_v2_1.0:condconv:condconv:8",
    "resnet50:dyconv:all_but_first:4", "resnet50:condconv:condconv:8",
)


def parse_case(case: str) -> tuple[str, str, str, int]:
    """``model:method:policy:kernel_num`` (the policy may hold a colon itself, e.g. ``last:6``)."""
    model_name, method, rest = case.split(":", 2)
    policy, n = rest.rsplit(":", 1)
    return model_name, method, policy, int(n)


def files(case: str) -> dict:
    """The static model and the converted one in both batch > 1 forms (ModelProto each)."""
    model_name, method, policy, n = parse_case(case)
    static = static_model(model_name)
    converted, _ = apply_odconv(static, method=method, policy=policy, kernel_num=n)
    converted.eval()
    x = torch.randn(1, 3, 224, 224)
    marked = export_marked(converted, x).SerializeToString()
    out = {"static": export_onnx(static, None, x, check=False)}
    for form in ("per-sample graph", "per-layer"):
        out[form] = run_pipeline(marked, target="ort-cpu", batch_form=form)
    return out


def run_case(case: str, batch: int, repeats: int, rounds: int) -> dict[str, dict[str, float]]:
    """Per regime (batch, threads): the static model's median ms and each file's median per-round ratio to it."""
    protos = files(case)
    results = {}
    for b, threads in ((1, 1), (1, 0), (batch, 1), (batch, 0)):
        per_round = time_variant_rounds(protos, (f"b{b}", "cpu", b, threads), repeats, rounds)
        results[(b, threads)] = {"static_ms": statistics.median(per_round["static"]) * 1e3, **ratios_to(per_round)}
    return results


def render(results: dict[str, dict], batch: int) -> str:
    lines = [
        "| model | method | policy | n | regime | static ms | per-sample graph | per-layer | faster |",
        "|---|---|---|---|---|---:|---:|---:|---|",
    ]
    for case, regimes in results.items():
        model_name, method, policy, n = parse_case(case)
        for (b, threads), r in regimes.items():
            scan, per_layer = r["per-sample graph"], r["per-layer"]
            faster = "-" if b == 1 else ("per-layer" if per_layer < scan else "per-sample graph")
            lines.append(f"| {model_name} | {method} | {policy} | {n} | batch {b}, {threads or 'all'} thread(s) | "
                         f"{r['static_ms']:.2f} | {scan:.2f}x | {per_layer:.2f}x | {faster} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="model:method:policy:kernel_num")
    p.add_argument("--batch", type=int, default=8)
    add_timing_args(p, repeats=5, rounds=5)
    args = p.parse_args(argv)
    for case in args.cases:
        if case.count(":") < 3 or not case.rsplit(":", 1)[1].isdigit():
            p.error(f"case {case!r} is not model:method:policy:kernel_num, e.g. resnet50:condconv:condconv:8")
    go_on, load_start = quiet_start(args)
    if not go_on:
        return 2
    results = {}
    for case in args.cases:
        results[case] = run_case(case, args.batch, args.repeats, args.rounds)
        print(case, {f"b{b}t{t}": {k: round(v, 2) for k, v in r.items()} for (b, t), r in results[case].items()}, flush=True)
    loads = loads_line(load_start)
    table = render(results, args.batch)
    print(f"\n{loads}\n\n{table}")
    if args.md:
        command = f"python benchmarks/bench_batch_forms.py {' '.join(argv if argv is not None else sys.argv[1:])}"
        write_markdown(args.md, "Batch > 1 in onnxruntime (CPU): the per-sample graph against the per-layer forms",
                       command, loads, "Ratios: the median over rounds of each file's time over the static model's in "
                       "the same round; both files carry the cost model's layer forms (tune=False).", table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
