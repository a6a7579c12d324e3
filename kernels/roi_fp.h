/* Included by kernels/roi.pyx: keep GCC from contracting a*b + c into one fused multiply-add.
 *
 * With -march=native GCC may fuse a product and a sum into an FMA, which rounds once instead
 * of twice. That is usually welcome, but here it would make the compiled RoI kernels differ
 * from the NumPy reference in the last bit (the tests compare them bit for bit). The
 * pragma applies to every function defined after it in this translation unit.
 */
#ifndef EDU_SEG_ROI_FP_H
#define EDU_SEG_ROI_FP_H
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif
#endif
