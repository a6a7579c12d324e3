"""Elementwise activations as functions (``F.relu(x)`` is ``x.relu()``)."""
from ..autograd import Function, ReLU, Sigmoid, Tanh, Tensor
from ..backend import get_array_module
from .tensor import _check_axis, _check_floating


def _tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


def relu(x):
    """max(x, 0), elementwise. x: any shape."""
    return ReLU.apply(_tensor(x))


def sigmoid(x):
    """1 / (1 + e^-x), elementwise, computed stably for large |x|."""
    return Sigmoid.apply(_tensor(x))


def tanh(x):
    """Hyperbolic tangent, elementwise."""
    return Tanh.apply(_tensor(x))


class ReLU6(Function):
    @staticmethod
    def forward(ctx, x):
        y = get_array_module(x).clip(x, 0, 6)
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return dy * ((x > 0) & (x < 6))      # flat (zero slope) below 0 and above 6


def relu6(x):
    """min(max(x, 0), 6), elementwise: MobileNet's ReLU, bounded so low-precision
    arithmetic keeps its range. x: any shape."""
    return ReLU6.apply(_tensor(x))


# --------------------------------------------------------------------- softmax / log-softmax
class Softmax(Function):
    @staticmethod
    def forward(ctx, x, *, axis):
        xp = get_array_module(x)
        # Subtracting the max changes nothing (e^(x−m) / Σ e^(x−m) = e^x / Σ e^x) but makes the
        # largest exponent e^0 = 1: exp cannot overflow and the sum is at least 1.
        y = xp.exp(x - x.max(axis=axis, keepdims=True))
        y /= y.sum(axis=axis, keepdims=True)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        # Jacobian ∂y_i/∂x_j = y_i([i = j] − y_j), applied to dy without forming it.
        return y * (dy - (dy * y).sum(axis=ctx.axis, keepdims=True))


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, *, axis):
        xp = get_array_module(x)
        z = x - x.max(axis=axis, keepdims=True)          # stable, as in Softmax
        y = z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        # ∂y_i/∂x_j = [i = j] − softmax_j, and softmax = e^y.
        return dy - get_array_module(y).exp(y) * dy.sum(axis=ctx.axis, keepdims=True)


def _check_softmax(op, x, axis):
    x = _tensor(x)
    _check_floating(op, "x", x)
    axis = _check_axis(op, axis, x.ndim, x.shape)
    if x.shape[axis] == 0:
        raise ValueError(f"{op}: axis {axis} of x (shape {x.shape}) has length 0; there is "
                         f"nothing to normalise over")
    return x, axis


def softmax(x, axis):
    """e^x / Σ e^x along ``axis``: scores to probabilities (``F.softmax(x, dim)``).

    Parameters
    ----------
    x : Tensor, float32 or float64, any shape, e.g. (N, C, H, W) logits
    axis : int
        The axis that sums to 1, e.g. 1 for the classes of (N, C, H, W).

    Returns
    -------
    Tensor, same shape and dtype as x

    Notes
    -----
    Computed as e^(x − m) / Σ e^(x − m) with m = max(x) along the axis (no overflow).
    Backward: dx = y ⊙ (dy − Σ_axis dy ⊙ y).
    For a loss, prefer :func:`log_softmax` or ``cross_entropy``: log(softmax(x)) is −inf
    where softmax underflows to 0.

    Examples
    --------
    >>> softmax(Tensor(np.array([[0.0, np.log(3.0)]])), axis=1).data
    array([[0.25, 0.75]])
    """
    x, axis = _check_softmax("softmax", x, axis)
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis):
    """log(softmax(x)) along ``axis``, computed stably (``F.log_softmax(x, dim)``).

    Parameters
    ----------
    x : Tensor, float32 or float64, any shape, e.g. (N, C, H, W) logits
    axis : int

    Returns
    -------
    Tensor, same shape and dtype as x

    Notes
    -----
    y = (x − m) − log Σ e^(x − m), m = max(x) along the axis: finite even where softmax
    underflows to 0. Backward: dx = dy − softmax(x) ⊙ Σ_axis dy.

    Examples
    --------
    >>> log_softmax(Tensor(np.array([[0.0, 0.0]])), axis=1).data
    array([[-0.69314718, -0.69314718]])
    """
    x, axis = _check_softmax("log_softmax", x, axis)
    return LogSoftmax.apply(x, axis=axis)
