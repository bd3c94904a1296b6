"""Calibrate the fallback cost model of ``passes/onnx/lowering/plan.py`` (``scale_on_activations``, ``taps_on_columns``).

Times, in onnxruntime on the CPU with one thread, the four ways the ort-cpu batch-1 form can apply attentions to
a dense / 1x1 layer, per element touched:

* kernel: the outer-product scale tensor (batched K=1 MatMul) and the Mul with the blocked kernel (channel and
  filter attentions folded into the kernel; ``KERNEL_SCALE_COST``),
* taps: the spatial-only broadcast Mul over (Bi, Bo) spans of the blocked kernel (``TAP_SCALE_COST``),
* activations: an NCHWc depthwise 1x1 Conv whose weight is the attention vector (``ACTIVATION_SCALE_COST``),
* columns (dense k x k): the tap-major columns (Pad, k^2 Slices, Concat, Mul, ReorderInput) into the constant
  kernel as a 1x1 NCHWc Conv, minus the static k x k NCHWc Conv, per column element (``COLUMNS_COST``).

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


def columns_extra_us(cin: int, cout: int, hw: int, stride: int, blk: int, repeats: int) -> float:
    """The columns form of a 3x3 conv minus the static NCHWc conv (both with constant, prepacked kernels)."""
    ho = (hw - 1) // stride + 1
    x = _vi("x", (1, cin, hw, hw))
    out = [helper.make_node("ReorderOutput", ["yb"], ["y"], domain=NCHWC_DOMAIN, channels=cout, channels_last=0)]
    conv = dict(domain=NCHWC_DOMAIN, dilations=[1, 1], group=1)
    static = _session(
        [helper.make_node("ReorderInput", ["x"], ["xb"], domain=NCHWC_DOMAIN, channels_last=0),
         helper.make_node("Conv", ["xb", "w"], ["yb"], kernel_shape=[3, 3], pads=[1] * 4, strides=[stride] * 2, **conv), *out],
        [x], [numpy_helper.from_array(_rand(cout, cin, 3, 3), "w")])
    consts = [numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
              numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
              numpy_helper.from_array(np.array([stride, stride], np.int64), "steps"),
              numpy_helper.from_array(_rand(cout, 9 * cin, 1, 1), "w")]
    nodes = [helper.make_node("Pad", ["x", "pads"], ["xp"])]
    for t in range(9):
        i, j = divmod(t, 3)
        consts += [numpy_helper.from_array(np.array([i, j], np.int64), f"b{t}"),
                   numpy_helper.from_array(np.array([i + stride * (ho - 1) + 1, j + stride * (ho - 1) + 1], np.int64), f"e{t}")]
        nodes.append(helper.make_node("Slice", ["xp", f"b{t}", f"e{t}", "axes", "steps"], [f"s{t}"]))
    nodes += [helper.make_node("Concat", [f"s{t}" for t in range(9)], ["cols"], axis=1),
              helper.make_node("Mul", ["cols", "a"], ["scaled"]),
              helper.make_node("ReorderInput", ["scaled"], ["xb"], domain=NCHWC_DOMAIN, channels_last=0),
              helper.make_node("Conv", ["xb", "w"], ["yb"], kernel_shape=[1, 1], pads=[0] * 4, strides=[1, 1], **conv), *out]
    columns = _session(nodes, [x, _vi("a", (1, 9 * cin, 1, 1))], consts)
    feed = {"x": _rand(1, cin, hw, hw)}
    return _median_us(columns, {**feed, "a": _rand(1, 9 * cin, 1, 1)}, repeats) - _median_us(static, feed, repeats)


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
    print("\n| 3x3 conv | column elements | columns form - static conv | kernel elements | tap scale |\n|---|---:|---:|---:|---:|")
    for cin, cout, hw, stride in [(512, 512, 7, 1), (256, 512, 14, 2), (256, 256, 14, 1), (128, 128, 28, 1)]:
        ho = (hw - 1) // stride + 1
        n, kernel = 9 * cin * ho * ho, 9 * cin * cout
        extra = columns_extra_us(cin, cout, hw, stride, blk, max(args.repeats // 10, 5)) * 1e3 / n
        taps = tap_scale_us(cin, cout, 9, blk, args.repeats) * 1e3 / kernel
        print(f"| {cin}->{cout} @{hw} s{stride} | {n} | {extra:.2f} | {kernel} | {taps:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
