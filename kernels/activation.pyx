# cython: language_level=3
"""The ReLU, compiled (the NumPy twin is ``edu_seg/reference/activation.py``).

Same functions, signatures and results, bit for bit, as the reference; its docstring has the
formulas. The work is one comparison per value, so the time is all memory traffic: the
forward reads x and writes y once, the backward reads dy and y and writes dx once (the
reference's ``dy * (y > 0)`` also writes and reads back a boolean array), and threads take
contiguous blocks of values. Arrays that are not C-contiguous float32 or float64 (a network
makes none) take the reference's NumPy expression.
"""
cimport cython
from cython.parallel cimport prange

import numpy as np

from edu_seg.reference import activation as _reference

cdef extern from "openmp_info.h":
    # One thread for calls touching fewer than GRAIN elements, else all (see the header).
    int _threads_for "edu_seg_threads_for"(long long n_elements) nogil

ctypedef fused floating:
    float
    double

cdef enum:
    # Values per block a thread takes at a time (64 KB of float32).
    BLOCK = 16384

__all__ = ["relu_forward", "relu_backward"]


def _compiled(*arrays):
    """True if the loops below take these arrays: C-contiguous, one dtype, float32/float64."""
    dtype = arrays[0].dtype
    return (dtype in (np.float32, np.float64)
            and all(a.dtype == dtype and a.flags.c_contiguous for a in arrays))


def relu_forward(x):
    """y = max(x, 0), elementwise. x: any shape -> y: same shape and dtype."""
    if not _compiled(x):
        return _reference.relu_forward(x)
    y = np.empty_like(x)
    _forward(x.reshape(-1), y.reshape(-1), _threads_for(2 * x.size))
    return y


def relu_backward(dy, y):
    """dx = dy where y > 0, else 0. dy, y: the same shape -> dx: dy's shape and dtype."""
    if not _compiled(dy, y) or dy.shape != y.shape:
        return _reference.relu_backward(dy, y)
    dx = np.empty_like(dy)
    _backward(dy.reshape(-1), y.reshape(-1), dx.reshape(-1), _threads_for(3 * dy.size))
    return dx


@cython.boundscheck(False)
@cython.wraparound(False)
def _forward(const floating[::1] x, floating[::1] y, int num_threads):
    cdef Py_ssize_t n = x.shape[0], blocks = (n + BLOCK - 1) // BLOCK, b, i
    for b in prange(blocks, nogil=True, schedule="static", num_threads=num_threads):
        for i in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
            # np.maximum(x, 0): NaN stays NaN, -0.0 becomes +0.0
            y[i] = x[i] if (x[i] > 0 or x[i] != x[i]) else 0


@cython.boundscheck(False)
@cython.wraparound(False)
def _backward(const floating[::1] dy, const floating[::1] y, floating[::1] dx,
              int num_threads):
    cdef Py_ssize_t n = dy.shape[0], blocks = (n + BLOCK - 1) // BLOCK, b, i
    for b in prange(blocks, nogil=True, schedule="static", num_threads=num_threads):
        for i in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
            # dy * (y > 0): a product with 1 or 0, as NumPy computes it (so a negative dy
            # where y <= 0 gives -0.0, and an infinite one NaN, exactly as the reference)
            dx[i] = dy[i] * (1 if y[i] > 0 else 0)
