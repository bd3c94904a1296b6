"""onnxruntime wrapper (``OrtRunner``) and the ORT-vs-PyTorch parity helper (``check_parity``).

``OrtRunner`` picks the CUDA execution provider when onnxruntime has it and a GPU is visible (else CPU), sets
thread counts and the graph optimisation level, warms up, and is callable on numpy arrays or torch tensors.
``OrtRunner.run_iobinding`` keeps inputs/outputs on the device (the GPU path used for batch 200 benchmarks).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import InvalidTypeError, InvalidValueError, UnavailableFeatureError
from ..numerics import DEFAULT_TOLERANCE, relative_error
from ..passes.onnx.common import OnnxModelError, detect_nchwc_block, has_odconv_nodes, load_model
from .schema import META_NCHWC_BLOCK, metadata
from ..errors import ParityError
from .outputs import flatten_outputs
from .providers import cuda_available, default_providers

LOGGER = logging.getLogger("odconv_surgery.runtime")

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x, dtype=np.float32) if x.dtype != np.float32 else np.ascontiguousarray(x)
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().to("cpu", torch.float32).contiguous().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x, dtype=np.float32)


#: numpy dtypes of onnxruntime's non-float input types (``OrtRunner.feed``).
_ORT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
              "tensor(double)": np.float64, "tensor(float16)": np.float16}


def _as_array(x: Any) -> np.ndarray:
    """An input as onnxruntime takes it: floating values as float32 (``_to_numpy``), integer and bool kept."""
    if isinstance(x, np.ndarray) and not np.issubdtype(x.dtype, np.floating):
        return np.ascontiguousarray(x)
    try:
        import torch

        if isinstance(x, torch.Tensor) and not x.is_floating_point():
            return x.detach().cpu().contiguous().numpy()
    except ImportError:  # pragma: no cover
        pass
    return _to_numpy(x)


def check_nchwc_block(proto: onnx.ModelProto, providers: Sequence[str]) -> None:
    """Refuse an ``ort-cpu`` file lowered for another NCHWc block than this machine's onnxruntime uses (its kernels
    would be read in the wrong layout); warn when it is run with the CUDA EP (its batch-1 branch runs on the CPU)."""
    blk = metadata(proto).get(META_NCHWC_BLOCK)
    if blk is None:
        return
    here = detect_nchwc_block()
    if here != int(blk):
        raise OnnxModelError(
            f"this file was exported with target='ort-cpu' for onnxruntime's NCHWc block {blk}, but onnxruntime "
            f"here {'has no usable NCHWc ops' if here is None else f'uses block {here}'} (the block depends on the "
            "CPU: 8 with AVX2, 16 with AVX-512), so its batch-1 outputs would be wrong (the file's guard makes them "
            "NaN). Re-export on this machine (export_onnx's default target 'auto' picks the right form), or export "
            "with target='portable' for a file that runs anywhere."
        )
    if providers and providers[0] == "CUDAExecutionProvider":
        LOGGER.warning(
            "this file was exported with target='ort-cpu': with the CUDA EP its batch-1 branch runs on the CPU; "
            "export with target='portable' for GPU inference"
        )


class OrtRunner:
    """A small wrapper over ``onnxruntime.InferenceSession``.

    ``model``: ModelProto, path or bytes (a corrupt / non-ONNX file raises ``OnnxModelError``).
    ``threads``: intra-op threads (0 = onnxruntime default, all cores). ``optimization``: 'disable', 'basic',
    'extended' or 'all'. ``device``: 'auto' (CUDA EP when available), 'cpu' or 'cuda'. ``warmup`` runs.
    """

    def __init__(
        self,
        model: "onnx.ModelProto | str | os.PathLike | bytes",
        *,
        device: str = "auto",
        threads: int = 0,
        optimization: str = "all",
        warmup: int = 0,
        warmup_batch: int = 1,
        profile_prefix: str | None = None,
    ) -> None:
        proto = load_model(model)
        if has_odconv_nodes(proto):
            raise OnnxModelError(
                "this ONNX model still holds odconv.surgery::ODConv2d marker nodes; lower it first "
                "(odconv_surgery.passes.onnx.run_pipeline) or export with export_onnx"
            )
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise InvalidValueError(f"threads must be an int >= 0 (0: onnxruntime's default, all cores), got {threads!r}")
        self.providers = default_providers(device)
        check_nchwc_block(proto, self.providers)
        if optimization not in _OPT_LEVELS:
            raise InvalidValueError(f"optimization must be one of {sorted(_OPT_LEVELS)}, got {optimization!r}")
        opts = ort.SessionOptions()
        opts.log_severity_level = 4  # fatal only: a failed run raises, and its error says what happened
        opts.graph_optimization_level = _OPT_LEVELS[optimization]
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if profile_prefix:
            opts.enable_profiling = True
            opts.profile_file_prefix = profile_prefix
        try:
            self.session = ort.InferenceSession(proto.SerializeToString(), opts, providers=self.providers)
        except Exception as exc:  # noqa: BLE001
            raise OnnxModelError(f"onnxruntime could not load the model: {exc}") from exc
        self.threads = threads
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_name = self.input_names[0]
        self.output_names = [o.name for o in self.session.get_outputs()]
        shape = self.session.get_inputs()[0].shape
        self.input_shape = [d if isinstance(d, int) else None for d in shape]
        if warmup:
            self.warmup(warmup, warmup_batch)

    @property
    def device(self) -> str:
        return "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def example(self, batch: int = 1, seed: int = 0) -> np.ndarray:
        dims = [batch] + [d if d is not None else 1 for d in self.input_shape[1:]]
        return np.random.default_rng(seed).standard_normal(dims).astype(np.float32)

    def feed(self, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
        """A random input for every graph input at ``batch`` (unknown sizes 1): floats random normal, integers
        and bools zeros."""
        rng = np.random.default_rng(seed)
        feed = {}
        for info in self.session.get_inputs():
            dims = [batch] + [d if isinstance(d, int) else 1 for d in info.shape[1:]]
            if info.type == "tensor(float)":
                feed[info.name] = rng.standard_normal(dims).astype(np.float32)
            else:
                feed[info.name] = np.zeros(dims, _ORT_TYPES.get(info.type, np.float32))
        return feed

    def warmup(self, runs: int = 3, batch: int = 1) -> None:
        feed = self.feed(batch)
        for _ in range(runs):
            self.session.run(None, feed)

    def __call__(self, x: Any, *more: Any) -> np.ndarray:
        """The first output (the only one for most models); ``run_all`` returns every output."""
        return self.run_all(x, *more)[0]

    def run_all(self, x: Any, *more: Any) -> list[np.ndarray]:
        """Every output of the model, in the graph's order (the order ``flatten_outputs`` gives eager outputs).
        A model with several inputs takes one argument per input, in the graph's order."""
        inputs = (x, *more)
        if len(inputs) != len(self.input_names):
            raise ValueError(f"the model takes {len(self.input_names)} input(s) {self.input_names}, got {len(inputs)}")
        return self.session.run(None, {name: _as_array(v) for name, v in zip(self.input_names, inputs)})

    def run_iobinding(self, x: Any, repeats: int = 1) -> np.ndarray:
        """Run with IO binding: the input is copied to the device once, the output stays there until returned."""
        binding = self.session.io_binding()
        arr = _to_numpy(x)
        device = self.device
        value = ort.OrtValue.ortvalue_from_numpy(arr, device, 0)
        binding.bind_ortvalue_input(self.input_name, value)
        binding.bind_output(self.output_names[0], device)
        for _ in range(repeats):
            self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def time(self, batch: int = 1, repeats: int = 20, warmup: int = 3, iobinding: bool = False) -> list[float]:
        """Latencies in seconds of ``repeats`` runs on a random batch (after ``warmup`` runs)."""
        x = self.example(batch)
        if iobinding:
            binding = self.session.io_binding()
            value = ort.OrtValue.ortvalue_from_numpy(x, self.device, 0)
            binding.bind_ortvalue_input(self.input_name, value)
            binding.bind_output(self.output_names[0], self.device)
            call = lambda: self.session.run_with_iobinding(binding)  # noqa: E731
        else:
            feed = {self.input_name: x} if len(self.input_names) == 1 else self.feed(batch)
            call = lambda: self.session.run(None, feed)  # noqa: E731
        for _ in range(warmup):
            call()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return times

    def end_profiling(self) -> str:
        return self.session.end_profiling()


@dataclass
class ParityResult:
    """One batch size: the worst relative error over every output (``output`` is its index); ``ok`` when it is
    within ``tolerance``."""

    batch: int
    max_abs_err: float
    output_scale: float
    relative_err: float
    output: int = 0
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def ok(self) -> bool:
        return self.relative_err <= self.tolerance


def check_parity(
    model: Any,
    onnx_model: "onnx.ModelProto | str | os.PathLike | bytes | OrtRunner",
    example_input: Any,
    *,
    batches: Sequence[int] = (1, 3, 8),
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
    raise_on_fail: bool = True,
) -> list[ParityResult]:
    """ORT outputs vs PyTorch eager (eval mode, temperature 1) on random batches shaped like ``example_input``
    (a tensor, or a tuple of forward's tensor arguments for a model with several inputs).

    Every output is compared (tuples, dicts, HF ``ModelOutput`` and dataclasses are flattened as the exporter
    does, see ``flatten_outputs``). The error of one output is max |ort - torch| / max |torch| (relative to its
    scale); each batch reports its worst output. The bound is the export check's (``own_error.py``):
    ``tolerance`` or a multiple of the model's own error (float32 vs float64, and onnxruntime's own error on a
    plain export of the model), measured only when a batch exceeds ``tolerance``. Raises ``ParityError`` (an
    ``AssertionError``) when above it (unless ``raise_on_fail=False``), or when the file does not run at a batch.
    """
    import torch

    from ..nn.temperature import temperature_at

    batches = tuple(batches)
    if not batches or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in batches):
        raise InvalidValueError(f"batches must be a non-empty sequence of batch sizes >= 0, got {batches!r}")
    if not any(batches):
        raise InvalidValueError(f"batches {batches!r} compare nothing (a batch of 0 has no values): add a batch >= 1")
    runner = onnx_model if isinstance(onnx_model, OrtRunner) else OrtRunner(onnx_model, device="cpu")
    examples = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    results, inputs = [], []
    try:
        with temperature_at(model, 1.0):
            for batch in batches:
                xs = [_random_like(x, batch, gen) for x in examples]
                with torch.no_grad():
                    refs = [t.detach().float().cpu().numpy() for t in flatten_outputs(model(*xs))]
                outs = _run_at(runner, xs, batch)
                if len(refs) != len(outs):
                    raise ParityError(
                        f"the model returns {len(refs)} tensor(s) but the ONNX graph has {len(outs)} output(s) "
                        f"({runner.output_names}); export it again from this model"
                    )
                results.append([_compare(batch, i, r, o, tolerance) for i, (r, o) in enumerate(zip(refs, outs))])
                inputs.append(xs)
    finally:
        model.train(was_training)
    note, unstable = "", False
    if any(not r.ok for rows in results for r in rows):
        bound, note, unstable = _calibrated_bound(model, examples, inputs, tolerance)
        for rows in results:
            for r in rows:
                r.tolerance = bound
    worst = [max(rows, key=lambda r: r.relative_err) for rows in results]
    bad = [r for r in worst if not r.ok]
    if note and not bad and unstable:
        warnings.warn(f"check_parity passed under a bound of {worst[0].tolerance:.3g} only: {note}", stacklevel=2)
    if bad and raise_on_fail:
        raise ParityError(
            "ORT vs PyTorch parity failed: "
            + ", ".join(f"batch {r.batch}: {r.relative_err:.3g} (output {r.output})" for r in bad)
            + f" ({note})"
        )
    return worst


def _random_like(example: Any, batch: int, gen: Any) -> Any:
    """A random input at ``batch`` shaped like ``example`` past dimension 0: floating values random normal,
    others (token ids, masks) the example's first sample repeated."""
    import torch

    if example.is_floating_point():
        return torch.randn((batch, *example.shape[1:]), generator=gen).to(example.dtype)
    return example[:1].cpu().repeat(batch, *([1] * (example.dim() - 1)))


def _run_at(runner: OrtRunner, xs: Sequence[Any], batch: int) -> list[np.ndarray]:
    """The file's outputs at ``batch``; ``ParityError`` with the likely cause when it does not run."""
    try:
        return runner.run_all(*xs)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        raise ParityError(
            f"the ONNX file does not run at batch {batch}: {str(exc).splitlines()[0]}. If the model's own code fixes "
            "the batch size (a reshape with a literal batch), export it with dynamic_batch=False and check it at "
            "that batch only; export_onnx's check (check=True) says which batches the model's own graph runs at"
        ) from exc


def _calibrated_bound(
    model: Any, examples: Sequence[Any], inputs: list[list[Any]], tolerance: float
) -> tuple[float, str, bool]:
    """The export check's bound for this model on the parity batches (``own_error.OwnError``), its note, and
    whether the model is numerically unstable in float32 (then no bound can tell a wrong file from it)."""
    from .export import plain_export
    from .own_error import UNSTABLE_ERROR, OwnError, with_runtime, worst_fp32_error

    feeds = [[x.detach().cpu().numpy() for x in xs] for xs in inputs if xs and xs[0].shape[0]]
    if not feeds:
        return tolerance, f"tolerance {tolerance:g}", False
    device = next((p.device for p in model.parameters()), "cpu")
    own = with_runtime(OwnError(fp32=worst_fp32_error(model, feeds, device)), model, list(examples), feeds, plain_export)
    return own.bound(tolerance), own.note(tolerance), (own.fp32 or 0.0) > UNSTABLE_ERROR


def _compare(batch: int, index: int, reference: np.ndarray, output: np.ndarray, tolerance: float) -> ParityResult:
    relative = relative_error(reference, output)
    if reference.shape != output.shape or reference.size == 0:  # inf (shapes differ) or 0 (empty)
        return ParityResult(batch, relative, 0.0, relative, index, tolerance)
    err = float(np.max(np.abs(reference - output)))
    return ParityResult(batch, err, float(np.max(np.abs(reference))), relative, index, tolerance)
