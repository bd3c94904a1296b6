"""odconv-surgery: rewrite CNNs into Omni-Dimensional Dynamic Convolution (ODConv, ICLR 2022) models."""

from .attention import BatchOneBatchNormError, ODAttention
from .checkpoint import CheckpointMismatchError, load, save
from .odconv import ODConv2d
from .policies import EmptySelectionError, available_policies, register_policy
from .passes.fx import UntraceableModelError
from .recipe import Recipe, get_recipe
from .report import ConversionReport
from .surgery import ConversionResult, apply_odconv, list_candidates, plan_conversion
from .temperature import TemperatureSchedule, get_temperature, set_temperature

# ONNX, sweep and accounting entry points import optional dependencies (onnx, onnxruntime, matplotlib): load lazily.
_LAZY = {
    "export_onnx": ".export",
    "OrtRunner": ".runtime",
    "check_parity": ".runtime",
    "run_pipeline": ".passes.onnx",
    "PassNumericsError": ".passes.onnx",
    "OnnxModelError": ".passes.onnx",
    "onnx_demo": ".onnx_benchmark",
    "count_cost": ".accounting",
    "compare_costs": ".accounting",
    "odconv_extra_madds": ".accounting",
    "ModelCost": ".accounting",
    "build_model": ".model_spec",
    "parse_model_spec": ".model_spec",
    "load_dataset": ".data",
    "load_digits_dataset": ".data",
    "TrainConfig": ".training",
    "train_and_evaluate": ".training",
    "evaluate": ".training",
    "SweepConfig": ".sweep",
    "run_sweep": ".sweep",
    "convert_attention_sync_batchnorm": ".distributed",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'odconv_surgery' has no attribute {name!r}")


__all__ = [
    *_LAZY,
    "BatchOneBatchNormError",
    "CheckpointMismatchError",
    "ConversionReport",
    "ConversionResult",
    "EmptySelectionError",
    "ODAttention",
    "ODConv2d",
    "Recipe",
    "TemperatureSchedule",
    "UntraceableModelError",
    "apply_odconv",
    "available_policies",
    "get_recipe",
    "get_temperature",
    "list_candidates",
    "load",
    "plan_conversion",
    "register_policy",
    "save",
    "set_temperature",
]
