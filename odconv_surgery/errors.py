"""Every error the library raises on purpose, in one place.

Each class derives from ``ODConvError`` (catch that to handle any of them) and from the built-in exception it
has always been (``ValueError``, ``RuntimeError``, ...), so code written against the built-ins keeps working.
Anything else that escapes the library is a bug, not a user mistake. Messages name the argument and the fix.
"""

from __future__ import annotations


class ODConvError(Exception):
    """Base of every error odconv-surgery raises deliberately: the message says what to change."""


# ---- conversion and layers -------------------------------------------------------------------------------------
class AlreadyConvertedError(ODConvError, ValueError):
    """apply_odconv on a model whose every convertible convolution is already an ODConv2d."""


class EmptySelectionError(ODConvError, ValueError):
    """A selector matched no convolution."""


class UntraceableModelError(ODConvError, RuntimeError):
    """torch.fx could not trace the model and no example inputs were given for the hook fallback."""


class KernelBankError(ODConvError, RuntimeError):
    """The kernel bank or bias no longer has the layer's shape: code written for ``nn.Conv2d`` rewrote it."""


class KernelBankMemoryError(ODConvError, MemoryError):
    """The kernel bank(s) would need more memory than the device has available; nothing was allocated."""


class BatchOneBatchNormError(ODConvError, ValueError):
    """The attention BatchNorm would train on a single sample."""


# ---- checkpoints and files -------------------------------------------------------------------------------------
class CheckpointMismatchError(ODConvError, ValueError):
    """The checkpoint's weights do not fit the model rebuilt from its recipe."""


class ReadOnlyTargetError(ODConvError, PermissionError):
    """The target file is read-only; it was not replaced."""


# ---- ONNX export and runtime -----------------------------------------------------------------------------------
class UnsupportedOpsetError(ODConvError, ValueError):
    """The requested ONNX opset is outside what the exporter and the passes support."""


class OnnxModelError(ODConvError, ValueError):
    """The file or object given is not a readable ONNX model."""


class ModelNumericsError(ODConvError, ValueError):
    """The model itself holds or produces NaN/inf: not something the export or a pass did."""


class PassNumericsError(ODConvError, RuntimeError):
    """A pass changed the model's numerics beyond tolerance."""

    def __init__(self, pass_name: str, max_err: float, tol: float, detail: str = "") -> None:
        self.pass_name = pass_name
        self.max_err = max_err
        self.tol = tol
        self.detail = detail
        super().__init__(
            f"ONNX pass {pass_name!r} changed the model output by {max_err:.3g} (relative to output scale), "
            f"above the tolerance {tol:.3g}{' (' + detail + ')' if detail else ''}. If you trust the model's "
            "numerics, pass a larger tolerance= or check=False to skip the check, and report the pass if it is wrong."
        )


class ParityError(ODConvError, AssertionError):
    """An exported file's outputs differ from the PyTorch model's beyond the tolerance (``check_parity``)."""


class StaticBatchGraphError(ODConvError, ValueError):
    """The model's own exported graph runs at some batch sizes only: its code fixes the batch (a literal reshape)."""


class UnsupportedDtypeError(ODConvError, TypeError):
    """The model's parameters are in a floating dtype the export does not write (half precision, float64)."""


# ---- experiments: models, sweeps, benchmarks -------------------------------------------------------------------
class ModelSpecError(ODConvError, ValueError):
    """A model spec that cannot be parsed or built; the message says how to fix it."""


class ImportNotAllowedError(ModelSpecError):
    """A spec names an arbitrary ``module:callable`` and the caller did not opt in (or the target is refused)."""


class PretrainedCheckpointError(ODConvError, ValueError):
    """The user's static checkpoint cannot be loaded into the sweep's model."""


class DirectoryLocked(ODConvError, RuntimeError):
    """Another process holds the directory's lock."""


class SweepSettingsMismatch(ODConvError, RuntimeError):
    """The results file was written by a sweep with different settings; resuming would mix results."""


class SweepOutputError(ODConvError, ValueError):
    """The output directory cannot hold the sweep's results (a file where a directory should be, ...)."""


class BusyMachineError(ODConvError, RuntimeError):
    """The machine is too busy for timings to mean anything."""


class CliError(ODConvError):
    """A command-line usage error to print as 'odconv-surgery: error: ...' with exit code 1."""


PUBLIC_ERRORS = [name for name, value in dict(globals()).items() if isinstance(value, type) and issubclass(value, ODConvError)]
__all__ = PUBLIC_ERRORS
