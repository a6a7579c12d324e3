# cython: language_level=3
"""RoIAlign and RoIPool, forward and backward: the compiled twin of ``edu_seg/reference/roi.py``.

Same functions, same signatures, same numbers as the reference, bit for bit (read it first: it
is the textbook, this file is the engineering). The loops over boxes, bins and samples and the
bilinear helper are the reference's; what changes is where the data lives and who does what:

- **Channels last.** The reference's inner statement reads all C channels of one pixel at once
  (``w1 * x[b, :, y_lo, x_lo]``). Here that loop over C is the innermost loop and runs over a
  channels-last copy of x, ``(N, H, W, C)``, where those C values are contiguous: it compiles
  to SIMD code, and each sample's neighbours and weights are computed once for all channels.
- **Forward** runs boxes in parallel (``prange`` over k); y[k] is written by one thread. For
  RoIPool every bin's maximum runs over all C channels at once.
- **Backward is a scatter**, and bins and boxes overlap. Each work item owns whole pieces of
  dx — (image b, band of 4 rows) for RoIAlign, planes dx[b, c0:c0 + 8] for RoIPool — and visits
  the boxes of image b in order k. No two threads ever write one element, and every element
  is summed in the reference's order whatever the number of threads: results are
  bit-identical for 1, 2 or 16 threads.

Kernels validate nothing: :mod:`edu_seg.ops.roi` checks every argument first.
"""
import numpy as np

from edu_seg._kernels.workspace import per_thread_rows

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport ceil, floor, round
from libc.stdint cimport int64_t

cdef extern from "openmp_info.h":
    # One thread for calls touching fewer than GRAIN elements, else all (see the header).
    int _threads_for "edu_seg_threads_for"(long long n_elements) nogil
    long long EDU_SEG_GRAIN

# Keep C from fusing a*b + c into one FMA instruction: the NumPy reference rounds each
# product separately, and we want the same bits.
cdef extern from "roi_fp.h":
    pass

cdef extern from "roi_pool.h":
    void edu_roi_pool_bin_float(const float *xt, long W, long C, long h0, long h1, long w0,
                                long w1, float lowest, float *best, int64_t *where) nogil
    void edu_roi_pool_bin_double(const double *xt, long W, long C, long h0, long h1, long w0,
                                 long w1, double lowest, double *best, int64_t *where) nogil

# RoIPool's running maximum starts at -FLT_MAX, as in torchvision (also for float64).
cdef double LOWEST = -3.4028234663852886e38

# The work items of the backward passes (see _align_backward and _pool_backward).
cdef enum:
    BAND_ROWS = 4               # feature-map rows per RoIAlign item
    POOL_BACKWARD_CHANNELS = 8  # channels per RoIPool item


GRAIN = EDU_SEG_GRAIN


# ------------------------------------------------------------------------------- RoIAlign
cdef inline bint linear_neighbours(floating v, Py_ssize_t size, Py_ssize_t* lo,
                                   Py_ssize_t* hi, floating* l, floating* h) noexcept nogil:
    """1-D half of a bilinear sample (reference: ``_linear_neighbours``); False if outside."""
    if v < -1 or v > size:
        return False
    if v <= 0:
        v = 0
    lo[0] = <Py_ssize_t>v                   # floor, as v >= 0
    if lo[0] >= size - 1:                   # past the last pixel centre: clamp
        lo[0] = size - 1
        hi[0] = size - 1
        v = <floating>lo[0]
    else:
        hi[0] = lo[0] + 1
    l[0] = v - lo[0]
    h[0] = 1 - l[0]
    return True


cdef inline bint bilinear_neighbours(floating y, floating x, Py_ssize_t H, Py_ssize_t W,
                                     Py_ssize_t* pos, floating* wt) noexcept nogil:
    """The 4 neighbours of (y, x) as flat pixel indices ``h·W + w`` and their weights.

    pos/wt receive (y_lo, x_lo), (y_lo, x_hi), (y_hi, x_lo), (y_hi, x_hi) and w1..w4;
    False if the point is outside [-1, H] × [-1, W] (reference: ``bilinear_neighbours``).
    """
    cdef Py_ssize_t y_lo = 0, y_hi = 0, x_lo = 0, x_hi = 0
    cdef floating ly = 0, hy = 0, lx = 0, hx = 0
    if not linear_neighbours(y, H, &y_lo, &y_hi, &ly, &hy):
        return False
    if not linear_neighbours(x, W, &x_lo, &x_hi, &lx, &hx):
        return False
    pos[0] = y_lo * W + x_lo
    pos[1] = y_lo * W + x_hi
    pos[2] = y_hi * W + x_lo
    pos[3] = y_hi * W + x_hi
    wt[0] = hy * hx
    wt[1] = hy * lx
    wt[2] = ly * hx
    wt[3] = ly * lx
    return True


cdef inline void align_geometry(const floating* box, floating s, bint aligned,
                                Py_ssize_t sampling_ratio, Py_ssize_t PH, Py_ssize_t PW,
                                floating* geo, Py_ssize_t* gh, Py_ssize_t* gw) noexcept nogil:
    """One box's RoIAlign geometry (reference: ``roi_align_sample_points``).

    geo = (y1', x1', bin_h, bin_w); gh, gw = samples per bin along y and x.
    """
    cdef floating off = <floating>0.5 if aligned else <floating>0
    cdef floating x1 = box[0] * s - off
    cdef floating y1 = box[1] * s - off
    cdef floating roi_w = (box[2] * s - off) - x1
    cdef floating roi_h = (box[3] * s - off) - y1
    if not aligned:                         # legacy: malformed boxes become 1x1
        if roi_w < 1:
            roi_w = 1
        if roi_h < 1:
            roi_h = 1
    geo[0] = y1
    geo[1] = x1
    geo[2] = roi_h / PH
    geo[3] = roi_w / PW
    gh[0] = sampling_ratio if sampling_ratio > 0 else <Py_ssize_t>ceil(roi_h / PH)
    gw[0] = sampling_ratio if sampling_ratio > 0 else <Py_ssize_t>ceil(roi_w / PW)


cdef void align_box_forward(const floating* img, const floating* box, floating s, bint aligned,
                            Py_ssize_t sampling_ratio, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                            Py_ssize_t PH, Py_ssize_t PW, floating* acc,
                            floating* out) noexcept nogil:
    """RoIAlign of one box, all channels: img = x[b] channels-last (H, W, C), out = y[k].

    acc is scratch for C sums (one bin). The loops are the reference's; the innermost runs
    over the C channels of one pixel, contiguous in img, so it becomes SIMD code.
    """
    cdef floating geo[4]
    cdef floating wt[4]
    cdef Py_ssize_t pos[4]
    cdef Py_ssize_t gh, gw, ph, pw, iy, ix, c
    cdef floating yy, xx, w1, w2, w3, w4, count
    cdef const floating *p1
    cdef const floating *p2
    cdef const floating *p3
    cdef const floating *p4
    align_geometry(box, s, aligned, sampling_ratio, PH, PW, geo, &gh, &gw)
    count = max(gh * gw, 1)
    for ph in range(PH):
        for pw in range(PW):
            for c in range(C):
                acc[c] = 0
            for iy in range(gh):
                yy = geo[0] + ph * geo[2] + (iy + <floating>0.5) * geo[2] / gh
                for ix in range(gw):
                    xx = geo[1] + pw * geo[3] + (ix + <floating>0.5) * geo[3] / gw
                    if not bilinear_neighbours(yy, xx, H, W, pos, wt):
                        continue            # outside: adds 0, still counted
                    w1 = wt[0]
                    w2 = wt[1]
                    w3 = wt[2]
                    w4 = wt[3]
                    p1 = img + pos[0] * C
                    p2 = img + pos[1] * C
                    p3 = img + pos[2] * C
                    p4 = img + pos[3] * C
                    for c in range(C):      # reference: acc += w1 * x[b, :, y_lo, x_lo] + ...
                        acc[c] = acc[c] + (w1 * p1[c] + w2 * p2[c] + w3 * p3[c] + w4 * p4[c])
            for c in range(C):
                out[(c * PH + ph) * PW + pw] = acc[c] / count


cdef void align_box_backward(const floating* dy, const floating* box, floating s, bint aligned,
                             Py_ssize_t sampling_ratio, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                             Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t h0, Py_ssize_t h1,
                             floating* g, floating* img) noexcept nogil:
    """Scatter one box's gradient into rows h0..h1-1 of img = dx[b] channels-last (H, W, C).

    dy = dy[k] (C, PH, PW); g is scratch for C values (one bin's dy / count). Samples are
    visited in the reference's order and only the taps that land in rows [h0, h1) are added,
    so every element of dx receives its contributions in the reference's order.
    """
    cdef floating geo[4]
    cdef floating wt[4]
    cdef Py_ssize_t pos[4]
    cdef Py_ssize_t gh, gw, ph, pw, iy, ix, c
    cdef floating yy, xx, w1, w2, w3, w4, count, lo, hi
    cdef bint top, bottom
    cdef floating *p1
    cdef floating *p2
    cdef floating *p3
    cdef floating *p4
    align_geometry(box, s, aligned, sampling_ratio, PH, PW, geo, &gh, &gw)
    count = max(gh * gw, 1)
    for ph in range(PH):
        # rows this bin row can touch (one spare row each side for rounding): skip if none
        # is ours. This test only saves time; the exact test is per tap below.
        lo = min(geo[0] + ph * geo[2], geo[0] + (ph + 1) * geo[2])
        hi = max(geo[0] + ph * geo[2], geo[0] + (ph + 1) * geo[2])
        if hi + 2 < h0 or lo - 1 >= h1:
            continue
        for pw in range(PW):
            for c in range(C):
                g[c] = dy[(c * PH + ph) * PW + pw] / count
            for iy in range(gh):
                yy = geo[0] + ph * geo[2] + (iy + <floating>0.5) * geo[2] / gh
                for ix in range(gw):
                    xx = geo[1] + pw * geo[3] + (ix + <floating>0.5) * geo[3] / gw
                    if not bilinear_neighbours(yy, xx, H, W, pos, wt):
                        continue
                    top = h0 <= pos[0] // W < h1        # row y_lo is ours
                    bottom = h0 <= pos[2] // W < h1     # row y_hi is ours
                    w1 = wt[0]
                    w2 = wt[1]
                    w3 = wt[2]
                    w4 = wt[3]
                    p1 = img + pos[0] * C
                    p2 = img + pos[1] * C
                    p3 = img + pos[2] * C
                    p4 = img + pos[3] * C
                    if top:                 # taps in the reference's order: p1..p4 may coincide
                        for c in range(C):
                            p1[c] += w1 * g[c]
                        for c in range(C):
                            p2[c] += w2 * g[c]
                    if bottom:
                        for c in range(C):
                            p3[c] += w3 * g[c]
                        for c in range(C):
                            p4[c] += w4 * g[c]


def _to_channels_last(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] xt):
    """xt[n, h, w, c] = x[n, c, h, w]: the C values a bilinear tap reads become contiguous."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t nh, n, h, w, c
    cdef int threads = _threads_for(x.size)
    for nh in prange(N * H, nogil=True, schedule="static", num_threads=threads):
        n = nh // H
        h = nh % H
        for c in range(C):          # read whole rows; the writes stay in the L1-sized xt[n, h]
            for w in range(W):
                xt[n, h, w, c] = x[n, c, h, w]


def _to_channels_first(const floating[:, :, :, ::1] xt, floating[:, :, :, ::1] x):
    """x[n, c, h, w] = xt[n, h, w, c] (the inverse of ``_to_channels_last``)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t nh, n, h, w, c
    cdef int threads = _threads_for(x.size)
    for nh in prange(N * H, nogil=True, schedule="static", num_threads=threads):
        n = nh // H
        h = nh % H
        for c in range(C):          # write whole rows; the reads stay in the L1-sized xt[n, h]
            for w in range(W):
                x[n, c, h, w] = xt[n, h, w, c]


def _align_forward(const floating[:, :, :, ::1] xt, const floating[:, ::1] rois,
                   floating[:, :, :, ::1] y, double spatial_scale, Py_ssize_t sampling_ratio,
                   bint aligned):
    cdef Py_ssize_t H = xt.shape[1], W = xt.shape[2], C = xt.shape[3]
    cdef Py_ssize_t K = y.shape[0], PH = y.shape[2], PW = y.shape[3], k
    cdef floating s = <floating>spatial_scale
    cdef int threads = _threads_for(4 * y.size + xt.size)
    if K == 0 or C == 0:
        return
    # one accumulator row per thread, a page apart: with C = 3 (RoIAlign on an image, as the
    # R-CNN of chapter 5 warps its regions) two malloc'ed rows of 12 bytes can share a cache
    # line that both threads keep writing; apart, 2-thread calls ran 8-18% faster
    cdef floating[:, ::1] acc = per_thread_rows(C, np.float32 if floating is float
                                                else np.float64)
    for k in prange(K, nogil=True, schedule="dynamic", num_threads=threads):
        align_box_forward(&xt[<Py_ssize_t>rois[k, 0], 0, 0, 0], &rois[k, 1], s, aligned,
                          sampling_ratio, H, W, C, PH, PW, &acc[threadid(), 0], &y[k, 0, 0, 0])


def _align_backward(const floating[:, :, :, ::1] dy, const floating[:, ::1] rois,
                    floating[:, :, :, ::1] dxt, const Py_ssize_t[::1] order,
                    const Py_ssize_t[::1] first, double spatial_scale,
                    Py_ssize_t sampling_ratio, bint aligned):
    cdef Py_ssize_t N = dxt.shape[0], H = dxt.shape[1], W = dxt.shape[2], C = dxt.shape[3]
    cdef Py_ssize_t PH = dy.shape[2], PW = dy.shape[3]
    # work item = (image b, band of rows): its thread owns dx[b, h0:h1] (all channels) alone
    # and visits the boxes of image b in order k, so sums never race and never change order
    cdef Py_ssize_t band = BAND_ROWS, nbands = (H + band - 1) // band
    cdef Py_ssize_t item, b, h0, j, k
    cdef floating s = <floating>spatial_scale
    cdef int threads = _threads_for(4 * dy.size + dxt.size)
    if N == 0 or C == 0:
        return
    cdef floating[:, ::1] g = per_thread_rows(C, np.float32 if floating is float
                                              else np.float64)   # a page apart (see forward)
    for item in prange(N * nbands, nogil=True, schedule="dynamic", num_threads=threads):
        b = item // nbands
        h0 = (item % nbands) * band
        for j in range(first[b], first[b + 1]):
            k = order[j]
            align_box_backward(&dy[k, 0, 0, 0], &rois[k, 1], s, aligned, sampling_ratio,
                               H, W, C, PH, PW, h0, min(h0 + band, H), &g[threadid(), 0],
                               &dxt[b, 0, 0, 0])


def _boxes_by_image(rois, Py_ssize_t N):
    """Box indices sorted by image (stable: order k within an image), and where each starts."""
    b = rois[:, 0].astype(np.intp)
    order = np.argsort(b, kind="stable").astype(np.intp)
    first = np.searchsorted(b[order], np.arange(N + 1)).astype(np.intp)
    return order, first


def roi_align_forward(x, rois, output_hw, spatial_scale, sampling_ratio, aligned):
    """RoIAlign forward. x: (N, C, H, W), rois: (K, 5) -> y: (K, C, PH, PW).

    See ``edu_seg.reference.roi.roi_align_forward`` for the definition.
    """
    N, C, H, W = x.shape
    PH, PW = output_hw
    xt = np.empty((N, H, W, C), dtype=x.dtype)
    _to_channels_last(x, xt)
    y = np.empty((rois.shape[0], C, PH, PW), dtype=x.dtype)
    _align_forward(xt, rois, y, spatial_scale, sampling_ratio, aligned)
    return y


def roi_align_backward(dy, rois, x_shape, output_hw, spatial_scale, sampling_ratio, aligned):
    """RoIAlign backward: dy (K, C, PH, PW) -> dx (N, C, H, W), race-free and deterministic."""
    N, C, H, W = x_shape
    dxt = np.zeros((N, H, W, C), dtype=dy.dtype)
    order, first = _boxes_by_image(rois, N)
    _align_backward(dy, rois, dxt, order, first, spatial_scale, sampling_ratio, aligned)
    dx = np.empty(x_shape, dtype=dy.dtype)
    _to_channels_first(dxt, dx)
    return dx


# -------------------------------------------------------------------------------- RoIPool
cdef inline void pool_bin_edges(Py_ssize_t p, floating bin_size, Py_ssize_t start,
                                Py_ssize_t size, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi) of bin p along one axis (reference: ``roi_pool_bins``)."""
    lo[0] = min(max(<Py_ssize_t>floor(p * bin_size) + start, 0), size)
    hi[0] = min(max(<Py_ssize_t>ceil((p + 1) * bin_size) + start, 0), size)


cdef void pool_box(const floating* xt, const floating* box, floating s, Py_ssize_t H,
                   Py_ssize_t W, Py_ssize_t C, Py_ssize_t PH, Py_ssize_t PW, floating* best,
                   int64_t* where, floating* y, int64_t* argmax) noexcept nogil:
    """RoIPool of one box on one channels-last image xt (H, W, C).

    y and argmax point at [k, 0, 0, 0] of the (K, C, PH, PW) results; best and where are
    scratch for PH * PW * C values, the box's bins channels-last.
    """
    # first quantisation: round the box to whole pixels (C round, half away from zero)
    cdef Py_ssize_t xs = <Py_ssize_t>round(box[0] * s), ys = <Py_ssize_t>round(box[1] * s)
    cdef Py_ssize_t xe = <Py_ssize_t>round(box[2] * s), ye = <Py_ssize_t>round(box[3] * s)
    cdef floating bin_h = <floating>max(ye - ys + 1, 1) / <floating>PH
    cdef floating bin_w = <floating>max(xe - xs + 1, 1) / <floating>PW
    cdef Py_ssize_t ph, pw, c, h0, h1, w0, w1, at, bins = PH * PW
    for ph in range(PH):
        # second quantisation: bin edges floored/ceiled to whole pixels
        pool_bin_edges(ph, bin_h, ys, H, &h0, &h1)
        for pw in range(PW):
            pool_bin_edges(pw, bin_w, xs, W, &w0, &w1)
            at = (ph * PW + pw) * C
            if h1 <= h0 or w1 <= w0:        # empty bin
                for c in range(C):
                    best[at + c] = 0
                    where[at + c] = -1
            # every channel's maximum at once; row-major scan, strict >: the first maximum wins
            elif floating is float:
                edu_roi_pool_bin_float(xt, W, C, h0, h1, w0, w1, <float>LOWEST, &best[at],
                                       &where[at])
            else:
                edu_roi_pool_bin_double(xt, W, C, h0, h1, w0, w1, LOWEST, &best[at], &where[at])
    # (bins, C) -> (C, bins), written front to back. Writing each bin's C results straight
    # into y scatters them 4 * PH * PW bytes apart, a cache line each; on an AMD EPYC that
    # made the forward 1.3-1.9x slower than this copy through per-thread scratch. (Blocks
    # of 16 channels, every bin for a block, also keep the writes close together, but a
    # bin then has too little work per call: 1.3-2x slower again.)
    for c in range(C):
        for at in range(bins):
            y[c * bins + at] = best[at * C + c]
            argmax[c * bins + at] = where[at * C + c]


def _pool_forward(const floating[:, :, :, ::1] xt, const floating[:, ::1] rois,
                  double spatial_scale, floating[:, :, :, ::1] y, int64_t[:, :, :, ::1] argmax):
    """RoIPool of every box on the channels-last image xt (N, H, W, C): y, argmax (K, C, PH, PW).

    A work item is one box; each bin's maximum runs over all C channels at once
    (``roi_pool.h``) into per-thread scratch, which then goes to y[k] and argmax[k] in order.
    """
    cdef Py_ssize_t H = xt.shape[1], W = xt.shape[2], C = xt.shape[3]
    cdef Py_ssize_t K = y.shape[0], PH = y.shape[2], PW = y.shape[3], k, t
    cdef int threads = _threads_for(y.size + xt.size)
    cdef floating[:, ::1] best = per_thread_rows(
        max(PH * PW * C, 1), np.float32 if floating is float else np.float64)
    cdef int64_t[:, ::1] where = per_thread_rows(max(PH * PW * C, 1), np.int64)
    for k in prange(K, nogil=True, schedule="guided", num_threads=threads):
        t = threadid()
        pool_box(&xt[<Py_ssize_t>rois[k, 0], 0, 0, 0], &rois[k, 1], <floating>spatial_scale,
                 H, W, C, PH, PW, &best[t, 0], &where[t, 0], &y[k, 0, 0, 0], &argmax[k, 0, 0, 0])


def _pool_backward(const floating[:, :, :, ::1] dy, const int64_t[:, :, :, ::1] argmax,
                   floating[:, :, :, ::1] dx, const Py_ssize_t[::1] order,
                   const Py_ssize_t[::1] first):
    """dx[b, c] += dy of every bin whose maximum sat there: a work item owns the planes of
    POOL_BACKWARD_CHANNELS channels of one image and visits that image's boxes in order k.

    Per box, the item reads argmax[k, c0:c1] and dy[k, c0:c1], one contiguous piece each; an
    item of one channel would read PH * PW values and jump C * PH * PW ahead (25 kB for 64
    channels of 7x7 int64: a new memory page per box).
    """
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], bins = dy.shape[2] * dy.shape[3]
    cdef Py_ssize_t blocks = (C + POOL_BACKWARD_CHANNELS - 1) // POOL_BACKWARD_CHANNELS
    cdef Py_ssize_t item, b, c0, c, j, k, i
    cdef int64_t a
    cdef floating* plane
    cdef const floating* grad
    cdef const int64_t* where
    cdef int threads = _threads_for(dy.size + dx.size)
    for item in prange(N * blocks, nogil=True, schedule="dynamic", num_threads=threads):
        b = item // blocks
        c0 = (item % blocks) * POOL_BACKWARD_CHANNELS
        for j in range(first[b], first[b + 1]):
            k = order[j]
            for c in range(c0, min(c0 + POOL_BACKWARD_CHANNELS, C)):
                plane = &dx[b, c, 0, 0]
                grad = &dy[k, c, 0, 0]
                where = &argmax[k, c, 0, 0]
                for i in range(bins):
                    a = where[i]
                    if a != -1:
                        plane[a] += grad[i]


def roi_pool_forward(x, rois, output_hw, spatial_scale):
    """RoIPool forward. x: (N, C, H, W), rois: (K, 5) -> (y, argmax), both (K, C, PH, PW).

    See ``edu_seg.reference.roi.roi_pool_forward`` for the definition.
    """
    N, C, H, W = x.shape
    PH, PW = output_hw
    y = np.empty((rois.shape[0], C, PH, PW), dtype=x.dtype)
    argmax = np.empty((rois.shape[0], C, PH, PW), dtype=np.int64)
    xt = np.empty((N, H, W, C), dtype=x.dtype)
    _to_channels_last(x, xt)
    _pool_forward(xt, rois, spatial_scale, y, argmax)
    return y, argmax


def roi_pool_backward(dy, argmax, rois, x_shape):
    """RoIPool backward: dy (K, C, PH, PW) -> dx (N, C, H, W), race-free and deterministic."""
    dx = np.zeros(x_shape, dtype=dy.dtype)
    order, first = _boxes_by_image(rois, x_shape[0])
    _pool_backward(dy, argmax, dx, order, first)
    return dx
