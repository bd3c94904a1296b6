"""The budget's check: the placed model exported and its file timed beside the static model's file, in the same run.

Per-layer estimates add up to less, or more, than the whole file (fusions a form breaks, cache effects), so the
placement is judged on the exported file. Both files are timed by ``deploy.tuning.time_files``: onnxruntime on the
CPU, batch 1, the deployment's threads, interleaved rounds whose order rotates, the fastest round kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from torch import Tensor, nn


@dataclass(frozen=True)
class Measurement:
    """The static model's and the placed model's latency (ms, batch 1) from one run."""

    static_ms: float
    placed_ms: float

    @property
    def ratio(self) -> float:
        return self.placed_ms / self.static_ms


#: ``measure(static_model, placed_model) -> Measurement``; ``ExportedFileTimer`` is the real one.
Measure = Callable[[nn.Module, nn.Module], Measurement]


class ExportedFileTimer:
    """Exports both models (``export_onnx`` with the deployment's target, tuning and threads; the per-pass numeric
    check is left to the final export) and times the two files together. The static file is exported once."""

    def __init__(self, example_input: Tensor | Sequence[Tensor], *, threads: int = 1, target: str = "auto",
                 tune: bool | None = None, rounds: int = 5, round_s: float = 0.05) -> None:
        from ..deploy.export import resolve_target

        self.example_input = example_input
        resolved = resolve_target(target)
        self.threads, self.target, self.tune = threads, str(getattr(resolved, "value", resolved)), tune
        self.rounds, self.round_s = rounds, round_s
        self._static: tuple[nn.Module, object] | None = None

    def export(self, model: nn.Module):
        from ..deploy.export import export_onnx

        return export_onnx(model, None, self.example_input, check=False, target=self.target, tune=self.tune,
                           threads=self.threads)

    def __call__(self, static: nn.Module, placed: nn.Module) -> Measurement:
        from ..deploy.export import as_example_inputs
        from ..deploy.tuning import time_files

        if self._static is None or self._static[0] is not static:
            self._static = (static, self.export(static))
        static_ms, placed_ms = time_files([self._static[1], self.export(placed)], as_example_inputs(self.example_input),
                                          self.threads, self.rounds, self.round_s)
        return Measurement(static_ms, placed_ms)


__all__ = ["ExportedFileTimer", "Measurement"]
