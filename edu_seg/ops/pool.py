"""Pooling as differentiable ops, with PyTorch's signatures and semantics.

``max_pool2d``, ``avg_pool2d`` (downsampling in every backbone), ``adaptive_avg_pool2d`` and
``adaptive_max_pool2d`` (PSPNet's pyramid bins; global pooling is ``adaptive_avg_pool2d(x, 1)``)
and ``max_unpool2d`` (SegNet's decoder puts values back where the encoder's max came from).

Each op checks its arguments, turning every bad one into a ``ValueError``/``TypeError`` that
names it, then runs the kernels of the current backend (:func:`edu_seg.backend.kernels`) through
a :class:`~edu_seg.autograd.Function`. The index arithmetic is in :mod:`edu_seg.reference.pool`.
"""
import numpy as np

from ..autograd import Function, Tensor
from ..backend import contiguous, kernels
from ..reference.pool import adaptive_pool_bins, pool_output_size
from .limits import check_geometry, check_output_size

__all__ = ["max_pool2d", "max_unpool2d", "avg_pool2d", "adaptive_avg_pool2d",
           "adaptive_max_pool2d", "pool_output_size", "adaptive_pool_bins", "check_bool"]


# ================================================================================ validation
# Shared with edu_seg.ops.resample.
def _check_input(op, x):
    """x as a Tensor holding a float32/float64 (N, C, H, W) array with no empty axis."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: x must be float32 or float64, got dtype {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{op}: x must be 4-D (N, C, H, W), got shape {x.shape}")
    if 0 in x.shape:
        raise ValueError(f"{op}: x must not have an empty axis, got shape {x.shape}")
    return x


def _is_int(v):
    # (int, np.integer) rather than numbers.Integral: an ABC check costs microseconds per call.
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _pair(op, name, value, minimum):
    """An int or a pair of ints, each >= minimum, as an (int, int) tuple."""
    pair = (value, value) if _is_int(value) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(_is_int(v) for v in pair)):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in pair):
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def check_bool(op, name, value, allow_none=False):
    """``value`` as a bool if it is a real bool (or None where ``allow_none``), else a TypeError.

    A string such as ``'False'`` is truthy, so accepting it would silently mean True. Used by
    the functional ops here and in :mod:`edu_seg.ops.resample`, and by the ``nn`` layers.
    """
    if isinstance(value, (bool, np.bool_)) or (allow_none and value is None):
        return value if value is None else bool(value)
    allowed = "True, False or None" if allow_none else "True or False"
    raise TypeError(f"{op}: {name} must be {allowed}, got {type(value).__name__} "
                    f"{value!r}; pass the bool itself, not a string or a number")


def _window_options(op, x, kernel_size, stride, padding, dilation, ceil_mode):
    """Normalise a pool's options and check its window fits (PyTorch's rules).

    Returns (kernel_size, stride, padding, dilation, (OH, OW)).
    """
    kernel_size = _pair(op, "kernel_size", kernel_size, 1)
    stride = kernel_size if stride is None else _pair(op, "stride", stride, 1)
    padding = _pair(op, "padding", padding, 0)
    dilation = _pair(op, "dilation", dilation, 1)
    for name, value in (("kernel_size", kernel_size), ("stride", stride), ("padding", padding),
                        ("dilation", dilation)):
        check_geometry(op, name, value)
    if padding[0] > kernel_size[0] // 2 or padding[1] > kernel_size[1] // 2:
        raise ValueError(f"{op}: padding={padding} must be at most half of "
                         f"kernel_size={kernel_size} (PyTorch's rule)")
    H, W = x.shape[2:]
    out = tuple(pool_output_size(i, k, s, p, d, ceil_mode)
                for i, k, s, p, d in zip((H, W), kernel_size, stride, padding, dilation))
    if min(out) < 1:
        span = tuple(d * (k - 1) + 1 for k, d in zip(kernel_size, dilation))
        raise ValueError(f"{op}: the {span[0]}x{span[1]} window (kernel_size={kernel_size}, "
                         f"dilation={dilation}) is larger than the padded input "
                         f"{H + 2 * padding[0]}x{W + 2 * padding[1]} (input {H}x{W}, "
                         f"padding={padding}): the output would be {out[0]}x{out[1]}")
    check_output_size(op, tuple(x.shape[:2]) + out, x.dtype,
                      f"kernel_size={kernel_size}, stride={stride}, padding={padding}, "
                      f"dilation={dilation}")
    return kernel_size, stride, padding, dilation, out


def _check_windows_see_input(op, size, out, kernel, stride, padding, dilation, axis):
    """Max pooling of a window that holds only padding is -inf with no argmax; refuse it.

    (It can happen with dilation: kernel 2, dilation 2, padding 1 on a 1-pixel input reads
    positions -1 and 1 only. PyTorch returns -inf and an index outside the input.) Every window
    starts before ``size`` (pool_output_size's ceil_mode rule), so one that starts at or after
    0 holds its first tap; only the few starting in the left padding need a look.
    """
    for o in range(out):
        start = o * stride - padding
        if start >= 0:
            break
        first = start + -(start // dilation) * dilation   # first tap at or after 0
        if first - start > (kernel - 1) * dilation or first >= size:
            raise ValueError(f"{op}: with kernel_size={kernel}, dilation={dilation}, "
                             f"padding={padding} along {axis}, window {o} of the {size}-pixel "
                             f"input holds only padding; reduce the padding or the dilation")


def _adaptive_output(op, x, output_size):
    """output_size as (OH, OW): an int, or a pair whose None entries keep the input size."""
    pair = (output_size, output_size) if not isinstance(output_size, (tuple, list)) \
        else tuple(output_size)
    if len(pair) != 2 or not all(v is None or _is_int(v) for v in pair):
        raise TypeError(f"{op}: output_size must be an int or a pair of ints (None keeps that "
                        f"input size), got {output_size!r}")
    pair = tuple(int(i) if v is None else int(v) for v, i in zip(pair, x.shape[2:]))
    if min(pair) < 1:
        raise ValueError(f"{op}: output_size must be positive, got {output_size!r}")
    check_geometry(op, "output_size", pair)
    check_output_size(op, tuple(x.shape[:2]) + pair, x.dtype, f"output_size={output_size!r}")
    return pair


# ================================================================================ max pooling
class MaxPool2dFunction(Function):
    """y, indices = max over each window; dy flows back to the argmax only."""

    @staticmethod
    def forward(ctx, x, *, kernel_size, stride, padding, dilation, ceil_mode):
        ctx.K = kernels("pool", x)  # backward runs on the backend that ran forward
        y, indices = ctx.K.max_pool2d_forward(
            contiguous(x, x.dtype), kernel_size, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(indices)
        ctx.x_shape, ctx.dtype = x.shape, x.dtype
        return y, indices

    @staticmethod
    def backward(ctx, dy, _dindices):
        (indices,) = ctx.saved_tensors
        return ctx.K.max_pool2d_backward(contiguous(dy, ctx.dtype), indices, ctx.x_shape)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling (``torch.nn.functional.max_pool2d``).

    Parameters
    ----------
    x : Tensor or ndarray, shape (N, C, H, W), float32 or float64
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size`` (non-overlapping windows).
    padding : int or (int, int)
        Implicit -inf on each side; at most ``kernel_size // 2``.
    dilation : int or (int, int)
        Spacing between the taps of a window.
    ceil_mode : bool
        Keep a last partial window (output size rounded up, see :func:`pool_output_size`).
    return_indices : bool
        Also return where each maximum came from (for :func:`max_unpool2d`).

    Returns
    -------
    y : Tensor, shape (N, C, OH, OW)
    indices : Tensor of int64, shape (N, C, OH, OW), only if ``return_indices``
        Flat ``h*W + w`` of each maximum within its (n, c) plane; ties go to the first
        maximum in row-major order, NaN counts as the maximum.

    Notes
    -----
    y[n, c, oh, ow] = max_{kh, kw} x[n, c, oh·s − p + kh·d, ow·s − p + kw·d] over taps inside
    the input; OH = ⌊(H + 2p − d(k−1) − 1)/s⌋ + 1 (⌈·⌉ with ceil_mode). The gradient goes to
    the argmax alone: dx.flat[indices] += dy.

    Raises
    ------
    TypeError
        x not float32/float64; an option not an int or pair of ints.
    ValueError
        x not 4-D; non-positive kernel/stride/dilation or negative padding; padding above
        kernel_size // 2; window larger than the padded input; a window of padding only; an
        option above 2**24 or an output above :func:`edu_seg.ops.limits.max_bytes`.

    Examples
    --------
    >>> x = Tensor(np.arange(16.0).reshape(1, 1, 4, 4))
    >>> max_pool2d(x, 2).numpy()[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    op = "max_pool2d"
    x = _check_input(op, x)
    ceil_mode = check_bool(op, "ceil_mode", ceil_mode)
    return_indices = check_bool(op, "return_indices", return_indices)
    kernel_size, stride, padding, dilation, out = _window_options(
        op, x, kernel_size, stride, padding, dilation, ceil_mode)
    for axis, i in enumerate((2, 3)):
        _check_windows_see_input(op, x.shape[i], out[axis], kernel_size[axis], stride[axis],
                                 padding[axis], dilation[axis], "HW"[axis])
    y, indices = MaxPool2dFunction.apply(x, kernel_size=kernel_size, stride=stride,
                                         padding=padding, dilation=dilation,
                                         ceil_mode=ceil_mode)
    return (y, indices) if return_indices else y


# ============================================================================= max unpooling
class MaxUnpool2dFunction(Function):
    """y.flat[indices] = x (per plane); the gradient is the gather dx = dy.flat[indices]."""

    @staticmethod
    def forward(ctx, x, indices, *, output_hw):
        ctx.K = kernels("pool", x, indices)
        ctx.save_for_backward(indices)
        ctx.dtype = x.dtype
        return ctx.K.max_unpool2d_forward(contiguous(x, x.dtype), indices, output_hw)

    @staticmethod
    def backward(ctx, dy):
        (indices,) = ctx.saved_tensors
        return ctx.K.max_unpool2d_backward(contiguous(dy, ctx.dtype), indices), None


def max_unpool2d(x, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Partial inverse of max pooling (``torch.nn.functional.max_unpool2d``), SegNet's upsampler.

    Parameters
    ----------
    x : Tensor or ndarray, shape (N, C, H, W), float32 or float64
        Pooled values.
    indices : Tensor or ndarray of integers, shape (N, C, H, W)
        From ``max_pool2d(..., return_indices=True)``: flat ``h*OW + w`` positions in the
        output plane, each in [0, OH·OW).
    kernel_size, stride, padding : int or (int, int)
        Those of the max pooling (stride defaults to ``kernel_size``).
    output_size : (int, int) or (N, C, OH, OW), optional
        The size of the pooling's input, needed when it is ambiguous (odd sizes, ceil_mode).
        Default ``(H − 1)·s − 2p + k`` per axis; a given size must be within ``stride`` of it.

    Returns
    -------
    y : Tensor, shape (N, C, OH, OW)
        Zeros except ``y[n, c].flat[indices[n, c, i, j]] = x[n, c, i, j]``.

    Raises
    ------
    TypeError
        x not float32/float64, indices not integers, an option of the wrong type.
    ValueError
        indices' shape differs from x's; an index outside [0, OH·OW); output_size of the
        wrong length or too far from the default; bad kernel/stride/padding; an option or
        size above 2**24, or an output above :func:`edu_seg.ops.limits.max_bytes`.

    Examples
    --------
    >>> x = Tensor(np.arange(16.0).reshape(1, 1, 4, 4))
    >>> y, i = max_pool2d(x, 2, return_indices=True)
    >>> max_unpool2d(y, i, 2).numpy()[0, 0]
    array([[ 0.,  0.,  0.,  0.],
           [ 0.,  5.,  0.,  7.],
           [ 0.,  0.,  0.,  0.],
           [ 0., 13.,  0., 15.]])
    """
    op = "max_unpool2d"
    x = _check_input(op, x)
    kernel_size = _pair(op, "kernel_size", kernel_size, 1)
    stride = kernel_size if stride is None else _pair(op, "stride", stride, 1)
    padding = _pair(op, "padding", padding, 0)
    for name, value in (("kernel_size", kernel_size), ("stride", stride), ("padding", padding)):
        check_geometry(op, name, value)
    default = tuple((i - 1) * s - 2 * p + k
                    for i, k, s, p in zip(x.shape[2:], kernel_size, stride, padding))
    if output_size is None:
        out = default
        if min(out) < 1:
            raise ValueError(f"{op}: the default output size {out} is not positive "
                             f"(kernel_size={kernel_size}, stride={stride}, padding={padding})")
    else:
        sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,)
        if len(sizes) == 4:
            sizes = sizes[2:]
        if len(sizes) != 2 or not all(_is_int(v) for v in sizes):
            raise ValueError(f"{op}: output_size must be (OH, OW) or (N, C, OH, OW), got "
                             f"{output_size!r}")
        out = tuple(int(v) for v in sizes)
        check_geometry(op, "output_size", out)
        for v, d, s in zip(out, default, stride):
            if not (d - s < v < d + s) or v < 1:
                raise ValueError(f"{op}: output_size {out} is not compatible with the "
                                 f"input: each size must be positive and strictly within "
                                 f"stride={stride} of the default {default}")
    check_output_size(op, tuple(x.shape[:2]) + out, x.dtype,
                      f"kernel_size={kernel_size}, stride={stride}, padding={padding}" +
                      ("" if output_size is None else f", output_size={output_size!r}"))
    idx = indices.data if isinstance(indices, Tensor) else np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{op}: indices must be integers, got dtype {idx.dtype}")
    if idx.shape != x.shape:
        raise ValueError(f"{op}: indices have shape {idx.shape} but x has shape {x.shape}; "
                         f"they must match")
    # Checked here so the kernel's scatter can never write outside the output.
    if idx.min() < 0 or idx.max() >= out[0] * out[1]:
        raise ValueError(f"{op}: indices must lie in [0, {out[0] * out[1]}) for an output of "
                         f"{out[0]}x{out[1]}, got values in [{int(idx.min())}, "
                         f"{int(idx.max())}]")
    idx = contiguous(idx, np.int64)
    return MaxUnpool2dFunction.apply(x, idx, output_hw=out)


# ============================================================================ average pooling
class AvgPool2dFunction(Function):
    """y = window sums / divisor; the gradient spreads dy / divisor over each window."""

    @staticmethod
    def forward(ctx, x, *, kernel_size, stride, padding, ceil_mode, count_include_pad):
        ctx.options = (kernel_size, stride, padding, ceil_mode, count_include_pad)
        ctx.K, ctx.x_shape, ctx.dtype = kernels("pool", x), x.shape, x.dtype
        return ctx.K.avg_pool2d_forward(contiguous(x, x.dtype), *ctx.options)

    @staticmethod
    def backward(ctx, dy):
        return ctx.K.avg_pool2d_backward(contiguous(dy, ctx.dtype), ctx.x_shape, *ctx.options)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """2-D average pooling (``torch.nn.functional.avg_pool2d``).

    Parameters
    ----------
    x : Tensor or ndarray, shape (N, C, H, W), float32 or float64
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit zeros on each side; at most ``kernel_size // 2``.
    ceil_mode : bool
        Keep a last partial window.
    count_include_pad : bool
        Divide by the window size including padding (True) or by the input pixels only.

    Returns
    -------
    y : Tensor, shape (N, C, OH, OW)

    Notes
    -----
    y[oh, ow] = Σ_window x / divisor[oh, ow]. The divisor is the window clipped to end at
    H + p (and W + p): a ceil_mode window hanging beyond the padding counts only up to it.
    Linear in x, so its backward is the adjoint: dx[h, w] = Σ_{windows ∋ (h, w)} dy / divisor.

    Raises
    ------
    TypeError, ValueError
        As :func:`max_pool2d` (there is no dilation here).

    Examples
    --------
    >>> avg_pool2d(Tensor(np.ones((1, 1, 4, 4))), 2).numpy()[0, 0]
    array([[1., 1.],
           [1., 1.]])
    """
    op = "avg_pool2d"
    x = _check_input(op, x)
    ceil_mode = check_bool(op, "ceil_mode", ceil_mode)
    count_include_pad = check_bool(op, "count_include_pad", count_include_pad)
    kernel_size, stride, padding, _, _ = _window_options(op, x, kernel_size, stride, padding, 1,
                                                         ceil_mode)
    return AvgPool2dFunction.apply(x, kernel_size=kernel_size, stride=stride, padding=padding,
                                   ceil_mode=ceil_mode, count_include_pad=count_include_pad)


# ============================================================================ adaptive pooling
class AdaptiveAvgPool2dFunction(Function):
    """y = mean of each adaptive bin; the gradient spreads dy / count over each bin."""

    @staticmethod
    def forward(ctx, x, *, output_hw):
        ctx.K, ctx.x_shape, ctx.dtype = kernels("pool", x), x.shape, x.dtype
        return ctx.K.adaptive_avg_pool2d_forward(contiguous(x, x.dtype), output_hw)

    @staticmethod
    def backward(ctx, dy):
        return ctx.K.adaptive_avg_pool2d_backward(contiguous(dy, ctx.dtype), ctx.x_shape)


def adaptive_avg_pool2d(x, output_size):
    """Average pooling to a fixed output size (``torch.nn.functional.adaptive_avg_pool2d``).

    Parameters
    ----------
    x : Tensor or ndarray, shape (N, C, H, W), float32 or float64
    output_size : int or (int, int)
        (OH, OW); a None entry keeps that input size. ``1`` is global average pooling.

    Returns
    -------
    y : Tensor, shape (N, C, OH, OW)

    Notes
    -----
    Bin (oh, ow) averages rows [⌊oh·H/OH⌋, ⌈(oh+1)·H/OH⌉) and the columns alike
    (:func:`adaptive_pool_bins`). When OH does not divide H the bins overlap by a pixel, so
    they are NOT a plain avg_pool2d with some kernel and stride.

    Raises
    ------
    TypeError
        x not float32/float64; output_size not an int or pair.
    ValueError
        x not 4-D; output_size not positive, above 2**24, or giving an output above
        :func:`edu_seg.ops.limits.max_bytes`.

    Examples
    --------
    >>> x = Tensor(np.arange(9.0).reshape(1, 1, 3, 3))
    >>> adaptive_avg_pool2d(x, 2).numpy()[0, 0]
    array([[2., 3.],
           [5., 6.]])
    """
    op = "adaptive_avg_pool2d"
    x = _check_input(op, x)
    return AdaptiveAvgPool2dFunction.apply(x, output_hw=_adaptive_output(op, x, output_size))


class AdaptiveMaxPool2dFunction(Function):
    """y, indices = max of each adaptive bin; dy flows back to the argmax (as in max pooling)."""

    @staticmethod
    def forward(ctx, x, *, output_hw):
        ctx.K = kernels("pool", x)
        y, indices = ctx.K.adaptive_max_pool2d_forward(contiguous(x, x.dtype), output_hw)
        ctx.save_for_backward(indices)
        ctx.x_shape, ctx.dtype = x.shape, x.dtype
        return y, indices

    # Routing dy to the saved argmaxes is max pooling's backward: one way to do it.
    backward = staticmethod(MaxPool2dFunction.backward)


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """Max pooling to a fixed output size (``torch.nn.functional.adaptive_max_pool2d``).

    Parameters
    ----------
    x : Tensor or ndarray, shape (N, C, H, W), float32 or float64
    output_size : int or (int, int)
        (OH, OW); a None entry keeps that input size.
    return_indices : bool
        Also return the flat ``h*W + w`` argmax of each bin (ties: first in row-major order).

    Returns
    -------
    y : Tensor, shape (N, C, OH, OW)
    indices : Tensor of int64, shape (N, C, OH, OW), only if ``return_indices``

    Notes
    -----
    The bins are those of :func:`adaptive_avg_pool2d`; the gradient goes to each bin's argmax.

    Raises
    ------
    TypeError, ValueError
        As :func:`adaptive_avg_pool2d`.

    Examples
    --------
    >>> x = Tensor(np.arange(9.0).reshape(1, 1, 3, 3))
    >>> adaptive_max_pool2d(x, 2).numpy()[0, 0]
    array([[4., 5.],
           [7., 8.]])
    """
    op = "adaptive_max_pool2d"
    x = _check_input(op, x)
    return_indices = check_bool(op, "return_indices", return_indices)
    y, indices = AdaptiveMaxPool2dFunction.apply(x, output_hw=_adaptive_output(op, x,
                                                                                output_size))
    return (y, indices) if return_indices else y
