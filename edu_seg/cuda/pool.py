"""Pooling on the GPU: max, average, adaptive, max-unpooling (CUDA twin of
:mod:`edu_seg.reference.pool`).

Same functions, signatures and results as the reference, on CuPy arrays (indices are int64,
flat ``h*W + w`` in each (n, c) plane, like PyTorch). The geometry helpers are the reference's
own; the small per-axis tables (average-pooling divisors, adaptive bins) are built with them on
the host and copied over, and the kernels in ``pool.cu`` do the per-pixel work.
"""
import cupy

from ..reference.pool import _avg_divisors, adaptive_pool_bins, pool_output_size
from ._raw import launch

__all__ = ["pool_output_size", "adaptive_pool_bins",
           "max_pool2d_forward", "max_pool2d_backward",
           "max_unpool2d_forward", "max_unpool2d_backward",
           "avg_pool2d_forward", "avg_pool2d_backward",
           "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward",
           "adaptive_max_pool2d_forward"]


def _on_device(*tables):
    return tuple(cupy.asarray(t) for t in tables)


# ================================================================================ max pooling
def max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode):
    """Max pooling with argmax: x (N, C, H, W) -> y, indices (int64) (N, C, OH, OW)."""
    N, C, H, W = x.shape
    (KH, KW), (SH, SW), (PH, PW), (DH, DW) = kernel_size, stride, padding, dilation
    OH = pool_output_size(H, KH, SH, PH, DH, ceil_mode)
    OW = pool_output_size(W, KW, SW, PW, DW, ceil_mode)
    y = cupy.empty((N, C, OH, OW), dtype=x.dtype)
    indices = cupy.empty((N, C, OH, OW), dtype=cupy.int64)
    launch("pool", "max_pool2d_forward", x.dtype, y.size, x, y, indices, N * C, H, W, OH, OW,
           KH, KW, SH, SW, PH, PW, DH, DW)
    return y, indices


def max_pool2d_backward(dy, indices, x_shape):
    """Route dy (N, C, OH, OW) to the argmax indices: dx (N, C, H, W)."""
    N, C, H, W = x_shape
    dx = cupy.zeros((N, C, H, W), dtype=dy.dtype)
    launch("pool", "max_pool2d_backward", dy.dtype, dy.size, dy, indices, dx, N * C,
           dy.shape[2] * dy.shape[3], H * W)
    return dx


def max_unpool2d_forward(x, indices, output_hw):
    """Put x (N, C, H, W) at its indices in zeros (N, C, OH, OW); the later input wins a tie."""
    N, C, H, W = x.shape
    OH, OW = output_hw
    y = cupy.zeros((N, C, OH, OW), dtype=x.dtype)
    # One work item per plane: the kernel writes a plane's inputs in order (see pool.cu).
    launch("pool", "max_unpool2d_forward", x.dtype, N * C, x, indices, y, N * C, H * W, OH * OW)
    return y


def max_unpool2d_backward(dy, indices):
    """Gather dy (N, C, OH, OW) at the indices (N, C, H, W): dx (N, C, H, W)."""
    N, C, H, W = indices.shape
    dx = cupy.empty((N, C, H, W), dtype=dy.dtype)
    launch("pool", "max_unpool2d_backward", dy.dtype, dx.size, dy, indices, dx, N * C, H * W,
           dy.shape[2] * dy.shape[3])
    return dx


# ============================================================================ average pooling
def _avg_tables(x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad):
    """(OH, OW) and the per-axis divisors (int64, on the GPU) of the reference's rule."""
    H, W = x_shape[2:]
    (KH, KW), (SH, SW), (PH, PW) = kernel_size, stride, padding
    OH = pool_output_size(H, KH, SH, PH, 1, ceil_mode)
    OW = pool_output_size(W, KW, SW, PW, 1, ceil_mode)
    div_h = _avg_divisors(H, OH, KH, SH, PH, count_include_pad).astype("int64")
    div_w = _avg_divisors(W, OW, KW, SW, PW, count_include_pad).astype("int64")
    return (OH, OW), _on_device(div_h, div_w)


def avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    """Average pooling: x (N, C, H, W) -> y (N, C, OH, OW); divisors as in the reference."""
    N, C, H, W = x.shape
    (OH, OW), divisors = _avg_tables(x.shape, kernel_size, stride, padding, ceil_mode,
                                     count_include_pad)
    y = cupy.empty((N, C, OH, OW), dtype=x.dtype)
    launch("pool", "avg_pool2d_forward", x.dtype, y.size, x, y, *divisors, N * C, H, W, OH, OW,
           *kernel_size, *stride, *padding)
    return y


def avg_pool2d_backward(dy, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad):
    """Gradient of average pooling: dy (N, C, OH, OW) -> dx (N, C, H, W)."""
    N, C, H, W = x_shape
    (OH, OW), divisors = _avg_tables(x_shape, kernel_size, stride, padding, ceil_mode,
                                     count_include_pad)
    dx = cupy.empty((N, C, H, W), dtype=dy.dtype)
    launch("pool", "avg_pool2d_backward", dy.dtype, dx.size, dy, dx, *divisors, N * C, H, W,
           OH, OW, *kernel_size, *stride, *padding)
    return dx


# ============================================================================ adaptive pooling
def _bins(in_hw, out_hw):
    """(h0, h1, w0, w1) on the GPU: the rows and columns of every adaptive bin."""
    (H, W), (OH, OW) = in_hw, out_hw
    return _on_device(*adaptive_pool_bins(H, OH), *adaptive_pool_bins(W, OW))


def adaptive_avg_pool2d_forward(x, output_hw):
    """Mean of each adaptive bin: x (N, C, H, W) -> y (N, C, OH, OW)."""
    N, C, H, W = x.shape
    OH, OW = output_hw
    y = cupy.empty((N, C, OH, OW), dtype=x.dtype)
    launch("pool", "adaptive_avg_pool2d_forward", x.dtype, y.size, x, y,
           *_bins((H, W), (OH, OW)), N * C, H, W, OH, OW)
    return y


def adaptive_avg_pool2d_backward(dy, x_shape):
    """Gradient of adaptive average pooling: dy (N, C, OH, OW) -> dx (N, C, H, W)."""
    N, C, H, W = x_shape
    OH, OW = dy.shape[2:]
    (h0, h1), (w0, w1) = adaptive_pool_bins(H, OH), adaptive_pool_bins(W, OW)
    # The bins holding input row h are oh in [oh0[h], oh1[h]): the same rule, roles swapped.
    (oh0, oh1), (ow0, ow1) = adaptive_pool_bins(OH, H), adaptive_pool_bins(OW, W)
    tables = _on_device(oh0, oh1, ow0, ow1, h1 - h0, w1 - w0)
    dx = cupy.empty((N, C, H, W), dtype=dy.dtype)
    launch("pool", "adaptive_avg_pool2d_backward", dy.dtype, dx.size, dy, dx, *tables, N * C,
           H, W, OH, OW)
    return dx


def adaptive_max_pool2d_forward(x, output_hw):
    """Max of each adaptive bin with argmax: x (N, C, H, W) -> y, indices (int64)."""
    N, C, H, W = x.shape
    OH, OW = output_hw
    y = cupy.empty((N, C, OH, OW), dtype=x.dtype)
    indices = cupy.empty((N, C, OH, OW), dtype=cupy.int64)
    launch("pool", "adaptive_max_pool2d_forward", x.dtype, y.size, x, y, indices,
           *_bins((H, W), (OH, OW)), N * C, H, W, OH, OW)
    return y, indices
