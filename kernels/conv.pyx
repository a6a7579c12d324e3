# cython: language_level=3
"""Convolution kernels in Cython/OpenMP: im2col + BLAS GEMM, split into independent work items.

The readable twin is :mod:`edu_seg.reference.conv`: the same public functions, signatures and
results (to rounding). Read that first; this file is the same mathematics arranged for speed.

The ``cols`` layout (shared with the reference)
-----------------------------------------------
``im2col`` turns each sample's receptive fields into a matrix of shape (C*KH*KW, OH*OW)::

    cols[n, (c*KH + kh)*KW + kw, oh*OW + ow] = x_padded[n, c, oh*sh + kh*dh, ow*sw + kw*dw]

Rows are ordered (c, kh, kw) like the weight's (C_in/groups, KH, KW) axes, so the rows of group g
are one contiguous block and ``y[n, g] = w[g] @ cols[n, g]`` is a plain matrix product that lands
in NCHW order with no transpose. ``col2im`` is the exact adjoint: it adds every column entry back
into the input pixel it was copied from.

How the work is split
---------------------
Every op is one ``prange`` over *work items* that write disjoint parts of the output:

===============  ====================================  =============================================
op               one work item                         it computes
===============  ====================================  =============================================
forward          a tile                                y[tile] = W @ cols(tile)
backward_input   a tile, a block of input channels     dx[tile, chans] = col2im(W[:, chans]ᵀ @ dy[tile])
backward_weight  a chunk of tiles, a block of input    partial[chunk][chans] = Σ cols(chans) @ dyᵀ,
                 channels                              then dw = (Σ_chunk partial)ᵀ, chunks in order
backward_bias    an output channel                     db[o] = Σ dy[:, o]
===============  ====================================  =============================================

A *tile* is a set of output pixels whose columns one GEMM handles together. On a large map it
is a block of output rows of one sample (a 64x64 map of a 3x3 conv with 64 input channels gives
tiles of 14 rows: 14·64 = 896 columns). On a small map it is several whole samples side by side
(a 4x4 map: 16 samples of 16 pixels, 256 columns): one GEMM per sample would have only 16
columns, and a GEMM that thin spends its time re-reading the weights (a 512-channel 3x3 layer
holds 9 MB of them) instead of multiplying. :func:`_samples_per_tile` decides, from the shapes
alone. The columns of the samples of a tile sit next to each other in ``cols``, and their
``dy`` or ``y`` go through a small (C_out, columns) buffer, because in NCHW the planes of two
samples are not next to each other.

Each thread fills its own small workspace (at most ``TILE_BYTES``, so it stays in cache and
below glibc's 32 MB mmap threshold: fresh large allocations page-fault on every call) and calls a
*single-threaded* GEMM. For float32 that is our own packed GEMM, ``kernels/sgemm.h`` (read it:
the register tile, packing and cache blocking of every fast GEMM, in about a hundred lines of
C); on the course machines it runs twice as fast as the OpenBLAS that ships with SciPy for
these shapes. float64 goes to that OpenBLAS: a threaded BLAS inside a ``prange`` would put
threads on top of threads, so we switch it to one thread for the duration of the loop (see
:func:`_find_blas_thread_control`); if that is impossible the loop runs on one OpenMP thread
and BLAS keeps its own threads.

Determinism: the items, the tile sizes and the order of every sum depend only on the shapes,
never on the thread count, so 1 and 2 threads give bit-identical results.

Special cases that skip im2col: a 1x1 stride-1 unpadded conv, whose ``cols`` is ``x`` itself;
the depthwise conv (groups == C_in == C_out), where direct loops over each plane beat C GEMMs of
one row each (see the depthwise section); float32 convs on maps of 64 output pixels or fewer,
which run channels last as one product per kernel tap over lists of pixel rows that leave out
the taps that read padding (``kernels/conv_rows.h``, see the small-maps section); and the
float32 3x3 stride-1 conv of 8 channels or more on maps of 256 pixels or more, whose forward,
input gradient and weight gradient all run as Winograd F(2x2, 3x3) (``kernels/winograd.pyx``):
2.25x fewer multiplications, at the price of a few times the float32 rounding error (see
:func:`_winograd_applies`). And a special case
that keeps im2col but skips most of its work: a dilated kernel on a small map, whose taps
mostly read padding, runs as a few unpadded convs, one per rectangle of outputs that see the
same taps (see :data:`BANDED_MAX_WORK`).
"""
import functools

import numpy as np

from libc.string cimport memset
from cython.parallel cimport prange
from scipy.linalg.cython_blas cimport sgemm, dgemm

from edu_seg._kernels.winograd import (
    winograd_conv3x3 as _winograd_conv3x3,
    winograd_conv3x3_backward_weight as _winograd_conv3x3_backward_weight)

ctypedef fused floating:
    float
    double

cdef extern from "sgemm.h":
    const char *EDU_SGEMM_VECTORS
    int edu_sgemm(int transA, int transB, int M, int N, int K, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc) noexcept nogil
    long edu_packed_a_size(int M, int K) noexcept nogil
    int edu_k_blocks(int K) noexcept nogil
    void edu_pack_a_block(int transA, const float *A, int lda, int M, int K, int kb,
                          float *Ap) noexcept nogil
    int edu_sgemm_prepacked(int transB, int M, int N, int K, const float *A_whole,
                            const float *B, int ldb, float beta, float *C,
                            int ldc) noexcept nogil

cdef extern from "conv_rows.h":
    enum: EDU_MR
    enum: EDU_NR
    enum: EDU_KC
    long edu_packed_taps_size(int taps, int K, int N_out) noexcept nogil
    void edu_pack_taps_panel(const float *w, int C_out, int C, int KK, int transposed,
                             int kb, int q, float *Bp) noexcept nogil
    void edu_conv_rows_weight_block(const float *dy, const float *x, int N, int H, int W,
                                    int C, int OH, int OW, int C_out, int KH, int KW,
                                    int sh, int sw, int ph, int pw, int dh, int dw_,
                                    int kh, int kw, int o0, int o1, float *dw,
                                    const float **rows, float *Ap, float *Bp,
                                    float *G) noexcept nogil
    void edu_conv_rows_block(const float *x, int H, int W, int K, float *y, int OH, int OW,
                             int N_out, int KH, int KW, int sh, int sw, int ph, int pw,
                             int dh, int dw, const float *Bp, const float *bias,
                             int r0, int r1, int j0, int j1,
                             const float **rows, float **out, float *Ap) noexcept nogil

cdef extern from "conv_threads.h":
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil

# Per-thread im2col workspace: a tile of cols this size stays in the core's L2 cache while the
# GEMM reads it, and every temporary stays far below the 32 MB where malloc switches to mmap.
cdef Py_ssize_t TILE_BYTES = 1 << 20
# Small batches are cut into at least this many items so that every thread gets work, but an
# item keeps at least MIN_TILE_COLUMNS output pixels, the width of the GEMM's micro-tile
# (EDU_NR in sgemm.h): one image of an 8x8 map cut into 8 tiles of one row each made GEMMs of 8
# columns (the micro-kernel computing 32 and dropping 24) and im2col copies of 8 floats; a 3x3
# conv of 16 channels there took 49 us, in two tiles of 32 columns 25 us (AMD EPYC with AVX2,
# 1 and 2 threads; larger maps and batches are cut as before, and the sums do not change).
cdef int MIN_ITEMS = 8
cdef int MIN_TILE_COLUMNS = 32
# A GEMM with fewer columns than this re-reads its weights more than it multiplies: maps with
# fewer output pixels put several samples in one tile (up to this many columns, and at most
# SMALL_MAP_BYTES of cols, which a 512-channel 3x3 layer on 2x2 maps needs for 64 columns).
cdef int TILE_COLUMNS = 256
cdef Py_ssize_t SMALL_MAP_BYTES = 4 << 20
# backward_weight sums the batch in at most this many parallel chunks, using at most this memory.
cdef int MAX_CHUNKS = 8
cdef Py_ssize_t PARTIAL_BYTES = 16 << 20
# Below this many multiply-adds a loop runs on one thread: waking a second thread costs more
# (and on a busy machine a sleeping thread can stall the whole loop for a scheduler tick).
cdef double SERIAL_WORK = 1 << 18
# Reductions keep this many interleaved partial sums so the compiler can vectorise them without
# reordering a floating-point sum (one AVX-512 register of floats).
cdef enum:
    LANES = 16


# ------------------------------------------------------------------------- BLAS thread control
ctypedef int (*blas_get_threads_t)() noexcept nogil
ctypedef void (*blas_set_threads_t)(int) noexcept nogil
cdef blas_get_threads_t _blas_get_threads = NULL
cdef blas_set_threads_t _blas_set_threads = NULL


def _find_blas_thread_control():
    """Find the thread-count functions of the OpenBLAS behind ``scipy.linalg.cython_blas``.

    ``dlsym`` on the handle of the ``cython_blas`` module searches that module and the libraries
    it was linked with, so this finds the very BLAS our GEMM calls reach (SciPy's copy, not
    NumPy's). Returns True if found.
    """
    global _blas_get_threads, _blas_set_threads
    import ctypes
    import scipy.linalg.cython_blas

    lib = ctypes.CDLL(scipy.linalg.cython_blas.__file__)
    for prefix in ("scipy_openblas", "openblas"):  # SciPy's wheels rename the symbols
        try:
            get = getattr(lib, prefix + "_get_num_threads")
            set_ = getattr(lib, prefix + "_set_num_threads")
        except AttributeError:
            continue
        _blas_get_threads = <blas_get_threads_t><size_t>ctypes.cast(get, ctypes.c_void_p).value
        _blas_set_threads = <blas_set_threads_t><size_t>ctypes.cast(set_, ctypes.c_void_p).value
        return True
    return False


_find_blas_thread_control()


#: The vectors our float32 GEMM was compiled for (``kernels/sgemm.h`` has two micro-kernels:
#: with AVX-512, and with 8-float vectors for CPUs without it).
GEMM_VECTORS = EDU_SGEMM_VECTORS.decode()


def blas_thread_control_found():
    """True if GEMMs can run single-threaded inside the parallel loops (see module docstring)."""
    return _blas_set_threads != NULL


cdef int _threads_for(double work) noexcept nogil:
    """OpenMP threads for a loop of ``work`` multiply-adds: 1 below SERIAL_WORK."""
    return 1 if work < SERIAL_WORK else omp_get_max_threads()


cdef int _begin_gemm_loop(double work, int *saved) noexcept nogil:
    """Make BLAS single-threaded; return how many OpenMP threads the loop may use."""
    saved[0] = 0
    if _blas_set_threads == NULL:
        return 1  # cannot stop BLAS from threading: run the loop serially instead
    if _threads_for(work) == 1:
        return 1  # a serial loop may keep a threaded BLAS
    saved[0] = _blas_get_threads()
    if saved[0] > 1:
        _blas_set_threads(1)
    return omp_get_max_threads()


cdef void _end_gemm_loop(int saved) noexcept nogil:
    if saved > 1:
        _blas_set_threads(saved)


cdef inline void _gemm(bint trans_a, bint trans_b, int M, int N, int K,
                       const floating *A, int lda, const floating *B, int ldb,
                       floating beta, floating *C, int ldc) noexcept nogil:
    """Row-major C (M x N) = op(A) @ op(B) + beta*C.

    float32 goes to our own packed GEMM (``kernels/sgemm.h``: twice the speed of the bundled
    OpenBLAS on these shapes, measured). float64, and float32 if that GEMM cannot allocate its
    packing buffers, goes to the Fortran (column-major) BLAS: a row-major matrix read
    column-major is its transpose, so we ask BLAS for Cᵀ = op(B)ᵀ op(A)ᵀ: swap the operands,
    keep each one's transpose flag.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef floating one = 1
    if floating is float:
        if edu_sgemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc) != 0:
            sgemm(&tb, &ta, &N, &M, &K, &one, <float *>B, &ldb, <float *>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &N, &M, &K, &one, <double *>B, &ldb, <double *>A, &lda, &beta, C, &ldc)


cdef inline void _gemm_packed(const float *A_packed, bint trans_a, int M, int N, int K,
                              const floating *A, int lda, const floating *B, int ldb,
                              floating beta, floating *C, int ldc) noexcept nogil:
    """:func:`_gemm` with op(B) = B and op(A) given twice: as A, and (float32) already packed
    for our GEMM by :func:`_pack_weights`. Every tile of a batch multiplies by the same
    weights; packing them once per call instead of once per tile made the forward of 3x3 and
    5x5 convs of 64-256 channels on 16x16 maps 6-19% faster, their input gradient 2-9%
    (AMD EPYC, 2 threads, N = 16)."""
    if floating is float:
        if edu_sgemm_prepacked(False, M, N, K, A_packed, B, ldb, beta, C, ldc) == 0:
            return
    _gemm(trans_a, False, M, N, K, A, lda, B, ldb, beta, C, ldc)


cdef void _pack_weights(const floating *w, int groups, int Cog, int Cg, int KK, int blocks,
                        int cb, bint transposed, float *packed, Py_ssize_t stride,
                        int threads) noexcept nogil:
    """Pack, for float32, the A operand of every (group, block) product into ``packed`` (one
    ``stride``-long slot each; the k-blocks of all slots packed in parallel; float64 packs
    nothing, the BLAS does its own packing).

    w: (C_out, Cg, KH, KW) with KK = KH·KW, seen per group g as the (Cog, Cg·KK) matrix w[g].
    Not ``transposed`` (forward): A = w[g] whole (``blocks`` = 1). ``transposed`` (input
    gradient): A = the rows c·KK.. of w[g]ᵀ for the input channels c of block b, ``cb`` of them
    per block (fewer in the last).
    """
    cdef int KG = Cg * KK, M, K, item, slot, c0, kbs
    cdef const floating *A
    if floating is float:
        kbs = edu_k_blocks(Cg * KK if not transposed else Cog)
        for item in prange(groups * blocks * kbs, schedule="dynamic", num_threads=threads):
            slot = item // kbs
            c0 = (slot % blocks) * cb
            if transposed:
                M = min(cb, Cg - c0) * KK
                K = Cog
            else:
                M = Cog
                K = KG
            A = w + (<Py_ssize_t>(slot // blocks) * Cog * KG + c0 * KK)
            edu_pack_a_block(transposed, A, KG, M, K, item % kbs, packed + slot * stride)


# ------------------------------------------------------------------------------ index helpers
cdef inline int _cdiv(int a, int b) noexcept nogil:
    return (a + b - 1) // b


cdef struct Span:
    int lo, hi


cdef inline Span _valid_range(int n_out, int offset, int stride, int size) noexcept nogil:
    """Outputs o in [lo, hi) whose input index o*stride + offset lies inside [0, size).

    The other outputs read zero padding. Solving the two inequalities once per kernel tap keeps
    every bounds test out of the inner loops.
    """
    cdef Span r
    r.lo = 0
    r.hi = 0
    if offset < 0:
        r.lo = _cdiv(-offset, stride)
    if size - 1 - offset >= 0:
        r.hi = (size - 1 - offset) // stride + 1
    if r.hi > n_out:
        r.hi = n_out
    if r.lo > r.hi:
        r.lo = r.hi
    return r


cdef int _rows_per_tile(int OH, int OW, Py_ssize_t column_bytes, int want_tiles) noexcept nogil:
    """Output rows per tile: as many as fit TILE_BYTES of cols, split into >= want_tiles tiles
    unless that makes tiles of fewer than MIN_TILE_COLUMNS output pixels.

    The rows are then spread evenly over the tiles (32 rows in tiles of at most 14 become
    11 + 11 + 10, not 14 + 14 + 4): a thin last tile would make a slow, thin GEMM.
    """
    cdef Py_ssize_t r = _cdiv(OH, want_tiles)
    cdef Py_ssize_t fewest = _cdiv(MIN_TILE_COLUMNS, OW)    # rows of MIN_TILE_COLUMNS pixels
    cdef Py_ssize_t most = TILE_BYTES // (column_bytes * OW)
    if r < fewest <= most:      # as many tiles as have `fewest` rows each, the rest spread
        return _cdiv(OH, max(OH // <int>fewest, 1))
    if r > most:
        r = most
    if r < 1:
        r = 1
    return _cdiv(OH, _cdiv(OH, <int>r))


cdef void _im2col_block(const floating *x, int H, int W, int KH, int KW,
                        int sh, int sw, int ph, int pw, int dh, int dw,
                        int OW, int oh0, int oh1, int c0, int c1,
                        floating *cols, Py_ssize_t ld) noexcept nogil:
    """Rows (c, kh, kw) for c in [c0, c1) and columns (oh, ow) for oh in [oh0, oh1) of cols.

    x: one sample, (C, H, W). Row (c - c0)*KH*KW + kh*KW + kw of ``cols`` (leading dimension
    ``ld``) receives x[c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw], or 0 where that is padding.
    """
    cdef int c, kh, kw, oh, ow, ow_lo, ow_hi
    cdef Span rows, cols_
    cdef floating *dst
    cdef const floating *src
    for c in range(c0, c1):
        for kh in range(KH):
            rows = _valid_range(oh1, kh * dh - ph, sh, H)
            for kw in range(KW):
                cols_ = _valid_range(OW, kw * dw - pw, sw, W)
                ow_lo, ow_hi = cols_.lo, cols_.hi
                dst = cols + ((c - c0) * KH * KW + kh * KW + kw) * ld
                for oh in range(oh0, oh1):
                    if oh < rows.lo or oh >= rows.hi:  # the whole row reads padding
                        memset(dst, 0, OW * sizeof(floating))
                    else:
                        # src[ow*sw] = x[c, ih, ow*sw - pw + kw*dw]; only ow in [ow_lo, ow_hi) is read
                        src = x + (<Py_ssize_t>c * H + oh * sh - ph + kh * dh) * W + kw * dw - pw
                        for ow in range(ow_lo):
                            dst[ow] = 0
                        if sw == 1:  # contiguous copy: the compiler turns it into vector moves
                            for ow in range(ow_lo, ow_hi):
                                dst[ow] = src[ow]
                        else:
                            for ow in range(ow_lo, ow_hi):
                                dst[ow] = src[ow * sw]
                        for ow in range(ow_hi, OW):
                            dst[ow] = 0
                    dst += OW


cdef void _col2im_block(const floating *cols, Py_ssize_t ld, int H, int W, int KH, int KW,
                        int sh, int sw, int ph, int pw, int dh, int dw,
                        int OW, int oh0, int oh1, int c0, int c1, floating *x) noexcept nogil:
    """The adjoint of :func:`_im2col_block`: x[c, ih, iw] += every cols entry copied from it.

    Writes only the planes x[c0:c1] of one sample, which is what makes a work item (n, channel
    block) race-free: no other item adds into those planes. Entries that came from padding are
    dropped (their gradient goes nowhere).
    """
    cdef int c, kh, kw, oh, ow, oh_lo, ow_lo, ow_hi
    cdef Span rows, cols_
    cdef const floating *src
    cdef floating *dst
    for c in range(c0, c1):
        for kh in range(KH):
            rows = _valid_range(oh1, kh * dh - ph, sh, H)
            oh_lo = max(rows.lo, oh0)
            for kw in range(KW):
                cols_ = _valid_range(OW, kw * dw - pw, sw, W)
                ow_lo, ow_hi = cols_.lo, cols_.hi
                src = cols + ((c - c0) * KH * KW + kh * KW + kw) * ld + (oh_lo - oh0) * OW
                for oh in range(oh_lo, rows.hi):
                    dst = x + (<Py_ssize_t>c * H + oh * sh - ph + kh * dh) * W + kw * dw - pw
                    if sw == 1:
                        for ow in range(ow_lo, ow_hi):
                            dst[ow] += src[ow]
                    else:
                        for ow in range(ow_lo, ow_hi):
                            dst[ow * sw] += src[ow]
                    src += OW



# ------------------------------------------------------------------------------------ tiles
cdef struct Tile:
    int n0, ns       # samples n0 .. n0 + ns - 1
    int oh0, nrows   # their output rows oh0 .. oh0 + nrows - 1 (all rows when ns > 1)


cdef int _samples_per_tile(int N, int OH, int OW, Py_ssize_t column_bytes,
                           int min_tiles) noexcept nogil:
    """Samples per tile: 1 on maps of TILE_COLUMNS pixels or more, else as many as make
    TILE_COLUMNS columns, within SMALL_MAP_BYTES of cols, and few enough to leave ``min_tiles``
    tiles (the work items of the forward and input-gradient loops; the weight gradient finds its
    items in channel blocks and takes 1). Depends on the shapes only, never on the thread count:
    the tiles decide the order of the sums, and results must not depend on threads."""
    cdef Py_ssize_t plane = <Py_ssize_t>OH * OW
    cdef Py_ssize_t s
    if plane >= TILE_COLUMNS or N == 1:
        return 1
    s = min(<Py_ssize_t>_cdiv(TILE_COLUMNS, <int>plane), <Py_ssize_t>_cdiv(N, min_tiles),
            SMALL_MAP_BYTES // (column_bytes * plane))
    return <int>max(s, 1)


cdef inline Tile _tile(int t, int N, int OH, int samples, int rows) noexcept nogil:
    """Tile number t: ``samples`` whole samples if samples > 1, else ``rows`` rows of one."""
    cdef Tile tile
    cdef int tiles_per_sample
    if samples > 1:
        tile.n0 = t * samples
        tile.ns = min(samples, N - tile.n0)
        tile.oh0 = 0
        tile.nrows = OH
    else:
        tiles_per_sample = _cdiv(OH, rows)
        tile.n0 = t // tiles_per_sample
        tile.ns = 1
        tile.oh0 = (t % tiles_per_sample) * rows
        tile.nrows = min(rows, OH - tile.oh0)
    return tile


cdef inline int _tile_count(int N, int OH, int samples, int rows) noexcept nogil:
    return _cdiv(N, samples) if samples > 1 else N * _cdiv(OH, rows)


cdef void _im2col_tile(const floating *x, Py_ssize_t sample_size, Tile tile, int H, int W,
                       int KH, int KW, int sh, int sw, int ph, int pw, int dh, int dw,
                       int OW, int c0, int c1, floating *cols) noexcept nogil:
    """Rows (c, kh, kw), c in [c0, c1), of the tile's cols: the samples' columns side by side."""
    cdef int s
    cdef int L1 = tile.nrows * OW             # columns of one sample
    for s in range(tile.ns):
        _im2col_block(x + (tile.n0 + s) * sample_size, H, W, KH, KW, sh, sw, ph, pw, dh, dw,
                      OW, tile.oh0, tile.oh0 + tile.nrows, c0, c1, cols + s * L1, tile.ns * L1)


cdef const floating *_tile_planes(const floating *a, Py_ssize_t sample_size, Py_ssize_t plane,
                                  Tile tile, int OW, int o0, int o1, floating *out,
                                  int *ld) noexcept nogil:
    """The planes a[n, o0:o1] of the tile's samples as one (o1 - o0, columns) matrix.

    One sample: the planes themselves, read in place (``ld[0]`` = the plane size). Several:
    their planes copied side by side into ``out`` (``ld[0]`` = the tile's columns), because in
    NCHW the planes of two samples are not next to each other.
    """
    cdef int s, o
    cdef Py_ssize_t j, L1 = <Py_ssize_t>tile.nrows * OW, L = tile.ns * L1
    cdef const floating *src
    if tile.ns == 1:
        ld[0] = <int>plane
        return a + tile.n0 * sample_size + o0 * plane + <Py_ssize_t>tile.oh0 * OW
    for o in range(o0, o1):
        for s in range(tile.ns):
            src = a + (tile.n0 + s) * sample_size + o * plane + <Py_ssize_t>tile.oh0 * OW
            for j in range(L1):
                out[(o - o0) * L + s * L1 + j] = src[j]
    ld[0] = <int>L
    return out


cdef inline bint _is_pointwise(int KH, int KW, int sh, int sw, int ph, int pw,
                               int H, int W, int OH, int OW) noexcept nogil:
    """A 1x1 stride-1 unpadded conv: cols(x) is x itself, viewed as (C, H*W)."""
    return KH == 1 and KW == 1 and sh == 1 and sw == 1 and ph == 0 and pw == 0 \
        and OH == H and OW == W


# ------------------------------------------------------------------------ public: im2col/col2im
def im2col(x, kernel_size, stride, padding, dilation):
    """Unfold the receptive fields of ``x`` into columns.

    Parameters
    ----------
    x : ndarray, (N, C, H, W), float32 or float64, C-contiguous
    kernel_size, stride, padding, dilation : (int, int)

    Returns
    -------
    cols : ndarray, (N, C*KH*KW, OH*OW)
        ``cols[n, (c*KH + kh)*KW + kw, oh*OW + ow] = x_padded[n, c, oh*sh + kh*dh, ow*sw + kw*dw]``.

    Notes
    -----
    OH = ⌊(H + 2·ph − dh·(KH−1) − 1)/sh⌋ + 1, likewise OW. Parallel over (n, c): each item fills
    the KH*KW rows of one channel of one sample.
    """
    N, C, H, W = x.shape
    KH, KW = kernel_size
    OH = (H + 2 * padding[0] - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + 2 * padding[1] - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    cols = np.empty((N, C * KH * KW, OH * OW), dtype=x.dtype)
    _im2col(x, cols, KH, KW, *stride, *padding, *dilation, OH, OW)
    return cols


def _im2col(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols, int KH, int KW,
            int sh, int sw, int ph, int pw, int dh, int dw, int OH, int OW):
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int i, n, c
    with nogil:
        for i in prange(N * C, schedule="static",
                        num_threads=_threads_for(<double>N * C * KH * KW * OH * OW)):
            n = i // C
            c = i % C
            _im2col_block(&x[n, 0, 0, 0], H, W, KH, KW, sh, sw, ph, pw, dh, dw,
                          OW, 0, OH, c, c + 1, &cols[n, c * KH * KW, 0], OH * OW)


def col2im(cols, x_shape, kernel_size, stride, padding, dilation):
    """Fold columns back onto the image, adding overlaps: the adjoint of :func:`im2col`.

    Parameters
    ----------
    cols : ndarray, (N, C*KH*KW, OH*OW)
    x_shape : (N, C, H, W)
    kernel_size, stride, padding, dilation : (int, int)

    Returns
    -------
    x : ndarray, (N, C, H, W)
        ``x[n, c, ih, iw] = Σ cols[n, (c, kh, kw), (oh, ow)]`` over all taps that read (ih, iw).

    Notes
    -----
    ⟨im2col(x), cols⟩ = ⟨x, col2im(cols)⟩. Parallel over (n, c): each item owns one input plane,
    so no two threads ever add into the same pixel.
    """
    N, C, H, W = x_shape
    KH, KW = kernel_size
    OH = (H + 2 * padding[0] - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + 2 * padding[1] - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    x = np.zeros((N, C, H, W), dtype=cols.dtype)
    _col2im(cols, x, KH, KW, *stride, *padding, *dilation, OH, OW)
    return x


def _col2im(const floating[:, :, ::1] cols, floating[:, :, :, ::1] x, int KH, int KW,
            int sh, int sw, int ph, int pw, int dh, int dw, int OH, int OW):
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int i, n, c
    with nogil:
        for i in prange(N * C, schedule="static",
                        num_threads=_threads_for(<double>N * C * KH * KW * OH * OW)):
            n = i // C
            c = i % C
            _col2im_block(&cols[n, c * KH * KW, 0], OH * OW, H, W, KH, KW, sh, sw, ph, pw,
                          dh, dw, OW, 0, OH, c, c + 1, &x[n, 0, 0, 0])


# Winograd F(2x2, 3x3) (kernels/winograd.pyx) does a 3x3 stride-1 conv with 2.25x fewer
# multiplications. It replaces im2col for float32 where it was measured faster (AMD EPYC, 1 and
# 2 threads, N = 8): at least 8 channels in and out, and at least 256 output pixels per map.
# Below that its additions and the thinner GEMMs cost more than the products it saves (C=3
# stems: 1.5x slower; 8x8 maps with 64 channels: 1.1x slower).
WINOGRAD_MIN_CHANNELS = 8
WINOGRAD_MIN_PIXELS = 256
# The weight gradient's Winograd sums over tiles in GEMMs of only C_out x C outputs; with 16 x 16
# channels its transforms and packing cost more than the products it saves (4.6 ms against
# im2col's 3.2 ms for N=8 on 64x64, 1 thread), from 16 x 32 on it wins (5.7 against 7.5 ms).
WINOGRAD_MIN_WEIGHT_PRODUCT = 512


def _winograd_applies(dtype, C, C_out, kernel, stride, dilation, groups, pixels):
    """True if a conv with these parameters runs as Winograd F(2x2, 3x3); ``pixels`` is
    OH*OW of the conv (or of its input gradient)."""
    return (dtype == np.float32 and groups == 1 and tuple(kernel) == (3, 3)
            and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
            and min(C, C_out) >= WINOGRAD_MIN_CHANNELS and pixels >= WINOGRAD_MIN_PIXELS)


# A dilated kernel on a small map reads mostly padding: a 3x3 kernel with dilation 4 on an 8x8
# map (DeepLabV3+'s layer4 at a 64x64 input) finds only 4 of its 9 taps inside the map at every
# output pixel, so im2col multiplies 56% zeros. Cut the output into rectangles in which the same
# taps are valid, and each rectangle is an unpadded conv of a window of x with only those taps
# (see :func:`_padding_bands`). Worth it when the valid taps are at most this fraction of all
# and every rectangle keeps this many output pixels: measured (AMD EPYC, 2 threads, N=16), 128
# and 256 channels at 16x16 with dilation 8 (rectangles of 8x8) ran forward 1.6-1.7x, input
# gradient 1.3-1.4x and weight gradient 1.3x faster; at 8x8 with dilation 4 (rectangles of
# 4x4: thin GEMMs, and the copies of the weight's taps) up to 1.6x slower.
BANDED_MAX_WORK = 0.6
BANDED_MIN_PIXELS = 64


def _padding_bands(size, out_size, k, s, p, d):
    """Runs of output positions along one axis that read the same kernel taps inside the input.

    Returns ``[(o0, o1, k0, k1), ...]``: outputs [o0, o1) read taps [k0, k1) only (the others
    fall in the padding for every one of them), and the fraction of the K·out_size
    (output, tap) pairs that are inside. Tap k of output o reads input o·s − p + k·d.
    """
    if out_size <= 0:
        return [], 1.0
    bands = []
    for o in range(out_size):
        k0 = next((t for t in range(k) if o * s - p + t * d >= 0), k)
        k1 = max((t + 1 for t in range(k) if 0 <= o * s - p + t * d < size), default=k0)
        if bands and bands[len(bands) - 1][2:] == (k0, k1):   # (no negative indices in Cython)
            bands[len(bands) - 1] = (bands[len(bands) - 1][0], o + 1, k0, k1)
        else:
            bands.append((o, o + 1, k0, k1))
    return bands, sum((o1 - o0) * (k1 - k0) for o0, o1, k0, k1 in bands) / (k * out_size)


def _banded_rectangles(x_hw, y_hw, kernel, stride, padding, dilation):
    """The rectangles of a conv worth computing band by band (see BANDED_MAX_WORK), or None.

    Each is ``(out_rows, out_cols, in_rows, in_cols, tap_rows, tap_cols)`` as slices: y[out]
    is the unpadded conv of x[in] with w[:, :, taps] (same stride and dilation), or only the
    bias where no tap is inside. Cached: a training loop asks for the same few geometries.
    """
    return _banded_rectangles_cached(*(tuple(int(v) for v in a) for a in (
        x_hw, y_hw, kernel, stride, padding, dilation)))


@functools.lru_cache(maxsize=1024)
def _banded_rectangles_cached(x_hw, y_hw, kernel, stride, padding, dilation):
    rows, frac_h = _padding_bands(x_hw[0], y_hw[0], kernel[0], stride[0], padding[0], dilation[0])
    cols, frac_w = _padding_bands(x_hw[1], y_hw[1], kernel[1], stride[1], padding[1], dilation[1])
    sizes = [(o1 - o0) * (p1 - p0) for o0, o1, k0, k1 in rows for p0, p1, l0, l1 in cols
             if k1 > k0 and l1 > l0]           # the rectangles that have work
    if frac_h * frac_w > BANDED_MAX_WORK or (sizes and min(sizes) < BANDED_MIN_PIXELS):
        return None

    def window(o0, o1, k0, k1, s, p, d):
        return slice(o0 * s - p + k0 * d, (o1 - 1) * s - p + (k1 - 1) * d + 1)

    return [(slice(i0, i1), slice(j0, j1),
             window(i0, i1, k0, k1, stride[0], padding[0], dilation[0]),
             window(j0, j1, l0, l1, stride[1], padding[1], dilation[1]),
             slice(k0, k1), slice(l0, l1))
            for i0, i1, k0, k1 in rows for j0, j1, l0, l1 in cols]


def _empty(taps_h, taps_w):
    return taps_h.start == taps_h.stop or taps_w.start == taps_w.stop


def _banded_forward(x, w, b, stride, dilation, groups, rectangles, y_shape):
    """conv2d_forward, one rectangle of outputs at a time (see BANDED_MAX_WORK)."""
    y = np.empty(y_shape, dtype=x.dtype)
    for out_h, out_w, in_h, in_w, taps_h, taps_w in rectangles:
        if _empty(taps_h, taps_w):          # every tap in the padding: the bias alone
            y[:, :, out_h, out_w] = 0 if b is None else b[:, None, None]
            continue
        y[:, :, out_h, out_w] = conv2d_forward(
            np.ascontiguousarray(x[:, :, in_h, in_w]),
            np.ascontiguousarray(w[:, :, taps_h, taps_w]), b, stride, (0, 0), dilation, groups)
    return y


def _banded_backward_input(dy, w, b, x_shape, stride, dilation, groups, rectangles):
    """_conv2d_backward_input, one rectangle at a time: each adds into its window of dx."""
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for out_h, out_w, in_h, in_w, taps_h, taps_w in rectangles:
        if _empty(taps_h, taps_w):
            continue
        window = dx[:, :, in_h, in_w]
        window += _conv2d_backward_input(
            np.ascontiguousarray(dy[:, :, out_h, out_w]),
            np.ascontiguousarray(w[:, :, taps_h, taps_w]), None, window.shape, stride, (0, 0),
            dilation, groups)
    if b is not None:
        dx += b[None, :, None, None]
    return dx


def _banded_backward_weight(dy, x, w_shape, stride, dilation, groups, rectangles):
    """conv2d_backward_weight, one rectangle at a time: each adds into its taps of dw."""
    dw = np.zeros(w_shape, dtype=dy.dtype)
    for out_h, out_w, in_h, in_w, taps_h, taps_w in rectangles:
        if _empty(taps_h, taps_w):
            continue
        part = dw[:, :, taps_h, taps_w]
        part += conv2d_backward_weight(
            np.ascontiguousarray(dy[:, :, out_h, out_w]), np.ascontiguousarray(x[:, :, in_h, in_w]),
            part.shape, stride, (0, 0), dilation, groups)
    return dw


def _bias_or_empty(b, dtype):
    """The kernels take the bias as an array; "no bias" is an empty one."""
    return np.empty(0, dtype=dtype) if b is None else b


def _is_depthwise(C, C_out, groups):
    """groups == C_in == C_out: every output channel sees exactly one input channel."""
    return groups == C == C_out and groups > 1


# --------------------------------------------------------------------------- public: conv2d
def conv2d_forward(x, w, b, stride, padding, dilation, groups):
    """Cross-correlation y = w ⋆ x + b, the forward pass of ``conv2d``.

    Parameters
    ----------
    x : ndarray, (N, C, H, W), float32 or float64, C-contiguous
    w : ndarray, (C_out, C/groups, KH, KW), same dtype
    b : ndarray, (C_out,), or None
    stride, padding, dilation : (int, int)
    groups : int

    Returns
    -------
    y : ndarray, (N, C_out, OH, OW)

    Notes
    -----
    y[n, o, i, j] = b[o] + Σ_{c∈group(o), kh, kw} w[o, c, kh, kw] · x_pad[n, c, i·sh + kh·dh,
    j·sw + kw·dw], OH = ⌊(H + 2·ph − dh·(KH−1) − 1)/sh⌋ + 1 (likewise OW). Computed as
    y[n, g, :, rows] = w[g] (C_out/G, C/G·KH·KW) @ cols(n, rows)[g], one GEMM per group and tile.
    """
    N, C, H, W = x.shape
    C_out, _, KH, KW = w.shape
    OH = (H + 2 * padding[0] - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + 2 * padding[1] - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    rectangles = _banded_rectangles((H, W), (OH, OW), (KH, KW), stride, padding, dilation)
    if rectangles is not None:
        return _banded_forward(x, w, b, stride, dilation, groups, rectangles, (N, C_out, OH, OW))
    if _winograd_applies(x.dtype, C, C_out, (KH, KW), stride, dilation, groups, OH * OW):
        return _winograd_conv3x3(x, w, b, padding)
    if _channels_last_applies(x.dtype, C, C_out, (KH, KW), groups, OH * OW):
        return _conv_rows(x, w, b, (OH, OW), stride, padding, dilation, False)
    y = np.empty((N, C_out, OH, OW), dtype=x.dtype)
    bias = _bias_or_empty(b, x.dtype)
    if _is_depthwise(C, C_out, groups):
        _depthwise_forward(x, w, bias, y, *stride, *padding, *dilation)
    else:
        _forward(x, w, bias, y, *stride, *padding, *dilation, groups)
    return y


def conv2d_backward_input(dy, w, x_shape, stride, padding, dilation, groups):
    """Gradient of ``conv2d`` with respect to its input: dx = col2im(wᵀ dy).

    Parameters
    ----------
    dy : ndarray, (N, C_out, OH, OW)
    w : ndarray, (C_out, C/groups, KH, KW)
    x_shape : (N, C, H, W)
        The input's shape. OH, OW are taken from ``dy``; input rows/columns that no output
        reads get a zero gradient (this happens for a transposed conv with output_padding).
    stride, padding, dilation : (int, int)
    groups : int

    Returns
    -------
    dx : ndarray, x_shape

    Notes
    -----
    dx[n, c, ih, iw] = Σ w[o, c, kh, kw] · dy[n, o, oh, ow] over all (o, kh, kw, oh, ow) with
    oh·sh − ph + kh·dh = ih and ow·sw − pw + kw·dw = iw. This IS the transposed convolution
    (:func:`conv_transpose2d_forward` calls the same code).
    """
    return _conv2d_backward_input(dy, w, None, x_shape, stride, padding, dilation, groups)


def _conv2d_backward_input(dy, w, b, x_shape, stride, padding, dilation, groups):
    """dx = col2im(wᵀ dy), each dx plane starting from b[c] (the transposed conv's bias) or 0.

    For a 3x3 stride-1 conv with padding p <= 2 this is itself a 3x3 conv: of dy, with the
    filters flipped in both directions and their in/out channels swapped, and padding 2 - p
    (dx[c, i, j] = Σ w[o, c, kh, kw] dy[o, i + p - kh, j + p - kw]). So it can run as Winograd.
    """
    H, W = x_shape[2], x_shape[3]
    rectangles = _banded_rectangles((H, W), dy.shape[2:], w.shape[2:], stride, padding, dilation)
    if rectangles is not None:
        return _banded_backward_input(dy, w, b, x_shape, stride, dilation, groups, rectangles)
    if _winograd_applies(dy.dtype, dy.shape[1], x_shape[1], w.shape[2:], stride, dilation,
                         groups, H * W) and max(padding) <= 2 \
            and (H, W) == (dy.shape[2] + 2 - 2 * padding[0], dy.shape[3] + 2 - 2 * padding[1]):
        flipped = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        return _winograd_conv3x3(dy, flipped, b, (2 - padding[0], 2 - padding[1]))
    # stride 1: dx is the conv of dy with the flipped filters, padding d·(K−1) − p, when that
    # gives back x's size (not so for a transposed conv with output_padding)
    flipped_padding = tuple(d * (k - 1) - p for d, k, p in zip(dilation, w.shape[2:], padding))
    if tuple(stride) == (1, 1) and _channels_last_applies(dy.dtype, x_shape[1], dy.shape[1],
                                                          w.shape[2:], groups, H * W) \
            and (H, W) == (dy.shape[2] + flipped_padding[0] - padding[0],
                           dy.shape[3] + flipped_padding[1] - padding[1]):
        return _conv_rows(dy, w, b, (H, W), stride, flipped_padding, dilation, True)
    dx = np.empty(x_shape, dtype=dy.dtype)
    bias = _bias_or_empty(b, dy.dtype)
    if _is_depthwise(x_shape[1], dy.shape[1], groups):
        _depthwise_backward_input(dy, w, bias, dx, *stride, *padding, *dilation)
    else:
        _backward_input(dy, w, bias, dx, *stride, *padding, *dilation, groups)
    return dx


def conv2d_backward_weight(dy, x, w_shape, stride, padding, dilation, groups):
    """Gradient of ``conv2d`` with respect to its weight: dw = Σ_n dy[n] cols(x[n])ᵀ.

    Parameters
    ----------
    dy : ndarray, (N, C_out, OH, OW)
    x : ndarray, (N, C, H, W)
    w_shape : (C_out, C/groups, KH, KW)
    stride, padding, dilation : (int, int)
    groups : int

    Returns
    -------
    dw : ndarray, w_shape

    Notes
    -----
    dw[o, c, kh, kw] = Σ_{n, oh, ow} dy[n, o, oh, ow] · x_pad[n, g·C/G + c, oh·sh + kh·dh,
    ow·sw + kw·dw]. The sum over the batch runs in fixed chunks added in a fixed order, so the
    result does not depend on the thread count.
    """
    rectangles = _banded_rectangles(x.shape[2:], dy.shape[2:], w_shape[2:], stride, padding,
                                    dilation)
    if rectangles is not None:
        return _banded_backward_weight(dy, x, w_shape, stride, dilation, groups, rectangles)
    if _winograd_applies(x.dtype, x.shape[1], dy.shape[1], w_shape[2:], stride, dilation,
                         groups, dy.shape[2] * dy.shape[3]) \
            and x.shape[1] * dy.shape[1] >= WINOGRAD_MIN_WEIGHT_PRODUCT:
        return _winograd_conv3x3_backward_weight(dy, x, padding)
    if _channels_last_applies(x.dtype, x.shape[1], dy.shape[1], w_shape[2:], groups,
                              dy.shape[2] * dy.shape[3]):
        return _conv_rows_weight(dy, x, w_shape, stride, padding, dilation)
    dw = np.empty(w_shape, dtype=dy.dtype)
    if _is_depthwise(x.shape[1], dy.shape[1], groups):
        _depthwise_backward_weight(dy, x, dw, *stride, *padding, *dilation)
    else:
        _backward_weight(dy, x, dw, *stride, *padding, *dilation, groups)
    return dw


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding, dilation, groups):
    """Transposed convolution: the gradient of a conv with respect to its input, used forwards.

    Parameters
    ----------
    x : ndarray, (N, C_in, H, W)
    w : ndarray, (C_in, C_out/groups, KH, KW)
        Exactly the weight of the conv (C_out_conv = C_in, C_in_conv = C_out) whose input
        gradient this is.
    b : ndarray, (C_out,), or None
    stride, padding, output_padding, dilation : (int, int)
    groups : int

    Returns
    -------
    y : ndarray, (N, C_out, OH, OW)

    Notes
    -----
    OH = (H − 1)·sh − 2·ph + dh·(KH − 1) + oph + 1 (likewise OW);
    y = conv2d_backward_input(x, w) + b.
    """
    N, _, H, W = x.shape
    _, C_out_per_group, KH, KW = w.shape
    OH = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (KH - 1) + output_padding[0] + 1
    OW = (W - 1) * stride[1] - 2 * padding[1] + dilation[1] * (KW - 1) + output_padding[1] + 1
    return _conv2d_backward_input(x, w, b, (N, C_out_per_group * groups, OH, OW), stride,
                                  padding, dilation, groups)


def conv2d_backward_bias(dy):
    """Gradient of ``conv2d`` (or ``conv_transpose2d``) with respect to its bias.

    Parameters
    ----------
    dy : ndarray, (N, C_out, OH, OW)

    Returns
    -------
    db : ndarray, (C_out,)

    Notes
    -----
    db[o] = Σ_{n, oh, ow} dy[n, o, oh, ow]: the bias is added at every output pixel. Parallel
    over channels; each plane is summed in LANES interleaved float64 partial sums (a fixed
    order, so any thread count gives the same bits).
    """
    db = np.empty(dy.shape[1], dtype=dy.dtype)
    _backward_bias(dy, db)
    return db


def _backward_bias(const floating[:, :, :, ::1] dy, floating[::1] db):
    cdef int N = dy.shape[0], C = dy.shape[1], n, c
    cdef Py_ssize_t plane = <Py_ssize_t>dy.shape[2] * dy.shape[3]
    cdef double s
    with nogil:
        for c in prange(C, schedule="static", num_threads=_threads_for(<double>N * C * plane)):
            s = 0
            for n in range(N):
                s = s + _sum(&dy[n, c, 0, 0], plane)
            db[c] = <floating>s


cdef double _sum(const floating *p, Py_ssize_t n) noexcept nogil:
    """Σ p[0:n] in LANES interleaved float64 partial sums, added in order at the end."""
    cdef double acc[LANES]
    cdef Py_ssize_t j, block, full = n - n % LANES
    cdef int l
    cdef double s = 0
    for l in range(LANES):
        acc[l] = 0
    for block in range(full // LANES):
        for l in range(LANES):
            acc[l] += p[block * LANES + l]
    for j in range(full, n):
        acc[j - full] += p[j]
    for l in range(LANES):
        s += acc[l]
    return s


# ----------------------------------------------------------------- im2col + GEMM implementations
def _forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
             const floating[::1] b, floating[:, :, :, ::1] y,
             int sh, int sw, int ph, int pw, int dh, int dw, int groups):
    dtype = np.float32 if floating is float else np.float64
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int C_out = w.shape[0], KH = w.shape[2], KW = w.shape[3]
    cdef int OH = y.shape[2], OW = y.shape[3]
    cdef int Cog = C_out // groups           # output channels per group
    cdef int KG = w.shape[1] * KH * KW       # rows of cols per group = columns of w[g]
    cdef Py_ssize_t plane = <Py_ssize_t>OH * OW
    cdef Py_ssize_t x_size = <Py_ssize_t>C * H * W
    cdef int samples = _samples_per_tile(N, OH, OW, C * KH * KW * sizeof(floating), 2)
    cdef bint pointwise = samples == 1 and _is_pointwise(KH, KW, sh, sw, ph, pw, H, W, OH, OW)
    # one sample: blocks of `rows` output rows, several per sample for small batches
    cdef int rows = OH if samples > 1 else _rows_per_tile(
        OH, OW, C * KH * KW * sizeof(floating), _cdiv(MIN_ITEMS, N))
    cdef int tiles = _tile_count(N, OH, samples, rows)
    cdef Py_ssize_t cols_len = 0 if pointwise else <Py_ssize_t>C * KH * KW * samples * rows * OW
    # several samples: the GEMM writes (C_out, columns) here, then each plane goes to y[n, o]
    cdef Py_ssize_t out_len = <Py_ssize_t>C_out * samples * plane if samples > 1 else 0
    cdef floating[:, ::1] ws = np.empty((omp_get_max_threads(), max(cols_len + out_len, 1)),
                                        dtype=dtype)
    cdef floating beta = 1 if b.shape[0] > 0 and samples == 1 else 0
    # float32: each group's weights packed once for all the tiles (see _gemm_packed)
    cdef Py_ssize_t a_len = edu_packed_a_size(Cog, KG) if floating is float else 1
    cdef float[:, ::1] packed = np.empty((groups, a_len), dtype=np.float32)
    cdef int t, s, g, o, L, ld, saved, threads
    cdef Py_ssize_t j
    cdef Tile tile
    cdef floating fill
    cdef const floating *cols
    cdef floating *buf
    cdef floating *out
    cdef floating *yt
    threads = _begin_gemm_loop(<double>N * C_out * KG * plane, &saved)
    with nogil:
        _pack_weights(&w[0, 0, 0, 0], groups, Cog, w.shape[1], KH * KW, 1, w.shape[1], False,
                      &packed[0, 0], a_len, threads)
        for t in prange(tiles, schedule="dynamic", num_threads=threads):
            tile = _tile(t, N, OH, samples, rows)
            L = tile.ns * tile.nrows * OW
            buf = &ws[omp_get_thread_num(), 0]
            if pointwise:  # cols(x[n]) is x[n] itself, a (C, H*W) matrix
                cols = &x[tile.n0, 0, tile.oh0, 0]
                ld = H * W
            else:
                _im2col_tile(&x[0, 0, 0, 0], x_size, tile, H, W, KH, KW, sh, sw, ph, pw, dh, dw,
                             OW, 0, C, buf)
                cols = buf
                ld = L
            if samples == 1:  # the GEMM writes y[n, :, rows] in place
                if beta != 0:  # start from the bias; the GEMM (beta = 1) adds w @ cols onto it
                    for o in range(C_out):
                        yt = &y[tile.n0, o, tile.oh0, 0]
                        for j in range(L):
                            yt[j] = b[o]
                for g in range(groups):
                    _gemm_packed(&packed[g, 0], False, Cog, L, KG, &w[g * Cog, 0, 0, 0], KG,
                                 cols + <Py_ssize_t>g * KG * ld, ld, beta,
                                 &y[tile.n0, g * Cog, tile.oh0, 0], plane)
            else:
                out = buf + cols_len
                for g in range(groups):
                    _gemm_packed(&packed[g, 0], False, Cog, L, KG, &w[g * Cog, 0, 0, 0], KG,
                                 cols + <Py_ssize_t>g * KG * ld, ld, 0,
                                 out + <Py_ssize_t>g * Cog * L, L)
                for s in range(tile.ns):
                    for o in range(C_out):
                        fill = b[o] if b.shape[0] > 0 else 0
                        yt = &y[tile.n0 + s, o, 0, 0]
                        for j in range(plane):
                            yt[j] = fill + out[o * L + s * plane + j]
    _end_gemm_loop(saved)


def _backward_input(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] w,
                    const floating[::1] b, floating[:, :, :, ::1] dx,
                    int sh, int sw, int ph, int pw, int dh, int dw, int groups):
    dtype = np.float32 if floating is float else np.float64
    cdef int N = dy.shape[0], C_out = dy.shape[1], OH = dy.shape[2], OW = dy.shape[3]
    cdef int C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef int Cg = w.shape[1], KH = w.shape[2], KW = w.shape[3]
    cdef int KK = KH * KW, KG = Cg * KK, Cog = C_out // groups
    cdef Py_ssize_t plane = <Py_ssize_t>OH * OW, in_plane = <Py_ssize_t>H * W
    cdef Py_ssize_t dy_size = <Py_ssize_t>C_out * plane
    cdef int samples = _samples_per_tile(N, OH, OW, C * KK * sizeof(floating), 2)
    cdef bint pointwise = samples == 1 and _is_pointwise(KH, KW, sh, sw, ph, pw, H, W, OH, OW)
    # item = (sample group, group, block of cb input channels): it owns the planes dx[ns, c0:c1]
    # and adds the tiles of its samples into them in order (one tile when samples > 1)
    cdef int sample_groups = _cdiv(N, samples)
    cdef int blocks = min(Cg, _cdiv(MIN_ITEMS, sample_groups * groups))
    cdef int cb = _cdiv(Cg, blocks)
    blocks = _cdiv(Cg, cb)
    cdef int rows = OH if samples > 1 else _rows_per_tile(OH, OW, cb * KK * sizeof(floating), 1)
    cdef int row_tiles = _cdiv(OH, rows) if samples == 1 else 1
    cdef Py_ssize_t cols_len = 0 if pointwise else <Py_ssize_t>cb * KK * samples * rows * OW
    # several samples: their dy planes, side by side as one (Cog, columns) matrix
    cdef Py_ssize_t dy_len = <Py_ssize_t>Cog * samples * plane if samples > 1 else 0
    cdef floating[:, ::1] ws = np.empty((omp_get_max_threads(), max(cols_len + dy_len, 1)),
                                        dtype=dtype)
    # float32: w[g]ᵀ's rows of each block of input channels packed once (see _gemm_packed)
    cdef Py_ssize_t a_len = edu_packed_a_size(cb * KK, Cog) if floating is float else 1
    cdef float[:, ::1] packed = np.empty((groups * blocks, a_len), dtype=np.float32)
    cdef int item, sg, g, c, c0, c1, t, s, n, L, L1, lddy, saved, threads
    cdef Py_ssize_t j
    cdef Tile tile
    cdef floating fill
    cdef const floating *dyt
    cdef floating *dxp
    cdef floating *buf
    threads = _begin_gemm_loop(<double>N * C * KK * Cog * plane, &saved)
    with nogil:
        _pack_weights(&w[0, 0, 0, 0], groups, Cog, Cg, KK, blocks, cb, True, &packed[0, 0],
                      a_len, threads)
        for item in prange(sample_groups * groups * blocks, schedule="dynamic",
                           num_threads=threads):
            sg = item // (groups * blocks)
            g = (item // blocks) % groups
            c0 = g * Cg + (item % blocks) * cb
            c1 = min(c0 + cb, (g + 1) * Cg)
            for n in range(sg * samples, min(sg * samples + samples, N)):
                for c in range(c0, c1):  # each owned plane starts from the bias (or 0)
                    fill = b[c] if b.shape[0] > 0 else 0
                    dxp = &dx[n, c, 0, 0]
                    for j in range(in_plane):
                        dxp[j] = fill
            buf = &ws[omp_get_thread_num(), 0]
            for t in range(sg * row_tiles, (sg + 1) * row_tiles):  # in order: col2im adds
                tile = _tile(t, N, OH, samples, rows)
                L1 = tile.nrows * OW
                L = tile.ns * L1
                dyt = _tile_planes(&dy[0, 0, 0, 0], dy_size, plane, tile, OW, g * Cog,
                                   (g + 1) * Cog, buf + cols_len, &lddy)
                # w[g][:, block]ᵀ (block rows of cols, Cog) @ dy[tile, g] (Cog, L)
                if pointwise:  # col2im is the identity: write straight into dx
                    _gemm_packed(&packed[item % (groups * blocks), 0], True, c1 - c0, L, Cog,
                                 &w[g * Cog, c0 - g * Cg, 0, 0], KG, dyt, lddy, 1,
                                 &dx[tile.n0, c0, tile.oh0, 0], in_plane)
                else:
                    _gemm_packed(&packed[item % (groups * blocks), 0], True, (c1 - c0) * KK, L,
                                 Cog, &w[g * Cog, c0 - g * Cg, 0, 0], KG, dyt, lddy, 0, buf, L)
                    for s in range(tile.ns):
                        _col2im_block(buf + s * L1, L, H, W, KH, KW, sh, sw, ph, pw, dh, dw,
                                      OW, tile.oh0, tile.oh0 + tile.nrows, c0, c1,
                                      &dx[tile.n0 + s, 0, 0, 0])
    _end_gemm_loop(saved)


def _backward_weight(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                     floating[:, :, :, ::1] dw_out,
                     int sh, int sw, int ph, int pw, int dh, int dw, int groups):
    dtype = np.float32 if floating is float else np.float64
    cdef int N = dy.shape[0], C_out = dy.shape[1], OH = dy.shape[2], OW = dy.shape[3]
    cdef int C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int Cg = dw_out.shape[1], KH = dw_out.shape[2], KW = dw_out.shape[3]
    cdef int KK = KH * KW, KG = Cg * KK, Cog = C_out // groups
    cdef Py_ssize_t plane = <Py_ssize_t>OH * OW, in_plane = <Py_ssize_t>H * W
    cdef Py_ssize_t x_size = <Py_ssize_t>C * in_plane, dy_size = <Py_ssize_t>C_out * plane
    cdef Py_ssize_t size = <Py_ssize_t>C_out * KG
    cdef int samples = _samples_per_tile(N, OH, OW, C * KK * sizeof(floating), 1)
    cdef bint pointwise = samples == 1 and _is_pointwise(KH, KW, sh, sw, ph, pw, H, W, OH, OW)
    # The batch is a list of `total` tiles. It is cut into `chunks` contiguous runs; each run
    # sums into its own partial dw, and the partials are added in chunk order at the end, so
    # the rounding never depends on which thread did what.
    cdef int rows = OH if samples > 1 else _rows_per_tile(OH, OW, KG * sizeof(floating), 1)
    cdef Py_ssize_t total = _tile_count(N, OH, samples, rows)
    cdef Py_ssize_t chunks = min(total, MAX_CHUNKS,
                                 max(1, PARTIAL_BYTES // (size * <Py_ssize_t>sizeof(floating))))
    # ... and each chunk's dw is split by input-channel blocks (only their cols rows are built)
    cdef int blocks = min(Cg, _cdiv(MIN_ITEMS, chunks * groups))
    cdef int cb = _cdiv(Cg, blocks)
    blocks = _cdiv(Cg, cb)
    # Partials are laid out like dw, per group (Cog, KG): partial = dy (Cog, L) @ colsᵀ (L, KG).
    cdef floating[:, :, :, ::1] partial = np.empty((chunks, groups, Cog, KG), dtype=dtype)
    cdef Py_ssize_t cols_len = 0 if pointwise else <Py_ssize_t>cb * KK * samples * rows * OW
    cdef Py_ssize_t dy_len = <Py_ssize_t>Cog * samples * plane if samples > 1 else 0
    cdef floating[:, ::1] ws = np.empty((omp_get_max_threads(), max(cols_len + dy_len, 1)),
                                        dtype=dtype)
    cdef floating *dwp = &dw_out[0, 0, 0, 0]
    cdef int item, chunk, g, c0, c1, L, ld, lddy, saved, threads
    cdef Py_ssize_t t, t0, t1, e, k
    cdef Tile tile
    cdef floating s
    cdef const floating *cols
    cdef const floating *dyt
    cdef floating *buf
    threads = _begin_gemm_loop(<double>N * C_out * KG * plane, &saved)
    with nogil:
        for item in prange(chunks * groups * blocks, schedule="dynamic", num_threads=threads):
            chunk = item // (groups * blocks)
            g = (item // blocks) % groups
            c0 = g * Cg + (item % blocks) * cb
            c1 = min(c0 + cb, (g + 1) * Cg)
            t0 = chunk * total // chunks
            t1 = (chunk + 1) * total // chunks
            buf = &ws[omp_get_thread_num(), 0]
            for t in range(t0, t1):
                tile = _tile(<int>t, N, OH, samples, rows)
                L = tile.ns * tile.nrows * OW
                if pointwise:
                    cols = &x[tile.n0, c0, tile.oh0, 0]
                    ld = <int>in_plane
                else:
                    _im2col_tile(&x[0, 0, 0, 0], x_size, tile, H, W, KH, KW, sh, sw, ph, pw,
                                 dh, dw, OW, c0, c1, buf)
                    cols = buf
                    ld = L
                dyt = _tile_planes(&dy[0, 0, 0, 0], dy_size, plane, tile, OW, g * Cog,
                                   (g + 1) * Cog, buf + cols_len, &lddy)
                # partial[chunk, g][:, block] (+)= dy[tile, g] (Cog, L) @ cols(block)ᵀ (L, rows)
                _gemm(False, True, Cog, (c1 - c0) * KK, L, dyt, lddy, cols, ld,
                      0 if t == t0 else 1, &partial[chunk, g, 0, (c0 - g * Cg) * KK], KG)
    _end_gemm_loop(saved)
    cdef const floating *pp = &partial[0, 0, 0, 0]  # partial[k] seen flat has dw's layout
    with nogil:  # dw = Σ_chunk partial[chunk], chunks in order
        for e in prange(size, schedule="static", num_threads=_threads_for(<double>size * chunks)):
            s = pp[e]
            for k in range(1, chunks):
                s = s + pp[k * size + e]
            dwp[e] = s


# ------------------------------------------------------------------- small maps: channels last
# On a map of 8x8 pixels or fewer, a 3x3 kernel's taps read padding often (in 31% of the
# (pixel, tap) pairs at 4x4, 56% at 2x2 and with dilation 4 at 8x8), and im2col multiplies
# every one of those zeros; building cols also cost as much as a fifth of the call. Channels
# last, the conv is one product per tap over lists of pixel rows that leave the padding out
# (``kernels/conv_rows.h``). Used for float32, groups == 1, with at least this many channels
# on each side, on maps of at most this many output pixels. Measured (AMD EPYC, 2 threads,
# N = 16, 3x3 convs of 64-512 channels, against im2col): on 2x2 to 8x8 maps the forward
# 1.2-1.5x faster, 2.4x with dilation 4; the input gradient likewise; the weight
# gradient 1.1-2x. On 16x16 maps no faster, sometimes slower (the padding is 4% of the taps
# there, and the two layout transposes cost what im2col cost).
CHANNELS_LAST_MAX_PIXELS = 64
CHANNELS_LAST_MIN_CHANNELS = 32
# Output rows per work item (a multiple of 16: the packing transposes 16 x 16 blocks).
cdef int ROWS_PER_ITEM = 64


def _channels_last_applies(dtype, C, C_out, kernel, groups, pixels):
    """Whether a conv runs on rows (:func:`_conv_rows`, :func:`_conv_rows_weight`): its
    forward, its weight gradient, and if it has stride 1 its input gradient. A 1x1 kernel
    never does: it has no padding taps to skip, and as a GEMM it needs no im2col."""
    return (dtype == np.float32 and groups == 1 and pixels <= CHANNELS_LAST_MAX_PIXELS
            and min(C, C_out) >= CHANNELS_LAST_MIN_CHANNELS and kernel[0] * kernel[1] > 1)


def _aligned_floats(n):
    """An empty float32 array of n elements that starts on a 64-byte boundary: the GEMM loads
    its packed B panels as aligned 16-float vectors."""
    buffer = np.empty(n + 16, dtype=np.float32)
    start = (-buffer.ctypes.data % 64) // 4
    return buffer[start:start + n]


def _conv_rows(x, w, b, y_hw, stride, padding, dilation, transposed):
    """A float32 conv of NCHW ``x`` through ``edu_conv_rows_block``, returned NCHW.

    Not ``transposed``: y = conv2d(x, w) + b, y_hw the output size. ``transposed``: the
    gradient of a stride-1 conv with respect to its input, as the conv of dy (passed as x)
    with the filters flipped and their channel axes swapped (the packing does both) and
    padding d·(K−1) − p (passed as ``padding``; it may be negative).
    """
    x_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1))   # (N, H, W, K)
    N_out = w.shape[0] if not transposed else w.shape[1]
    y_last = np.empty((x.shape[0], y_hw[0], y_hw[1], N_out), dtype=np.float32)
    if y_last.size == 0:
        return np.empty((x.shape[0], N_out, y_hw[0], y_hw[1]), dtype=np.float32)
    _rows_conv(x_last, w, _bias_or_empty(b, np.float32), y_last, *stride, *padding, *dilation,
               transposed)
    return np.ascontiguousarray(y_last.transpose(0, 3, 1, 2))


def _conv_rows_weight(dy, x, w_shape, stride, padding, dilation):
    """conv2d_backward_weight of a float32 conv on rows (``edu_conv_rows_weight_block``)."""
    dw = np.zeros(w_shape, dtype=np.float32)
    if dy.size and x.size:
        _rows_weight(np.ascontiguousarray(dy.transpose(0, 2, 3, 1)),
                     np.ascontiguousarray(x.transpose(0, 2, 3, 1)), dw, *stride, *padding,
                     *dilation)
    return dw


def _rows_weight(const float[:, :, :, ::1] dy, const float[:, :, :, ::1] x,
                 float[:, :, :, ::1] dw, int sh, int sw, int ph, int pw, int dh, int dw_):
    """dw (C_out, C, KH, KW) from dy (N, OH, OW, C_out) and x (N, H, W, C), channels last.

    Items: (tap, block of output channels), with as many blocks as give every thread about
    four items; each item sums over all the batch's pixels in order, so the result does not
    depend on the thread count.
    """
    cdef int N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef int OH = dy.shape[1], OW = dy.shape[2], C_out = dy.shape[3]
    cdef int KH = dw.shape[2], KW = dw.shape[3], KK = KH * KW
    cdef int threads = _threads_for(<double>N * OH * OW * C_out * C * KK)
    cdef int o_blocks = min(_cdiv(C_out, EDU_MR), _cdiv(4 * omp_get_max_threads(), KK))
    cdef int ob = _cdiv(_cdiv(C_out, o_blocks), EDU_MR) * EDU_MR   # whole A panels
    o_blocks = _cdiv(C_out, ob)
    # per thread, from a 64-byte boundary: Bp (aligned vector loads), Ap, G
    cdef Py_ssize_t bp_len = <Py_ssize_t>EDU_KC * _cdiv(C, EDU_NR) * EDU_NR
    cdef Py_ssize_t region = _cdiv(bp_len + EDU_KC * ob + ob * C, 16) * 16
    cdef float[::1] ws = _aligned_floats(omp_get_max_threads() * region)
    cdef Py_ssize_t[:, ::1] pointers = np.empty((omp_get_max_threads(), 2 * EDU_KC),
                                                dtype=np.intp)
    cdef int item, t, o0, tid
    cdef float *own
    with nogil:
        for item in prange(KK * o_blocks, schedule="dynamic", num_threads=threads):
            tid = omp_get_thread_num()
            t = item // o_blocks
            o0 = (item % o_blocks) * ob
            own = &ws[tid * region]
            edu_conv_rows_weight_block(&dy[0, 0, 0, 0], &x[0, 0, 0, 0], N, H, W, C, OH, OW,
                                       C_out, KH, KW, sh, sw, ph, pw, dh, dw_, t // KW, t % KW,
                                       o0, min(o0 + ob, C_out), &dw[0, 0, 0, 0],
                                       <const float **>&pointers[tid, 0], own + bp_len, own,
                                       own + bp_len + EDU_KC * ob)


def _rows_conv(const float[:, :, :, ::1] x, const float[:, :, :, ::1] w, const float[::1] b,
               float[:, :, :, ::1] y, int sh, int sw, int ph, int pw, int dh, int dw,
               bint transposed):
    """y (N, OH, OW, N_out) = Σ_taps (see conv_rows.h), x (N, H, W, K), both channels last.

    Items: blocks of ROWS_PER_ITEM output pixels × blocks of output channels (split only when
    there are too few pixel blocks to keep every thread busy). Each item sums all taps of its
    block in order, so the result does not depend on the thread count.
    """
    cdef int N = x.shape[0], H = x.shape[1], W = x.shape[2], K = x.shape[3]
    cdef int OH = y.shape[1], OW = y.shape[2], N_out = y.shape[3]
    cdef int C_out = w.shape[0], C = w.shape[1], KH = w.shape[2], KW = w.shape[3]
    cdef int KK = KH * KW, P = N * OH * OW
    cdef int threads = _threads_for(<double>P * N_out * K * KK)
    cdef int kbs = _cdiv(K, EDU_KC), panels = _cdiv(N_out, EDU_NR)
    cdef int row_items = _cdiv(P, ROWS_PER_ITEM)
    cdef int col_items = min(panels, _cdiv(4 * omp_get_max_threads(), row_items))
    cdef int cols_per_item = _cdiv(panels, col_items) * EDU_NR
    col_items = _cdiv(N_out, cols_per_item)
    cdef float[::1] packed = _aligned_floats(max(edu_packed_taps_size(KK, K, N_out), 1))
    # per thread: the row pointers and output-row pointers of one tap, and a packed A block
    cdef Py_ssize_t[:, ::1] pointers = np.empty((omp_get_max_threads(), 2 * ROWS_PER_ITEM),
                                                dtype=np.intp)
    cdef float[:, ::1] ws = np.empty((omp_get_max_threads(), EDU_KC * ROWS_PER_ITEM),
                                     dtype=np.float32)
    cdef const float *bias = &b[0] if b.shape[0] > 0 else NULL
    cdef int item, r0, j0, tid
    with nogil:  # the weights packed once, for all items
        for item in prange(kbs * panels, schedule="dynamic", num_threads=threads):
            edu_pack_taps_panel(&w[0, 0, 0, 0], C_out, C, KK, transposed, item // panels,
                                (item % panels) * EDU_NR, &packed[0])
        for item in prange(row_items * col_items, schedule="dynamic", num_threads=threads):
            tid = omp_get_thread_num()
            r0 = (item // col_items) * ROWS_PER_ITEM
            j0 = (item % col_items) * cols_per_item
            edu_conv_rows_block(&x[0, 0, 0, 0], H, W, K, &y[0, 0, 0, 0], OH, OW, N_out, KH, KW,
                                sh, sw, ph, pw, dh, dw, &packed[0], bias,
                                r0, min(r0 + ROWS_PER_ITEM, P), j0, min(j0 + cols_per_item, N_out),
                                <const float **>&pointers[tid, 0],
                                <float **>&pointers[tid, ROWS_PER_ITEM], &ws[tid, 0])


# ---------------------------------------------------------------------------- depthwise: direct
# groups == C_in == C_out: output channel c sees input channel c only, through a KH x KW stencil.
# As GEMMs this would be C products with one row each, so direct loops win. Every work item owns
# whole planes, and each prange body calls one plane-level helper, so no two threads share data.
#
# Stride 1 (the common case) uses "wide rows": copy the plane into a zero-padded buffer of width
# Wp; then, for every tap, out_wide[j] += w[tap] * padded[j + offset(tap)] is ONE long vector loop
# over all OH*Wp positions. The last Wp - OW columns of each wide row are junk and dropped. The
# strided case walks the valid part of each output row instead (short loops, but no junk).


cdef void _pad_plane(const floating *src, int H, int W, int top, int left,
                     floating *dst, int Hp, int Wp, Py_ssize_t size) noexcept nogil:
    """dst[0:size] = zeros, then src (H, W) placed at (top, left) of dst seen as (Hp, Wp).

    Negative ``top``/``left`` and parts beyond Hp x Wp crop src instead of padding it.
    """
    cdef int i, j, j_lo, j_hi
    _fill(dst, size, 0)
    j_lo = max(0, -left)
    j_hi = min(W, Wp - left)
    for i in range(max(0, -top), min(H, Hp - top)):
        for j in range(j_lo, j_hi):
            dst[<Py_ssize_t>(i + top) * Wp + j + left] = src[<Py_ssize_t>i * W + j]


cdef void _depthwise_plane_s1(const floating *src, int Hs, int Ws, int top, int left,
                              const floating *w, bint flip, int KH, int KW, int dh, int dw,
                              floating fill, floating *out, int OH, int OW,
                              floating *padded, floating *wide) noexcept nogil:
    """out (OH, OW) = fill + Σ_taps w[tap] · src_padded[oh + kh*dh, ow + kw*dw] (stride 1).

    src (Hs, Ws) is placed at (top, left) of a zero buffer of (OH + dh(KH-1)) x (OW + dw(KW-1)).
    ``flip`` reads the kernel rotated by 180°: the input gradient is this correlation of dy with
    the flipped kernel (the transposed conv's "fancy padding" view, stride 1).
    """
    cdef int Hp = OH + dh * (KH - 1), Wp = OW + dw * (KW - 1)
    cdef Py_ssize_t j, L = <Py_ssize_t>OH * Wp, off
    cdef int kh, kw, oh, ow
    cdef floating wv
    # dw*(KW-1) extra zeros: the junk columns of the last wide row read past the plane
    _pad_plane(src, Hs, Ws, top, left, padded, Hp, Wp, <Py_ssize_t>Hp * Wp + dw * (KW - 1))
    if KH == 3 and KW == 3:
        _depthwise_wide_3x3(padded, Wp, dh, dw, w, flip, wide, L)
    else:
        _fill(wide, L, 0)
        for kh in range(KH):
            for kw in range(KW):
                wv = w[(KH - 1 - kh) * KW + KW - 1 - kw] if flip else w[kh * KW + kw]
                off = <Py_ssize_t>kh * dh * Wp + kw * dw
                for j in range(L):
                    wide[j] = wide[j] + wv * padded[j + off]
    for oh in range(OH):
        for ow in range(OW):
            out[oh * OW + ow] = fill + wide[<Py_ssize_t>oh * Wp + ow]


cdef void _depthwise_wide_3x3(const floating *p, int Wp, int dh, int dw, const floating *w,
                              bint flip, floating *wide, Py_ssize_t L) noexcept nogil:
    """wide[j] = Σ_{kh, kw < 3} w[kh, kw] · p[j + kh*dh*Wp + kw*dw], the taps in order.

    The 3x3 case of the loop in :func:`_depthwise_plane_s1` with the nine taps written out: one
    pass over the plane, the sum kept in a register, instead of nine passes that each load and
    store every element of ``wide`` (measured 1.4-1.5x faster forward on 16x16 to 64x64 planes,
    AMD EPYC).
    """
    cdef floating k[9]
    cdef int t
    for t in range(9):
        k[t] = w[8 - t] if flip else w[t]
    cdef floating k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5]
    cdef floating k6 = k[6], k7 = k[7], k8 = k[8]
    cdef Py_ssize_t j, r1 = <Py_ssize_t>dh * Wp, r2 = 2 * <Py_ssize_t>dh * Wp
    cdef Py_ssize_t c1 = dw, c2 = 2 * dw
    for j in range(L):
        wide[j] = (k0 * p[j] + k1 * p[j + c1] + k2 * p[j + c2]
                   + k3 * p[j + r1] + k4 * p[j + r1 + c1] + k5 * p[j + r1 + c2]
                   + k6 * p[j + r2] + k7 * p[j + r2 + c1] + k8 * p[j + r2 + c2])


cdef void _depthwise_weight_3x3(const floating *wide, const floating *padded, int Wp, int dh,
                                int dw, Py_ssize_t L, floating *acc) noexcept nogil:
    """The 3x3 case of :func:`_depthwise_plane_s1_weight`: all nine taps' LANES partial sums in
    one pass over the plane (each dy value loaded once, not nine times), each sum in the same
    order as tap by tap."""
    cdef floating p0[LANES]
    cdef floating p1[LANES]
    cdef floating p2[LANES]
    cdef floating p3[LANES]
    cdef floating p4[LANES]
    cdef floating p5[LANES]
    cdef floating p6[LANES]
    cdef floating p7[LANES]
    cdef floating p8[LANES]
    cdef Py_ssize_t j, block, r1 = <Py_ssize_t>dh * Wp, r2 = 2 * <Py_ssize_t>dh * Wp
    cdef Py_ssize_t c1 = dw, c2 = 2 * dw
    cdef const floating *x
    cdef int l
    for l in range(LANES):
        p0[l] = acc[l]
        p1[l] = acc[LANES + l]
        p2[l] = acc[2 * LANES + l]
        p3[l] = acc[3 * LANES + l]
        p4[l] = acc[4 * LANES + l]
        p5[l] = acc[5 * LANES + l]
        p6[l] = acc[6 * LANES + l]
        p7[l] = acc[7 * LANES + l]
        p8[l] = acc[8 * LANES + l]
    for block in range(L // LANES):
        j = block * LANES
        x = padded + j
        for l in range(LANES):
            p0[l] = p0[l] + wide[j + l] * x[l]
            p1[l] = p1[l] + wide[j + l] * x[l + c1]
            p2[l] = p2[l] + wide[j + l] * x[l + c2]
            p3[l] = p3[l] + wide[j + l] * x[l + r1]
            p4[l] = p4[l] + wide[j + l] * x[l + r1 + c1]
            p5[l] = p5[l] + wide[j + l] * x[l + r1 + c2]
            p6[l] = p6[l] + wide[j + l] * x[l + r2]
            p7[l] = p7[l] + wide[j + l] * x[l + r2 + c1]
            p8[l] = p8[l] + wide[j + l] * x[l + r2 + c2]
    for l in range(LANES):
        acc[l] = p0[l]
        acc[LANES + l] = p1[l]
        acc[2 * LANES + l] = p2[l]
        acc[3 * LANES + l] = p3[l]
        acc[4 * LANES + l] = p4[l]
        acc[5 * LANES + l] = p5[l]
        acc[6 * LANES + l] = p6[l]
        acc[7 * LANES + l] = p7[l]
        acc[8 * LANES + l] = p8[l]


cdef void _depthwise_plane_s1_weight(const floating *dy, int OH, int OW,
                                     const floating *x, int H, int W, int ph, int pw,
                                     int KH, int KW, int dh, int dw, floating *acc,
                                     floating *padded, floating *wide) noexcept nogil:
    """acc[tap, lane] += the products dy · x_padded of one plane pair, stride 1.

    dw[tap] = Σ_{oh, ow} dy[oh, ow] · x_padded[oh + kh*dh, ow + kw*dw] is a dot product of the
    wide dy (junk columns set to 0) with the padded x shifted by the tap. It is summed in LANES
    interleaved partial sums so the loop vectorises; the caller adds the lanes in order.
    """
    cdef int Hp = H + 2 * ph, Wp = W + 2 * pw
    cdef Py_ssize_t L = _cdiv(OH * Wp, LANES) * LANES, j, block, off
    cdef int kh, kw, l
    cdef floating part[LANES]  # a local array: the compiler knows no store to it changes the inputs
    _pad_plane(x, H, W, ph, pw, padded, Hp, Wp, <Py_ssize_t>Hp * Wp + dw * (KW - 1) + LANES)
    _pad_plane(dy, OH, OW, 0, 0, wide, OH, Wp, L)
    if KH == 3 and KW == 3:
        _depthwise_weight_3x3(wide, padded, Wp, dh, dw, L, acc)
        return
    for kh in range(KH):
        for kw in range(KW):
            off = <Py_ssize_t>kh * dh * Wp + kw * dw
            for l in range(LANES):
                part[l] = acc[(kh * KW + kw) * LANES + l]
            for block in range(L // LANES):
                j = block * LANES
                for l in range(LANES):
                    part[l] = part[l] + wide[j + l] * padded[j + l + off]
            for l in range(LANES):
                acc[(kh * KW + kw) * LANES + l] = part[l]


cdef void _depthwise_plane_forward(const floating *x, const floating *w, floating *y,
                                   int H, int W, int KH, int KW, int OH, int OW,
                                   int sh, int sw, int ph, int pw, int dh, int dw) noexcept nogil:
    """y (OH, OW) += Σ_{kh, kw} w[kh, kw] · x(H, W) shifted by the tap (any stride)."""
    cdef int kh, kw, oh, ow
    cdef Span rows, cols
    cdef floating wv
    cdef const floating *src
    cdef floating *dst
    for kh in range(KH):
        rows = _valid_range(OH, kh * dh - ph, sh, H)
        for kw in range(KW):
            cols = _valid_range(OW, kw * dw - pw, sw, W)
            wv = w[kh * KW + kw]
            for oh in range(rows.lo, rows.hi):
                src = x + (oh * sh - ph + kh * dh) * W + kw * dw - pw
                dst = y + oh * OW
                for ow in range(cols.lo, cols.hi):
                    dst[ow] = dst[ow] + wv * src[ow * sw]


cdef void _depthwise_plane_backward_input(const floating *dy, const floating *w, floating *dx,
                                          int H, int W, int KH, int KW, int OH, int OW,
                                          int sh, int sw, int ph, int pw, int dh,
                                          int dw) noexcept nogil:
    """dx (H, W) += every dy (OH, OW) pixel times each tap, scattered where that tap read."""
    cdef int kh, kw, oh, ow
    cdef Span rows, cols
    cdef floating wv
    cdef const floating *src
    cdef floating *dst
    for kh in range(KH):
        rows = _valid_range(OH, kh * dh - ph, sh, H)
        for kw in range(KW):
            cols = _valid_range(OW, kw * dw - pw, sw, W)
            wv = w[kh * KW + kw]
            for oh in range(rows.lo, rows.hi):
                src = dy + oh * OW
                dst = dx + (oh * sh - ph + kh * dh) * W + kw * dw - pw
                for ow in range(cols.lo, cols.hi):
                    dst[ow * sw] = dst[ow * sw] + wv * src[ow]


cdef void _depthwise_plane_backward_weight(const floating *dy, const floating *x, floating *acc,
                                           int H, int W, int KH, int KW, int OH, int OW,
                                           int sh, int sw, int ph, int pw, int dh,
                                          int dw) noexcept nogil:
    """acc[tap, ow] += Σ_oh dy[oh, ow] · x[ih, iw] (any stride): one partial sum per column."""
    cdef int kh, kw, oh, ow
    cdef Span rows, cols
    cdef floating *a
    cdef const floating *g
    cdef const floating *src
    for kh in range(KH):
        rows = _valid_range(OH, kh * dh - ph, sh, H)
        for kw in range(KW):
            cols = _valid_range(OW, kw * dw - pw, sw, W)
            a = acc + (kh * KW + kw) * OW
            for oh in range(rows.lo, rows.hi):
                g = dy + oh * OW
                src = x + (oh * sh - ph + kh * dh) * W + kw * dw - pw
                for ow in range(cols.lo, cols.hi):
                    a[ow] = a[ow] + g[ow] * src[ow * sw]


cdef inline void _fill(floating *p, Py_ssize_t n, floating value) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        p[j] = value


def _depthwise_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                       const floating[::1] b, floating[:, :, :, ::1] y,
                       int sh, int sw, int ph, int pw, int dh, int dw):
    """y[n, c] = b[c] + w[c] ⋆ x[n, c]; one (n, c) plane per item."""
    dtype = np.float32 if floating is float else np.float64
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int KH = w.shape[2], KW = w.shape[3], OH = y.shape[2], OW = y.shape[3]
    cdef bint unit = sh == 1 and sw == 1
    cdef Py_ssize_t Hp = H + 2 * ph, Wp = W + 2 * pw
    # per thread: the padded plane (+ slack read by the junk columns) and the wide output
    cdef floating[:, ::1] ws = np.empty((omp_get_max_threads(),
                                         Hp * Wp + dw * KW + OH * Wp if unit else 1),
                                        dtype=dtype)
    cdef int item, n, c
    cdef floating *buf
    with nogil:
        for item in prange(N * C, schedule="static",
                           num_threads=_threads_for(<double>N * C * KH * KW * OH * OW)):
            n = item // C
            c = item % C
            if unit:
                buf = &ws[omp_get_thread_num(), 0]
                _depthwise_plane_s1(&x[n, c, 0, 0], H, W, ph, pw, &w[c, 0, 0, 0], False,
                                    KH, KW, dh, dw, b[c] if b.shape[0] > 0 else 0,
                                    &y[n, c, 0, 0], OH, OW, buf, buf + Hp * Wp + dw * KW)
            else:
                _fill(&y[n, c, 0, 0], <Py_ssize_t>OH * OW, b[c] if b.shape[0] > 0 else 0)
                _depthwise_plane_forward(&x[n, c, 0, 0], &w[c, 0, 0, 0], &y[n, c, 0, 0],
                                         H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw)


def _depthwise_backward_input(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] w,
                              const floating[::1] b, floating[:, :, :, ::1] dx,
                              int sh, int sw, int ph, int pw, int dh, int dw):
    """dx[n, c] = b[c] + (dy[n, c] scattered through w[c]); the item owns the plane dx[n, c]."""
    dtype = np.float32 if floating is float else np.float64
    cdef int N = dy.shape[0], C = dy.shape[1], OH = dy.shape[2], OW = dy.shape[3]
    cdef int H = dx.shape[2], W = dx.shape[3], KH = w.shape[2], KW = w.shape[3]
    cdef bint unit = sh == 1 and sw == 1
    cdef Py_ssize_t Hp = H + dh * (KH - 1), Wp = W + dw * (KW - 1)
    cdef floating[:, ::1] ws = np.empty((omp_get_max_threads(),
                                         Hp * Wp + dw * KW + H * Wp if unit else 1),
                                        dtype=dtype)
    cdef int item, n, c
    cdef floating *buf
    with nogil:
        for item in prange(N * C, schedule="static",
                           num_threads=_threads_for(<double>N * C * KH * KW * OH * OW)):
            n = item // C
            c = item % C
            if unit:  # the correlation of dy, padded by d(K-1) - p, with the flipped kernel
                buf = &ws[omp_get_thread_num(), 0]
                _depthwise_plane_s1(&dy[n, c, 0, 0], OH, OW, dh * (KH - 1) - ph,
                                    dw * (KW - 1) - pw, &w[c, 0, 0, 0], True, KH, KW, dh, dw,
                                    b[c] if b.shape[0] > 0 else 0, &dx[n, c, 0, 0], H, W,
                                    buf, buf + Hp * Wp + dw * KW)
            else:
                _fill(&dx[n, c, 0, 0], <Py_ssize_t>H * W, b[c] if b.shape[0] > 0 else 0)
                _depthwise_plane_backward_input(&dy[n, c, 0, 0], &w[c, 0, 0, 0], &dx[n, c, 0, 0],
                                                H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw)


def _depthwise_backward_weight(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                               floating[:, :, :, ::1] dw_out,
                               int sh, int sw, int ph, int pw, int dh, int dw):
    """dw[c, 0, kh, kw] = Σ_{n, oh, ow} dy[n, c, oh, ow] · x[n, c, ih, iw]; one channel per item.

    The item sums its samples in order into per-lane (stride 1) or per-column partial sums,
    then adds those in order: the same arithmetic for any thread count. (A single scalar sum
    would force the compiler to add one product at a time: it may not reorder a float sum.)
    """
    dtype = np.float32 if floating is float else np.float64
    cdef int N = dy.shape[0], C = dy.shape[1], OH = dy.shape[2], OW = dy.shape[3]
    cdef int H = x.shape[2], W = x.shape[3], KH = dw_out.shape[2], KW = dw_out.shape[3]
    cdef bint unit = sh == 1 and sw == 1
    cdef int lanes = LANES if unit else OW
    cdef Py_ssize_t Hp = H + 2 * ph, Wp = W + 2 * pw
    cdef Py_ssize_t padded_size = Hp * Wp + dw * KW + LANES, wide_size = OH * Wp + LANES
    cdef floating[:, ::1] ws = np.empty(
        (omp_get_max_threads(), KH * KW * lanes + (padded_size + wide_size if unit else 0)),
        dtype=dtype)
    cdef int n, c, tap, l
    cdef floating s
    cdef floating *acc
    with nogil:
        for c in prange(C, schedule="static",
                        num_threads=_threads_for(<double>N * C * KH * KW * OH * OW)):
            acc = &ws[omp_get_thread_num(), 0]
            _fill(acc, KH * KW * lanes, 0)
            for n in range(N):
                if unit:
                    _depthwise_plane_s1_weight(&dy[n, c, 0, 0], OH, OW, &x[n, c, 0, 0], H, W,
                                               ph, pw, KH, KW, dh, dw, acc,
                                               acc + KH * KW * lanes,
                                               acc + KH * KW * lanes + padded_size)
                else:
                    _depthwise_plane_backward_weight(&dy[n, c, 0, 0], &x[n, c, 0, 0], acc,
                                                     H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw)
            for tap in range(KH * KW):
                s = 0
                for l in range(lanes):
                    s = s + acc[tap * lanes + l]
                dw_out[c, 0, tap // KW, tap % KW] = s
