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


class RegexTimeoutError(ODConvError, ValueError):
    """A name regex (include/exclude selector) took too long to match: catastrophic backtracking."""


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


class NotRegularFileError(ODConvError, OSError):
    """A path to read or write is a symbolic link, device, FIFO or socket, not a regular file; nothing was done."""


class InputOverwriteError(ODConvError, ValueError):
    """The output path is one of the command's input files; it was not overwritten."""


class ForeignFileError(ODConvError, FileExistsError):
    """The target exists and is not a file of the kind being written (or not one the sweep wrote); not replaced."""



class AttentionStatsFileError(ODConvError, ValueError):
    """A file or text given as attention statistics is not what ``AttentionStats.write`` writes."""


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


# ---- experiments: models, sweeps ---------------------------------------------------------------------------
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


class SweepSettingsError(ODConvError, ValueError):
    """A sweep setting is out of range or of the wrong type; refused before anything runs or is written."""


class TrainingDivergedError(ODConvError, FloatingPointError):
    """Training produced a non-finite loss or non-finite weights (lower the learning rate)."""


class CliError(ODConvError):
    """A command-line usage error to print as 'odconv-surgery: error: ...' with exit code 1."""


# ---- arguments -------------------------------------------------------------------------------------------------
class InvalidArgumentError(ODConvError):
    """An argument the library was given is wrong; catch this for any of the three below."""


class InvalidValueError(InvalidArgumentError, ValueError):
    """An argument has the right type but a value outside what it accepts (the message names both)."""


class InvalidTypeError(InvalidArgumentError, TypeError):
    """An argument has the wrong type (e.g. a string where a number is expected)."""


class UnknownSettingError(InvalidArgumentError, ValueError, TypeError):
    """A layer setting (keyword argument or ``overrides`` key) that does not exist; the message lists the valid ones.

    Also a ``TypeError``, as Python's own "unexpected keyword argument" is."""


class PolicyError(InvalidValueError):
    """A placement policy that does not exist, or cannot apply to this model (``last:K`` with too few blocks)."""


class BudgetError(InvalidValueError):
    """A latency budget that cannot be read or cannot be asked for (``"1.2x"``, ``"3.5ms"``); the message shows the
    accepted forms."""


class LayerNotFoundError(ODConvError, KeyError):
    """No layer has the name asked for."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


class DatasetError(ODConvError, ValueError):
    """A dataset that cannot be used as given (empty, too small to split, mismatched class folders)."""


class DataNotFoundError(ODConvError, FileNotFoundError):
    """The data directory given does not exist or holds no images."""


class UnavailableFeatureError(ODConvError, RuntimeError):
    """Something the call needs is not available here (onnxruntime's CUDA provider, torch.distributed)."""


class RecipeMismatchError(ODConvError, KeyError):
    """A recipe names layers the model does not have, or that are not convolutions: a different architecture."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


PUBLIC_ERRORS = [name for name, value in dict(globals()).items() if isinstance(value, type) and issubclass(value, ODConvError)]
__all__ = PUBLIC_ERRORS
