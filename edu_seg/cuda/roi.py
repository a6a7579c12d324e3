"""RoIAlign and RoIPool on the GPU (CUDA twin of :mod:`edu_seg.reference.roi`).

Same functions, signatures and results as the reference, on CuPy arrays: ``x (N, C, H, W)``,
``rois (K, 5)`` rows ``(batch_index, x1, y1, x2, y2)``, outputs ``(K, C, PH, PW)``, RoIPool's
argmax int64 (flat ``h * W + w`` in its plane, -1 for an empty bin). The geometry of a box is
computed inside the kernels of ``roi.cu`` (each thread its own box's, as torchvision does), by
device functions named and written like the reference's helpers.
"""
import cupy

from ._raw import launch

__all__ = ["roi_align_forward", "roi_align_backward", "roi_pool_forward", "roi_pool_backward"]


def _rois(rois, dtype):
    """The boxes as a C-contiguous (K, 5) array of the data's dtype (the arithmetic dtype)."""
    return cupy.ascontiguousarray(rois, dtype=dtype)


def roi_align_forward(x, rois, output_hw, spatial_scale, sampling_ratio, aligned):
    """RoIAlign: x (N, C, H, W), rois (K, 5) -> y (K, C, PH, PW); see the reference."""
    N, C, H, W = x.shape
    PH, PW = (int(n) for n in output_hw)
    K = rois.shape[0]
    y = cupy.empty((K, C, PH, PW), dtype=x.dtype)
    launch("roi", "roi_align_forward", x.dtype, y.size, x, _rois(rois, x.dtype), y, K, C, H, W,
           PH, PW, float(spatial_scale), int(sampling_ratio), bool(aligned))
    return y


def roi_align_backward(dy, rois, x_shape, output_hw, spatial_scale, sampling_ratio, aligned):
    """Gradient of RoIAlign: dy (K, C, PH, PW) -> dx of shape x_shape (atomicAdd scatter)."""
    N, C, H, W = x_shape
    PH, PW = (int(n) for n in output_hw)
    K = rois.shape[0]
    dx = cupy.zeros((N, C, H, W), dtype=dy.dtype)
    launch("roi", "roi_align_backward", dy.dtype, dy.size, dy, _rois(rois, dy.dtype), dx, K, C,
           H, W, PH, PW, float(spatial_scale), int(sampling_ratio), bool(aligned))
    return dx


def roi_pool_forward(x, rois, output_hw, spatial_scale):
    """RoIPool: x (N, C, H, W), rois (K, 5) -> (y, argmax int64), both (K, C, PH, PW)."""
    N, C, H, W = x.shape
    PH, PW = (int(n) for n in output_hw)
    K = rois.shape[0]
    y = cupy.empty((K, C, PH, PW), dtype=x.dtype)
    argmax = cupy.empty((K, C, PH, PW), dtype=cupy.int64)
    launch("roi", "roi_pool_forward", x.dtype, y.size, x, _rois(rois, x.dtype), y, argmax, K, C,
           H, W, PH, PW, float(spatial_scale))
    return y, argmax


def roi_pool_backward(dy, argmax, rois, x_shape):
    """Gradient of RoIPool: dy goes to the argmax pixels, dx of shape x_shape."""
    N, C, H, W = x_shape
    K, _, PH, PW = dy.shape
    dx = cupy.zeros((N, C, H, W), dtype=dy.dtype)
    launch("roi", "roi_pool_backward", dy.dtype, dy.size, dy, cupy.ascontiguousarray(argmax),
           _rois(rois, dy.dtype), dx, K, C, H, W, PH, PW)
    return dx
