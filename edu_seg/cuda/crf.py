"""The exact dense-CRF messages on the GPU (CUDA twin of :mod:`edu_seg.reference.crf`).

Same function, signature and result as the reference, on CuPy arrays: ``image (3, H, W)`` in
the 0-255 scale and ``q (L, H, W)`` -> ``messages (L, H, W)``, q's dtype. The features are
scaled exactly as the reference's ``_scaled_features`` scales them: the position features, which
lie on the pixel grid, as tiny per-axis tables built on the host (H + W numbers each), the
colours divided on the device. The kernel in ``crf.cu`` runs one thread per output pixel over
all N pixels: the reference's N x N matrix times Q, one row per thread, never stored.
"""
import cupy
import numpy as np

from ._raw import launch

__all__ = ["dense_crf_messages"]


def _axis_features(size, theta, dtype):
    """0 .. size-1 divided by sqrt(2)*theta in ``dtype``: one axis of the reference's
    ``pos / dtype.type(root2 * theta)``, value for value."""
    scale = dtype.type(np.sqrt(2.0) * theta)
    return cupy.asarray(np.arange(size, dtype=dtype) / scale)


def dense_crf_messages(image, q, theta_alpha, theta_beta, theta_gamma, w1, w2):
    """Weighted Gaussian messages of the dense CRF over all pixel pairs j != i; see the
    reference.

    image: (3, H, W) colours 0-255, q: (L, H, W) -> messages: (L, H, W), q's dtype.
    """
    L, H, W = q.shape
    dtype = np.dtype(q.dtype)
    colour = image.reshape(3, H * W) / dtype.type(np.sqrt(2.0) * theta_beta)    # (3, N)
    colour = cupy.ascontiguousarray(colour, dtype=dtype)
    messages = cupy.empty((L, H, W), dtype=dtype)
    launch("crf", "dense_crf_messages", dtype, H * W, colour, cupy.ascontiguousarray(q),
           messages,
           _axis_features(H, theta_alpha, dtype), _axis_features(W, theta_alpha, dtype),
           _axis_features(H, theta_gamma, dtype), _axis_features(W, theta_gamma, dtype),
           float(w1), float(w2), float(w1) + float(w2), L, H, W)
    return messages
