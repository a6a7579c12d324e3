/* RoIPool's inner loop over channels, in C for the `restrict` qualifier (kernels/roi.pyx).
 *
 * One bin of one box, for all C channels of a channels-last image: best[c] = the maximum of
 * x[h, w, c] over the bin's pixels, where[c] = h * W + w of the first pixel (row-major) that
 * holds it. The comparison is a strict > written as a select and a bit mask, and both results
 * are stored whole every time, so the compiler turns the loop over c into vector compares,
 * blends and plain stores, 8 or 16 channels at a time. (Written `where[c] = larger ? at :
 * where[c]`, GCC 12 emits masked stores, vmaskmovps, which AMD's Zen cores run as slow
 * microcode: the forward took 1.4-1.7x as long.) `restrict` promises that best, where and the
 * image do not overlap. One function per floating type.
 */
#ifndef EDU_SEG_ROI_POOL_H
#define EDU_SEG_ROI_POOL_H

#include <stdint.h>

#define EDU_ROI_POOL_BIN(T, NAME)                                                            \
    static void NAME(const T *restrict xt, long W, long C, long h0, long h1, long w0,        \
                     long w1, T lowest, T *restrict best, int64_t *restrict where) {         \
        for (long c = 0; c < C; c++) {                                                       \
            best[c] = lowest;                                                                \
            where[c] = -1;                                                                   \
        }                                                                                    \
        for (long h = h0; h < h1; h++)                                                       \
            for (long w = w0; w < w1; w++) {                                                 \
                const T *restrict px = xt + (h * W + w) * C;                                 \
                int64_t at = h * W + w;                                                      \
                for (long c = 0; c < C; c++) {                                               \
                    T value = px[c], old = best[c];                                          \
                    int64_t larger = -(int64_t)(value > old);   /* all ones, or zero */      \
                    best[c] = value > old ? value : old;                                     \
                    where[c] = (where[c] & ~larger) | (at & larger);                         \
                }                                                                            \
            }                                                                                \
    }

EDU_ROI_POOL_BIN(float, edu_roi_pool_bin_float)
EDU_ROI_POOL_BIN(double, edu_roi_pool_bin_double)

#endif
