"""Eager PyTorch overhead of ODConv vs the static model: forward at batch 1 and a training step at batch 32.

Ratios come from the same run (the machine is shared and noisy); each figure is the median of --repeats runs.
Target (issue #2): training-step overhead <= 2x for ODConv 1x (the paper's Table 17 reports 2.4-2.7x).

    python benchmarks/bench_eager.py [--models resnet18 mobilenet_v2] [--size 224] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torchvision
from torch import nn

from odconv_surgery import apply_odconv
from odconv_surgery.experiments.machine_load import BusyMachineError, describe_load, load_average, require_quiet


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_time(model: nn.Module, size: int, repeats: int) -> float:
    model.eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        return median_time(lambda: model(x), repeats, warmup=2)


def train_step_time(model: nn.Module, size: int, batch: int, repeats: int) -> float:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 1000, (batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return median_time(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--kernel-nums", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument("--allow-busy", action="store_true", help="time even when the load average says the machine is busy")
    args = parser.parse_args()
    try:
        load_start = require_quiet(args.allow_busy)
    except BusyMachineError as err:
        raise SystemExit(f"error: {err}") from None
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        static = getattr(torchvision.models, name)()
        base_fwd = forward_time(static, args.size, args.repeats)
        base_train = train_step_time(static, args.size, args.train_batch, args.repeats)
        rows.append(dict(model=name, variant="static", fwd_ms=base_fwd * 1e3, train_ms=base_train * 1e3, fwd_ratio=1.0, train_ratio=1.0))
        for n in args.kernel_nums:
            model, _ = apply_odconv(static, "all_but_first", kernel_num=n, init="scratch")
            fwd = forward_time(model, args.size, args.repeats)
            train = train_step_time(model, args.size, args.train_batch, args.repeats)
            rows.append(dict(model=name, variant=f"ODConv {n}x", fwd_ms=fwd * 1e3, train_ms=train * 1e3,
                             fwd_ratio=fwd / base_fwd, train_ratio=train / base_train))
    load_end = load_average()
    print(f"threads={args.threads} size={args.size} train batch={args.train_batch} repeats={args.repeats} (medians)")
    print(f"machine: {describe_load(load_start)} at start, {describe_load(load_end)} at the end\n")
    print("| model | variant | fwd b=1 (ms) | ratio | train step (ms) | ratio |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['variant']} | {r['fwd_ms']:.1f} | {r['fwd_ratio']:.2f} | {r['train_ms']:.0f} | {r['train_ratio']:.2f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"threads": args.threads, "size": args.size, "load_start": load_start, "load_end": load_end, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
