/* The input and output transforms of Winograd's F(2x2, 3x3), one row of tiles at a time.
 *
 * Read kernels/winograd.pyx first: it says what the transforms are and how the work is split.
 * These loops are in C only for the `restrict` qualifier: it promises the compiler that the
 * arrays do not overlap, which is what lets it turn every loop over the tiles of a row (tx)
 * into AVX-512 vector instructions, 16 tiles per instruction. Without it (in Cython) the
 * same loops ran one float at a time and took longer than the 16 GEMMs together.
 */
#ifndef EDU_SEG_WINOGRAD_H
#define EDU_SEG_WINOGRAD_H

#include <string.h>

/* even[m] = x[ih, iw0 + 2m], odd[m] = x[ih, iw0 + 2m + 1] for m in [0, n); 0 in the padding.
 * plane: one channel, H x W; row: scratch for 2n + 32 floats. The row is first copied with its
 * zero padding into `row`, so that the split itself needs no bounds tests. */
static void edu_wino_split_row(const float *restrict plane, int H, int W, int ih, int iw0,
                               int n, float *restrict row, float *restrict even,
                               float *restrict odd) {
    if (ih < 0 || ih >= H) {
        for (int m = 0; m < n; m++)
            even[m] = odd[m] = 0.f;
        return;
    }
    /* row[j] = x[ih, iw0 + j] for j in [0, 2n): zeros, then the part inside the map */
    int lo = iw0 < 0 ? -iw0 : 0, hi = W - iw0 < 2 * n ? W - iw0 : 2 * n;
    if (hi < lo)
        hi = lo;
    for (int j = 0; j < lo; j++)
        row[j] = 0.f;
    memcpy(row + lo, plane + (long)ih * W + iw0 + lo, sizeof(float) * (hi - lo));
    for (int j = hi; j < 2 * n; j++)
        row[j] = 0.f;
    int m = 0;
#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
    /* 16 even and 16 odd columns from two contiguous 16-float loads and two shuffles: left to
     * itself the compiler reads every other float with an AVX-512 gather, which is slow on
     * AMD's CPUs. (Without AVX-512 the compiler splits these shuffles into slow pieces, 5 GB/s,
     * and its own vectorisation of the loop below is 7x faster.) */
    typedef float vec16 __attribute__((vector_size(64), aligned(4)));
    typedef int idx16 __attribute__((vector_size(64)));
    const idx16 evens = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    const idx16 odds = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
    for (; m + 16 <= n; m += 16) {
        vec16 a = *(const vec16 *)(row + 2 * m), b = *(const vec16 *)(row + 2 * m + 16);
        *(vec16 *)(even + m) = __builtin_shuffle(a, b, evens);
        *(vec16 *)(odd + m) = __builtin_shuffle(a, b, odds);
    }
#endif
    for (; m < n; m++) {
        even[m] = row[2 * m];
        odd[m] = row[2 * m + 1];
    }
}

/* Bᵀ d B for `trows` consecutive tile rows of one channel: V[ξ][r·TW + tx] = (Bᵀ d B)[ξ] for
 * tile tx of tile row r, V[ξ] at V + ξ·v_stride. Tile (r, tx) reads x[ih0 + 2r .. ih0 + 2r + 3,
 * iw0 + 2tx .. iw0 + 2tx + 3]. Neighbouring tile rows share two input rows, so every input row
 * is split into its even and odd columns once, first. scratch: (4 trows + 14)(TW + 1) + 32. */
static void edu_wino_input_rows(const float *plane, int H, int W, int ih0, int iw0, int TW,
                                int trows, float *restrict scratch, float *restrict V,
                                long v_stride) {
    int n = TW + 1, rows = 2 * trows + 2;
    float *split = scratch;                 /* input row i: even columns, then odd columns */
    float *t = split + 2L * rows * n;       /* Bᵀ d of one tile row: 4 rows x (even, odd) */
    float *copy = t + 8L * n;
    for (int i = 0; i < rows; i++)
        edu_wino_split_row(plane, H, W, ih0 + i, iw0, n, copy, split + 2L * i * n,
                           split + (2L * i + 1) * n);
    for (int r = 0; r < trows; r++) {
        /* Bᵀ d combines the tile row's four input rows d0..d3 into t0 = d0 - d2,
         * t1 = d1 + d2, t2 = d2 - d1, t3 = d1 - d3, for the even and the odd columns alike */
        for (int half = 0; half < 2; half++) {
            const float *restrict d0 = split + (2L * (2 * r) + half) * n;
            const float *restrict d1 = d0 + 2 * n, *restrict d2 = d1 + 2 * n;
            const float *restrict d3 = d2 + 2 * n;
            float *restrict t0 = t + half * n, *restrict t1 = t0 + 2 * n;
            float *restrict t2 = t1 + 2 * n, *restrict t3 = t2 + 2 * n;
            for (int m = 0; m < n; m++) {
                t0[m] = d0[m] - d2[m];
                t1[m] = d1[m] + d2[m];
                t2[m] = d2[m] - d1[m];
                t3[m] = d1[m] - d3[m];
            }
        }
        /* (Bᵀ d) B combines the columns the same way; tile tx's columns are even[tx],
         * odd[tx], even[tx+1], odd[tx+1] */
        for (int i = 0; i < 4; i++) {
            const float *restrict e = t + 2L * i * n, *restrict o = e + n;
            float *restrict v0 = V + (4 * i) * v_stride + (long)r * TW;
            float *restrict v1 = v0 + v_stride, *restrict v2 = v1 + v_stride;
            float *restrict v3 = v2 + v_stride;
            for (int tx = 0; tx < TW; tx++) {
                v0[tx] = e[tx] - e[tx + 1];
                v1[tx] = o[tx] + e[tx + 1];
                v2[tx] = e[tx + 1] - o[tx];
                v3[tx] = o[tx] - o[tx + 1];
            }
        }
    }
}

/* Aᵀ M A + bias for the TW tiles of one tile row of one output channel: M[ξ][tx] at
 * M + ξ·m_stride. Writes output row y[0, :] and, if two_rows, y[1, :] (row stride OW).
 * scratch: 8 TW floats. */
static void edu_wino_output_row(const float *restrict M, long m_stride, int TW, float bias,
                                float *restrict scratch, float *restrict y, int OW,
                                int two_rows) {
    /* Aᵀ M: s0[j] = m0j + m1j + m2j, s1[j] = m1j - m2j - m3j (rows i of the 4x4 result) */
    for (int j = 0; j < 4; j++) {
        const float *restrict m0 = M + j * m_stride, *restrict m1 = m0 + 4 * m_stride;
        const float *restrict m2 = m0 + 8 * m_stride, *restrict m3 = m0 + 12 * m_stride;
        float *restrict s0 = scratch + j * TW, *restrict s1 = scratch + (4 + j) * TW;
        for (int tx = 0; tx < TW; tx++) {
            s0[tx] = m0[tx] + m1[tx] + m2[tx];
            s1[tx] = m1[tx] - m2[tx] - m3[tx];
        }
    }
    /* (Aᵀ M) A: the same on the columns gives the tile's two outputs of this row */
    for (int r = 0; r < (two_rows ? 2 : 1); r++) {
        const float *restrict c0 = scratch + 4 * r * TW, *restrict c1 = c0 + TW;
        const float *restrict c2 = c1 + TW, *restrict c3 = c2 + TW;
        float *restrict out = y + (long)r * OW;
        int pairs = OW / 2;
        for (int tx = 0; tx < pairs; tx++) {
            out[2 * tx] = bias + (c0[tx] + c1[tx] + c2[tx]);
            out[2 * tx + 1] = bias + (c1[tx] - c2[tx] - c3[tx]);
        }
        if (OW % 2)     /* the last tile has only its left column inside the output */
            out[2 * pairs] = bias + (c0[pairs] + c1[pairs] + c2[pairs]);
    }
}

/* A DY Aᵀ for the TW tiles of one tile row of one channel of dy, the weight gradient's
 * transform of the output gradient (A is Aᵀ transposed: rows (1, 0), (1, 1), (1, -1), (0, -1)).
 * Tile tx is dy[oh0 .. oh0 + 1, 2tx .. 2tx + 1], zero outside the map; Y[ξ][tx] at
 * Y + ξ·y_stride. scratch: 14 TW + 32 floats. */
static void edu_wino_grad_row(const float *plane, int OH, int OW, int oh0, int TW,
                              float *restrict scratch, float *restrict Y, long y_stride) {
    float *restrict e0 = scratch, *restrict o0 = e0 + TW;    /* dy row oh0: even, odd columns */
    float *restrict e1 = o0 + TW, *restrict o1 = e1 + TW;    /* dy row oh0 + 1 */
    float *restrict ra = o1 + TW, *restrict rb = ra + 4 * TW; /* rows of A DY: even, odd parts */
    edu_wino_split_row(plane, OH, OW, oh0, 0, TW, rb + 4 * TW, e0, o0);
    edu_wino_split_row(plane, OH, OW, oh0 + 1, 0, TW, rb + 4 * TW, e1, o1);
    /* A DY: the tile's rows dy0, dy1 become dy0, dy0 + dy1, dy0 - dy1, -dy1 */
    for (int tx = 0; tx < TW; tx++) {
        ra[tx] = e0[tx];
        ra[TW + tx] = e0[tx] + e1[tx];
        ra[2 * TW + tx] = e0[tx] - e1[tx];
        ra[3 * TW + tx] = -e1[tx];
        rb[tx] = o0[tx];
        rb[TW + tx] = o0[tx] + o1[tx];
        rb[2 * TW + tx] = o0[tx] - o1[tx];
        rb[3 * TW + tx] = -o1[tx];
    }
    /* (A DY) Aᵀ: the same on the columns, (a, b) -> a, a + b, a - b, -b */
    for (int i = 0; i < 4; i++) {
        const float *restrict a = ra + i * TW, *restrict b = rb + i * TW;
        float *restrict y0 = Y + (4 * i) * y_stride, *restrict y1 = y0 + y_stride;
        float *restrict y2 = y1 + y_stride, *restrict y3 = y2 + y_stride;
        for (int tx = 0; tx < TW; tx++) {
            y0[tx] = a[tx];
            y1[tx] = a[tx] + b[tx];
            y2[tx] = a[tx] - b[tx];
            y3[tx] = -b[tx];
        }
    }
}

#endif
