# cython: language_level=3
"""Resizing kernels: bilinear and nearest interpolation and their adjoints (compiled twin of
``edu_seg/reference/resample.py``; same functions, signatures and results).

Both resizes are separable, so each call first builds per-axis tables (for every output row
and column: which input indices, with what weights; a few hundred numbers) and then streams the
planes. Bilinear goes one axis at a time through a per-thread scratch block r (H × OW):

    r[h, ow] = b0[ow]·x[h, w0[ow]] + b1[ow]·x[h, w1[ow]]       (gather along W, H·OW values)
    y[oh, :] = a0[oh]·r[h0[oh], :] + a1[oh]·r[h1[oh], :]        (two contiguous rows: SIMD)

which for ×4 upsampling gathers 2·H·OW values instead of the 4·OH·OW of the direct four-tap
formula: 8× fewer. The gather pass runs output column outermost, so each column's taps and
weights are loaded once for all H rows.

Threads: ``prange`` over the N·C planes. The backward scatters (several outputs adding into one
input pixel) stay inside the plane a thread owns, so they never race and add in one fixed order:
results are bit-identical for any thread count.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport floorf
from libc.stdint cimport int64_t
from libc.string cimport memset

from edu_seg._kernels.workspace import per_thread_rows

cdef extern from "openmp_info.h":
    # One thread for calls touching fewer than GRAIN elements, else all (see the header).
    int _threads_for "edu_seg_threads_for"(long long n_elements) nogil
    long long EDU_SEG_GRAIN


GRAIN = EDU_SEG_GRAIN


# ===================================================================================== tables
def linear_source_taps(Py_ssize_t in_size, Py_ssize_t out_size, bint align_corners, scale=None):
    """Taps (i0, i1) and weight of i1 per output index; see
    ``edu_seg.reference.resample.linear_source_taps`` for the rules."""
    i0 = np.empty(out_size, dtype=np.int64)
    i1 = np.empty(out_size, dtype=np.int64)
    lam = np.empty(out_size, dtype=np.float64)
    cdef int64_t[::1] i0_ = i0, i1_ = i1
    cdef double[::1] lam_ = lam
    cdef double step, src
    cdef Py_ssize_t o, i
    if align_corners:
        step = (in_size - 1) / <double>(out_size - 1) if out_size > 1 else 0.0
    else:
        # An axis that keeps its size is copied whatever the scale factor (PyTorch's rule).
        if scale is not None and out_size != in_size:
            step = 1.0 / scale
        else:
            step = in_size / <double>out_size
    for o in range(out_size):
        if align_corners:
            src = o * step
        else:
            src = max((o + 0.5) * step - 0.5, 0.0)
        i = min(<Py_ssize_t>src, in_size - 1)  # src >= 0, so truncation is floor
        i0_[o] = i
        i1_[o] = min(i + 1, in_size - 1)
        lam_[o] = src - i
    return i0, i1, lam


def nearest_source_index(Py_ssize_t in_size, Py_ssize_t out_size, scale=None):
    """Input index per output index, in float32 like PyTorch; see
    ``edu_seg.reference.resample.nearest_source_index``."""
    src = np.empty(out_size, dtype=np.int64)
    cdef int64_t[::1] src_ = src
    cdef float step
    cdef Py_ssize_t o
    # PyTorch ignores the scale where the size is kept or exactly doubled (its fast paths).
    if scale is not None and out_size != in_size and out_size != 2 * in_size:
        step = <float>(1.0 / scale)
    else:
        step = <float>in_size / <float>out_size
    for o in range(out_size):
        src_[o] = min(<Py_ssize_t>floorf(<float>o * step), in_size - 1)
    return src


def _linear_weights(in_size, out_size, align_corners, scale, dtype):
    """Taps and both weights in the data's dtype (the same rounding as the reference)."""
    i0, i1, lam = linear_source_taps(in_size, out_size, align_corners, scale)
    lam = lam.astype(dtype)
    return i0, i1, 1 - lam, lam


def _scales(scales):
    return (None, None) if scales is None else scales


# =================================================================================== bilinear
def _bilinear_planes(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                     const int64_t[::1] h0, const int64_t[::1] h1,
                     const floating[::1] a0, const floating[::1] a1,
                     const int64_t[::1] w0, const int64_t[::1] w1,
                     const floating[::1] b0, const floating[::1] b1,
                     floating[:, ::1] work, int num_threads):
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t OH = y.shape[1], OW = y.shape[2]
    cdef Py_ssize_t p, h, oh, ow
    cdef floating* r
    cdef const floating* r0
    cdef const floating* r1
    cdef floating* out
    cdef const floating* col0
    cdef const floating* col1
    cdef floating s0, s1
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        r = &work[threadid(), 0]
        # Along W: every input row becomes OW values (a gather through the column table).
        # Output column outermost, so its taps and weights are loaded once for all H rows.
        for ow in range(OW):
            col0 = &x[p, 0, w0[ow]]
            col1 = &x[p, 0, w1[ow]]
            s0 = b0[ow]
            s1 = b1[ow]
            for h in range(H):
                r[h * OW + ow] = col0[h * W] * s0 + col1[h * W] * s1
        # Along H: each output row blends two rows of r (contiguous, vectorised).
        for oh in range(OH):
            r0 = &r[h0[oh] * OW]
            r1 = &r[h1[oh] * OW]
            s0 = a0[oh]
            s1 = a1[oh]
            out = &y[p, oh, 0]
            for ow in range(OW):
                out[ow] = r0[ow] * s0 + r1[ow] * s1


def interpolate_bilinear_forward(x, out_hw, align_corners, scales):
    """Bilinear resize; see ``edu_seg.reference.resample.interpolate_bilinear_forward``.

    x: (N, C, H, W) -> y: (N, C, OH, OW).
    """
    N, C, H, W = x.shape
    (OH, OW), (sh, sw) = out_hw, _scales(scales)
    h0, h1, a0, a1 = _linear_weights(H, OH, align_corners, sh, x.dtype)
    w0, w1, b0, b1 = _linear_weights(W, OW, align_corners, sw, x.dtype)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    _bilinear_planes(x.reshape(N * C, H, W), y.reshape(N * C, OH, OW),
                     h0, h1, a0, a1, w0, w1, b0, b1, per_thread_rows(H * OW, x.dtype),
                     _threads_for(x.size + y.size))
    return y


def _bilinear_backward_planes(const floating[:, :, ::1] dy, floating[:, :, ::1] dx,
                              const int64_t[::1] h0, const int64_t[::1] h1,
                              const floating[::1] a0, const floating[::1] a1,
                              const int64_t[::1] w0, const int64_t[::1] w1,
                              const floating[::1] b0, const floating[::1] b1,
                              floating[:, ::1] work, int num_threads):
    cdef Py_ssize_t P = dx.shape[0], H = dx.shape[1], W = dx.shape[2]
    cdef Py_ssize_t OH = dy.shape[1], OW = dy.shape[2]
    cdef Py_ssize_t p, h, oh, ow
    cdef floating* dr
    cdef floating* d0
    cdef floating* d1
    cdef floating* col
    cdef const floating* g
    cdef floating s0, s1
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        dr = &work[threadid(), 0]
        memset(dr, 0, H * OW * sizeof(floating))
        memset(&dx[p, 0, 0], 0, H * W * sizeof(floating))
        # Adjoint of the H step: output row oh adds its share into rows h0[oh] and h1[oh] of dr.
        # Same order as the reference (all h0 shares, then all h1 shares).
        for oh in range(OH):
            d0 = &dr[h0[oh] * OW]
            g = &dy[p, oh, 0]
            s0 = a0[oh]
            for ow in range(OW):
                d0[ow] = d0[ow] + g[ow] * s0
        for oh in range(OH):
            d1 = &dr[h1[oh] * OW]
            g = &dy[p, oh, 0]
            s1 = a1[oh]
            for ow in range(OW):
                d1[ow] = d1[ow] + g[ow] * s1
        # Adjoint of the W step: scatter each dr value into its two input columns. Output
        # column outermost, as in the forward; each dx pixel still adds in the reference's order.
        for ow in range(OW):
            col = &dx[p, 0, w0[ow]]
            s0 = b0[ow]
            for h in range(H):
                col[h * W] = col[h * W] + dr[h * OW + ow] * s0
        for ow in range(OW):
            col = &dx[p, 0, w1[ow]]
            s1 = b1[ow]
            for h in range(H):
                col[h * W] = col[h * W] + dr[h * OW + ow] * s1


def interpolate_bilinear_backward(dy, in_hw, align_corners, scales):
    """Adjoint of the bilinear resize; see
    ``edu_seg.reference.resample.interpolate_bilinear_backward``.

    dy: (N, C, OH, OW) -> dx: (N, C, H, W).
    """
    N, C, OH, OW = dy.shape
    (H, W), (sh, sw) = in_hw, _scales(scales)
    h0, h1, a0, a1 = _linear_weights(H, OH, align_corners, sh, dy.dtype)
    w0, w1, b0, b1 = _linear_weights(W, OW, align_corners, sw, dy.dtype)
    dx = np.empty((N, C, H, W), dtype=dy.dtype)
    _bilinear_backward_planes(dy.reshape(N * C, OH, OW), dx.reshape(N * C, H, W),
                              h0, h1, a0, a1, w0, w1, b0, b1, per_thread_rows(H * OW, dy.dtype),
                              _threads_for(dy.size + dx.size))
    return dx


# ==================================================================================== nearest
def _nearest_planes(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                    const int64_t[::1] rows, const int64_t[::1] cols, int num_threads):
    cdef Py_ssize_t P = x.shape[0], OH = y.shape[1], OW = y.shape[2]
    cdef Py_ssize_t p, oh, ow
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        for oh in range(OH):
            for ow in range(OW):
                y[p, oh, ow] = x[p, rows[oh], cols[ow]]


def interpolate_nearest_forward(x, out_hw, scales):
    """Nearest resize; see ``edu_seg.reference.resample.interpolate_nearest_forward``.

    x: (N, C, H, W) -> y: (N, C, OH, OW).
    """
    N, C, H, W = x.shape
    (OH, OW), (sh, sw) = out_hw, _scales(scales)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    _nearest_planes(x.reshape(N * C, H, W), y.reshape(N * C, OH, OW),
                    nearest_source_index(H, OH, sh), nearest_source_index(W, OW, sw),
                    _threads_for(x.size + y.size))
    return y


def _nearest_backward_planes(const floating[:, :, ::1] dy, floating[:, :, ::1] dx,
                             const int64_t[::1] rows, const int64_t[::1] cols, int num_threads):
    cdef Py_ssize_t P = dx.shape[0], H = dx.shape[1], W = dx.shape[2]
    cdef Py_ssize_t OH = dy.shape[1], OW = dy.shape[2]
    cdef Py_ssize_t p, oh, ow
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        memset(&dx[p, 0, 0], 0, H * W * sizeof(floating))
        for oh in range(OH):
            for ow in range(OW):
                dx[p, rows[oh], cols[ow]] += dy[p, oh, ow]


def interpolate_nearest_backward(dy, in_hw, scales):
    """Adjoint of the nearest resize; see
    ``edu_seg.reference.resample.interpolate_nearest_backward``.

    dy: (N, C, OH, OW) -> dx: (N, C, H, W).
    """
    N, C, OH, OW = dy.shape
    (H, W), (sh, sw) = in_hw, _scales(scales)
    dx = np.empty((N, C, H, W), dtype=dy.dtype)
    _nearest_backward_planes(dy.reshape(N * C, OH, OW), dx.reshape(N * C, H, W),
                             nearest_source_index(H, OH, sh), nearest_source_index(W, OW, sw),
                             _threads_for(dy.size + dx.size))
    return dx
