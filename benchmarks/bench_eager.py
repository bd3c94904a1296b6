"""Eager PyTorch overhead of ODConv vs the static model: forward at batch 1 and a training step at batch 32.

Ratios come from the same run (the machine is shared and noisy); each figure is the median of --repeats runs.
Target (issue #2): training-step overhead <= 2x for ODConv 1x (the paper's Table 17 reports 2.4-2.7x).

    python benchmarks/bench_eager.py [--models resnet18 mobilenet_v2] [--size 224] [--threads 2] [--compile]
"""

from __future__ import annotations

import argparse
import json

import torch
import torchvision

from lab.machine_load import BusyMachineError, describe_load, load_average, require_quiet
from lab.timing import Timing, measure
from odconv_surgery import apply_odconv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--kernel-nums", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="torch.compile the static and the converted models")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend with --compile")
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument("--allow-busy", action="store_true", help="time even when the load average says the machine is busy")
    args = parser.parse_args()
    try:
        load_start = require_quiet(args.allow_busy)
    except BusyMachineError as err:
        raise SystemExit(f"error: {err}") from None
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    timing = Timing(args.size, 1, args.train_batch, args.repeats, args.warmup, args.compile_backend if args.compile else None)
    rows = []
    for name in args.models:
        static = getattr(torchvision.models, name)()
        base_fwd, _, _ = measure(static, "inference", timing, cpu)
        base_train, _, _ = measure(static, "train", timing, cpu)
        rows.append(dict(model=name, variant="static", fwd_ms=base_fwd, train_ms=base_train, fwd_ratio=1.0, train_ratio=1.0))
        for n in args.kernel_nums:
            model, _ = apply_odconv(static, "all_but_first", kernel_num=n, init="scratch")
            fwd, _, _ = measure(model, "inference", timing, cpu)
            train, _, _ = measure(model, "train", timing, cpu)
            rows.append(dict(model=name, variant=f"ODConv {n}x", fwd_ms=fwd, train_ms=train,
                             fwd_ratio=fwd / base_fwd, train_ratio=train / base_train))
    load_end = load_average()
    compiled = f", torch.compile backend={args.compile_backend}" if args.compile else ""
    print(f"threads={args.threads} size={args.size} train batch={args.train_batch} repeats={args.repeats} (medians){compiled}")
    print(f"machine: {describe_load(load_start)} at start, {describe_load(load_end)} at the end\n")
    print("| model | variant | fwd b=1 (ms) | ratio | train step (ms) | ratio |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['variant']} | {r['fwd_ms']:.1f} | {r['fwd_ratio']:.2f} | {r['train_ms']:.0f} | {r['train_ratio']:.2f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"threads": args.threads, "size": args.size, "compile": args.compile_backend if args.compile else None,
                       "load_start": load_start, "load_end": load_end, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
