"""Batch normalisation as a differentiable op, forward and backward written by hand.

The kernels (``edu_seg.reference.norm`` / ``edu_seg._kernels.norm``) do the arithmetic; this
module validates the arguments, keeps the running statistics and records the op for backward.
"""
import numpy as np

from ..autograd import Function, Tensor
from ..backend import kernels

__all__ = ["batch_norm"]


class BatchNorm2dFunction(Function):
    """y = (x − mean) / sqrt(var + eps) · weight + bias over each channel of (N, C, H, W).

    Backward is one fused pass per channel (see ``edu_seg/reference/norm.py`` for the
    formulas), not the graph of a dozen elementwise ops an autograd would record.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, *, running_mean, running_var, training, momentum, eps):
        K = kernels("norm")
        x = np.ascontiguousarray(x)
        if training:
            mean, var = K.batch_norm_stats(x)                          # (C,) float64, biased
            if running_mean is not None:
                m = x.shape[0] * x.shape[2] * x.shape[3]
                running_mean *= 1.0 - momentum
                running_mean += momentum * mean
                running_var *= 1.0 - momentum
                running_var += momentum * var * (m / (m - 1))          # unbiased, like PyTorch
        else:
            mean = running_mean.astype(np.float64)
            var = running_var.astype(np.float64)
        invstd = 1.0 / np.sqrt(var + eps)
        C = x.shape[1]
        weight64 = np.ones(C) if weight is None else weight.astype(np.float64)
        bias64 = np.zeros(C) if bias is None else bias.astype(np.float64)
        ctx.save_for_backward(x, mean, invstd, weight64)
        ctx.K, ctx.training = K, training   # backward runs on the backend that ran forward
        return K.batch_norm_forward(x, mean, invstd, weight64, bias64)

    @staticmethod
    def backward(ctx, dy):
        x, mean, invstd, weight64 = ctx.saved_tensors
        dy = np.ascontiguousarray(dy, dtype=x.dtype)  # e.g. a broadcast gradient of a sum
        dx, dweight, dbias = ctx.K.batch_norm_backward(dy, x, mean, invstd, weight64,
                                                       ctx.training)
        dtype = x.dtype
        return (dx if ctx.needs_input_grad[0] else None,
                dweight.astype(dtype) if ctx.needs_input_grad[1] else None,
                dbias.astype(dtype) if ctx.needs_input_grad[2] else None)


def _check_vector(name, v, C):
    """The (C,) floating array behind ``v`` (an array or a Tensor), else a clear error."""
    v = v.data if isinstance(v, Tensor) else v
    if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
        got = f"dtype {v.dtype}" if isinstance(v, np.ndarray) else type(v).__name__
        raise TypeError(f"batch_norm: {name} must be a floating array, got {got}")
    if v.shape != (C,):
        raise ValueError(f"batch_norm: {name} must have shape ({C},) (one value per channel of "
                         f"x), got {v.shape}")
    return v


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation of (N, C, H, W) feature maps, per channel (``F.batch_norm``).

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W), float32 or float64
    running_mean, running_var : ndarray of shape (C,) or None
        The running estimates. In training they are UPDATED IN PLACE (if not None):
        ``r ← (1 − momentum)·r + momentum·s`` with s the batch mean and the UNBIASED batch
        variance (m/(m−1) times the biased one), like PyTorch. In evaluation they are used
        instead of the batch statistics and must be given.
    weight, bias : Tensor of shape (C,), optional
        The affine γ and β (1 and 0 if None).
    training : bool
        True: normalise with the batch's own statistics (biased variance) and update the
        running ones. False: normalise with the running statistics.
    momentum : float
        Weight of the new batch in the running average (PyTorch's convention, NOT Keras's).
    eps : float
        Added to the variance before the square root.

    Returns
    -------
    Tensor of shape (N, C, H, W), dtype of x

    Notes
    -----
    With m = N·H·W values per channel: y = γ·(x − μ)/sqrt(σ² + ε) + β, and in training

        dx = (1/m)·γ·σ̂⁻¹·(m·dy − Σdy − x̂·Σ(dy·x̂)),   σ̂ = sqrt(σ² + ε)

    Batch statistics need more than one value per channel (m > 1).

    Examples
    --------
    >>> x = Tensor(np.random.randn(8, 16, 32, 32).astype(np.float32), requires_grad=True)
    >>> rm, rv = np.zeros(16, np.float32), np.ones(16, np.float32)
    >>> y = batch_norm(x, rm, rv, training=True)
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.dtype.kind != "f":
        raise TypeError(f"batch_norm: x must be float32 or float64, got dtype {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"batch_norm: x must be (N, C, H, W), got shape {x.shape}")
    N, C, H, W = x.shape
    if running_mean is None or running_var is None:
        if not training:
            raise ValueError("batch_norm: running_mean and running_var are required when "
                             "training=False (evaluation normalises with them)")
        if running_mean is not None or running_var is not None:
            raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    else:
        running_mean = _check_vector("running_mean", running_mean, C)
        running_var = _check_vector("running_var", running_var, C)
    for name, v in (("weight", weight), ("bias", bias)):
        if v is not None:
            _check_vector(name, v, C)
    if not eps > 0:
        raise ValueError(f"batch_norm: eps must be positive, got {eps!r}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"batch_norm: momentum must be in [0, 1], got {momentum!r}")

    if training and N * H * W < 2:
        raise ValueError(f"batch_norm: training needs more than 1 value per channel to "
                         f"estimate a variance, got x of shape {x.shape}")
    return BatchNorm2dFunction.apply(x, weight, bias, running_mean=running_mean,
                                     running_var=running_var, training=bool(training),
                                     momentum=float(momentum), eps=float(eps))
