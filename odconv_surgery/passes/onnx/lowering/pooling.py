"""The attention's input pooling, ``nn.AdaptiveAvgPool2d(k)``, as ONNX ops, and the layout of the weights that read it.

ONNX has no adaptive pool, but the marker carries the input's H, W (``input_hw``), so the bins are constants:
``GlobalAveragePool`` for k = 1, ``AveragePool`` (kernel = stride = H/k x W/k) when H and W divide by k, else two
constant averaging matrices, one over the columns and one over the rows (the adaptive pool is separable: each bin is
a rectangle, its mean the mean over its rows of the means over its columns). The NCHWc forms pool the blocked input
the same ways (nchwc ``GlobalAveragePool`` / ``AveragePool``, or the two MatMuls on its blocked memory), so their
pooled features come in the blocked order (C/B, k, k, B): ``blocked_columns`` lays a weight that reads them out in
that order, so no reorder is needed.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ....deploy.schema import NCHWC_DOMAIN
from .builder import Builder


def bin_matrix(size: int, k: int) -> np.ndarray:
    """(k, size): row i averages the positions floor(i * size / k) .. ceil((i + 1) * size / k) - 1, the bins of
    PyTorch's adaptive average pool (they overlap when ``size`` is not a multiple of k, and repeat when ``size`` < k)."""
    matrix = np.zeros((k, size), np.float32)
    for i in range(k):
        start, end = (i * size) // k, -(-((i + 1) * size) // k)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _divides(hw: tuple[int, int], k: int) -> bool:
    return hw[0] % k == 0 and hw[1] % k == 0


def _pool_attrs(hw: tuple[int, int], k: int) -> dict:
    window = [hw[0] // k, hw[1] // k]
    return {"kernel_shape": window, "strides": window}


def pool_nchw(b: Builder, x, hw: tuple[int, int], k: int) -> gs.Variable:
    """``x`` (B, C, H, W) adaptively average-pooled to (B, C, k, k)."""
    if k == 1:
        return b.op("GlobalAveragePool", [x])
    if _divides(hw, k):
        return b.op("AveragePool", [x], _pool_attrs(hw, k))
    rows = b.op("MatMul", [x, b.const("pool_cols", bin_matrix(hw[1], k).T)])  # (B, C, H, k)
    return b.op("MatMul", [b.const("pool_rows", bin_matrix(hw[0], k)), rows])  # (B, C, k, k)


def pool_blocked(b: Builder, xb, hw: tuple[int, int], k: int, channels: int, blk: int) -> gs.Variable:
    """The pooled features (1, channels * k * k) of the NCHWc input ``xb`` (batch 1, ``channels`` padded to the block
    ``blk``), in the blocked order (c // blk, i, j, c % blk)."""
    if k == 1:
        pooled = b.op("GlobalAveragePool", [xb], domain=NCHWC_DOMAIN)
    elif _divides(hw, k):
        pooled = b.op("AveragePool", [xb], _pool_attrs(hw, k), domain=NCHWC_DOMAIN)
    else:  # the blocked memory is (C/B, H, W, B): average W per (block, row), then H per block
        h, w = hw
        cols = b.op("MatMul", [b.const("pool_cols", bin_matrix(w, k)), b.reshape(xb, [channels // blk * h, w, blk])])
        pooled = b.op("MatMul", [b.const("pool_rows", bin_matrix(h, k)), b.reshape(cols, [channels // blk, h, k * blk])])
    return b.reshape(pooled, [1, channels * k * k])


def blocked_columns(weight: np.ndarray, channels: int, blk: int) -> np.ndarray:
    """A weight that reads the pooled input, (out, C, k, k), as (out, channels * k * k) in ``pool_blocked``'s order,
    its input channels zero-padded to ``channels`` (the padded channels pool to zero)."""
    out, cin, kh, kw = weight.shape
    padded = np.zeros((out, channels, kh, kw), weight.dtype)
    padded[:, :cin] = weight
    return padded.reshape(out, channels // blk, blk, kh, kw).transpose(0, 1, 3, 4, 2).reshape(out, -1)
