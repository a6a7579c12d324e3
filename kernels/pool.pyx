# cython: language_level=3
"""Pooling kernels: max, average, adaptive and max-unpooling (compiled twin of
``edu_seg/reference/pool.py``; same functions, signatures and results).

Layout: an (N, C, H, W) array is seen as N·C independent planes of H×W pixels. Every loop here
is ``prange`` over planes: a thread owns whole planes, reading and writing only its own, so the
backward scatters (several windows adding into one pixel) never race and add in the same order
whatever the thread count; results are bit-identical for 1 and 2 threads.

These ops are memory-bound: each pixel is read once or twice and a few compares or adds are
done with it, so the work is to stream each plane once, keep it in cache while it is used, and
avoid allocating what the caller does not get back.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t
from libc.string cimport memset

from edu_seg._kernels.workspace import per_thread_rows

cdef extern from "openmp_info.h":
    # One thread for calls touching fewer than GRAIN elements, else all (see the header).
    int _threads_for "edu_seg_threads_for"(long long n_elements) nogil
    long long EDU_SEG_GRAIN


GRAIN = EDU_SEG_GRAIN


def pool_output_size(size, kernel_size, stride, padding, dilation=1, ceil_mode=False):
    """Number of windows along one axis; see ``edu_seg.reference.pool.pool_output_size``."""
    room = size + 2 * padding - (dilation * (kernel_size - 1) + 1)
    if not ceil_mode:
        return room // stride + 1
    out = -(-room // stride) + 1
    if (out - 1) * stride >= size + padding:  # last window would start in the right padding
        out -= 1
    return out


def adaptive_pool_bins(Py_ssize_t size, Py_ssize_t bins):
    """Start and end of each bin; see ``edu_seg.reference.pool.adaptive_pool_bins``.

    A typed loop: NumPy's version costs more than pooling a small feature map.
    """
    start = np.empty(bins, dtype=np.int64)
    end = np.empty(bins, dtype=np.int64)
    cdef int64_t[::1] start_ = start, end_ = end
    cdef Py_ssize_t j
    for j in range(bins):
        start_[j] = (j * size) // bins                  # operands >= 0: C division is floor
        end_[j] = ((j + 1) * size + bins - 1) // bins
    return start, end


cdef inline bint _beats(floating v, floating best) noexcept nogil:
    """Does v replace the best so far? Strictly larger (ties keep the first), or the first NaN.

    Written without branches (``not (v <= best)`` is "larger, or v is NaN"; ``best == best``
    is "best is not NaN yet"): on random data a branch here is mispredicted half the time,
    which made this loop three times slower.
    """
    return (not (v <= best)) & (best == best)


def _inside_outputs(out, size, kernel, stride, padding, dilation):
    """For each tap k of a window along one axis: the outputs [lo[k], hi[k]) whose tap k lands
    inside [0, size). Tap k of output o reads position o·stride + k·dilation − padding."""
    lo = np.empty(kernel, dtype=np.int64)
    hi = np.empty(kernel, dtype=np.int64)
    for k in range(kernel):
        offset = k * dilation - padding
        lo[k] = min(max(-(offset // stride), 0), out)            # first o with position >= 0
        hi[k] = min(max((size - 1 - offset) // stride + 1, lo[k]), out)  # last with < size
    return lo, hi


# ================================================================================ max pooling
def _max_pool2d_planes(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                       int64_t[:, :, ::1] indices, const int64_t[::1] ow_lo,
                       const int64_t[::1] ow_hi, int KH, int KW, int SH, int SW,
                       int PH, int PW, int DH, int DW, int num_threads):
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t OH = y.shape[1], OW = y.shape[2]
    cdef Py_ssize_t p, oh, ow, kh, kw, h, offset
    cdef const floating* row
    cdef floating* best
    cdef int64_t* best_at
    cdef floating v
    cdef bint take
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        for oh in range(OH):
            # One output row at a time, taps outermost (the reference's loop order): for a
            # fixed tap, the inner loop over ow is a strided walk along one input row.
            best = &y[p, oh, 0]
            best_at = &indices[p, oh, 0]
            for ow in range(OW):
                best[ow] = 0
                best_at[ow] = -1  # no tap inside the input yet: the first one always wins
            for kh in range(KH):
                h = oh * SH - PH + kh * DH
                if h < 0 or h >= H:  # a padding row is -inf: it never wins
                    continue
                row = &x[p, h, 0]
                for kw in range(KW):
                    offset = kw * DW - PW
                    for ow in range(ow_lo[kw], ow_hi[kw]):  # the outputs whose tap is inside
                        v = row[ow * SW + offset]
                        take = (best_at[ow] < 0) | _beats(v, best[ow])
                        best[ow] = v if take else best[ow]
                        best_at[ow] = h * W + ow * SW + offset if take else best_at[ow]


def max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode):
    """Max pooling with argmax indices; see ``edu_seg.reference.pool.max_pool2d_forward``.

    x: (N, C, H, W) -> y: (N, C, OH, OW), indices: int64 (N, C, OH, OW), flat h*W + w.
    """
    N, C, H, W = x.shape
    (KH, KW), (SH, SW), (PH, PW), (DH, DW) = kernel_size, stride, padding, dilation
    OH = pool_output_size(H, KH, SH, PH, DH, ceil_mode)
    OW = pool_output_size(W, KW, SW, PW, DW, ceil_mode)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    indices = np.empty((N, C, OH, OW), dtype=np.int64)
    ow_lo, ow_hi = _inside_outputs(OW, W, KW, SW, PW, DW)
    _max_pool2d_planes(x.reshape(N * C, H, W), y.reshape(N * C, OH, OW),
                       indices.reshape(N * C, OH, OW), ow_lo, ow_hi, KH, KW, SH, SW, PH, PW,
                       DH, DW, _threads_for(x.size + y.size))
    return y, indices


def _scatter_add_planes(const floating[:, ::1] dy, const int64_t[:, ::1] indices,
                        floating[:, ::1] dx, int num_threads):
    """dx[p, indices[p, j]] += dy[p, j], with dx zeroed here plane by plane."""
    cdef Py_ssize_t P = dy.shape[0], L = dy.shape[1], HW = dx.shape[1]
    cdef Py_ssize_t p, j
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        # Zero the plane right before scattering into it: the same thread, while it is in cache.
        memset(&dx[p, 0], 0, HW * sizeof(floating))
        for j in range(L):
            dx[p, indices[p, j]] += dy[p, j]


def max_pool2d_backward(dy, indices, x_shape):
    """Route dy to the argmax; see ``edu_seg.reference.pool.max_pool2d_backward``.

    dy, indices: (N, C, OH, OW) -> dx: (N, C, H, W).
    """
    N, C, H, W = x_shape
    dx = np.empty((N, C, H, W), dtype=dy.dtype)
    _scatter_add_planes(dy.reshape(N * C, -1), indices.reshape(N * C, -1),
                        dx.reshape(N * C, H * W), _threads_for(dy.size + dx.size))
    return dx


def _scatter_set_planes(const floating[:, ::1] x, const int64_t[:, ::1] indices,
                        floating[:, ::1] y, int num_threads):
    """y[p, indices[p, j]] = x[p, j] (later j wins), with y zeroed here plane by plane."""
    cdef Py_ssize_t P = x.shape[0], L = x.shape[1], OHW = y.shape[1]
    cdef Py_ssize_t p, j
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        memset(&y[p, 0], 0, OHW * sizeof(floating))
        for j in range(L):
            y[p, indices[p, j]] = x[p, j]


def max_unpool2d_forward(x, indices, output_hw):
    """Put values back at their indices; see ``edu_seg.reference.pool.max_unpool2d_forward``.

    x, indices: (N, C, H, W) -> y: (N, C, OH, OW). The indices were checked to lie in
    [0, OH·OW) by the op: this loop writes wherever they say.
    """
    N, C = x.shape[:2]
    OH, OW = output_hw
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    _scatter_set_planes(x.reshape(N * C, -1), indices.reshape(N * C, -1),
                        y.reshape(N * C, OH * OW), _threads_for(x.size + y.size))
    return y


def _gather_planes(const floating[:, ::1] dy, const int64_t[:, ::1] indices,
                   floating[:, ::1] dx, int num_threads):
    """dx[p, j] = dy[p, indices[p, j]]."""
    cdef Py_ssize_t P = dx.shape[0], L = dx.shape[1]
    cdef Py_ssize_t p, j
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        for j in range(L):
            dx[p, j] = dy[p, indices[p, j]]


def max_unpool2d_backward(dy, indices):
    """Gather dy at the indices; see ``edu_seg.reference.pool.max_unpool2d_backward``.

    dy: (N, C, OH, OW), indices: (N, C, H, W) -> dx: (N, C, H, W).
    """
    N, C = indices.shape[:2]
    dx = np.empty(indices.shape, dtype=dy.dtype)
    _gather_planes(dy.reshape(N * C, -1), indices.reshape(N * C, -1), dx.reshape(N * C, -1),
                   _threads_for(dy.size + dx.size))
    return dx


# ============================================================================ average pooling
def _avg_divisors(size, out, kernel, stride, padding, count_include_pad):
    """Window length per output along one axis, the factor average pooling divides by; see
    ``edu_seg.reference.pool._avg_divisors`` (PyTorch's rule)."""
    start = np.arange(out, dtype=np.int64) * stride - padding
    end = np.minimum(start + kernel, size + padding)
    if not count_include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, size)
    return end - start


def _avg_pool2d_planes(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                       const int64_t[::1] div_h, const int64_t[::1] div_w,
                       const int64_t[::1] ow_lo, const int64_t[::1] ow_hi,
                       int KH, int KW, int SH, int SW, int PH, int PW, int num_threads):
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1]
    cdef Py_ssize_t OH = y.shape[1], OW = y.shape[2]
    cdef Py_ssize_t p, oh, ow, kh, kw, h, offset
    cdef const floating* row
    cdef floating* total
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        for oh in range(OH):
            # Taps outermost, as in max pooling; padding taps add zeros, so they are skipped.
            # The sum runs over the taps in (kh, kw) order, exactly like the reference's.
            total = &y[p, oh, 0]
            for ow in range(OW):
                total[ow] = 0
            for kh in range(KH):
                h = oh * SH - PH + kh
                if h < 0 or h >= H:
                    continue
                row = &x[p, h, 0]
                for kw in range(KW):
                    offset = kw - PW
                    for ow in range(ow_lo[kw], ow_hi[kw]):
                        total[ow] = total[ow] + row[ow * SW + offset]
            for ow in range(OW):
                total[ow] = total[ow] / <floating>(div_h[oh] * div_w[ow])


def avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    """Average pooling; see ``edu_seg.reference.pool.avg_pool2d_forward``.

    x: (N, C, H, W) -> y: (N, C, OH, OW).
    """
    N, C, H, W = x.shape
    (KH, KW), (SH, SW), (PH, PW) = kernel_size, stride, padding
    OH = pool_output_size(H, KH, SH, PH, 1, ceil_mode)
    OW = pool_output_size(W, KW, SW, PW, 1, ceil_mode)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    ow_lo, ow_hi = _inside_outputs(OW, W, KW, SW, PW, 1)
    _avg_pool2d_planes(x.reshape(N * C, H, W), y.reshape(N * C, OH, OW),
                       _avg_divisors(H, OH, KH, SH, PH, count_include_pad),
                       _avg_divisors(W, OW, KW, SW, PW, count_include_pad),
                       ow_lo, ow_hi, KH, KW, SH, SW, PH, PW, _threads_for(x.size + y.size))
    return y


def _avg_pool2d_backward_planes(const floating[:, :, ::1] dy, floating[:, :, ::1] dx,
                                const int64_t[::1] div_h, const int64_t[::1] div_w,
                                const int64_t[::1] ow_lo, const int64_t[::1] ow_hi,
                                int KH, int KW, int SH, int SW, int PH, int PW,
                                floating[:, ::1] work, int num_threads):
    cdef Py_ssize_t P = dx.shape[0], H = dx.shape[1], W = dx.shape[2]
    cdef Py_ssize_t OH = dy.shape[1], OW = dy.shape[2]
    cdef Py_ssize_t p, oh, ow, kh, kw, h, offset
    cdef floating* row
    cdef floating* share
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        share = &work[threadid(), 0]
        memset(&dx[p, 0, 0], 0, H * W * sizeof(floating))
        for oh in range(OH):
            for ow in range(OW):
                share[ow] = dy[p, oh, ow] / <floating>(div_h[oh] * div_w[ow])
            # The forward's loops with the data flowing back: each tap adds its share.
            for kh in range(KH):
                h = oh * SH - PH + kh
                if h < 0 or h >= H:
                    continue
                row = &dx[p, h, 0]
                for kw in range(KW):
                    offset = kw - PW
                    for ow in range(ow_lo[kw], ow_hi[kw]):
                        row[ow * SW + offset] = row[ow * SW + offset] + share[ow]


def avg_pool2d_backward(dy, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad):
    """Spread dy / divisor over each window; see ``edu_seg.reference.pool.avg_pool2d_backward``.

    dy: (N, C, OH, OW) -> dx: (N, C, H, W). ceil_mode is implied by dy's shape.
    """
    N, C, H, W = x_shape
    (KH, KW), (SH, SW), (PH, PW) = kernel_size, stride, padding
    OH, OW = dy.shape[2:]
    dx = np.empty((N, C, H, W), dtype=dy.dtype)
    ow_lo, ow_hi = _inside_outputs(OW, W, KW, SW, PW, 1)
    _avg_pool2d_backward_planes(dy.reshape(N * C, OH, OW), dx.reshape(N * C, H, W),
                                _avg_divisors(H, OH, KH, SH, PH, count_include_pad),
                                _avg_divisors(W, OW, KW, SW, PW, count_include_pad),
                                ow_lo, ow_hi, KH, KW, SH, SW, PH, PW, per_thread_rows(OW, dy.dtype),
                                _threads_for(dy.size + dx.size))
    return dx


# ============================================================================ adaptive pooling
def _adaptive_avg_pool2d_planes(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                                const int64_t[::1] h0, const int64_t[::1] h1,
                                const int64_t[::1] w0, const int64_t[::1] w1,
                                floating[:, ::1] work, int num_threads):
    cdef Py_ssize_t P = x.shape[0], W = x.shape[2]
    cdef Py_ssize_t OH = y.shape[1], OW = y.shape[2]
    cdef Py_ssize_t p, oh, ow, h, w
    cdef floating total
    cdef floating* band
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        # This thread's row of column sums. Summing a bin's rows column-wise is a contiguous,
        # vectorisable loop; a running sum over the bin would be one long dependency chain.
        band = &work[threadid(), 0]
        for oh in range(OH):
            for w in range(W):
                band[w] = 0
            for h in range(h0[oh], h1[oh]):
                for w in range(W):
                    band[w] = band[w] + x[p, h, w]
            for ow in range(OW):
                total = 0
                for w in range(w0[ow], w1[ow]):
                    total = total + band[w]
                y[p, oh, ow] = total / <floating>((h1[oh] - h0[oh]) * (w1[ow] - w0[ow]))


def adaptive_avg_pool2d_forward(x, output_hw):
    """Adaptive average pooling; see ``edu_seg.reference.pool.adaptive_avg_pool2d_forward``.

    x: (N, C, H, W) -> y: (N, C, OH, OW).
    """
    N, C, H, W = x.shape
    OH, OW = output_hw
    h0, h1 = adaptive_pool_bins(H, OH)
    w0, w1 = adaptive_pool_bins(W, OW)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    _adaptive_avg_pool2d_planes(x.reshape(N * C, H, W), y.reshape(N * C, OH, OW), h0, h1, w0, w1,
                                per_thread_rows(W, x.dtype), _threads_for(x.size + y.size))
    return y


def _adaptive_avg_pool2d_backward_planes(const floating[:, :, ::1] dy, floating[:, :, ::1] dx,
                                         const int64_t[::1] h0, const int64_t[::1] h1,
                                         const int64_t[::1] w0, const int64_t[::1] w1,
                                         floating[:, ::1] work, int num_threads):
    cdef Py_ssize_t P = dx.shape[0], H = dx.shape[1], W = dx.shape[2]
    cdef Py_ssize_t OH = dy.shape[1], OW = dy.shape[2]
    cdef Py_ssize_t p, oh, ow, h, w
    cdef floating share
    cdef floating* row
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        # The forward's band in reverse: spread bin row oh's gradients along their columns
        # into one row, then add that row to every input row of the band (contiguous adds).
        row = &work[threadid(), 0]
        memset(&dx[p, 0, 0], 0, H * W * sizeof(floating))
        for oh in range(OH):
            for w in range(W):
                row[w] = 0
            for ow in range(OW):
                share = dy[p, oh, ow] / <floating>((h1[oh] - h0[oh]) * (w1[ow] - w0[ow]))
                for w in range(w0[ow], w1[ow]):
                    row[w] = row[w] + share
            for h in range(h0[oh], h1[oh]):
                for w in range(W):
                    dx[p, h, w] = dx[p, h, w] + row[w]


def adaptive_avg_pool2d_backward(dy, x_shape):
    """Spread dy / count over each bin; see ``edu_seg.reference.pool.adaptive_avg_pool2d_backward``.

    dy: (N, C, OH, OW) -> dx: (N, C, H, W).
    """
    N, C, H, W = x_shape
    OH, OW = dy.shape[2:]
    h0, h1 = adaptive_pool_bins(H, OH)
    w0, w1 = adaptive_pool_bins(W, OW)
    dx = np.empty((N, C, H, W), dtype=dy.dtype)
    _adaptive_avg_pool2d_backward_planes(dy.reshape(N * C, OH, OW), dx.reshape(N * C, H, W),
                                         h0, h1, w0, w1, per_thread_rows(W, dy.dtype),
                                         _threads_for(dy.size + dx.size))
    return dx


def _adaptive_max_pool2d_planes(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                                int64_t[:, :, ::1] indices,
                                const int64_t[::1] h0, const int64_t[::1] h1,
                                const int64_t[::1] w0, const int64_t[::1] w1, int num_threads):
    cdef Py_ssize_t P = x.shape[0], W = x.shape[2]
    cdef Py_ssize_t OH = y.shape[1], OW = y.shape[2]
    cdef Py_ssize_t p, oh, ow, h, w, best_at
    cdef floating v, best
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        for oh in range(OH):
            for ow in range(OW):
                # Bins are never empty: start from their first pixel.
                best = x[p, h0[oh], w0[ow]]
                best_at = h0[oh] * W + w0[ow]
                for h in range(h0[oh], h1[oh]):
                    for w in range(w0[ow], w1[ow]):
                        v = x[p, h, w]
                        if _beats(v, best):
                            best = v
                            best_at = h * W + w
                y[p, oh, ow] = best
                indices[p, oh, ow] = best_at


def adaptive_max_pool2d_forward(x, output_hw):
    """Adaptive max pooling with indices; see
    ``edu_seg.reference.pool.adaptive_max_pool2d_forward``.

    x: (N, C, H, W) -> y: (N, C, OH, OW), indices: int64 (N, C, OH, OW). Backward:
    :func:`max_pool2d_backward`.
    """
    N, C, H, W = x.shape
    OH, OW = output_hw
    h0, h1 = adaptive_pool_bins(H, OH)
    w0, w1 = adaptive_pool_bins(W, OW)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    indices = np.empty((N, C, OH, OW), dtype=np.int64)
    _adaptive_max_pool2d_planes(x.reshape(N * C, H, W), y.reshape(N * C, OH, OW),
                                indices.reshape(N * C, OH, OW), h0, h1, w0, w1,
                                _threads_for(x.size + y.size))
    return y, indices
