"""Timing helpers shared by the eager benchmarks: medians of repeated calls, CUDA-event timed on a GPU.

An inference call is a no-grad forward in eval mode; a training step is zero_grad, forward, cross-entropy,
backward and an SGD (momentum) step, as a training loop runs it. ``measure`` times either, optionally
``torch.compile``d (the compiling first call timed apart), with the GPU's peak memory.
"""

from __future__ import annotations

import gc
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds: CUDA events around each call on a GPU (the call's queued work
    included), ``time.perf_counter`` on the CPU."""
    for _ in range(warmup):
        fn()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            start_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_s) * 1e3)
    return statistics.median(times)


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing for full precision (``dtype`` None)."""
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def inference_call(model: nn.Module, x: torch.Tensor, dtype: torch.dtype | None = None) -> Callable[[], torch.Tensor]:
    """A no-grad forward of ``x`` (``model`` must already be in eval mode), under autocast to ``dtype`` if given."""

    def call() -> torch.Tensor:
        with torch.no_grad(), autocast_context(x.device, dtype):
            return model(x)

    return call


def training_step(
    model: nn.Module, parameters: list[nn.Parameter], x: torch.Tensor, target: torch.Tensor,
    dtype: torch.dtype | None = None,
) -> Callable[[], None]:
    """One SGD step (lr 0.01, momentum 0.9) on ``(x, target)``, forward under autocast to ``dtype`` if given.

    ``model`` may be a compiled wrapper; ``parameters`` are the ones it trains (the original module's)."""
    optimizer = torch.optim.SGD(parameters, lr=0.01, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(x.device, dtype):
            loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()

    return step


@dataclass(frozen=True)
class Timing:
    """How ``measure`` times: input ``size`` px, batch per mode, medians of ``repeats`` after ``warmup`` calls,
    ``compile_backend`` (a ``torch.compile`` backend name or callable; None: eager) and the model's class count."""

    size: int
    infer_batch: int
    train_batch: int
    repeats: int
    warmup: int
    compile_backend: str | Callable | None = None
    num_classes: int = 1000


def release(device: torch.device) -> None:
    """Free what the last measurement left (its closures, the CUDA cache) and restart the peak-memory count."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def measure(
    model: nn.Module, mode: str, timing: Timing, device: torch.device, dtype: torch.dtype | None = None,
) -> tuple[float, float | None, float | None]:
    """(median ms, peak GPU GiB or None on the CPU, compile seconds or None) of ``model``'s inference call
    (``mode`` 'inference') or training step ('train') on random data."""
    release(device)
    model.train(mode == "train")
    compiled = None
    if timing.compile_backend is not None:
        torch._dynamo.reset()  # models share forward code objects: keep each compile within the recompile limit
        compiled = torch.compile(model, backend=timing.compile_backend, dynamic=False)
    runner = model if compiled is None else compiled
    if mode == "inference":
        fn = inference_call(runner, torch.randn(timing.infer_batch, 3, timing.size, timing.size, device=device), dtype)
    else:
        x = torch.randn(timing.train_batch, 3, timing.size, timing.size, device=device)
        target = torch.randint(0, timing.num_classes, (timing.train_batch,), device=device)
        fn = training_step(runner, list(model.parameters()), x, target, dtype)
    try:
        compile_s = None
        if compiled is not None:  # the first call compiles: timed apart from the warmup
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            compile_s = time.perf_counter() - start
        ms = median_ms(fn, device, timing.repeats, timing.warmup)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        return ms, peak, compile_s
    finally:
        del fn, runner, compiled
        release(device)
