"""Convolution geometry shared by the layer, the exporter and the ONNX lowerings (plain integers, no torch)."""

from __future__ import annotations


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int) -> int:
    """Output length of a convolution along one axis (the formula of torch and ONNX)."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1

