"""The ReLU on the GPU (CUDA twin of :mod:`edu_seg.reference.activation`).

Same functions, signatures and results as the reference, on CuPy arrays: one elementwise
kernel each (``activation.cu``). Arrays that are not C-contiguous float32 or float64 take the
reference's expression, which CuPy runs as its own elementwise kernels.
"""
import cupy

from ..reference import activation as _reference
from ._raw import launch

__all__ = ["relu_forward", "relu_backward"]


def _compiled(*arrays):
    """True if the kernels take these arrays: C-contiguous, one dtype, float32/float64."""
    dtype = arrays[0].dtype
    return (dtype in (cupy.float32, cupy.float64)
            and all(a.dtype == dtype and a.flags.c_contiguous for a in arrays))


def relu_forward(x):
    """y = max(x, 0), elementwise. x: any shape -> y: same shape and dtype."""
    if not _compiled(x):
        return _reference.relu_forward(x)
    y = cupy.empty_like(x)
    launch("activation", "relu_forward", x.dtype, x.size, x, y, x.size)
    return y


def relu_backward(dy, y):
    """dx = dy where y > 0, else 0. dy, y: the same shape -> dx: dy's shape and dtype."""
    if not _compiled(dy, y) or dy.shape != y.shape:
        return _reference.relu_backward(dy, y)
    dx = cupy.empty_like(dy)
    launch("activation", "relu_backward", dy.dtype, dy.size, dy, y, dx, dy.size)
    return dx
