# cython: language_level=3
"""The Adam update, compiled (the NumPy twin is ``edu_seg/reference/optim.py``).

Same function, signature and results as the reference; its docstring has the formula. An
optimiser step does a few arithmetic operations per value and moves every value of p, g, m
and v through memory: it is bound by memory traffic, not by arithmetic. The reference makes
about a dozen passes over p-sized arrays (each NumPy expression reads its operands and writes a
temporary); this loop reads p, g, m, v once and writes p, m, v once, so the gain is the ratio
of the bytes moved (about 4x on ResNet-18's 11 M weights). Threads take contiguous blocks of
values; every value is computed the same way whichever thread computes it, so the result does
not depend on the thread count.
"""
cimport cython
from cython.parallel cimport prange
from libc.math cimport sqrt

import numpy as np

cdef extern from *:
    # No fused multiply-adds in this file: m·β₁ + (1 − β₁)·g rounded once instead of twice
    # would differ from the reference in the last bit. Without them every operation rounds
    # as NumPy's does, so the update is bit-identical to the reference (the tests check it).
    """
    #pragma GCC optimize("fp-contract=off")
    """

cdef extern from "openmp_info.h":
    # One thread for calls touching fewer than GRAIN elements, else all (see the header).
    int _threads_for "edu_seg_threads_for"(long long n_elements) nogil

ctypedef fused floating:
    float
    double

cdef enum:
    # Values per block a thread takes at a time: 64 KB of float32 per array, large enough
    # that the scheduling is free, small enough that both threads get work on a layer of
    # 1 M values.
    BLOCK = 16384

__all__ = ["adam_update"]


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps):
    """One Adam step, in place (see the reference for the formula and the parameters)."""
    arrays = {"param": param, "grad": grad, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    if max_exp_avg_sq is not None:
        arrays["max_exp_avg_sq"] = max_exp_avg_sq
    for name, a in arrays.items():
        if a.dtype != param.dtype or a.shape != param.shape or not a.flags.c_contiguous:
            raise ValueError(f"adam_update: {name} must be a C-contiguous array of param's "
                             f"shape {param.shape} and dtype {param.dtype}, got shape "
                             f"{a.shape}, dtype {a.dtype}, C-contiguous "
                             f"{a.flags.c_contiguous}; pass np.ascontiguousarray(..., "
                             f"dtype=param.dtype)")
    if param.dtype not in (np.float32, np.float64):
        raise ValueError(f"adam_update: param must be float32 or float64, got {param.dtype}")
    # The scalars the reference computes in Python floats and then casts to p's dtype.
    step_size = lr / (1 - beta1 ** step)
    bias_root = sqrt(1 - beta2 ** step)
    flat = [a.reshape(-1) for a in arrays.values()]
    has_max = max_exp_avg_sq is not None
    _adam(flat[0], flat[1], flat[2], flat[3], flat[4] if has_max else flat[3], has_max,
          1 - beta1, beta1, 1 - beta2, beta2, step_size, bias_root, eps,
          _threads_for(7 * param.size))


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _adam_block(floating* p, const floating* g, floating* m, floating* v, floating* v_max,
                      bint has_max, Py_ssize_t n, floating one_minus_beta1, floating beta1,
                      floating one_minus_beta2, floating beta2, floating step_size,
                      floating bias_root, floating eps) noexcept nogil:
    """The update of n consecutive values; the reference's expressions in the same order."""
    cdef Py_ssize_t i
    cdef floating mi, vi, denom
    for i in range(n):
        mi = m[i] * beta1 + one_minus_beta1 * g[i]
        vi = v[i] * beta2 + one_minus_beta2 * (g[i] * g[i])
        m[i] = mi
        v[i] = vi
        if has_max:
            # np.maximum: a NaN on either side gives NaN
            if vi < v_max[i] or v_max[i] != v_max[i]:
                vi = v_max[i]
            v_max[i] = vi
        # sqrt in double and rounded once to float32 is sqrtf's correctly rounded result
        denom = <floating>sqrt(vi) / bias_root + eps
        p[i] -= step_size * (mi / denom)


def _adam(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
          floating[::1] v_max, bint has_max, double one_minus_beta1, double beta1,
          double one_minus_beta2, double beta2, double step_size, double bias_root, double eps,
          int num_threads):
    cdef Py_ssize_t n = p.shape[0], blocks = (n + BLOCK - 1) // BLOCK, b, start
    if n == 0:
        return
    # Parallel over blocks of values: each value is read and written by exactly one thread.
    for b in prange(blocks, nogil=True, schedule="static", num_threads=num_threads):
        start = b * BLOCK
        _adam_block(&p[start], &g[start], &m[start], &v[start], &v_max[start], has_max,
                    min(BLOCK, n - start), <floating>one_minus_beta1, <floating>beta1,
                    <floating>one_minus_beta2, <floating>beta2, <floating>step_size,
                    <floating>bias_root, <floating>eps)
