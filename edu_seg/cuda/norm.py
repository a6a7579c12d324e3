"""Batch normalisation on the GPU (CUDA twin of :mod:`edu_seg.reference.norm`).

Same functions, signatures and results as the reference, on CuPy arrays: x and dy are
C-contiguous float32 or float64 (N, C, H, W); per-channel vectors (mean, invstd, weight, bias
and the returned mean, var, dweight, dbias) are float64 (C,). The per-channel arithmetic on
those C numbers (scale, shift, dbias/m, ...) is CuPy arithmetic here, written as in the
reference, with the same ``.astype(x.dtype)`` where the reference has it; the kernels in
``norm.cu`` do the per-element work and the sums over N·H·W.
"""
import cupy

from ._raw import launch

__all__ = ["batch_norm_stats", "batch_norm_forward", "batch_norm_backward"]


def _in(v, dtype):
    """A (C,) vector as a contiguous ``dtype`` array (the reference's ``_per_channel`` cast)."""
    return cupy.ascontiguousarray(v.astype(dtype, copy=False))


def batch_norm_stats(x):
    """Per-channel mean and biased variance of x (N, C, H, W): two float64 (C,) arrays."""
    N, C, H, W = x.shape
    mean = cupy.empty(C, dtype=cupy.float64)
    var = cupy.empty(C, dtype=cupy.float64)
    launch("norm", "batch_norm_stats", x.dtype, C, x, mean, var, N, C, H * W)
    return mean, var


def batch_norm_forward(x, mean, invstd, weight, bias):
    """y = (x − mean) · invstd · weight + bias per channel, as one multiply-add per element."""
    N, C, H, W = x.shape
    scale = weight * invstd                       # float64, folded once per channel
    shift = bias - mean * scale
    y = cupy.empty(x.shape, dtype=x.dtype)
    launch("norm", "batch_norm_forward", x.dtype, y.size, x, y, _in(scale, x.dtype),
           _in(shift, x.dtype), y.size, C, H * W)
    return y


def batch_norm_backward(dy, x, mean, invstd, weight, training):
    """Gradients (dx in the dtype of x; dweight, dbias float64 (C,)); see the reference."""
    N, C, H, W = x.shape
    m = N * H * W
    mean_x, invstd_x = _in(mean, x.dtype), _in(invstd, x.dtype)
    dweight = cupy.empty(C, dtype=cupy.float64)
    dbias = cupy.empty(C, dtype=cupy.float64)
    launch("norm", "batch_norm_grad_sums", x.dtype, C, dy, x, mean_x, invstd_x, dweight, dbias,
           N, C, H * W)
    k = _in(weight * invstd, x.dtype)
    dx = cupy.empty(x.shape, dtype=x.dtype)
    if not training:
        launch("norm", "batch_norm_backward_evaluation", x.dtype, dx.size, dy, dx, k, dx.size,
               C, H * W)
        return dx, dweight, dbias
    launch("norm", "batch_norm_backward_training", x.dtype, dx.size, dy, x, dx, k, mean_x,
           invstd_x, _in(dbias / m, x.dtype), _in(dweight / m, x.dtype), dx.size, C, H * W)
    return dx, dweight, dbias
