"""Calibrate the cost model of ``passes/onnx/lowering/batch1_nchwc.scale_on_activations``.

Times, in onnxruntime on the CPU with one thread, the three ways the ort-cpu batch-1 form can apply attentions to
a dense / 1x1 layer, per element touched:

* kernel: the outer-product scale tensor (batched K=1 MatMul) and the Mul with the blocked kernel (channel and
  filter attentions folded into the kernel; ``KERNEL_SCALE_COST``),
* taps: the spatial-only broadcast Mul over (Bi, Bo) spans of the blocked kernel (``TAP_SCALE_COST``),
* activations: an NCHWc depthwise 1x1 Conv whose weight is the attention vector (``ACTIVATION_SCALE_COST``).

    python benchmarks/bench_nchwc_scaling.py [--repeats 200]

Run it alone on the machine (check ``uptime``); only the ratios between the three columns matter.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from odconv_surgery.deploy.schema import NCHWC_DOMAIN
from odconv_surgery.passes.onnx.common import detect_nchwc_block


def _session(nodes, inputs, initializers=()) -> ort.InferenceSession:
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", inputs, [out], initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(NCHWC_DOMAIN, 1)])
    model.ir_version = 9
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _median_us(session: ort.InferenceSession, feed: dict, repeats: int) -> float:
    for _ in range(10):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def _vi(name: str, shape) -> helper.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _rand(*shape) -> np.ndarray:
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def kernel_scale_us(cin: int, cout: int, k2: int, blk: int, repeats: int) -> float:
    m = cin * k2
    w = numpy_helper.from_array(_rand(cout // blk, m, blk), "w")
    nodes = [helper.make_node("MatMul", ["a", "b"], ["s"]), helper.make_node("Mul", ["w", "s"], ["y"])]
    sess = _session(nodes, [_vi("a", (1, m, 1)), _vi("b", (cout // blk, 1, blk))], [w])
    return _median_us(sess, {"a": _rand(1, m, 1), "b": _rand(cout // blk, 1, blk)}, repeats)


def tap_scale_us(cin: int, cout: int, k2: int, blk: int, repeats: int) -> float:
    w = numpy_helper.from_array(_rand((cout // blk) * (cin // blk), k2, blk * blk), "w")
    sess = _session([helper.make_node("Mul", ["w", "a"], ["y"])], [_vi("a", (1, k2, 1))], [w])
    return _median_us(sess, {"a": _rand(1, k2, 1)}, repeats)


def activation_scale_us(channels: int, hw: int, repeats: int, convs: int = 5) -> float:
    """Per depthwise 1x1 NCHWc Conv: (``convs`` chained) minus (none), divided by ``convs``."""

    def sess(k: int):
        nodes = [helper.make_node("ReorderInput", ["x"], ["t0"], domain=NCHWC_DOMAIN, channels_last=0)]
        for i in range(k):
            nodes.append(helper.make_node(
                "Conv", [f"t{i}", "a"], [f"t{i + 1}"], domain=NCHWC_DOMAIN, group=channels, kernel_shape=[1, 1],
                pads=[0, 0, 0, 0], strides=[1, 1], dilations=[1, 1]))
        nodes.append(helper.make_node("ReorderOutput", [f"t{k}"], ["y"], domain=NCHWC_DOMAIN, channels=channels, channels_last=0))
        return _session(nodes, [_vi("x", (1, channels, hw, hw)), _vi("a", (channels, 1, 1, 1))])

    feed = {"x": _rand(1, channels, hw, hw), "a": _rand(channels, 1, 1, 1)}
    return (_median_us(sess(convs), feed, repeats) - _median_us(sess(0), feed, repeats)) / convs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args(argv)
    blk = detect_nchwc_block()
    if blk is None:
        raise SystemExit("onnxruntime's NCHWc contrib ops are not usable on this machine: nothing to calibrate")
    print(f"NCHWc block {blk}, 1 thread, medians of {args.repeats} runs (ns per element touched)\n")
    print("| shape | kernel elements | kernel scale | tap scale |\n|---|---:|---:|---:|")
    for cin, cout, k2 in [(96, 576, 1), (160, 960, 1), (320, 1280, 1), (256, 256, 9), (512, 512, 9)]:
        n = cin * cout * k2
        kernel = kernel_scale_us(cin, cout, k2, blk, args.repeats) * 1e3 / n
        taps = tap_scale_us(cin, cout, k2, blk, args.repeats) * 1e3 / n if k2 > 1 else float("nan")
        print(f"| {cin}x{cout}x{k2} | {n} | {kernel:.2f} | {taps:.2f} |")
    print("\n| activation | elements | depthwise 1x1 NCHWc Conv |\n|---|---:|---:|")
    for channels, hw in [(96, 56), (576, 14), (960, 7), (1280, 7)]:
        n = channels * hw * hw
        print(f"| {channels}x{hw}x{hw} | {n} | {activation_scale_us(channels, hw, args.repeats) * 1e3 / n:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
