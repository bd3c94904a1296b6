"""Static vs naive vs fused ODConv models in onnxruntime: one command, markdown table + JSON.

    python benchmarks/bench_onnx.py                      # full matrix (slow on 2 cores)
    python benchmarks/bench_onnx.py --quick              # mobilenet_v2 0.5, n=1, Table 9 policies, batch 1 only
    python benchmarks/bench_onnx.py --models resnet18 --kernel-nums 1 --no-b8 --json out.json
"""

from __future__ import annotations

import argparse

from odconv_surgery.deploy.benchmark import MODELS, Case, default_cases, render_markdown, run_benchmark, write_json
from odconv_surgery.policies import PAPER_POLICIES


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--kernel-nums", nargs="+", type=int, default=[1, 4])
    p.add_argument("--policy-model", default="mobilenet_v2_0.5", help="model on which every Table 9 policy runs")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=10, help="timed runs per round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median of medians)")
    p.add_argument("--no-b8", action="store_true", help="skip CPU batch 8 / all threads")
    p.add_argument("--no-cuda", action="store_true", help="skip CUDA batch 200 even when available")
    p.add_argument("--quick", action="store_true", help="mobilenet_v2 0.5, n=1, Table 9 policies, CPU batch 1 only")
    p.add_argument("--json", default="bench_onnx.json")
    args = p.parse_args(argv)
    if args.quick:
        cases = [Case("mobilenet_v2_0.5", pol, 1) for pol in PAPER_POLICIES]
        args.no_b8 = True
    else:
        cases = default_cases(args.models, args.kernel_nums, args.policy_model)
    rows = run_benchmark(
        cases, input_size=args.input_size, repeats=args.repeats, rounds=args.rounds,
        include_b8=not args.no_b8, include_cuda=not args.no_cuda,
    )
    print("\n## All results\n")
    print(render_markdown(rows))
    write_json(rows, args.json, {"args": vars(args)})
    print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
