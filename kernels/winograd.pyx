# cython: language_level=3
"""The 3x3 stride-1 convolution by Winograd's minimal filtering, F(2x2, 3x3).

Its readable twin is :func:`edu_seg.reference.conv.conv2d_winograd`: the same transforms as
small matrices in NumPy, in about fifteen lines. Read that first.

Why
---
im2col + GEMM spends 9 multiply-adds per input channel on every output pixel. Winograd's
algorithm (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016)
computes a 2x2 block of outputs from a 4x4 block of inputs with 16 products per channel
instead of 4 · 9 = 36: 2.25 times fewer. The products are a GEMM again, so the fast packed
GEMM of ``kernels/sgemm.h`` does them; the rest is additions.

The mathematics, in one dimension
---------------------------------
Two outputs of a 3-tap filter g over four inputs d, y0 = d0 g0 + d1 g1 + d2 g2 and
y1 = d1 g0 + d2 g1 + d3 g2, need 6 products done directly, but only 4 this way::

    m0 = (d0 - d2) g0            m1 = (d1 + d2) (g0 + g1 + g2) / 2
    m3 = (d1 - d3) g2            m2 = (d2 - d1) (g0 - g1 + g2) / 2
    y0 = m0 + m1 + m2            y1 = m1 - m2 - m3

In matrix form y = Aᵀ [(G g) ⊙ (Bᵀ d)] with::

         [1  0 -1  0]          [ 1    0    0 ]
    Bᵀ = [0  1  1  0]      G = [1/2  1/2  1/2]      Aᵀ = [1  1  1  0]
         [0 -1  1  0]          [1/2 -1/2  1/2]           [0  1 -1 -1]
         [0  1  0 -1]          [ 0    0    1 ]

and the 2-D version nests it: Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A for a 4x4 input tile d and a 3x3
filter g. Summed over input channels c, the element-wise product at each of the 16 positions
ξ of the tile becomes a matrix product over c::

    M[ξ] (C_out, tiles) = U[ξ] (C_out, C) @ V[ξ] (C, tiles),
    U[ξ] = (G g Gᵀ)[ξ] for every (o, c),   V[ξ] = (Bᵀ d B)[ξ] for every (c, tile)

So one call is: transform the filters once (U), then per block of tiles transform the input
(V), do 16 GEMMs, and transform each 4x4 result back to its 2x2 outputs (Aᵀ M A).

The price is rounding: the transforms add and subtract up to 9 inputs before the product, so
the float32 error is a few times that of the direct sum (measured in the tests: within 1e-5 of
the float64 reference relative to the output's scale on the test geometries). That is why only
float32 takes this path; float64 keeps im2col.

How the work is split
---------------------
The output is cut into 2x2 tiles, ``TH = ⌈OH/2⌉`` rows of ``TW = ⌈OW/2⌉`` tiles per sample.
A work item is a *block* of consecutive tile rows of the batch (it may span samples, so small
maps still make GEMMs of useful width). Each thread transforms its block's inputs into its own
workspace (V, then M; both sized to stay in the core's L2 cache), runs the 16 GEMMs
single-threaded, and writes its own output rows: no two items touch the same memory. The
weight gradient sums over all tiles instead: the blocks are cut into a few fixed chunks, each
summed into its own partial (16, C_out, C) by one thread, and the partials are added in chunk
order at the end. Blocks and chunks depend on the shapes only, and every sum is in a fixed
order, so the result does not depend on the thread count.

The transforms (``kernels/winograd.h``) are written so that the compiler can vectorise them:
each input row is split into its even and odd columns first, after which every tile's column
transform is an operation between two contiguous arrays, one lane per tile.
"""
import numpy as np

from cython.parallel cimport prange

cdef extern from "sgemm.h":
    int edu_sgemm(int transA, int transB, int M, int N, int K, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc) noexcept nogil
    long edu_packed_a_size(int M, int K) noexcept nogil
    void edu_pack_a_whole(int transA, const float *A, int lda, int M, int K,
                          float *Ap) noexcept nogil
    int edu_sgemm_prepacked(int transB, int M, int N, int K, const float *A_whole,
                            const float *B, int ldb, float beta, float *C,
                            int ldc) noexcept nogil

cdef extern from "winograd.h":
    void edu_wino_input_rows(const float *plane, int H, int W, int ih0, int iw0, int TW,
                             int trows, float *scratch, float *V, long v_stride) noexcept nogil
    void edu_wino_output_row(const float *M, long m_stride, int TW, float bias, float *scratch,
                             float *y, int OW, int two_rows) noexcept nogil
    void edu_wino_grad_row(const float *plane, int OH, int OW, int oh0, int TW, float *scratch,
                           float *Y, long y_stride) noexcept nogil

cdef extern from "conv_threads.h":
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil

# A block aims at this many tiles: the width of the forward's 16 GEMMs (wider re-reads U less
# often), the length of the weight gradient's sums (longer amortises the GEMM's setup)...
cdef int BLOCK_TILES = 128
cdef int BLOCK_TILES_WEIGHT = 512
# ... within this much workspace for V and M together, so both stay in the L2 cache.
cdef Py_ssize_t BLOCK_BYTES = 1536 << 10
# Batches are cut into at least this many blocks where possible, so every thread gets work.
cdef int MIN_BLOCKS = 4
# The weight gradient sums the batch in at most this many parallel chunks, each into its own
# partial (16, C_out, C) sum, using at most this memory for them.
cdef int MAX_CHUNKS = 4
cdef Py_ssize_t PARTIAL_BYTES = 16 << 20
# Below this many multiply-adds (of the direct conv) the loop runs on one thread.
cdef double SERIAL_WORK = 1 << 18

cdef inline void _filter_1d(double g0, double g1, double g2, double *out) noexcept nogil:
    """out = G (g0, g1, g2)ᵀ: the rows of G are (1, 0, 0), (½, ½, ½), (½, −½, ½), (0, 0, 1)."""
    out[0] = g0
    out[1] = (g0 + g1 + g2) * 0.5
    out[2] = (g0 - g1 + g2) * 0.5
    out[3] = g2


def transform_filters(w):
    """U[ξ] = (G g Gᵀ)[ξ] for every filter g = w[o, c]: (C_out, C, 3, 3) -> (16, C_out, C).

    Computed in float64 and rounded once to float32.
    """
    U = np.empty((16, w.shape[0], w.shape[1]), dtype=np.float32)
    _transform_filters(np.ascontiguousarray(w, dtype=np.float32), U)
    return U


def _transform_filters(const float[:, :, :, ::1] w, float[:, :, ::1] U):
    cdef int K = w.shape[0], C = w.shape[1], o, c, i, a
    cdef double t[3][4]      # t[i] = G applied to row i of g: (G gᵀ)ᵀ, so t[i][a] = (g Gᵀ)[i, a]
    cdef double u[4]
    with nogil:
        for o in range(K):
            for c in range(C):
                for i in range(3):
                    _filter_1d(w[o, c, i, 0], w[o, c, i, 1], w[o, c, i, 2], t[i])
                for a in range(4):      # column a of g Gᵀ, transformed: (G g Gᵀ)[:, a]
                    _filter_1d(t[0][a], t[1][a], t[2][a], u)
                    for i in range(4):
                        U[4 * i + a, o, c] = <float>u[i]


cdef inline void _filter_1d_adjoint(double m0, double m1, double m2, double m3,
                                    double *out) noexcept nogil:
    """out = Gᵀ m: the columns of G are (1, ½, ½, 0), (0, ½, −½, 0), (0, ½, ½, 1)."""
    out[0] = m0 + (m1 + m2) * 0.5
    out[1] = (m1 - m2) * 0.5
    out[2] = (m1 + m2) * 0.5 + m3


def winograd_conv3x3(x, w, b, padding):
    """y = conv2d(x, w, b, stride=1, padding, dilation=1) by Winograd F(2x2, 3x3).

    Parameters
    ----------
    x : ndarray, (N, C, H, W), float32, C-contiguous
    w : ndarray, (C_out, C, 3, 3), float32
    b : ndarray, (C_out,), float32, or None
    padding : (int, int), each >= 0

    Returns
    -------
    y : ndarray, (N, C_out, H + 2·ph − 2, W + 2·pw − 2), float32
    """
    N, C, H, W = x.shape
    y = np.empty((N, w.shape[0], H + 2 * padding[0] - 2, W + 2 * padding[1] - 2),
                 dtype=np.float32)
    bias = np.empty(0, dtype=np.float32) if b is None else b
    _winograd_forward(x, transform_filters(w), bias, y, padding[0], padding[1])
    return y


cdef inline int _cdiv(int a, int b) noexcept nogil:
    return (a + b - 1) // b


cdef int _tile_rows_per_block(int tile_rows, int TW, int C, int K, int tiles) noexcept nogil:
    """Tile rows per block: about ``tiles`` tiles, the transformed tiles of C and K channels
    (16 values each) within BLOCK_BYTES, and at least MIN_BLOCKS blocks where possible."""
    cdef Py_ssize_t per_row = <Py_ssize_t>16 * (C + K) * TW * sizeof(float)
    cdef int R = max(1, min(_cdiv(tiles, TW), <int>(BLOCK_BYTES // per_row)))
    return max(1, min(R, _cdiv(tile_rows, MIN_BLOCKS)))


cdef void _transform_input_block(const float[:, :, :, ::1] x, int r0, int r1, int TH, int TW,
                                 int ph, int pw, int T, float *scratch,
                                 float *V) noexcept nogil:
    """V[ξ][c][(gr − r0)·TW + tx] = (Bᵀ d B)[ξ] for the tiles of tile rows gr in [r0, r1) of the
    batch (tile row gr is row gr % TH of sample gr // TH), every channel c; V[ξ] is (C, T)."""
    cdef int C = x.shape[1], gr = r0, n, rows, c
    while gr < r1:                  # the block's tile rows, one run per sample
        n = gr // TH
        rows = min(r1, (n + 1) * TH) - gr
        for c in range(C):
            edu_wino_input_rows(&x[n, c, 0, 0], x.shape[2], x.shape[3], 2 * (gr % TH) - ph, -pw,
                                TW, rows, scratch, V + <Py_ssize_t>c * T + (gr - r0) * TW,
                                <Py_ssize_t>C * T)
        gr += rows


def _winograd_forward(const float[:, :, :, ::1] x, const float[:, :, ::1] U,
                      const float[::1] b, float[:, :, :, ::1] y, int ph, int pw):
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int K = U.shape[1], OH = y.shape[2], OW = y.shape[3]
    cdef int TH = _cdiv(OH, 2), TW = _cdiv(OW, 2)
    cdef int tile_rows = N * TH                       # tile rows of the whole batch
    cdef int R = _tile_rows_per_block(tile_rows, TW, C, K, BLOCK_TILES)
    cdef int blocks = _cdiv(tile_rows, R)
    cdef Py_ssize_t v_len = <Py_ssize_t>16 * C * R * TW, m_len = <Py_ssize_t>16 * K * R * TW
    cdef Py_ssize_t ws_len = v_len + m_len + (4 * R + 14) * (TW + 1) + 32
    cdef float[:, ::1] ws = np.empty((omp_get_max_threads(), ws_len), dtype=np.float32)
    cdef int threads = 1 if <double>N * K * C * 9 * OH * OW < SERIAL_WORK else omp_get_max_threads()
    # U[ξ] packed once for the GEMMs (all blocks multiply by the same 16 matrices)
    cdef Py_ssize_t u_len = edu_packed_a_size(K, C)
    cdef float[:, ::1] U_packed = np.empty((16, max(u_len, 1)), dtype=np.float32)
    cdef int blk, r0, r1, gr, n, ty, k, xi, T, col, failed = 0
    cdef float *V
    cdef float *M
    cdef float *scratch
    with nogil:
        for xi in range(16):
            edu_pack_a_whole(0, &U[xi, 0, 0], C, K, C, &U_packed[xi, 0])
        for blk in prange(blocks, schedule="dynamic", num_threads=threads):
            r0 = blk * R
            r1 = min(r0 + R, tile_rows)
            T = (r1 - r0) * TW                     # tiles in this block: the GEMMs' width
            V = &ws[omp_get_thread_num(), 0]
            M = V + v_len
            scratch = M + m_len
            _transform_input_block(x, r0, r1, TH, TW, ph, pw, T, scratch, V)
            for xi in range(16):                   # M[ξ] (K, T) = U[ξ] (K, C) @ V[ξ] (C, T)
                if edu_sgemm_prepacked(0, K, T, C, &U_packed[xi, 0], V + <Py_ssize_t>xi * C * T,
                                       T, 0, M + <Py_ssize_t>xi * K * T, T) != 0:
                    failed = 1
            for gr in range(r0, r1):
                n = gr // TH
                ty = gr % TH
                col = (gr - r0) * TW
                for k in range(K):
                    edu_wino_output_row(M + <Py_ssize_t>k * T + col, <Py_ssize_t>K * T, TW,
                                        b[k] if b.shape[0] > 0 else 0, scratch,
                                        &y[n, k, 2 * ty, 0], OW, 2 * ty + 1 < OH)
    if failed:
        raise MemoryError("winograd_conv3x3: the GEMM could not allocate its packing buffers")


cdef void _add_into(float *a, const float *b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t e
    for e in range(n):
        a[e] = a[e] + b[e]


cdef void _weight_output_row(const float *M, int K, int C, int k, float *dw_k) noexcept nogil:
    """dw[k, c] = Gᵀ M[:, k, c] G for every c (M: (16, K, C))."""
    cdef int c, xi, a, i
    cdef double m[4][4]
    cdef double t[4][3]
    cdef double out[3]
    for c in range(C):
        for xi in range(16):
            m[xi // 4][xi % 4] = M[<Py_ssize_t>xi * K * C + <Py_ssize_t>k * C + c]
        for a in range(4):          # Gᵀ on the columns of M (the second index of ξ) ...
            _filter_1d_adjoint(m[a][0], m[a][1], m[a][2], m[a][3], out)
            for i in range(3):
                t[a][i] = out[i]
        for i in range(3):          # ... and on its rows
            _filter_1d_adjoint(t[0][i], t[1][i], t[2][i], t[3][i], out)
            for a in range(3):
                dw_k[c * 9 + a * 3 + i] = <float>out[a]


def winograd_conv3x3_backward_weight(dy, x, padding):
    """dw of y = conv2d(x, w, stride=1, padding, dilation=1), by Winograd F(2x2, 3x3).

    Parameters
    ----------
    dy : ndarray, (N, C_out, H + 2·ph − 2, W + 2·pw − 2), float32, C-contiguous
    x : ndarray, (N, C, H, W), float32, C-contiguous
    padding : (int, int)

    Returns
    -------
    dw : ndarray, (C_out, C, 3, 3), float32

    Notes
    -----
    The forward's trilinear form Σ dy·y = Σ_ξ (A DY Aᵀ)[ξ] (G g Gᵀ)[ξ] (Bᵀ D B)[ξ], summed over
    tiles, differentiated by the filter g, gives
    ``dw[o, c] = Gᵀ [Σ_tiles (A DY Aᵀ)[o] ⊙ (Bᵀ D B)[c]] G``: the same input transform as the
    forward, a 2x2 -> 4x4 transform of each dy tile, and per position ξ one GEMM that sums over
    all the tiles of the batch, M[ξ] (C_out, C) = Y[ξ] (C_out, tiles) @ V[ξ]ᵀ (tiles, C).
    """
    dw = np.empty((dy.shape[1], x.shape[1], 3, 3), dtype=np.float32)
    _winograd_backward_weight(dy, x, dw, padding[0], padding[1])
    return dw


def _winograd_backward_weight(const float[:, :, :, ::1] dy, const float[:, :, :, ::1] x,
                              float[:, :, :, ::1] dw, int ph, int pw):
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int K = dy.shape[1], OH = dy.shape[2], OW = dy.shape[3]
    cdef int TH = _cdiv(OH, 2), TW = _cdiv(OW, 2)
    cdef int tile_rows = N * TH
    cdef int R = _tile_rows_per_block(tile_rows, TW, C, K, BLOCK_TILES_WEIGHT)
    cdef int blocks = _cdiv(tile_rows, R)
    # The blocks are cut into `chunks` contiguous runs; each run sums into its own partial M,
    # and the partials are added in chunk order, so the rounding never depends on the threads.
    cdef Py_ssize_t m_size = <Py_ssize_t>16 * K * C
    cdef int chunks = <int>min(blocks, MAX_CHUNKS,
                               max(1, PARTIAL_BYTES // (m_size * <Py_ssize_t>sizeof(float))))
    cdef float[:, :, :, ::1] partial = np.empty((chunks, 16, K, C), dtype=np.float32)
    cdef Py_ssize_t v_len = <Py_ssize_t>16 * C * R * TW, y_len = <Py_ssize_t>16 * K * R * TW
    cdef Py_ssize_t ws_len = v_len + y_len + (4 * R + 14) * (TW + 1) + 32
    cdef float[:, ::1] ws = np.empty((omp_get_max_threads(), ws_len), dtype=np.float32)
    cdef int threads = 1 if <double>N * K * C * 9 * OH * OW < SERIAL_WORK else omp_get_max_threads()
    cdef int chunk, blk, r0, r1, gr, n, ty, k, xi, T, col, failed = 0
    cdef float *V
    cdef float *Y
    cdef float *scratch
    with nogil:
        for chunk in prange(chunks, schedule="dynamic", num_threads=threads):
            V = &ws[omp_get_thread_num(), 0]
            Y = V + v_len
            scratch = Y + y_len
            for blk in range(chunk * blocks // chunks, (chunk + 1) * blocks // chunks):
                r0 = blk * R
                r1 = min(r0 + R, tile_rows)
                T = (r1 - r0) * TW
                _transform_input_block(x, r0, r1, TH, TW, ph, pw, T, scratch, V)
                for gr in range(r0, r1):
                    n = gr // TH
                    ty = gr % TH
                    col = (gr - r0) * TW
                    for k in range(K):
                        edu_wino_grad_row(&dy[n, k, 0, 0], OH, OW, 2 * ty, TW, scratch,
                                          Y + <Py_ssize_t>k * T + col, <Py_ssize_t>K * T)
                for xi in range(16):   # partial[ξ] (K, C) (+)= Y[ξ] (K, T) @ V[ξ]ᵀ (T, C)
                    if edu_sgemm(0, 1, K, C, T, Y + <Py_ssize_t>xi * K * T, T,
                                 V + <Py_ssize_t>xi * C * T, T,
                                 0 if blk == chunk * blocks // chunks else 1,
                                 &partial[chunk, xi, 0, 0], C) != 0:
                        failed = 1
        for chunk in range(1, chunks):          # partial[0] += the others, in chunk order
            _add_into(&partial[0, 0, 0, 0], &partial[chunk, 0, 0, 0], m_size)
        for k in prange(K, schedule="static", num_threads=threads):
            _weight_output_row(&partial[0, 0, 0, 0], K, C, k, &dw[k, 0, 0, 0])
    if failed:
        raise MemoryError("winograd_conv3x3_backward_weight: the GEMM could not allocate its "
                          "packing buffers")
