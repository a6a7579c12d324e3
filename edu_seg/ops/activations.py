"""Elementwise activations as functions (``F.relu(x)`` is ``x.relu()``)."""
from ..autograd import ReLU, Sigmoid, Tanh, Tensor


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
