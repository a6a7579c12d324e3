"""The ReLU, NumPy reference (the compiled twin is ``kernels/activation.pyx``).

    y = max(x, 0)                     dx = dy · [y > 0]

The gradient reads the OUTPUT y, not x: y > 0 exactly where x > 0, and y is what the
autograd engine keeps anyway for the next layer, so x need not be kept alive for backward.
NaN stays NaN forward (as ``np.maximum`` does); max(-0.0, 0) is +0.0.

Each function is one NumPy expression, but ``dy * (y > 0)`` is two passes over memory (the
comparison writes a boolean array, the product reads it back) on one thread; the compiled twin
makes one pass on all threads. A ReLU follows almost every convolution, so in a training step
these passes add up to several percent of the time.

Conventions shared with the twins: arrays of any shape; the result is a new array of the input's
shape and dtype.
"""
import numpy as np

__all__ = ["relu_forward", "relu_backward"]


def relu_forward(x):
    """y = max(x, 0), elementwise. x: any shape -> y: same shape and dtype."""
    return np.maximum(x, 0)


def relu_backward(dy, y):
    """dx = dy where y > 0, else 0. dy, y: the same shape -> dx: dy's shape and dtype."""
    return dy * (y > 0)
