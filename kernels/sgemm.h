/* A small float32 matrix product for the convolution kernels: C = op(A) @ op(B) + beta * C.
 *
 * Why not the BLAS? The OpenBLAS that ships with NumPy and SciPy reaches about 100-120 GFLOP/s
 * on one core of the course machines for the shapes a convolution makes (64 x 576 times
 * 576 x 256, say), about half of what the core can do; PyTorch's convolutions run near the
 * core's peak. The code below reaches about 200 GFLOP/s on the same shapes (AMD EPYC with
 * AVX-512, one thread, measured; on an AVX2 EPYC, Zen 3, 40-60 GFLOP/s against OpenBLAS's
 * 55-70, whose AVX2 kernels are its best there). They are the textbook structure of every
 * fast GEMM (Goto and van de Geijn, "Anatomy of High-Performance Matrix Multiplication", ACM
 * TOMS 2008; BLIS):
 *
 * 1. The MICRO-KERNEL computes one EDU_MR x EDU_NR tile of C (8 x 32) in registers: for each k
 *    it loads 32 floats of B (two 16-float vectors), and for each of the 8 rows broadcasts one
 *    float of A and does two fused multiply-adds. The 16 accumulators never leave the vector
 *    registers until k is done, so the loop does 16 multiply-adds per 10 loads.
 * 2. PACKING makes the micro-kernel's loads contiguous: a block of A is copied into panels of
 *    8 rows stored k by k (8 consecutive floats per k), a block of B into panels of 32 columns
 *    stored k by k. Panels are padded with zeros to full width, so the micro-kernel has no
 *    edge cases; the edge tiles are written back through a small buffer.
 * 3. BLOCKING keeps the packed data in cache: EDU_KC values of k at a time (a B panel of
 *    256 x 32 floats = 32 KB sits in the L1 cache), EDU_MC rows of A (128 x 256 floats =
 *    128 KB in L2), EDU_NC columns of B.
 *
 * The vectors are GCC/Clang vector extensions (16 floats = one AVX-512 register). A CPU
 * without AVX-512 (AVX2: most laptops, AMD EPYCs before Zen 4) has 16 registers of 8 floats,
 * too few for the 16 accumulators: there the micro-kernel computes the same tile in three
 * parts and the packing transposes 8 x 8 blocks (see the #else branches); the packed layout,
 * and so everything built on it, is the same. Built without either path's vectors in mind,
 * the AVX-512 code ran 15-20x slower on such a CPU, from spilled registers.
 * Single-threaded: the callers run one product per OpenMP thread.
 * Every element of C is a sum over k in increasing order, in blocks of EDU_KC, whatever the
 * shapes of the other operands: the result does not depend on how the caller tiles the work.
 */
#ifndef EDU_SEG_SGEMM_H
#define EDU_SEG_SGEMM_H

#include <stdlib.h>
#include <string.h>

#define EDU_MR 8
#define EDU_NR 32
#define EDU_KC 256
#define EDU_MC 128
#define EDU_NC 1024

/* Which micro-kernel this build has (edu-seg info prints it) */
#ifdef __AVX512F__
#define EDU_SGEMM_VECTORS "AVX-512 (16 floats per register)"
#else
#define EDU_SGEMM_VECTORS "8 floats per register (AVX2 or narrower: the tile in 3 parts)"
#endif

typedef float edu_vec16 __attribute__((vector_size(64)));                 /* aligned loads */
typedef float edu_vec16u __attribute__((vector_size(64), aligned(4)));    /* unaligned */
typedef float edu_vec8 __attribute__((vector_size(32)));                  /* 8 floats: */
typedef float edu_vec8u __attribute__((vector_size(32), aligned(4)));     /* no AVX-512 */

/* Packing op(A) = A or op(B) = Bᵀ turns rows of the source into k-major panels: a transpose.
 * One float at a time that is a scattered store per float, and it cost more than the products
 * in the weight gradient of a conv (16 output channels, 144 (c, kh, kw) columns, a thousand
 * pixels to sum over: every packed float is used only 16 times). So full 16 x 16 blocks are
 * transposed in registers, with the classic butterfly: stage s exchanges bit s of the row
 * index with bit s of the column index, for s = 8, 4, 2, 1, by two-register shuffles. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
#define EDU_BLOCK_TRANSPOSE 1
typedef int edu_idx16 __attribute__((vector_size(64)));

/* r[i] holds row i of a 16 x 16 block; afterwards r[i] holds column i. */
static inline void edu_transpose16(edu_vec16 r[16]) {
    static const edu_idx16 lo[4] = {
        {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},           /* s = 8 */
        {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},         /* s = 4 */
        {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},         /* s = 2 */
        {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}};       /* s = 1 */
    static const edu_idx16 hi[4] = {
        {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
        {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
        {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
        {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}};
#pragma GCC unroll 4
    for (int stage = 0; stage < 4; stage++)
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) {
            int s = 8 >> stage;
            if (!(i & s)) {
                edu_vec16 a = r[i], b = r[i + s];
                r[i] = __builtin_shuffle(a, b, lo[stage]);
                r[i + s] = __builtin_shuffle(a, b, hi[stage]);
            }
        }
}

/* dst[kk * ld_dst + i] = src[i * ld_src + kk] for i, kk < 16: one 16 x 16 block, transposed. */
static inline void edu_transpose_block(const float *src, long ld_src, float *dst, long ld_dst) {
    edu_vec16 r[16];
    for (int i = 0; i < 16; i++)
        r[i] = *(const edu_vec16u *)(src + i * ld_src);
    edu_transpose16(r);
    for (int kk = 0; kk < 16; kk++)
        *(edu_vec16u *)(dst + kk * ld_dst) = r[kk];
}
#elif defined(__GNUC__) && !defined(__clang__)
/* Without AVX-512 a 16-float shuffle is split by the compiler into narrow pieces, no faster
 * than copying float by float (5 GB/s). There the blocks are 8 x 8, the butterfly runs on
 * 8-float vectors (s = 4, 2, 1), and a panel of EDU_MR = 8 rows is one block per 8 values of k. */
#define EDU_BLOCK_TRANSPOSE8 1
typedef int edu_idx8 __attribute__((vector_size(32)));

/* dst[kk * ld_dst + i] = rows[i][col + kk] for i, kk < 8 */
static inline void edu_transpose8_rows(const float *const *rows, long col, float *dst,
                                       long ld_dst) {
    static const edu_idx8 lo[3] = {{0, 1, 2, 3, 8, 9, 10, 11},             /* s = 4 */
                                   {0, 1, 8, 9, 4, 5, 12, 13},             /* s = 2 */
                                   {0, 8, 2, 10, 4, 12, 6, 14}};           /* s = 1 */
    static const edu_idx8 hi[3] = {{4, 5, 6, 7, 12, 13, 14, 15},
                                   {2, 3, 10, 11, 6, 7, 14, 15},
                                   {1, 9, 3, 11, 5, 13, 7, 15}};
    edu_vec8u r[8];
    for (int i = 0; i < 8; i++)
        r[i] = *(const edu_vec8u *)(rows[i] + col);
#pragma GCC unroll 3
    for (int stage = 0; stage < 3; stage++)
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            int s = 4 >> stage;
            if (!(i & s)) {
                edu_vec8u a = r[i], b = r[i + s];
                r[i] = __builtin_shuffle(a, b, lo[stage]);
                r[i + s] = __builtin_shuffle(a, b, hi[stage]);
            }
        }
    for (int kk = 0; kk < 8; kk++)
        *(edu_vec8u *)(dst + kk * ld_dst) = r[kk];
}
#endif

/* Panels of EDU_MR rows, columns [k0, k0 + kc), from m rows given by pointers:
 * Ap[panel][k][i] = rows[panel * EDU_MR + i][k0 + k], zero past row m. The rows of a
 * row-major A (edu_pack_a), or pixel rows gathered from an image (conv_rows.h). */
static void edu_pack_rows(const float *const *rows, int m, int k0, int kc, float *Ap) {
    int p = 0;
#ifdef EDU_BLOCK_TRANSPOSE
    /* two panels (16 rows) at a time: 16 x 16 blocks, transposed; the block's 16 floats for
     * one k are 8 for this panel and 8 for the next */
    for (; p + 16 <= m; p += 16, Ap += 2L * kc * EDU_MR) {
        int k = 0;
        for (; k + 16 <= kc; k += 16) {
            edu_vec16 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = *(const edu_vec16u *)(rows[p + i] + k0 + k);
            edu_transpose16(r);
            /* straight from the registers: through a buffer in memory, the 8-float reads
             * of each 16-float store stalled (no store-to-load forwarding), which made
             * this loop 5x slower where the compiler did not vectorise them */
            for (int kk = 0; kk < 16; kk++) {
                memcpy(Ap + (k + kk) * EDU_MR, &r[kk], sizeof(float) * EDU_MR);
                memcpy(Ap + (long)kc * EDU_MR + (k + kk) * EDU_MR, (float *)&r[kk] + EDU_MR,
                       sizeof(float) * EDU_MR);
            }
        }
        for (; k < kc; k++)
            for (int i = 0; i < 16; i++)
                Ap[(i / EDU_MR) * (long)kc * EDU_MR + k * EDU_MR + i % EDU_MR] =
                    rows[p + i][k0 + k];
    }
#elif defined(EDU_BLOCK_TRANSPOSE8)
    for (; p + EDU_MR <= m; p += EDU_MR, Ap += (long)kc * EDU_MR) {     /* one panel */
        int k = 0;
        for (; k + 8 <= kc; k += 8)
            edu_transpose8_rows(rows + p, k0 + k, Ap + k * EDU_MR, EDU_MR);
        for (; k < kc; k++)
            for (int i = 0; i < EDU_MR; i++)
                Ap[k * EDU_MR + i] = rows[p + i][k0 + k];
    }
#endif
    for (; p < m; p += EDU_MR, Ap += (long)kc * EDU_MR) {
        int mr = m - p < EDU_MR ? m - p : EDU_MR;
        for (int k = 0; k < kc; k++) {
            for (int i = 0; i < mr; i++)
                Ap[k * EDU_MR + i] = rows[p + i][k0 + k];
            for (int i = mr; i < EDU_MR; i++)
                Ap[k * EDU_MR + i] = 0.f;
        }
    }
}

/* Rows [i0, i0 + m) and columns [k0, k0 + kc) of op(A) into panels of EDU_MR rows:
 * Ap[panel][k][i] = op(A)[i0 + panel * EDU_MR + i, k0 + k], zero past row m. */
static void edu_pack_a(int trans, const float *A, int lda, int i0, int m, int k0, int kc,
                       float *Ap) {
    if (!trans) {       /* rows of A are contiguous: pack 16 of them at a time by pointer */
        const float *rows[16];
        for (int p = 0; p < m; p += 16, Ap += 2L * kc * EDU_MR) {
            int n = m - p < 16 ? m - p : 16;
            for (int i = 0; i < n; i++)
                rows[i] = A + (long)(i0 + p + i) * lda;
            edu_pack_rows(rows, n, k0, kc, Ap);
        }
        return;
    }
    for (int p = 0; p < m; p += EDU_MR, Ap += (long)kc * EDU_MR) {
        int mr = m - p < EDU_MR ? m - p : EDU_MR;
        for (int k = 0; k < kc; k++) {  /* op(A) = Aᵀ: mr consecutive floats of a row of A */
            const float *src = A + (long)(k0 + k) * lda + i0 + p;
            if (mr == EDU_MR) {
                memcpy(Ap + k * EDU_MR, src, sizeof(float) * EDU_MR);
                continue;
            }
            for (int i = 0; i < mr; i++)
                Ap[k * EDU_MR + i] = src[i];
            for (int i = mr; i < EDU_MR; i++)
                Ap[k * EDU_MR + i] = 0.f;
        }
    }
}

/* Rows [k0, k0 + kc) and columns [j0, j0 + n) of op(B) into panels of EDU_NR columns:
 * Bp[panel][k][j] = op(B)[k0 + k, j0 + panel * EDU_NR + j], zero past column n. */
static void edu_pack_b(int trans, const float *B, int ldb, int k0, int kc, int j0, int n,
                       float *Bp) {
    for (int q = 0; q < n; q += EDU_NR, Bp += (long)kc * EDU_NR) {
        int nr = n - q < EDU_NR ? n - q : EDU_NR;
        if (!trans) {       /* rows of B are contiguous: copy 32 floats per k */
            for (int k = 0; k < kc; k++) {
                const float *src = B + (long)(k0 + k) * ldb + j0 + q;
                for (int j = 0; j < nr; j++)
                    Bp[k * EDU_NR + j] = src[j];
                for (int j = nr; j < EDU_NR; j++)
                    Bp[k * EDU_NR + j] = 0.f;
            }
        } else {            /* op(B) = Bᵀ: read each row of B once, contiguously */
            int j = 0;
#ifdef EDU_BLOCK_TRANSPOSE
            for (; j + 16 <= nr; j += 16) {     /* 16 rows of B: 16 x 16 blocks, transposed */
                int k = 0;
                for (; k + 16 <= kc; k += 16)
                    edu_transpose_block(B + (long)(j0 + q + j) * ldb + k0 + k, ldb,
                                        Bp + k * EDU_NR + j, EDU_NR);
                for (; k < kc; k++)
                    for (int jj = j; jj < j + 16; jj++)
                        Bp[k * EDU_NR + jj] = B[(long)(j0 + q + jj) * ldb + k0 + k];
            }
#elif defined(EDU_BLOCK_TRANSPOSE8)
            for (; j + 8 <= nr; j += 8) {       /* 8 rows of B: 8 x 8 blocks, transposed */
                const float *rows[8];
                for (int i = 0; i < 8; i++)
                    rows[i] = B + (long)(j0 + q + j + i) * ldb + k0;
                int k = 0;
                for (; k + 8 <= kc; k += 8)
                    edu_transpose8_rows(rows, k, Bp + k * EDU_NR + j, EDU_NR);
                for (; k < kc; k++)
                    for (int i = 0; i < 8; i++)
                        Bp[k * EDU_NR + j + i] = rows[i][k];
            }
#endif
            for (; j < nr; j++) {
                const float *src = B + (long)(j0 + q + j) * ldb + k0;
                for (int k = 0; k < kc; k++)
                    Bp[k * EDU_NR + j] = src[k];
            }
            if (nr < EDU_NR)
                for (int k = 0; k < kc; k++)
                    memset(Bp + k * EDU_NR + nr, 0, sizeof(float) * (EDU_NR - nr));
        }
    }
}

/* c = Ap @ Bp, one EDU_MR x EDU_NR tile in registers: for each k, 32 floats of B (two
 * 16-float vectors) and, for each of the 8 rows, one float of A broadcast into two fused
 * multiply-adds. The 16 accumulators never leave the vector registers until k is done. */
#ifdef __AVX512F__
static inline void edu_micro_tile(int kc, const float *restrict Ap, const float *restrict Bp,
                                  edu_vec16 c[EDU_MR][2]) {
    for (int i = 0; i < EDU_MR; i++)
        c[i][0] = c[i][1] = (edu_vec16){0};
    for (int k = 0; k < kc; k++) {
        edu_vec16 b0 = *(const edu_vec16 *)(Bp + k * EDU_NR);
        edu_vec16 b1 = *(const edu_vec16 *)(Bp + k * EDU_NR + 16);
        for (int i = 0; i < EDU_MR; i++) {      /* unrolled by the compiler: 16 accumulators */
            float a = Ap[k * EDU_MR + i];
            c[i][0] += a * b0;
            c[i][1] += a * b1;
        }
    }
}
#else
/* Without AVX-512 (AVX2: most laptops, an AMD EPYC before Zen 4) a vector register holds 8
 * floats and there are only 16 of them: the tile's 32 accumulators do not fit, and the spills
 * made the loop above about 20x slower than the BLAS. So the tile is computed in three parts
 * whose accumulators stay in registers: rows 0-5 x columns 0-15, rows 0-5 x columns 16-31
 * (12 accumulators, 2 vectors of B, 1 broadcast of A: 15 registers, the shape of BLIS's
 * Haswell kernel), then rows 6-7 x all 32 columns (8 accumulators). Measured on one core of
 * an AMD EPYC (Zen 3) with the panels in cache: 73 GFLOP/s, against 53 for four 4 x 16
 * quarters and 3 for the loop above. The parts read the same packed panels, and every element
 * is still the same sum over k in increasing order: the packed layout and the results are
 * those of the AVX-512 loop. */
/* Rows [i0, i0 + R) x columns [j0, j0 + 8 V) of the tile Ap @ Bp (R x V <= 12), each of its
 * 8-float pieces handed to STORE(row, column, value) */
#define EDU_TILE_PART(R, V, i0, j0, STORE)                                              \
    do {                                                                                \
        edu_vec8 acc[R][V];                                                             \
        for (int i = 0; i < R; i++)                                                     \
            for (int v = 0; v < V; v++)                                                 \
                acc[i][v] = (edu_vec8){0};                                              \
        for (int k = 0; k < kc; k++) {                                                  \
            edu_vec8 b[V];                                                              \
            for (int v = 0; v < V; v++)                                                 \
                b[v] = *(const edu_vec8 *)(Bp + k * EDU_NR + (j0) + 8 * v);             \
            for (int i = 0; i < R; i++) {                                               \
                float a = Ap[k * EDU_MR + (i0) + i];                                    \
                for (int v = 0; v < V; v++)                                             \
                    acc[i][v] += a * b[v];                                              \
            }                                                                           \
        }                                                                               \
        for (int i = 0; i < R; i++)                                                     \
            for (int v = 0; v < V; v++)                                                 \
                STORE((i0) + i, (j0) + 8 * v, acc[i][v]);                               \
    } while (0)

/* into the tile c, for the caller to write out */
#define EDU_INTO_TILE(row, col, value) \
    memcpy((float *)&c[row][0] + (col), &(value), sizeof(value))
/* straight into C (row stride ldc) = beta * C + value, as edu_micro_kernel writes a full tile */
#define EDU_INTO_C(row, col, value)                                                     \
    do {                                                                                \
        edu_vec8u *dst = (edu_vec8u *)(C + (long)(row) * ldc + (col));                  \
        *dst = beta == 0.f ? (value) : beta * *dst + (value);                           \
    } while (0)

static inline void edu_micro_tile(int kc, const float *restrict Ap, const float *restrict Bp,
                                  edu_vec16 c[EDU_MR][2]) {
    EDU_TILE_PART(6, 2, 0, 0, EDU_INTO_TILE);
    EDU_TILE_PART(6, 2, 0, 16, EDU_INTO_TILE);
    EDU_TILE_PART(2, 4, 6, 0, EDU_INTO_TILE);
}

/* A full tile of C = beta * C + Ap @ Bp with no trip through the tile c: on products with a
 * short k (a Winograd GEMM over 16 channels has kc = 16) that copy cost a fifth of the time
 * (M = 16, N = 1024, K = 16 on one core: 29 -> 41 GFLOP/s; K = 144: 38 -> 42). */
static inline void edu_micro_tile_into(int kc, const float *restrict Ap,
                                       const float *restrict Bp, float beta, float *C,
                                       int ldc) {
    EDU_TILE_PART(6, 2, 0, 0, EDU_INTO_C);
    EDU_TILE_PART(6, 2, 0, 16, EDU_INTO_C);
    EDU_TILE_PART(2, 4, 6, 0, EDU_INTO_C);
}
#undef EDU_TILE_PART
#undef EDU_INTO_TILE
#undef EDU_INTO_C
#endif

/* The EDU_MR x EDU_NR tile at C (row stride ldc) = beta * C + Ap @ Bp; only its first mr rows
 * and nr columns exist in C. beta == 0 never reads C (it may hold garbage). */
static void edu_micro_kernel(int kc, const float *restrict Ap, const float *restrict Bp,
                             float beta, float *C, int ldc, int mr, int nr) {
#ifndef __AVX512F__
    if (mr == EDU_MR && nr == EDU_NR) {
        edu_micro_tile_into(kc, Ap, Bp, beta, C, ldc);
        return;
    }
#endif
    edu_vec16 c[EDU_MR][2];
    edu_micro_tile(kc, Ap, Bp, c);
    if (mr == EDU_MR && nr == EDU_NR) {
        for (int i = 0; i < EDU_MR; i++) {
            edu_vec16u *row = (edu_vec16u *)(C + (long)i * ldc);
            if (beta == 0.f) {
                row[0] = c[i][0];
                row[1] = c[i][1];
            } else {
                row[0] = beta * row[0] + c[i][0];
                row[1] = beta * row[1] + c[i][1];
            }
        }
    } else {                /* an edge tile: only part of it exists in C */
        float tile[EDU_MR][EDU_NR] __attribute__((aligned(64)));
        for (int i = 0; i < EDU_MR; i++) {
            *(edu_vec16 *)&tile[i][0] = c[i][0];
            *(edu_vec16 *)&tile[i][16] = c[i][1];
        }
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nr; j++) {
                float *cij = C + (long)i * ldc + j;
                *cij = (beta == 0.f ? 0.f : beta * *cij) + tile[i][j];
            }
    }
}

/* The number of floats edu_pack_a_whole writes for an M x K op(A). */
static long edu_packed_a_size(int M, int K) {
    return (long)((M + EDU_MR - 1) / EDU_MR) * EDU_MR * (K > 0 ? K : 0);
}

/* The number of blocks of EDU_KC values of k that a product over K is cut into. */
static int edu_k_blocks(int K) {
    return K > 0 ? (K + EDU_KC - 1) / EDU_KC : 0;
}

/* Block number kb (k in [kb * EDU_KC, kb * EDU_KC + EDU_KC)) of op(A) (M x K) packed to its
 * place in the layout of edu_pack_a_whole. The blocks are independent: a caller with several
 * threads packs them in parallel. */
static void edu_pack_a_block(int transA, const float *A, int lda, int M, int K, int kb,
                             float *Ap) {
    long m_pad = (long)((M + EDU_MR - 1) / EDU_MR) * EDU_MR;
    int k0 = kb * EDU_KC;
    edu_pack_a(transA, A, lda, 0, M, k0, K - k0 < EDU_KC ? K - k0 : EDU_KC, Ap + k0 * m_pad);
}

/* All of op(A) (M x K) packed once, for a caller that multiplies the same A by many Bs (a
 * conv's weights by every tile of the batch): for each block of EDU_KC values of k starting
 * at k0, its panels of EDU_MR rows as edu_pack_a lays them out, at Ap + k0 * (M rounded up
 * to EDU_MR). Packing is then done once per call instead of once per product. (Winograd's
 * forward packs its 16 filter matrices with it; the im2col conv kernels pack the blocks
 * themselves, in parallel, with edu_pack_a_block, and `inline` keeps their build from
 * warning that this is unused.) */
static inline void edu_pack_a_whole(int transA, const float *A, int lda, int M, int K, float *Ap) {
    for (int kb = 0; kb < edu_k_blocks(K); kb++)
        edu_pack_a_block(transA, A, lda, M, K, kb, Ap);
}

/* The loop nest of both entry points below. A_whole is op(A) packed by edu_pack_a_whole, or
 * NULL: then each block of A is packed here from A. */
static int edu_sgemm_loops(int transA, int transB, int M, int N, int K, const float *A, int lda,
                           const float *A_whole, const float *B, int ldb, float beta, float *C,
                           int ldc) {
    if (M <= 0 || N <= 0)
        return 0;
    /* B's packing buffer holds one block: EDU_KC rows of at most EDU_NC columns */
    int n_pad = N < EDU_NC ? (N + EDU_NR - 1) / EDU_NR * EDU_NR : EDU_NC;
    float *Ap = A_whole ? NULL : aligned_alloc(64, sizeof(float) * EDU_MC * EDU_KC);
    float *Bp = aligned_alloc(64, sizeof(float) * EDU_KC * n_pad);
    if ((Ap == NULL && A_whole == NULL) || Bp == NULL) {
        free(Ap);
        free(Bp);
        return -1;
    }
    long m_pad = (long)((M + EDU_MR - 1) / EDU_MR) * EDU_MR;
    if (K <= 0) {           /* an empty sum: C = beta * C */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                C[(long)i * ldc + j] = beta == 0.f ? 0.f : beta * C[(long)i * ldc + j];
    }
    for (int j0 = 0; j0 < N; j0 += EDU_NC) {
        int nc = N - j0 < EDU_NC ? N - j0 : EDU_NC;
        for (int k0 = 0; k0 < K; k0 += EDU_KC) {
            int kc = K - k0 < EDU_KC ? K - k0 : EDU_KC;
            float b = k0 == 0 ? beta : 1.f;     /* later k blocks add onto the first */
            edu_pack_b(transB, B, ldb, k0, kc, j0, nc, Bp);
            for (int i0 = 0; i0 < M; i0 += EDU_MC) {
                int mc = M - i0 < EDU_MC ? M - i0 : EDU_MC;
                const float *Ablock;
                if (A_whole) {
                    Ablock = A_whole + k0 * m_pad + (long)i0 * kc;
                } else {
                    edu_pack_a(transA, A, lda, i0, mc, k0, kc, Ap);
                    Ablock = Ap;
                }
                for (int q = 0; q < nc; q += EDU_NR)
                    for (int p = 0; p < mc; p += EDU_MR)
                        edu_micro_kernel(kc, Ablock + (long)p * kc, Bp + (long)q * kc, b,
                                         C + (long)(i0 + p) * ldc + j0 + q, ldc,
                                         mc - p < EDU_MR ? mc - p : EDU_MR,
                                         nc - q < EDU_NR ? nc - q : EDU_NR);
            }
        }
    }
    free(Ap);
    free(Bp);
    return 0;
}

/* Row-major C (M x N, row stride ldc) = op(A) @ op(B) + beta * C, where op(A) is M x K
 * (A is M x K with row stride lda, or K x M if transA) and op(B) is K x N (B is K x N with
 * row stride ldb, or N x K if transB). Returns 0, or -1 if the packing buffers could not be
 * allocated (C is then untouched). */
static int edu_sgemm(int transA, int transB, int M, int N, int K, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
    return edu_sgemm_loops(transA, transB, M, N, K, A, lda, NULL, B, ldb, beta, C, ldc);
}

/* The same with op(A) already packed by edu_pack_a_whole; the result is bit-identical. */
static int edu_sgemm_prepacked(int transB, int M, int N, int K, const float *A_whole,
                               const float *B, int ldb, float beta, float *C, int ldc) {
    return edu_sgemm_loops(0, transB, M, N, K, NULL, 0, A_whole, B, ldb, beta, C, ldc);
}

#endif
