"""Batch normalisation kernels, NumPy reference (the compiled twin is ``kernels/norm.pyx``).

For each channel c of x: (N, C, H, W), with m = N·H·W values per channel,

    mean_c = (1/m) Σ x            var_c = (1/m) Σ (x − mean_c)²        (biased: divide by m)
    x̂ = (x − mean_c) · invstd_c,   invstd_c = 1 / sqrt(var_c + eps)
    y = γ_c · x̂ + β_c

and, by the chain rule through the batch statistics (Ioffe & Szegedy, 2015),

    dβ_c = Σ dy          dγ_c = Σ dy · x̂
    dx   = γ_c · invstd_c · (dy − dβ_c / m − x̂ · dγ_c / m)        (training: stats from x)
    dx   = γ_c · invstd_c · dy                                    (evaluation: stats fixed)

Conventions shared with the compiled twin: x and dy are C-contiguous float32 or float64;
per-channel vectors (mean, invstd, weight, bias and the returned sums) are float64 of shape
(C,), because the sums over m ~ 10⁵ values are where float32 would lose digits.
"""
import numpy as np

__all__ = ["batch_norm_stats", "batch_norm_forward", "batch_norm_backward"]


def _per_channel(v, dtype):
    """A (C,) vector as ``dtype``, shaped (1, C, 1, 1) so it broadcasts over (N, C, H, W)."""
    return v.astype(dtype, copy=False)[None, :, None, None]


def batch_norm_stats(x):
    """Per-channel mean and biased variance of a batch.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64

    Returns
    -------
    mean, var : ndarray of shape (C,), float64
        ``var`` divides by m = N·H·W (what normalisation uses; the running estimate uses the
        unbiased m/(m−1) version, applied by the caller).

    Notes
    -----
    Two passes: first the mean, then the mean of squared deviations. The one-pass formula
    E[x²] − E[x]² cancels catastrophically when ``|mean| ≫ std``. Elementwise work stays in the
    dtype of x; the sums over m values accumulate in float64 (``dtype=np.float64``).
    """
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
    deviation = x - _per_channel(mean, x.dtype)                 # (N, C, H, W)
    var = np.mean(deviation * deviation, axis=(0, 2, 3), dtype=np.float64)
    return mean, var


def batch_norm_forward(x, mean, invstd, weight, bias):
    """y = (x − mean) · invstd · weight + bias, per channel.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    mean, invstd, weight, bias : ndarray of shape (C,), float64

    Returns
    -------
    y : ndarray of shape (N, C, H, W), dtype of x

    Notes
    -----
    Folded into one multiply-add per element: y = scale · x + shift with
    scale = weight · invstd and shift = bias − mean · scale, computed once per channel.
    """
    scale = weight * invstd
    shift = bias - mean * scale
    return x * _per_channel(scale, x.dtype) + _per_channel(shift, x.dtype)


def batch_norm_backward(dy, x, mean, invstd, weight, training):
    """Gradients of batch normalisation with respect to x, weight and bias.

    Parameters
    ----------
    dy, x : ndarray of shape (N, C, H, W), same floating dtype
    mean, invstd, weight : ndarray of shape (C,), float64
        The statistics the forward pass normalised with, and the scale γ.
    training : bool
        True if the forward pass used the batch's own statistics (then they depend on x and
        dx has the two correction terms); False if it used fixed running statistics.

    Returns
    -------
    dx : ndarray of shape (N, C, H, W), dtype of x
    dweight, dbias : ndarray of shape (C,), float64
    """
    m = x.shape[0] * x.shape[2] * x.shape[3]
    xhat = (x - _per_channel(mean, x.dtype)) * _per_channel(invstd, x.dtype)
    dbias = dy.sum(axis=(0, 2, 3), dtype=np.float64)
    dweight = np.sum(dy * xhat, axis=(0, 2, 3), dtype=np.float64)
    k = _per_channel(weight * invstd, x.dtype)
    if not training:
        return k * dy, dweight, dbias
    dx = k * (dy - _per_channel(dbias / m, x.dtype) - xhat * _per_channel(dweight / m, x.dtype))
    return dx, dweight, dbias
