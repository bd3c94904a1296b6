"""A model's outputs as the ONNX exporter flattens them, so eager and onnxruntime outputs compare one to one."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidTypeError


def flatten_outputs(output: Any) -> list[Any]:
    """The tensors of a model output in the order the ONNX exporter flattens them: tuples and lists in order,
    mappings (dict, HF ``ModelOutput``) by value in insertion order, dataclasses by field; ``None`` is left out."""
    import torch

    if output is None:
        return []
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        values = list(output.values())
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        values = [getattr(output, f.name) for f in dataclasses.fields(output)]
    elif isinstance(output, (tuple, list)):
        values = list(output)
    else:
        raise InvalidTypeError(
            f"cannot compare a model output of type {type(output).__name__}: return tensors, or tuples, lists, "
            "dicts or dataclasses of tensors"
        )
    return [tensor for value in values for tensor in flatten_outputs(value)]
