"""Elementwise activations as functions (``F.relu(x)`` is ``x.relu()``)."""
from ..autograd import Function, ReLU, Sigmoid, Tanh, Tensor
from ..backend import get_array_module


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
