"""Bilinear and nearest resizing on the GPU (CUDA twin of :mod:`edu_seg.reference.resample`).

Same functions, signatures and results as the reference, on CuPy arrays. The per-axis tables
come from the reference itself (host NumPy, a few hundred numbers) and are copied to the GPU;
the kernels in ``resample.cu`` do the per-pixel work.
"""
import cupy

from ..reference.resample import _scales, linear_source_taps, nearest_source_index
from ._raw import launch

__all__ = ["linear_source_taps", "nearest_source_index",
           "interpolate_bilinear_forward", "interpolate_bilinear_backward",
           "interpolate_nearest_forward", "interpolate_nearest_backward"]


def _bilinear_tables(in_hw, out_hw, align_corners, scales, dtype):
    """(h0, h1, λh, w0, w1, λw) on the GPU, weights in the data's dtype like the reference."""
    (H, W), (OH, OW), (sh, sw) = in_hw, out_hw, _scales(scales)
    h0, h1, lh = linear_source_taps(H, OH, align_corners, sh)
    w0, w1, lw = linear_source_taps(W, OW, align_corners, sw)
    return (cupy.asarray(h0), cupy.asarray(h1), cupy.asarray(lh.astype(dtype)),
            cupy.asarray(w0), cupy.asarray(w1), cupy.asarray(lw.astype(dtype)))


def _nearest_tables(in_hw, out_hw, scales):
    (H, W), (OH, OW), (sh, sw) = in_hw, out_hw, _scales(scales)
    return (cupy.asarray(nearest_source_index(H, OH, sh)),
            cupy.asarray(nearest_source_index(W, OW, sw)))


def interpolate_bilinear_forward(x, out_hw, align_corners, scales):
    """Bilinear resize: x (N, C, H, W) -> y (N, C, OH, OW); see the reference."""
    N, C, H, W = x.shape
    OH, OW = out_hw
    y = cupy.empty((N, C, OH, OW), dtype=x.dtype)
    tables = _bilinear_tables((H, W), out_hw, align_corners, scales, x.dtype)
    launch("resample", "bilinear_forward", x.dtype, y.size, x, y, *tables, N * C, H, W, OH, OW)
    return y


def interpolate_bilinear_backward(dy, in_hw, align_corners, scales):
    """Adjoint of the bilinear resize: dy (N, C, OH, OW) -> dx (N, C, H, W)."""
    N, C, OH, OW = dy.shape
    H, W = in_hw
    dx = cupy.zeros((N, C, H, W), dtype=dy.dtype)
    tables = _bilinear_tables(in_hw, (OH, OW), align_corners, scales, dy.dtype)
    launch("resample", "bilinear_backward", dy.dtype, dy.size, dy, dx, *tables, N * C, H, W,
           OH, OW)
    return dx


def interpolate_nearest_forward(x, out_hw, scales):
    """Nearest resize: x (N, C, H, W) -> y (N, C, OH, OW); see the reference."""
    N, C, H, W = x.shape
    OH, OW = out_hw
    y = cupy.empty((N, C, OH, OW), dtype=x.dtype)
    rows, cols = _nearest_tables((H, W), out_hw, scales)
    launch("resample", "nearest_forward", x.dtype, y.size, x, y, rows, cols, N * C, H, W, OH, OW)
    return y


def interpolate_nearest_backward(dy, in_hw, scales):
    """Adjoint of the nearest resize: dy (N, C, OH, OW) -> dx (N, C, H, W)."""
    N, C, OH, OW = dy.shape
    H, W = in_hw
    dx = cupy.zeros((N, C, H, W), dtype=dy.dtype)
    rows, cols = _nearest_tables(in_hw, (OH, OW), scales)
    launch("resample", "nearest_backward", dy.dtype, dy.size, dy, dx, rows, cols, N * C, H, W,
           OH, OW)
    return dx
