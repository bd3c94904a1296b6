"""Static vs naive vs fused ONNX latency of one model in onnxruntime: ``odconv-surgery bench`` and the demo.

For each case (a model, policy, n) four ONNX models are built in the same run (``VARIANTS``): the
original static model, the ODConv model exported naively (``fuse=False``: batch-independent reference
formulation, no fusion), the fused export (``passes.onnx.PIPELINE``, portable ONNX) and the fused export for
onnxruntime CPU (``target="ort-cpu"``: the batch-1 branch runs every depthwise / 1x1 / dense layer and the
static convs as ORT's NCHWc contrib Convs). Regimes: CPU batch 1 one thread (the paper's CPU column), CPU batch 8
all threads, CUDA batch 200 with IO binding when available. Timing: ``rounds`` rounds, each timing every variant
``repeats`` times in turn (interleaved, so machine noise hits all variants alike); the reported latency is the
median over rounds of the per-round medians, and ratios are to the static model measured in the same run.
The paper's figures, its model names and the busy-machine check live beside the benchmarks (``benchmarks/lab``).
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from .export import export_onnx
from .runtime import OrtRunner, ParityResult, check_parity, cuda_available
from .session_timing import rotating_rounds

VARIANTS = ("static", "naive", "fused", "fused_ortcpu")


@dataclass
class Case:
    model: str
    policy: str = "all_but_first"
    kernel_num: int = 1
    method: str = "odconv"  # odconv_surgery.methods: with policy "default", the method's own placement


@dataclass
class Row:
    model: str
    policy: str
    kernel_num: int
    regime: str
    variant: str
    batch: int
    threads: int
    ms: float
    fps: float
    ratio_to_static: float
    ratio_naive_to_fused: float | None = None
    method: str = "odconv"


def build_variants(static: nn.Module, odconv_model: nn.Module, example_input: torch.Tensor) -> dict:
    """The four ONNX models (ModelProto) of ``VARIANTS`` for one case."""
    return {
        "static": export_onnx(static, None, example_input, check=False),
        "naive": export_onnx(odconv_model, None, example_input, fuse=False, check=False),
        "fused": export_onnx(odconv_model, None, example_input, check=False, target="portable"),
        "fused_ortcpu": export_onnx(odconv_model, None, example_input, check=False, target="ort-cpu"),
    }


def _regimes(include_b8: bool, include_cuda: bool) -> list[tuple[str, str, int, int]]:
    regimes = [("cpu-b1-t1", "cpu", 1, 1)]
    if include_b8:
        regimes.append(("cpu-b8-tall", "cpu", 8, 0))
    if include_cuda and cuda_available():
        regimes.append(("cuda-b200", "cuda", 200, 0))
    return regimes


def time_variant_rounds(protos: dict, regime: tuple[str, str, int, int], repeats: int = 10, rounds: int = 5) -> dict[str, list[float]]:
    """Per variant, the median latency (s) of each of ``rounds`` interleaved rounds (``rotating_rounds``)."""
    _, device, batch, threads = regime
    runners = {k: OrtRunner(v, device=device, threads=threads, warmup=0) for k, v in protos.items()}
    runners = {k: r for k, r in runners.items() if r.input_shape[0] in (None, batch)}  # fixed-batch files: their batch only
    for runner in runners.values():
        runner.warmup(2, batch)
    per_round: dict[str, list[float]] = {k: [] for k in runners}
    for order in rotating_rounds(list(runners), rounds):
        for key in order:
            per_round[key].append(statistics.median(runners[key].time(batch, repeats=repeats, warmup=1, iobinding=device == "cuda")))
    return per_round


def ratios_to(per_round: dict[str, list[float]], base: str = "static") -> dict[str, float]:
    """Per variant, the median over rounds of its time divided by ``base``'s time in the same round: the machine's
    speed drifts between rounds (up to 1.5x on a shared VM), and a ratio within one round cancels that drift."""
    return {k: statistics.median(t / b for t, b in zip(v, per_round[base])) for k, v in per_round.items()}


def run_case(
    case: Case,
    *,
    input_size: int = 224,
    repeats: int = 10,
    rounds: int = 5,
    include_b8: bool = True,
    include_cuda: bool = True,
    check: bool = False,
    static: nn.Module,
    example_input: torch.Tensor | None = None,
    extra_variants: dict[str, Callable[[nn.Module, nn.Module, torch.Tensor], "onnx.ModelProto"]] | None = None,
) -> list[Row]:
    """Rows for every regime and variant of one case: ``static`` (the model ``case.model`` labels) converted with
    ``case.policy`` and ``case.kernel_num``, fed ``example_input`` (default: 1x3 x ``input_size``^2 noise).
    ``extra_variants``: more ONNX models timed in the same rounds, ``name -> build(static, converted, x)`` (a file
    with a fixed batch is timed only at that batch)."""
    from ..surgery import apply_odconv

    model, _ = apply_odconv(static, policy=case.policy, method=case.method, kernel_num=case.kernel_num)
    model.eval()
    x = torch.randn(1, 3, input_size, input_size) if example_input is None else example_input
    protos = build_variants(static, model, x)
    for name, build in (extra_variants or {}).items():
        protos[name] = build(static, model, x)
    if check:
        check_parity(model, protos["fused"], x, batches=(1, 3))
    rows = []
    for regime in _regimes(include_b8, include_cuda):
        per_round = time_variant_rounds(protos, regime, repeats, rounds)
        times = {k: statistics.median(v) for k, v in per_round.items()}
        ratios = ratios_to(per_round)
        for variant, t in times.items():
            rows.append(
                Row(
                    case.model, case.policy, case.kernel_num, regime[0], variant, regime[2], regime[3],
                    ms=t * 1e3, fps=regime[2] / t, ratio_to_static=ratios[variant],
                    ratio_naive_to_fused=(times["naive"] / t) if variant.startswith("fused") else None,
                    method=case.method,
                )
            )
    return rows


def render_markdown(rows: Sequence[Row]) -> str:
    head = "| model | method | policy | n | regime | variant | ms | FPS | ratio to static | naive/fused |\n|---|---|---|---|---|---|---|---|---|---|"
    lines = [head]
    for r in rows:
        nf = f"{r.ratio_naive_to_fused:.2f}x" if r.ratio_naive_to_fused is not None else ""
        lines.append(f"| {r.model} | {r.method} | {r.policy} | {r.kernel_num} | {r.regime} | {r.variant} | {r.ms:.2f} | {r.fps:.1f} | {r.ratio_to_static:.2f} | {nf} |")
    return "\n".join(lines)


def write_json(rows: Sequence[Row], path: str | os.PathLike, extra: dict | None = None) -> None:
    import onnxruntime

    payload = {
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "rows": [asdict(r) for r in rows],
        **(extra or {}),
    }
    from ..atomic_file import atomic_write

    text = json.dumps(payload, indent=2).encode("utf-8")
    atomic_write(path, lambda fh: fh.write(text), replaces="json")  # never over a checkpoint, a link or a device


@dataclass
class OnnxComparison:
    """ORT vs PyTorch parity of each fused export (by the file's label) and the batch-1 latency (s) of every
    variant, per round."""

    parity: dict[str, list[ParityResult]]
    per_round: dict[str, list[float]]

    @property
    def ok(self) -> bool:
        return all(r.ok for results in self.parity.values() for r in results)

    def render(self) -> str:
        """The printable markdown report: median ms, and ratios taken within each round (``ratios_to``)."""
        ratios = ratios_to(self.per_round)
        lines = ["ONNX export (dynamic batch, fused) -- ORT vs PyTorch parity (max abs err / output scale):"]
        for label, results in self.parity.items():
            lines.append(f"  {label}:")
            lines += [f"    batch {r.batch}: {r.relative_err:.2e} {'ok' if r.ok else 'FAIL'}" for r in results]
        lines.append("")
        lines.append("| variant | ms (ORT CPU, batch 1, 1 thread) | ratio to static |")
        lines.append("|---|---|---|")
        for k in VARIANTS:
            lines.append(f"| {k} | {statistics.median(self.per_round[k]) * 1e3:.2f} | {ratios[k]:.2f} |")
        lines.append(f"fused is {ratios['naive'] / ratios['fused']:.2f}x (portable) / {ratios['naive'] / ratios['fused_ortcpu']:.2f}x (ort-cpu) faster than the naive export")
        return "\n".join(lines)


def compare_onnx(model: nn.Module, static_model: nn.Module, example_input: torch.Tensor, *, repeats: int = 10, rounds: int = 3) -> OnnxComparison:
    """Export ``model`` (dynamic batch, fused), check ORT vs PyTorch at batch 1, 3 and 8 (ort-cpu: 1 and 3), and
    time the static / naive / fused variants (ORT CPU, batch 1, one thread)."""
    protos = build_variants(static_model, model, example_input)
    parity = {
        "fused, target portable (standard ONNX ops)":
            check_parity(model, protos["fused"], example_input, batches=(1, 3, 8), raise_on_fail=False),
        "fused, target ort-cpu (onnxruntime's NCHWc CPU ops)":
            check_parity(model, protos["fused_ortcpu"], example_input, batches=(1, 3), raise_on_fail=False),
    }
    return OnnxComparison(parity, time_variant_rounds(protos, ("cpu-b1-t1", "cpu", 1, 1), repeats=repeats, rounds=rounds))


def onnx_demo(model: nn.Module, static_model: nn.Module, example_input: torch.Tensor, *, repeats: int = 10, rounds: int = 3) -> str:
    """``compare_onnx(...)`` rendered as a printable markdown report."""
    return compare_onnx(model, static_model, example_input, repeats=repeats, rounds=rounds).render()
