"""odconv-surgery: rewrite CNNs into Omni-Dimensional Dynamic Convolution (ODConv, ICLR 2022) models."""

from . import errors
from .errors import *  # noqa: F403 - every error is public
from .attention_stats import AttentionStats, attention_statistics
from .checkpoint import CheckpointMismatchError, load, save
from .folding import FoldReport, fold_static
from .methods import METHODS, Method
from .fuse import fuse_batchnorm
from .nn import BatchOneBatchNormError, ODAttention, ODConv2d, ODLinear, TemperatureSchedule, get_temperature, param_groups, set_temperature
from .nn.odconv import KernelBankError
from .nn.options import LayerOptions
from .deploy.targets import ExportTarget
from .policies import EmptySelectionError, available_policies, register_policy
from .passes.fx import UntraceableModelError
from .recipe import Recipe, get_recipe
from .report import ConversionReport
from .surgery import ConversionResult, apply_odconv, list_candidates, plan_conversion

# ONNX, sweep and accounting entry points import optional dependencies (onnx, onnxruntime, matplotlib): load lazily.
_LAZY = {
    "export_onnx": ".deploy.export",
    "OrtRunner": ".deploy.runtime",
    "check_parity": ".deploy.runtime",
    "run_pipeline": ".passes.onnx",
    "PassNumericsError": ".passes.onnx",
    "OnnxModelError": ".passes.onnx",
    "ModelNumericsError": ".passes.onnx",
    "UnsupportedOpsetError": ".deploy.export_checks",
    "onnx_demo": ".deploy.benchmark",
    "count_cost": ".accounting",
    "compare_costs": ".accounting",
    "odconv_extra_madds": ".accounting",
    "ModelCost": ".accounting",
    "build_model": ".experiments.model_spec",
    "parse_model_spec": ".experiments.model_spec",
    "load_dataset": ".experiments.data",
    "load_digits_dataset": ".experiments.data",
    "load_textures_dataset": ".experiments.data",
    "TrainConfig": ".experiments.training",
    "train_and_evaluate": ".experiments.training",
    "evaluate": ".experiments.training",
    "SweepConfig": ".experiments.sweep",
    "run_sweep": ".experiments.sweep",
    "convert_attention_sync_batchnorm": ".experiments.distributed",
    "place_under_budget": ".placement",
    "PlacementResult": ".placement",
    "parse_budget": ".placement",
    "plot_attention_stats": ".experiments.attention_plot",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'odconv_surgery' has no attribute {name!r}")


__all__ = [
    *_LAZY,
    *errors.PUBLIC_ERRORS,
    "BatchOneBatchNormError",
    "CheckpointMismatchError",
    "ConversionReport",
    "ConversionResult",
    "EmptySelectionError",
    "ExportTarget",
    "KernelBankError",
    "LayerOptions",
    "METHODS",
    "Method",
    "ODAttention",
    "ODConv2d",
    "ODLinear",
    "Recipe",
    "TemperatureSchedule",
    "UntraceableModelError",
    "AttentionStats",
    "apply_odconv",
    "attention_statistics",
    "available_policies",
    "fold_static",
    "FoldReport",
    "fuse_batchnorm",
    "get_recipe",
    "get_temperature",
    "list_candidates",
    "load",
    "plan_conversion",
    "register_policy",
    "save",
    "param_groups",
    "set_temperature",
]
