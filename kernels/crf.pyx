# cython: language_level=3
"""The messages of the fully connected CRF over all pixel pairs (compiled twin of
``edu_seg/reference/crf.py``; same function, signature and results).

For every pixel i and label l,

    m_i(l) = Σ_{j≠i} [ w1·exp(−|p_i−p_j|²/(2θα²) − |I_i−I_j|²/(2θβ²))
                     + w2·exp(−|p_i−p_j|²/(2θγ²)) ] · q_j(l).

16.8 million pairs at 64×64, so the work per pair decides the speed. Three things keep it small:

- The positions lie on the pixel grid, so the spatial factors are separable and come from
  tables: exp(−|p_i−p_j|²/(2θ²)) = ey[|Δrow|]·ex[|Δcol|], with ey and ex (and w1, w2 folded
  in) computed once per call for each of the 2H−1 row and 2W−1 column offsets. The only
  ``exp`` left per pair is the colour one (measured: one ``exp`` per pair instead of two and no
  5-D distance nearly halves the time).
- Colours are divided by √2·θβ once, so the colour exponent is a plain squared distance.
- Pixel i walks the image one row of j's at a time. The kernel row is computed once and then
  added, times q, into L×W running sums — an elementwise loop the compiler vectorises, where a
  dot product (a sequential reduction without -ffast-math) would not be. The W partial sums of
  each label are added up at the end.

Threads: ``prange`` over pixels i; each i writes only its own output column and uses its own
scratch row, so there are no races, and the sums run in one fixed order whatever the number of
threads: results are bit-identical for any thread count.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport exp, expf

from edu_seg._kernels.workspace import per_thread_rows

cdef extern from "openmp_info.h":
    # One thread for calls touching fewer than GRAIN elements, else all (see the header).
    int _threads_for "edu_seg_threads_for"(long long n_elements) nogil


def _offset_table(Py_ssize_t size, double theta, double weight, dtype):
    """weight·exp(−d²/(2θ²)) for the offsets d = −(size−1) … size−1 (index d + size − 1)."""
    d = np.arange(-(size - 1), size, dtype=np.float64)
    return (weight * np.exp(-d * d / (2.0 * theta * theta))).astype(dtype)


def _messages(const floating[:, ::1] colour, const floating[:, ::1] q,
              const floating[::1] ay, const floating[::1] ax,
              const floating[::1] gy, const floating[::1] gx,
              floating self_weight, Py_ssize_t H, Py_ssize_t W,
              floating[:, ::1] out, floating[:, ::1] work, int num_threads):
    cdef Py_ssize_t L = q.shape[0], N = H * W
    cdef Py_ssize_t i, yi, xi, yj, xj, l, row
    cdef floating ci0, ci1, ci2, d0, d1, d2, sa, sg, total
    # exp of a very negative number underflows, and libm's underflow path (it sets errno) is
    # slow: measured 3.5x slower in float32 on random colours. Capping the exponent where exp
    # is still a normal number (e^-87 in float32, e^-700 in float64) changes a kernel value by
    # less than 1e-37, far below rounding.
    cdef floating max_exponent = 87 if floating is float else 700
    cdef floating* kr        # the kernel row (W values), then W·L partial sums
    cdef floating* acc
    cdef const floating* axr
    cdef const floating* gxr
    cdef const floating* c0
    cdef const floating* c1
    cdef const floating* c2
    cdef const floating* ql
    for i in prange(N, nogil=True, schedule="static", num_threads=num_threads):
        kr = &work[threadid(), 0]
        acc = kr + W
        yi = i // W
        xi = i - yi * W
        ci0 = colour[0, i]
        ci1 = colour[1, i]
        ci2 = colour[2, i]
        # Shift the column tables so that axr[xj] is the factor of column offset xj − xi.
        axr = &ax[W - 1 - xi]
        gxr = &gx[W - 1 - xi]
        for xj in range(L * W):
            acc[xj] = 0
        for yj in range(H):
            row = yj * W
            sa = ay[yj - yi + H - 1]
            sg = gy[yj - yi + H - 1]
            c0 = &colour[0, row]
            c1 = &colour[1, row]
            c2 = &colour[2, row]
            for xj in range(W):
                d0 = c0[xj] - ci0
                d1 = c1[xj] - ci1
                d2 = c2[xj] - ci2
                kr[xj] = min(d0 * d0 + d1 * d1 + d2 * d2, max_exponent)
            for xj in range(W):
                if floating is float:
                    kr[xj] = expf(-kr[xj])
                else:
                    kr[xj] = exp(-kr[xj])
            for xj in range(W):
                kr[xj] = sa * axr[xj] * kr[xj] + sg * gxr[xj]
            for l in range(L):
                ql = &q[l, row]
                for xj in range(W):
                    acc[l * W + xj] += kr[xj] * ql[xj]
        for l in range(L):
            total = 0
            for xj in range(W):
                total = total + acc[l * W + xj]
            # Both kernels are 1 at j = i: the loop counted the self term, which j ≠ i excludes.
            out[l, i] = total - self_weight * q[l, i]


def dense_crf_messages(image, q, theta_alpha, theta_beta, theta_gamma, w1, w2):
    """Weighted Gaussian messages over all pixel pairs j ≠ i; see
    ``edu_seg.reference.crf.dense_crf_messages``.

    image: (3, H, W) colours 0–255, q: (L, H, W) -> messages: (L, H, W), q's dtype.
    """
    L, H, W = q.shape
    dtype = q.dtype
    colour = np.ascontiguousarray(
        (image / (np.sqrt(2.0) * theta_beta)).reshape(3, H * W), dtype=dtype)
    out = np.empty((L, H * W), dtype=dtype)
    _messages(
        colour, q.reshape(L, H * W),
        _offset_table(H, theta_alpha, w1, dtype), _offset_table(W, theta_alpha, 1.0, dtype),
        _offset_table(H, theta_gamma, w2, dtype), _offset_table(W, theta_gamma, 1.0, dtype),
        w1 + w2, H, W, out, per_thread_rows((L + 1) * W, dtype),
        _threads_for(H * W * H * W))
    return out.reshape(L, H, W)
