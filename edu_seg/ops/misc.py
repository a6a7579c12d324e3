"""Leaky ReLU, dropout and the random generator behind dropout and weight initialisation.

One module-level NumPy ``Generator`` feeds every random draw the library makes (dropout masks,
initial weights), so ``manual_seed(0)`` before building and training a model makes the whole
run reproducible, like ``torch.manual_seed``. :mod:`edu_seg.nn.init` re-exports
:func:`manual_seed`.
"""
import numpy as np

from ..autograd import Function, Tensor

__all__ = ["manual_seed", "default_generator", "leaky_relu", "dropout", "dropout2d"]

_generator = np.random.default_rng()


def manual_seed(seed):
    """Re-seed the generator behind weight initialisation and dropout (reproducible runs)."""
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative integer, got {seed!r}")
    _generator = np.random.default_rng(int(seed))


def default_generator():
    """The library's ``numpy.random.Generator`` (what ``generator=None`` means everywhere)."""
    return _generator


def _tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


def _check_floating(op, x):
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: x must be a floating array, got dtype {x.dtype}")


class LeakyReLUFunction(Function):
    @staticmethod
    def forward(ctx, x, negative_slope):
        positive = x > 0
        ctx.save_for_backward(positive)
        ctx.negative_slope = negative_slope
        return np.where(positive, x, x * x.dtype.type(negative_slope))

    @staticmethod
    def backward(ctx, dy):
        (positive,) = ctx.saved_tensors
        return np.where(positive, dy, dy * dy.dtype.type(ctx.negative_slope))


def leaky_relu(x, negative_slope=0.01):
    """x where x > 0, else ``negative_slope * x``; elementwise, x: any shape.

    Notes
    -----
    The derivative is 1 for x > 0 and ``negative_slope`` otherwise (at exactly 0 we take the
    slope, as PyTorch does), so units that are "off" still pass a small gradient.
    """
    x = _tensor(x)
    _check_floating("leaky_relu", x)
    return LeakyReLUFunction.apply(x, negative_slope=float(negative_slope))


class MaskMultiply(Function):
    """y = x * mask with a constant mask (dropout's scaled keep-mask); dx = dy * mask."""

    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, dy):
        (mask,) = ctx.saved_tensors
        return dy * mask


def _dropout(op, x, p, training, generator, mask_shape):
    x = _tensor(x)
    _check_floating(op, x)
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)) \
            or not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: p must be a probability in [0, 1], got {p!r}")
    if not training or p == 0.0:
        return x
    rng = default_generator() if generator is None else generator
    # Keep each unit with probability 1 - p and scale it by 1/(1 - p), so the expected value of
    # every activation is the same in training and in evaluation (where dropout is the identity).
    keep = rng.random(mask_shape) >= p
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    mask = keep.astype(x.dtype) * x.dtype.type(scale)
    return MaskMultiply.apply(x, mask=mask)


def dropout(x, p=0.5, training=True, generator=None):
    """Zero each element with probability ``p`` and scale the rest by 1/(1 - p) (training only).

    Parameters
    ----------
    x : Tensor, any shape
    p : float
        Probability of dropping an element, in [0, 1].
    training : bool
        If False, dropout is the identity (evaluation mode).
    generator : numpy.random.Generator, optional
        Draws the mask; default :func:`default_generator` (seeded by :func:`manual_seed`).

    Returns
    -------
    Tensor, same shape as x
    """
    x = _tensor(x)
    return _dropout("dropout", x, p, training, generator, x.shape)


def dropout2d(x, p=0.5, training=True, generator=None):
    """Zero whole channels: each (n, c) feature map is dropped with probability ``p``.

    Neighbouring pixels of a feature map are strongly correlated, so dropping single pixels
    hardly regularises a conv net; dropping whole maps does (Tompson et al., 2015).

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    p, training, generator
        As in :func:`dropout`.

    Returns
    -------
    Tensor of shape (N, C, H, W)
    """
    x = _tensor(x)
    if x.ndim != 4:
        raise ValueError(f"dropout2d: x must be (N, C, H, W), got shape {x.shape}")
    return _dropout("dropout2d", x, p, training, generator, x.shape[:2] + (1, 1))
