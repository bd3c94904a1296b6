"""The main job on the embedded default: convert torchvision mobilenet_v2 under ``all_but_first``.

Prints the conversion report, checks the converted model reproduces the original's outputs (function-preserving
conversion), then exports it to ONNX and compares onnxruntime against PyTorch and the static / naive / fused
latencies. Run: ``python -m odconv_surgery.experiments.demo`` (or ``make demo``).
"""

from __future__ import annotations

import argparse

import torch
import torchvision

from .. import apply_odconv
from ..numerics import DEFAULT_TOLERANCE, relative_error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="all_but_first", help="placement policy (default: all_but_first)")
    parser.add_argument("-n", "--kernel-num", type=int, default=1, help="ODConv kernel number n (default 1)")
    parser.add_argument("--size", type=int, default=224, help="input image size (default 224)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export and onnxruntime comparison")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    original = torchvision.models.mobilenet_v2().eval()  # random weights: nothing is downloaded
    model, report = apply_odconv(original, args.policy, kernel_num=args.kernel_num)
    print(report)

    x = torch.randn(2, 3, args.size, args.size)
    with torch.no_grad():
        reference, converted = original(x), model(x)
    error = relative_error(reference, converted)
    print(f"\nfunction-preserving check: relative max error {error:.2e} (limit {DEFAULT_TOLERANCE:g})")
    if not error <= DEFAULT_TOLERANCE:
        print("FAILED: the converted model does not reproduce the original")
        return 1
    if not args.no_onnx:
        from ..deploy.benchmark import compare_onnx

        print()
        comparison = compare_onnx(model, original, x[:1])
        print(comparison.render())
        if not comparison.ok:
            print("FAILED: onnxruntime output differs from PyTorch beyond tolerance")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
