"""Convolution geometry shared by the layer, the exporter and the ONNX lowerings (plain integers, no torch)."""

from __future__ import annotations

from typing import Sequence


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int) -> int:
    """Output length of a convolution along one axis (the formula of torch and ONNX)."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1



def same_padding(kernel_size: Sequence[int], dilation: Sequence[int]) -> list[tuple[int, int]]:
    """Per axis, the (begin, end) zero padding of ``padding="same"`` at stride 1 (torch puts the odd pixel at the end)."""
    pads = []
    for d, k in zip(dilation, kernel_size):
        total = d * (k - 1)
        pads.append((total // 2, total - total // 2))
    return pads
