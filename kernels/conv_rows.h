/* A convolution on small maps as one matrix product per kernel tap, over gathered rows.
 *
 * Channels last, the input is a matrix X (N*H*W pixels, C channels) and the output a matrix
 * Y (N*OH*OW pixels, C_out). For one tap (kh, kw), output pixel (n, oh, ow) reads input pixel
 * (n, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw), so
 *
 *     Y[rows] += X[source rows of this tap] @ W_tap        W_tap = w[:, :, kh, kw]ᵀ  (C x C_out)
 *
 * summed over the taps, where "rows" are the output pixels for which this tap lands inside
 * the input. That is the whole trick: the taps that read PADDING are simply not in the row
 * lists, so no multiply-add is spent on zeros. On a 4x4 map a 3x3 kernel reads padding in
 * 31% of its (pixel, tap) pairs, on 2x2 in 56%, and a dilation-4 kernel on 8x8 also in 56%;
 * im2col multiplies every one of those zeros. And there is no im2col matrix at all: the
 * GEMM's packing step (sgemm.h) reads each source row straight from X through a list of row
 * pointers, and writes each result row through another.
 *
 * The products use sgemm.h's micro-kernel, packing and blocking: X's rows are the A operand
 * (panels of EDU_MR pixels), the packed taps the B operand (panels of EDU_NR output
 * channels). The weights are packed once per call for all taps; every work item then owns a
 * block of output rows and a block of output channels, and sums its taps in order, so the
 * result does not depend on the thread count.
 */
#ifndef EDU_SEG_CONV_ROWS_H
#define EDU_SEG_CONV_ROWS_H

#include "sgemm.h"

/* out[rows[i] + col + j] += (Ap @ Bp)[i][j] for the mr x nr corner of one micro-tile. */
static void edu_micro_kernel_rows(int kc, const float *restrict Ap, const float *restrict Bp,
                                  float *const *out, int col, int mr, int nr) {
    edu_vec16 c[EDU_MR][2];
    edu_micro_tile(kc, Ap, Bp, c);
    if (nr == EDU_NR) {
        for (int i = 0; i < mr; i++) {
            edu_vec16u *row = (edu_vec16u *)(out[i] + col);
            row[0] += c[i][0];
            row[1] += c[i][1];
        }
    } else {
        float tile[EDU_MR][EDU_NR] __attribute__((aligned(64)));
        for (int i = 0; i < EDU_MR; i++) {
            *(edu_vec16 *)&tile[i][0] = c[i][0];
            *(edu_vec16 *)&tile[i][16] = c[i][1];
        }
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nr; j++)
                out[i][col + j] += tile[i][j];
    }
}

/* The floats the packed taps take: every tap's (K x N_out) matrix, N_out padded to EDU_NR. */
static long edu_packed_taps_size(int taps, int K, int N_out) {
    return (long)taps * K * ((N_out + EDU_NR - 1) / EDU_NR * EDU_NR);
}

/* The B panel [q, q + EDU_NR) of the k-block kb of every tap's matrix, packed to its place
 * in the layout edu_conv_rows_block reads: tap t's block at Bp + t*K*n_pad + k0*n_pad, the
 * panel at + q*kc. Items (kb, q) are independent: a caller packs them in parallel.
 *
 * w is (C_out, C, KK) (KK = KH*KW taps, tap t = kh*KW + kw), so along c the values of one
 * tap lie KK floats apart. Forward (transposed = 0): tap t's matrix is B[c, o] = w[o, c, t],
 * K = C, N_out = C_out: a panel row (fixed c, 32 values of o) comes from 32 rows of w, so
 * 16 x 16 blocks of (o, c) are gathered and transposed in registers. Input gradient
 * (transposed = 1): the gradient flows back through the FLIPPED tap, B[o, c] =
 * w[o, c, KK - 1 - t], K = C_out, N_out = C: a panel row (fixed o) is 32 values of one row
 * of w, every KK-th. Both read each block of w once for all KK taps, while it is in cache. */
static void edu_pack_taps_panel(const float *w, int C_out, int C, int KK, int transposed,
                                int kb, int q, float *Bp) {
    int K = transposed ? C_out : C, N_out = transposed ? C : C_out;
    int n_pad = (N_out + EDU_NR - 1) / EDU_NR * EDU_NR;
    int k0 = kb * EDU_KC, kc = K - k0 < EDU_KC ? K - k0 : EDU_KC;
    int nr = N_out - q < EDU_NR ? N_out - q : EDU_NR;
    long tap_stride = (long)K * n_pad;
    float *panel = Bp + (long)k0 * n_pad + (long)q * kc;
    if (transposed) {
        for (int k = 0; k < kc; k++) {
            const float *src = w + ((long)(k0 + k) * C + q) * KK;   /* w[o, q:, :] */
            for (int t = 0; t < KK; t++) {
                float *dst = panel + t * tap_stride + k * EDU_NR;
                for (int j = 0; j < nr; j++)
                    dst[j] = src[j * KK + KK - 1 - t];
                for (int j = nr; j < EDU_NR; j++)
                    dst[j] = 0.f;
            }
        }
        return;
    }
    for (int h = 0; h < EDU_NR; h += 16) {          /* the two halves of the panel's 32 o's */
        int rows = nr - h < 16 ? nr - h : 16;       /* o's that exist (<= 0: all padding) */
        for (int c = 0; c < kc; c += 16) {
            int cols = kc - c < 16 ? kc - c : 16;
            for (int t = 0; t < KK; t++) {
                float block[16][16] __attribute__((aligned(64)));   /* [o][c] of tap t */
                if (rows == 16 && cols == 16) {     /* the common, full block */
                    for (int i = 0; i < 16; i++) {
                        const float *src = w + ((long)(q + h + i) * C + k0 + c) * KK + t;
                        for (int cc = 0; cc < 16; cc++)
                            block[i][cc] = src[cc * KK];
                    }
                } else {
                    for (int i = 0; i < 16; i++) {
                        const float *src = w + ((long)(q + h + i) * C + k0 + c) * KK + t;
                        for (int cc = 0; cc < 16; cc++)
                            block[i][cc] = i < rows && cc < cols ? src[cc * KK] : 0.f;
                    }
                }
                float *dst = panel + t * tap_stride + (long)c * EDU_NR + h;
#ifdef EDU_BLOCK_TRANSPOSE
                edu_vec16 r[16];
                for (int i = 0; i < 16; i++)
                    r[i] = *(const edu_vec16 *)block[i];
                edu_transpose16(r);                 /* r[cc][i] = w[q + h + i, c + cc, t] */
                for (int cc = 0; cc < cols; cc++)
                    *(edu_vec16u *)(dst + cc * EDU_NR) = r[cc];
#else
                for (int cc = 0; cc < cols; cc++)
                    for (int i = 0; i < 16; i++)
                        dst[cc * EDU_NR + i] = block[i][cc];
#endif
            }
        }
    }
}

/* Y[r, j0:j1] = bias[j0:j1] + Σ_taps X[src(r, tap)] @ W_tap[:, j0:j1] for the output rows
 * r in [r0, r1) (pixels (n, oh, ow) in row-major order) whose source pixel is inside the input.
 *
 * x: (N, H, W, K) channels last; y: (N, OH, OW, N_out); Bp: the packed taps
 * (edu_pack_taps_panel); bias: N_out floats or NULL; j0 a multiple of EDU_NR. Scratch: rows
 * and out hold r1 - r0 pointers each, Ap EDU_KC * (r1 - r0 rounded up to 16) floats. */
static void edu_conv_rows_block(const float *x, int H, int W, int K, float *y, int OH, int OW,
                                int N_out, int KH, int KW, int sh, int sw, int ph, int pw,
                                int dh, int dw, const float *Bp, const float *bias,
                                int r0, int r1, int j0, int j1,
                                const float **rows, float **out, float *Ap) {
    int n_pad = (N_out + EDU_NR - 1) / EDU_NR * EDU_NR;
    for (int r = r0; r < r1; r++)
        for (int j = j0; j < j1; j++)
            y[(long)r * N_out + j] = bias ? bias[j] : 0.f;
    for (int kh = 0; kh < KH; kh++)
        for (int kw = 0; kw < KW; kw++) {
            int m = 0;                  /* the rows whose tap (kh, kw) is inside the input */
            for (int r = r0; r < r1; r++) {
                int ow = r % OW, oh = (r / OW) % OH, n = r / (OW * OH);
                int ih = oh * sh - ph + kh * dh, iw = ow * sw - pw + kw * dw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                    continue;
                rows[m] = x + (((long)n * H + ih) * W + iw) * K;
                out[m] = y + (long)r * N_out;
                m++;
            }
            if (m == 0)
                continue;
            const float *Bt = Bp + (long)(kh * KW + kw) * K * n_pad;
            for (int k0 = 0; k0 < K; k0 += EDU_KC) {
                int kc = K - k0 < EDU_KC ? K - k0 : EDU_KC;
                edu_pack_rows(rows, m, k0, kc, Ap);
                for (int q = j0; q < j1; q += EDU_NR)
                    for (int p = 0; p < m; p += EDU_MR)
                        edu_micro_kernel_rows(kc, Ap + (long)p * kc,
                                              Bt + (long)k0 * n_pad + (long)q * kc, out + p, q,
                                              m - p < EDU_MR ? m - p : EDU_MR,
                                              j1 - q < EDU_NR ? j1 - q : EDU_NR);
            }
        }
}

/* The weight gradient of tap t = kh*KW + kw for output channels [o0, o1):
 *
 *     dw[o, c, t] = Σ_p dy[p, o] · x[src(p), c]      over the output pixels p whose tap (kh, kw)
 *                                                     lands inside the input, in order
 *
 * one product dyᵀ @ X over gathered rows, EDU_KC pixels at a time: A = the dy rows (their
 * [o0, o1) part, 8 consecutive floats per panel and pixel), B = the x rows they read (32 per
 * panel), summed in G ((o1 - o0) x C) and then written to dw's taps-innermost layout.
 * dy: (N, OH, OW, C_out), x: (N, H, W, C), channels last; dw: (C_out, C, KH*KW). Scratch:
 * rows 2*EDU_KC pointers, Ap EDU_KC * (o1 - o0 rounded up to 8) floats, Bp EDU_KC * (C
 * rounded up to 32) floats (64-byte aligned), G (o1 - o0) * C floats. */
static void edu_conv_rows_weight_block(const float *dy, const float *x, int N, int H, int W,
                                       int C, int OH, int OW, int C_out, int KH, int KW,
                                       int sh, int sw, int ph, int pw, int dh, int dw_,
                                       int kh, int kw, int o0, int o1, float *dw,
                                       const float **rows, float *Ap, float *Bp, float *G) {
    int mo = o1 - o0, P = N * OH * OW, t = kh * KW + kw, KK = KH * KW;
    const float **dy_rows = rows, **x_rows = rows + EDU_KC;
    memset(G, 0, sizeof(float) * mo * C);
    for (int r = 0; r < P;) {
        int m = 0;                  /* the next (at most) EDU_KC pixels that see this tap */
        for (; r < P && m < EDU_KC; r++) {
            int ow = r % OW, oh = (r / OW) % OH, n = r / (OW * OH);
            int ih = oh * sh - ph + kh * dh, iw = ow * sw - pw + kw * dw_;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                continue;
            dy_rows[m] = dy + (long)r * C_out + o0;
            x_rows[m] = x + (((long)n * H + ih) * W + iw) * C;
            m++;
        }
        if (m == 0)
            break;
        for (int p = 0; p < mo; p += EDU_MR) {          /* A[o, k] = dy_rows[k][o] */
            int mr = mo - p < EDU_MR ? mo - p : EDU_MR;
            float *panel = Ap + (long)p * m;
            for (int k = 0; k < m; k++)
                for (int i = 0; i < EDU_MR; i++)
                    panel[k * EDU_MR + i] = i < mr ? dy_rows[k][p + i] : 0.f;
        }
        for (int q = 0; q < C; q += EDU_NR) {           /* B[k, c] = x_rows[k][c] */
            int nr = C - q < EDU_NR ? C - q : EDU_NR;
            float *panel = Bp + (long)q * m;
            for (int k = 0; k < m; k++) {
                if (nr == EDU_NR)
                    memcpy(panel + k * EDU_NR, x_rows[k] + q, sizeof(float) * EDU_NR);
                else
                    for (int j = 0; j < EDU_NR; j++)
                        panel[k * EDU_NR + j] = j < nr ? x_rows[k][q + j] : 0.f;
            }
        }
        for (int q = 0; q < C; q += EDU_NR)
            for (int p = 0; p < mo; p += EDU_MR)
                edu_micro_kernel(m, Ap + (long)p * m, Bp + (long)q * m, 1.f,
                                 G + (long)p * C + q, C, mo - p < EDU_MR ? mo - p : EDU_MR,
                                 C - q < EDU_NR ? C - q : EDU_NR);
    }
    for (int o = 0; o < mo; o++)
        for (int c = 0; c < C; c++)
            dw[((long)(o0 + o) * C + c) * KK + t] = G[(long)o * C + c];
}

#endif
