"""Static vs naive vs fused ODConv models in onnxruntime: one command, markdown table + JSON.

    python benchmarks/bench_onnx.py                      # full matrix (slow on 2 cores)
    python benchmarks/bench_onnx.py --quick              # mobilenet_v2 0.5, n=1, Table 9 policies, batch 1 only
    python benchmarks/bench_onnx.py --models resnet18 --kernel-nums 1 --no-b8 --json out.json
    python benchmarks/bench_onnx.py --table8             # Table 8: static, CondConv, DyConv, ODConv 1x / 4x
"""

from __future__ import annotations

import argparse
import sys

from lab.machine_load import BusyMachineError, describe_load, load_average, require_quiet
from odconv_surgery.deploy.machine import describe_cpu
from lab.onnx_tables import default_cases, render_summary, run_benchmark, write_markdown
from lab.paper import MODELS, TABLE8_MODELS
from odconv_surgery.deploy.benchmark import Case, render_markdown, write_json
from odconv_surgery.deploy.export import export_onnx
from odconv_surgery.policies import PAPER_POLICIES


def official_export(static, converted, example):
    """The converted model computed the official code's way (per-sample kernels, batch folded into the groups of one
    conv), exported as it is: no marker, no pass, a fixed batch of 1 (its grouped conv bakes the batch in)."""
    import copy

    from lab.reference_odconv import use_reference_formulation

    reference = copy.deepcopy(converted).eval()
    use_reference_formulation(reference)
    return export_onnx(reference, None, example, dynamic_batch=False, check=False, target="portable")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--kernel-nums", nargs="+", type=int, default=[1, 4])
    p.add_argument("--policy-model", default="mobilenet_v2_0.5", help="model on which every Table 9 policy runs")
    p.add_argument("--policies", nargs="*", default=list(PAPER_POLICIES), help="policies run on --policy-model (none: skip)")
    p.add_argument("--methods", nargs="*", default=["condconv", "dyconv"], choices=["condconv", "dyconv"],
                   help="Table 8's other methods, run on its models (resnet50, mobilenet_v2_1.0) among --models (none: skip)")
    p.add_argument("--table8", action="store_true",
                   help="only Table 8: resnet50 and mobilenet_v2 1.0, static, CondConv, DyConv, ODConv 1x and 4x, CPU batch 1")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=10, help="timed runs per round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (ms: the median of per-round medians; ratios: the median of the per-round ratios)")
    p.add_argument("--no-b8", action="store_true", help="skip CPU batch 8 / all threads")
    p.add_argument("--no-cuda", action="store_true", help="skip CUDA batch 200 even when available")
    p.add_argument("--quick", action="store_true", help="mobilenet_v2 0.5, n=1, Table 9 policies, CPU batch 1 only")
    p.add_argument("--json", default="bench_onnx.json")
    p.add_argument("--md", default=None, help="also write the summary table and the machine's load to this markdown file")
    p.add_argument("--allow-busy", action="store_true", help="time even when the load average says the machine is busy")
    p.add_argument("--official", action="store_true",
                   help="also time the official ODConv code's formulation (benchmarks/lab/reference_odconv.py) exported "
                        "as it is, batch 1 only")
    args = p.parse_args(argv)
    try:
        load_start = require_quiet(args.allow_busy)
    except BusyMachineError as err:
        print(f"error: {err}")
        return 2
    print(f"machine at start: {describe_cpu()}; {describe_load(load_start)}")
    if args.quick:
        cases = [Case("mobilenet_v2_0.5", pol, 1) for pol in PAPER_POLICIES]
        args.no_b8 = True
    elif args.table8:
        cases = default_cases(TABLE8_MODELS, (1, 4), args.policy_model, (), args.methods)
        args.no_b8 = True
    else:
        cases = default_cases(args.models, args.kernel_nums, args.policy_model, args.policies, args.methods)
    rows = run_benchmark(
        cases, input_size=args.input_size, repeats=args.repeats, rounds=args.rounds,
        include_b8=not args.no_b8, include_cuda=not args.no_cuda,
        extra_variants={"official": official_export} if args.official else None,
    )
    load_end = load_average()
    loads = f"machine: {describe_load(load_start)} at start, {describe_load(load_end)} at the end"
    print("\n## All results\n")
    print(render_markdown(rows))
    summary = render_summary(rows)
    print(f"\n## Summary (ratios to the static model in the same run)\n\n{loads}\n\n{summary}")
    write_json(rows, args.json, {"args": vars(args), "load_start": load_start, "load_end": load_end})
    print(f"\nJSON written to {args.json}")
    if args.md:
        command = f"python benchmarks/bench_onnx.py {' '.join(argv if argv is not None else sys.argv[1:])}"
        write_markdown(args.md, "ONNX Runtime latency: static vs ODConv", command, loads, summary,
                       f"## All rows\n\n{render_markdown(rows)}")
        print(f"markdown written to {args.md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
