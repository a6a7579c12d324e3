# cython: language_level=3
"""Batch normalisation kernels, compiled (the NumPy twin is ``edu_seg/reference/norm.py``).

Same functions, signatures and results as the reference; its docstring has the formulas.
What this version adds is speed: every pass over the data is one C loop over a contiguous
(n, c) plane of H·W values, threads split the CHANNELS (so each per-channel sum is made by one
thread, in one order, and the result does not depend on the thread count), and the sums run
in double precision with several independent accumulators.
"""
cimport cython
from cython.parallel cimport prange

import numpy as np

cdef extern from "openmp_info.h":
    # One thread for calls touching fewer than GRAIN elements, else all (see the header).
    int _threads_for "edu_seg_threads_for"(long long n_elements) nogil
    long long EDU_SEG_GRAIN

ctypedef fused floating:
    float
    double


GRAIN = EDU_SEG_GRAIN


cdef inline void _shifted_sums(const floating* x, Py_ssize_t L, double k,
                               double* s1, double* s2) noexcept nogil:
    """Add Σ (x − k) and Σ (x − k)² over x[0:L] into s1[0], s2[0]."""
    # Four accumulators per sum: one running sum would make every add wait for the previous
    # one (~4 cycles latency); four independent chains keep the FPU busy and let the compiler
    # use SIMD lanes, while the order of additions stays fixed.
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0
    cdef double d0, d1, d2, d3
    cdef Py_ssize_t i = 0
    while i + 4 <= L:
        d0 = x[i] - k
        d1 = x[i + 1] - k
        d2 = x[i + 2] - k
        d3 = x[i + 3] - k
        a0 += d0
        a1 += d1
        a2 += d2
        a3 += d3
        b0 += d0 * d0
        b1 += d1 * d1
        b2 += d2 * d2
        b3 += d3 * d3
        i += 4
    while i < L:
        d0 = x[i] - k
        a0 += d0
        b0 += d0 * d0
        i += 1
    s1[0] += (a0 + a1) + (a2 + a3)
    s2[0] += (b0 + b1) + (b2 + b3)


cdef inline void _dot_sums(const floating* dy, const floating* x, Py_ssize_t L, double k,
                           double* s1, double* s2) noexcept nogil:
    """Add Σ dy and Σ dy·(x − k) over [0:L] into s1[0], s2[0]."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0
    cdef Py_ssize_t i = 0
    while i + 4 <= L:
        a0 += dy[i]
        a1 += dy[i + 1]
        a2 += dy[i + 2]
        a3 += dy[i + 3]
        b0 += dy[i] * (x[i] - k)
        b1 += dy[i + 1] * (x[i + 1] - k)
        b2 += dy[i + 2] * (x[i + 2] - k)
        b3 += dy[i + 3] * (x[i + 3] - k)
        i += 4
    while i < L:
        a0 += dy[i]
        b0 += dy[i] * (x[i] - k)
        i += 1
    s1[0] += (a0 + a1) + (a2 + a3)
    s2[0] += (b0 + b1) + (b2 + b3)


cdef void _channel_stats(const floating[:, :, ::1] x, Py_ssize_t c,
                         double* mean, double* var) noexcept nogil:
    cdef Py_ssize_t N = x.shape[0], L = x.shape[2], n
    cdef double m = <double>(N * L)
    cdef double s1 = 0, s2 = 0
    # Shift by one sample of the channel: the sums of (x − k) and (x − k)² then stay small,
    # so var = E[(x−k)²] − E[x−k]² does not cancel catastrophically even when |mean| ≫ std,
    # and one pass over the data suffices.
    cdef double k = x[0, c, 0]
    for n in range(N):
        _shifted_sums(&x[n, c, 0], L, k, &s1, &s2)
    mean[0] = k + s1 / m
    var[0] = max(s2 / m - (s1 / m) * (s1 / m), 0.0)


def batch_norm_stats(x):
    """Per-channel mean and biased variance: (N, C, H, W) -> two float64 (C,) arrays."""
    N, C, H, W = x.shape
    mean = np.empty(C, dtype=np.float64)
    var = np.empty(C, dtype=np.float64)
    _stats(x.reshape(N, C, H * W), mean, var, _threads_for(x.size))
    return mean, var


def _stats(const floating[:, :, ::1] x, double[::1] mean, double[::1] var, int num_threads):
    cdef Py_ssize_t c
    for c in prange(x.shape[1], nogil=True, schedule="static", num_threads=num_threads):
        _channel_stats(x, c, &mean[c], &var[c])


def batch_norm_forward(x, mean, invstd, weight, bias):
    """y = (x − mean) · invstd · weight + bias per channel, as one multiply-add per element."""
    N, C, H, W = x.shape
    scale = weight * invstd                         # (C,) float64, computed once per channel
    shift = bias - mean * scale
    y = np.empty_like(x)
    _affine(x.reshape(N, C, H * W), y.reshape(N, C, H * W), scale, shift,
            _threads_for(2 * x.size))
    return y


def _affine(const floating[:, :, ::1] x, floating[:, :, ::1] y,
            const double[::1] scale, const double[::1] shift, int num_threads):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], p, i, n, c
    cdef floating s, t
    # Parallel over the N·C planes: each plane is written by exactly one thread.
    for p in prange(N * C, nogil=True, schedule="static", num_threads=num_threads):
        n = p // C
        c = p % C
        s = <floating>scale[c]
        t = <floating>shift[c]
        for i in range(L):
            y[n, c, i] = x[n, c, i] * s + t


def batch_norm_backward(dy, x, mean, invstd, weight, training):
    """(dx, dweight, dbias) of batch normalisation; see the reference for the formulas."""
    N, C, H, W = x.shape
    dx = np.empty_like(x)
    dweight = np.empty(C, dtype=np.float64)
    dbias = np.empty(C, dtype=np.float64)
    _backward(dy.reshape(N, C, H * W), x.reshape(N, C, H * W), dx.reshape(N, C, H * W),
              mean, invstd, weight, dweight, dbias, bool(training), _threads_for(3 * x.size))
    return dx, dweight, dbias


def _backward(const floating[:, :, ::1] dy, const floating[:, :, ::1] x, floating[:, :, ::1] dx,
              const double[::1] mean, const double[::1] invstd, const double[::1] weight,
              double[::1] dweight, double[::1] dbias, bint training, int num_threads):
    cdef Py_ssize_t c
    # Parallel over channels: the two sums of channel c and every dx[:, c] are written by one
    # thread, so there is no race and no dependence on the thread count.
    for c in prange(x.shape[1], nogil=True, schedule="static", num_threads=num_threads):
        _channel_backward(dy, x, dx, c, mean[c], invstd[c], weight[c],
                          &dweight[c], &dbias[c], training)


cdef void _channel_backward(const floating[:, :, ::1] dy, const floating[:, :, ::1] x,
                            floating[:, :, ::1] dx, Py_ssize_t c, double mean, double invstd,
                            double weight, double* dweight, double* dbias,
                            bint training) noexcept nogil:
    cdef Py_ssize_t N = x.shape[0], L = x.shape[2], n, i
    cdef double m = <double>(N * L)
    cdef double sum_dy = 0, sum_dy_xc = 0, k = weight * invstd
    cdef floating a, b, d, mu = <floating>mean
    for n in range(N):
        _dot_sums(&dy[n, c, 0], &x[n, c, 0], L, mean, &sum_dy, &sum_dy_xc)
    dbias[0] = sum_dy
    dweight[0] = sum_dy_xc * invstd                 # Σ dy · x̂
    # dx = k·(dy − Σdy/m − x̂·Σ(dy·x̂)/m) with x̂ = (x − mean)·invstd, regrouped as
    # dx = a·dy + b·(x − mean) + d: per element two multiply-adds, coefficients per channel.
    # (x − mean) is kept as a difference: b·x + const would cancel when |mean| ≫ std.
    a = <floating>k
    if training:
        b = <floating>(-k * invstd * dweight[0] / m)
        d = <floating>(-k * sum_dy / m)
    else:
        b = 0
        d = 0
    for n in range(N):
        for i in range(L):
            dx[n, c, i] = a * dy[n, c, i] + b * (x[n, c, i] - mu) + d
