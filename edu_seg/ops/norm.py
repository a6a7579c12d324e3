"""Batch normalisation as a differentiable op, forward and backward written by hand.

The kernels (``edu_seg.reference.norm`` / ``edu_seg._kernels.norm``) do the arithmetic; this
module validates the arguments, keeps the running statistics and records the op for backward.
"""
import numpy as np

from ..autograd import Function, Tensor
from ..backend import contiguous, get_array_module, is_array, kernels

__all__ = ["batch_norm", "group_norm"]


class BatchNorm2dFunction(Function):
    """y = (x − mean) / sqrt(var + eps) · weight + bias over each channel of (N, C, H, W).

    Backward is one fused pass per channel (see ``edu_seg/reference/norm.py`` for the
    formulas), not the graph of a dozen elementwise ops an autograd would record.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, *, running_mean, running_var, training, momentum, eps):
        K = kernels("norm", x, weight, bias)
        x = contiguous(x)
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
        invstd = 1.0 / (var + eps) ** 0.5
        xp, C = get_array_module(x), x.shape[1]
        weight64 = xp.ones(C) if weight is None else weight.astype(np.float64)
        bias64 = xp.zeros(C) if bias is None else bias.astype(np.float64)
        ctx.save_for_backward(x, mean, invstd, weight64)
        ctx.K, ctx.training = K, training   # backward runs on the backend that ran forward
        return K.batch_norm_forward(x, mean, invstd, weight64, bias64)

    @staticmethod
    def backward(ctx, dy):
        x, mean, invstd, weight64 = ctx.saved_tensors
        dy = contiguous(dy, x.dtype)  # e.g. a broadcast gradient of a sum
        dx, dweight, dbias = ctx.K.batch_norm_backward(dy, x, mean, invstd, weight64,
                                                       ctx.training)
        dtype = x.dtype
        return (dx if ctx.needs_input_grad[0] else None,
                dweight.astype(dtype) if ctx.needs_input_grad[1] else None,
                dbias.astype(dtype) if ctx.needs_input_grad[2] else None)


def _check_x_dtype(op, x):
    """One rule for every backend: x is float32 or float64 (the compiled kernels have no
    float16 signature, and a NumPy float16 run would lose most of its digits in the sums)."""
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: x must be float32 or float64, got dtype {x.dtype}; cast it "
                        f"first, e.g. x.astype(np.float32)")


def _check_vector(name, v, C):
    """The (C,) floating array behind ``v`` (an array or a Tensor), else a clear error."""
    v = v.data if isinstance(v, Tensor) else v
    if not is_array(v) or v.dtype.kind != "f":
        got = f"dtype {v.dtype}" if is_array(v) else type(v).__name__
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
    _check_x_dtype("batch_norm", x)
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


# -------------------------------------------------------------------------------- group norm
class GroupNormFunction(Function):
    """y = (x − mean) / sqrt(var + eps) · weight + bias, statistics per (sample, group).

    Pure array code (no kernel): the statistics are small reductions over (N, G, M) views.
    Backward is the closed form of :func:`group_norm`'s Notes, one pass per group.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, *, num_groups, eps):
        xp = get_array_module(x)
        N, C = x.shape[:2]
        per_channel = (1, C) + (1,) * (x.ndim - 2)     # broadcasts a (C,) vector over x
        xg = x.reshape(N, num_groups, -1)               # (N, G, M), M = (C/G)·H·W
        # Sums accumulate in float64: a float32 sum over a large group loses digits.
        mean = xg.mean(axis=2, keepdims=True, dtype=xp.float64).astype(x.dtype)
        xhat = xg - mean                                # deviations, then normalised in place
        var = (xhat * xhat).mean(axis=2, keepdims=True, dtype=xp.float64)   # biased
        invstd = (1.0 / xp.sqrt(var + eps)).astype(x.dtype)                 # (N, G, 1)
        xhat *= invstd
        y = xhat.reshape(x.shape)
        if weight is not None:
            y = y * weight.reshape(per_channel)
        if bias is not None:
            y = y + bias.reshape(per_channel)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.shape, ctx.per_channel = x.shape, per_channel
        ctx.dtypes = (None if weight is None else weight.dtype,
                      None if bias is None else bias.dtype)
        if weight is None and bias is None:
            y = y.copy()    # the output must not share memory with the x̂ backward reads
        return y

    @staticmethod
    def backward(ctx, dy):
        xhat, invstd, weight = ctx.saved_tensors
        shape = ctx.shape
        channel_sum = (0,) + tuple(range(2, len(shape)))   # all axes but C
        dx = dweight = dbias = None
        if ctx.needs_input_grad[1]:
            dweight = (dy * xhat.reshape(shape)).sum(axis=channel_sum).astype(ctx.dtypes[0])
        if ctx.needs_input_grad[2]:
            dbias = dy.sum(axis=channel_sum).astype(ctx.dtypes[1])
        if ctx.needs_input_grad[0]:
            g = dy if weight is None else dy * weight.reshape(ctx.per_channel)   # ∂L/∂x̂
            g = g.reshape(xhat.shape).astype(xhat.dtype, copy=False)             # (N, G, M)
            dx = invstd * (g - g.mean(axis=2, keepdims=True)
                           - xhat * (g * xhat).mean(axis=2, keepdims=True))
            dx = dx.reshape(shape)
        return dx, dweight, dbias


def _check_affine(op, name, v, C):
    """The (C,) floating array behind ``v`` (an array or a Tensor), else a clear error."""
    raw = v.data if isinstance(v, Tensor) else v
    if not is_array(raw) or raw.dtype.kind != "f":
        got = f"dtype {raw.dtype}" if hasattr(raw, "dtype") else type(raw).__name__
        raise TypeError(f"{op}: {name} must be a floating array of shape ({C},), got {got}")
    if raw.shape != (C,):
        raise ValueError(f"{op}: {name} must have shape ({C},) (one value per channel of x), "
                         f"got {raw.shape}")


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalisation (Wu & He, 2018; ``F.group_norm``): per sample, per channel group.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W) (or ``(N, C, *)``), float32 or float64
    num_groups : int
        G, dividing C. G = 1 is LayerNorm over (C, H, W); G = C is InstanceNorm.
    weight, bias : Tensor of shape (C,), optional
        The per-channel affine γ and β (1 and 0 if None).
    eps : float > 0
        Added to the variance before the square root.

    Returns
    -------
    Tensor of shape (N, C, H, W), dtype of x

    Notes
    -----
    Each sample's C channels are cut into G groups of C/G; with the m = (C/G)·H·W values of
    one (sample, group), μ their mean and σ² their biased variance:

        x̂ = (x − μ)/sqrt(σ² + ε),   y = γ_c·x̂ + β_c

    With ĝ = γ_c·dy (the gradient with respect to x̂) and means over the group,

        dx = (1/sqrt(σ² + ε))·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))
        dγ_c = Σ_(n, h, w) dy·x̂,   dβ_c = Σ_(n, h, w) dy

    Unlike batch norm nothing mixes samples, so it behaves the same in training and in
    evaluation and works with a batch of 1 or 2 (large crops for segmentation).

    Examples
    --------
    >>> x = Tensor(np.random.randn(2, 8, 16, 16).astype(np.float32), requires_grad=True)
    >>> y = group_norm(x, 4)
    >>> y.shape
    (2, 8, 16, 16)
    """
    op = "group_norm"
    x = x if isinstance(x, Tensor) else Tensor(x)
    _check_x_dtype(op, x)
    if x.ndim < 2:
        raise ValueError(f"{op}: x must be (N, C, H, W) (or (N, C, *)), got shape {x.shape}")
    C = x.shape[1]
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)):
        raise TypeError(f"{op}: num_groups must be an int, got {type(num_groups).__name__} "
                        f"{num_groups!r}")
    if num_groups < 1 or C % num_groups:
        raise ValueError(f"{op}: num_groups={num_groups} must be a positive divisor of the "
                         f"{C} channels of x (shape {x.shape})")
    for name, v in (("weight", weight), ("bias", bias)):
        if v is not None:
            _check_affine(op, name, v, C)
    if not eps > 0:
        raise ValueError(f"{op}: eps must be positive, got {eps!r}")
    return GroupNormFunction.apply(x, weight, bias, num_groups=int(num_groups), eps=float(eps))
