"""Batch-1 CPU latency of a model for the sweep: ONNX Runtime (one thread) through the project's exporter, or eager
PyTorch (one thread) when the ONNX modules are missing or the export fails; the backend is reported with the number."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def _ort_latency(model: nn.Module, example: torch.Tensor, runs: int) -> tuple[float, str]:
    """Export with the project's exporter in the fastest form for onnxruntime's CPU provider (``ort-cpu`` when its
    NCHWc ops are usable, else portable) and time it with its ORT wrapper: CPU, one thread, batch 1."""
    from ..deploy.export import export_onnx, fastest_cpu_target
    from ..deploy.runtime import OrtRunner

    target = fastest_cpu_target()
    proto = export_onnx(model, None, example, check=False, target=target)
    runner = OrtRunner(proto, device="cpu", threads=1)
    return 1000 * statistics.median(runner.time(batch=1, repeats=runs, warmup=3)), f"onnxruntime ({target})"


@torch.no_grad()
def _torch_latency(model: nn.Module, example: torch.Tensor, runs: int) -> float:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(3):
            model(example)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model(example)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 1000 * statistics.median(times)


def measure_latency(model: nn.Module, example: torch.Tensor, runs: int = 30) -> tuple[float, str]:
    """Median batch-1 CPU latency in ms and the backend that measured it ("onnxruntime (<target>)" or "torch-eager").

    ONNX Runtime (one thread) when ``odconv_surgery.deploy.export`` and onnxruntime import; eager PyTorch with one
    thread otherwise, or when export fails (the reason is appended to the backend name).
    """
    model = model.eval().cpu()
    example = example[:1].cpu()
    reason = ""
    try:
        return _ort_latency(model, example, runs)
    except ImportError as exc:
        reason = f" (onnx unavailable: {exc.name or exc})"
    except Exception as exc:  # export or runtime failure: still give a number, and say why
        reason = f" (onnx failed: {type(exc).__name__}: {str(exc)[:120]})"
    return _torch_latency(model, example, runs), "torch-eager" + reason
