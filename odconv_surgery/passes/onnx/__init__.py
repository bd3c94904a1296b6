"""ONNX pass pipeline over exported ODConv graphs (onnx-graphsurgeon).

Each pass is an ``OnnxPass`` (``base``) in its own module, whose docstring states the invariant it keeps;
``pipeline`` registers them (``REGISTRY``), names their orders (``PIPELINE`` fused, ``NAIVE_PIPELINE`` lowered
without fusing) and runs a list of them with the numeric check (ORT before vs after) after each one.
"""

from __future__ import annotations

from ...deploy.schema import OD_DOMAIN, OD_OP
from .base import OnnxPass, PassContext
from ...numerics import relative_error
from .check import check_pass, ort_run, random_batch
from .common import ModelNumericsError, OnnxModelError, PassNumericsError, load_model
from .pipeline import NAIVE_PIPELINE, PIPELINE, PIPELINE_NO_BATCH1, REGISTRY, register_pass, run_pipeline

__all__ = [
    "NAIVE_PIPELINE",
    "OD_DOMAIN",
    "OD_OP",
    "ModelNumericsError",
    "OnnxModelError",
    "OnnxPass",
    "PIPELINE",
    "PIPELINE_NO_BATCH1",
    "PassContext",
    "PassNumericsError",
    "REGISTRY",
    "check_pass",
    "load_model",
    "ort_run",
    "random_batch",
    "register_pass",
    "relative_error",
    "run_pipeline",
]
