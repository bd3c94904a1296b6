"""Which onnxruntime execution providers a session gets: CUDA where onnxruntime ships it and torch sees a GPU."""

from __future__ import annotations

import onnxruntime as ort

from ..errors import UnavailableFeatureError


def cuda_available() -> bool:
    """True when onnxruntime ships the CUDA EP and torch sees a GPU (or torch is absent)."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return True


def default_providers(device: str = "auto") -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if not cuda_available():
            raise UnavailableFeatureError("device='cuda' requested but onnxruntime's CUDAExecutionProvider / a GPU is not available")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return (["CUDAExecutionProvider"] if cuda_available() else []) + ["CPUExecutionProvider"]
