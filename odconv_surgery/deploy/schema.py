"""The contract between the exporter, the ONNX passes and the runtime: marker op, domain, roles, I/O names, metadata.

The exporter (``deploy.export``) emits every shared-attention ``ODConv2d`` as ONE node ``OD_DOMAIN::OD_OP`` whose
first input is the layer input x and whose other inputs are the layer's parameters, each tagged by the ``roles``
string attribute; the attention heads appear in ``HEAD_ORDER``. The passes (``passes.onnx``) read and rewrite those
nodes, and both sides record what they did in the model's ``metadata_props``. This module imports nothing heavy,
so both sides depend on it and not on each other.
"""

from __future__ import annotations

OD_DOMAIN = "odconv.surgery"
OD_OP = "ODConv2d"
OD_DOMAIN_VERSION = 1

HEAD_ORDER = ("channel", "filter", "spatial", "kernel")

#: The marker's attention attributes and their values where a marker lacks them (files marked before they existed,
#: when every layer had sigmoid channel/filter/spatial heads and a softmax kernel head on a 1x1-pooled trunk).
#: ``activation`` is the channel/filter/spatial heads' ("sigmoid" or "softmax" over each head's own values),
#: ``kernel_activation`` the kernel head's ("softmax" over the n kernels or "sigmoid" per kernel), ``pool_size`` k
#: the size the attention pools its input to (adaptively, as ``nn.AdaptiveAvgPool2d(k)``). A layer without a trunk
#: has no ``fc_weight`` role (its heads read the pooled input); one without heads has no ``heads`` attribute.
MARKER_ATTENTION_DEFAULTS = {"activation": "sigmoid", "kernel_activation": "softmax", "pool_size": 1}

#: onnxruntime's CPU-only blocked-layout contrib ops (``target="ort-cpu"``).
NCHWC_DOMAIN = "com.microsoft.nchwc"

#: ``metadata_props`` keys shared between writer and reader: the marked layer names (JSON list; exporter ->
#: ``find_odconv``), and the passes applied and the target (``run_pipeline`` -> whoever loads the file).
META_LAYERS = "odconv.layers"
META_PASSES = "odconv.passes"
META_TARGET = "odconv.target"
#: The NCHWc block an ort-cpu file was lowered for (``run_pipeline`` -> ``OrtRunner``, which refuses a mismatch).
META_NCHWC_BLOCK = "odconv.nchwc_block"
#: Each layer's batch-1 NCHWc form and where the choice came from (JSON ``{layer: "form (measured|cache|cost
#: model)"}``; ``lowering/plan.py`` -> whoever reads the file).
META_FORMS = "odconv.forms"
#: How many layers' forms depart from the cost model's (``lowering/plan.py``): 0 means the file is the one
#: ``tune=False`` would make.
META_FORMS_DEPART = "odconv.forms_departing"
#: With ``tune``: whether the measured per-layer forms or the cost model's were kept, and both files' times
#: (``deploy/tuning.py``).
META_TUNING = "odconv.tuning"
#: How an ort-cpu file runs a batch > 1: "per-sample graph" (a Scan of the batch-1 graph) or "per-layer".
META_BATCH_FORM = "odconv.batch_form"
#: The batch > 1 forms (``PassContext.batch_form``; ``lower_by_batch_regime``).
BATCH_FORMS = ("per-sample graph", "per-layer")
#: With ``tune``: which batch > 1 form was kept and both files' times (``deploy/tuning.py``).
META_BATCH_TUNING = "odconv.batch_tuning"
#: Marked layers that ran on another batch size than the model's input when exported (window attention folds the
#: windows into the batch): JSON list, exporter -> ``lower_by_batch_regime``, which then keeps no batch-1 branch.
META_OTHER_BATCH = "odconv.other_batch_layers"

DEFAULT_OPSET = 18
#: The opsets export supports: the passes emit opset-18 operator forms (ReduceMean with axes as an input), and 20
#: is the newest opset the TorchScript exporter writes.
MIN_OPSET, MAX_OPSET = 18, 20
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def set_metadata(model, items: dict[str, str]) -> None:
    """Set (add or overwrite) ``items`` in ``model.metadata_props`` of an ``onnx.ModelProto``."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in items.items():
        if key in existing:
            existing[key].value = value
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value


def metadata(model) -> dict[str, str]:
    """``metadata_props`` of an ``onnx.ModelProto`` as a dict."""
    return {p.key: p.value for p in model.metadata_props}
