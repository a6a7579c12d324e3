/* A small float32 matrix product for the convolution kernels: C = op(A) @ op(B) + beta * C.
 *
 * Why not the BLAS? The OpenBLAS that ships with NumPy and SciPy reaches about 100-120 GFLOP/s
 * on one core of the course machines for the shapes a convolution makes (64 x 576 times
 * 576 x 256, say), about half of what the core can do; PyTorch's convolutions run near the
 * core's peak. The code below reaches about 200 GFLOP/s on the same shapes (AMD EPYC, one
 * thread, measured). They are the textbook structure of every fast GEMM (Goto and van de
 * Geijn, "Anatomy of High-Performance Matrix Multiplication", ACM TOMS 2008; BLIS):
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
 * The vectors are GCC/Clang vector extensions (16 floats = one AVX-512 register); built for a
 * CPU without AVX-512 the compiler splits them into narrower instructions, so this code is
 * portable, only slower there. Single-threaded: the callers run one product per OpenMP thread.
 * Every element of C is a sum over k in increasing order, in blocks of EDU_KC, whatever the
 * shapes of the other operands: the result does not depend on how the caller tiles the work.
 */
#ifndef EDU_SEG_SGEMM_H
#define EDU_SEG_SGEMM_H

#include <stdlib.h>

#define EDU_MR 8
#define EDU_NR 32
#define EDU_KC 256
#define EDU_MC 128
#define EDU_NC 1024

typedef float edu_vec16 __attribute__((vector_size(64)));                 /* aligned loads */
typedef float edu_vec16u __attribute__((vector_size(64), aligned(4)));    /* unaligned */

/* Rows [i0, i0 + m) and columns [k0, k0 + kc) of op(A) into panels of EDU_MR rows:
 * Ap[panel][k][i] = op(A)[i0 + panel * EDU_MR + i, k0 + k], zero past row m. */
static void edu_pack_a(int trans, const float *A, int lda, int i0, int m, int k0, int kc,
                       float *Ap) {
    for (int p = 0; p < m; p += EDU_MR, Ap += (long)kc * EDU_MR) {
        int mr = m - p < EDU_MR ? m - p : EDU_MR;
        for (int k = 0; k < kc; k++) {
            float *dst = Ap + k * EDU_MR;
            for (int i = 0; i < mr; i++)
                dst[i] = trans ? A[(long)(k0 + k) * lda + i0 + p + i]
                               : A[(long)(i0 + p + i) * lda + k0 + k];
            for (int i = mr; i < EDU_MR; i++)
                dst[i] = 0.f;
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
            for (int j = 0; j < nr; j++) {
                const float *src = B + (long)(j0 + q + j) * ldb + k0;
                for (int k = 0; k < kc; k++)
                    Bp[k * EDU_NR + j] = src[k];
            }
            for (int k = 0; k < kc; k++)
                for (int j = nr; j < EDU_NR; j++)
                    Bp[k * EDU_NR + j] = 0.f;
        }
    }
}

/* The EDU_MR x EDU_NR tile at C (row stride ldc) = beta * C + Ap @ Bp; only its first mr rows
 * and nr columns exist in C. beta == 0 never reads C (it may hold garbage). */
static void edu_micro_kernel(int kc, const float *restrict Ap, const float *restrict Bp,
                             float beta, float *C, int ldc, int mr, int nr) {
    edu_vec16 c[EDU_MR][2];
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

/* Row-major C (M x N, row stride ldc) = op(A) @ op(B) + beta * C, where op(A) is M x K
 * (A is M x K with row stride lda, or K x M if transA) and op(B) is K x N (B is K x N with
 * row stride ldb, or N x K if transB). Returns 0, or -1 if the packing buffers could not be
 * allocated (C is then untouched). */
static int edu_sgemm(int transA, int transB, int M, int N, int K, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0)
        return 0;
    float *Ap = aligned_alloc(64, sizeof(float) * EDU_MC * EDU_KC);
    float *Bp = aligned_alloc(64, sizeof(float) * EDU_KC * (EDU_NC + EDU_NR));
    if (Ap == NULL || Bp == NULL) {
        free(Ap);
        free(Bp);
        return -1;
    }
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
                edu_pack_a(transA, A, lda, i0, mc, k0, kc, Ap);
                for (int q = 0; q < nc; q += EDU_NR)
                    for (int p = 0; p < mc; p += EDU_MR)
                        edu_micro_kernel(kc, Ap + (long)p * kc, Bp + (long)q * kc, b,
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

#endif
