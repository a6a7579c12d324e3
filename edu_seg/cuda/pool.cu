// Pooling kernels on the GPU: max, average, adaptive, max-unpooling and their gradients.
// NumPy twin: edu_seg/reference/pool.py (read it first: the windows and rules are the same).
//
// Layout: an (N, C, H, W) array is N*C independent planes of H*W pixels; thread i works on the
// i-th element of its output in row-major order, i = (p*OH + oh)*OW + ow.
//
// Window of output (oh, ow): the input taps
//     h = oh*SH - PH + kh*DH,  w = ow*SW - PW + kw*DW,   0 <= kh < KH, 0 <= kw < KW;
// taps outside [0, H) x [0, W) are padding (never a maximum, zero in a sum) and are skipped.
//
// Forward passes are gathers, one thread per output element. Backward passes are gathers too
// where the geometry says which outputs read a pixel (average pooling, adaptive average); the
// max-pooling gradient only knows the argmax indices, so it scatters with atomicAdd.

// Does tap value v replace the best value so far? Only if strictly larger, so ties keep the
// first maximum in row-major order; or if v is the first NaN (a NaN beats every number but not
// an earlier NaN). x != x is the NaN test. The reference: `take` in max_pool2d_forward.
__device__ __forceinline__ bool replaces(scalar_t v, scalar_t best) {
    bool v_is_nan = v != v, best_is_nan = best != best;
    return v > best || (v_is_nan && !best_is_nan);
}

// ================================================================================ max pooling
// y[p, oh, ow] = max of the window's taps inside the input; indices[p, oh, ow] = h*W + w of
// that maximum in its plane. The first inside tap always starts the running maximum (even if it
// is -inf), so an index never points into the padding. NumPy twin: max_pool2d_forward.
extern "C" __global__ void max_pool2d_forward(const scalar_t* x, scalar_t* y, long long* indices,
                                              long long planes, long long H, long long W,
                                              long long OH, long long OW,
                                              long long KH, long long KW, long long SH,
                                              long long SW, long long PH, long long PW,
                                              long long DH, long long DW) {
    long long n = planes * OH * OW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long ow = i % OW, oh = (i / OW) % OH, p = i / (OW * OH);
        const scalar_t* plane = x + p * H * W;
        scalar_t best = 0;
        long long best_at = -1;                       // -1: no tap inside the input yet
        for (long long kh = 0; kh < KH; ++kh) {       // taps in row-major order
            long long h = oh * SH - PH + kh * DH;
            if (h < 0 || h >= H) continue;            // a padding row
            for (long long kw = 0; kw < KW; ++kw) {
                long long w = ow * SW - PW + kw * DW;
                if (w < 0 || w >= W) continue;        // a padding column
                scalar_t v = plane[h * W + w];
                if (best_at < 0 || replaces(v, best)) {
                    best = v;
                    best_at = h * W + w;
                }
            }
        }
        y[i] = best;
        indices[i] = best_at;
    }
}

// dx[p].flat[indices[p, j]] += dy[p, j]: each dy element goes to its argmax (dx zeroed by the
// caller). Overlapping windows can share an argmax, hence atomicAdd (np.add.at in the NumPy
// twin, max_pool2d_backward). Also the gradient of adaptive max pooling.
extern "C" __global__ void max_pool2d_backward(const scalar_t* dy, const long long* indices,
                                               scalar_t* dx, long long planes, long long L,
                                               long long HW) {
    long long n = planes * L;                         // L = OH*OW outputs per plane
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long p = i / L;
        atomicAdd(dx + p * HW + indices[i], dy[i]);
    }
}

// y[p].flat[indices[p, j]] = x[p, j] for j = 0, 1, ..., L-1 in this order (y zeroed by the
// caller): if two inputs name the same position, the later one is kept, as the reference's
// serial rule says. Parallel threads writing to one address would leave an arbitrary one, so
// here ONE THREAD PER PLANE walks the plane's inputs in order (the exception to one thread
// per output element). NumPy twin: max_unpool2d_forward.
extern "C" __global__ void max_unpool2d_forward(const scalar_t* x, const long long* indices,
                                                scalar_t* y, long long planes, long long L,
                                                long long OHW) {
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < planes;
         p += (long long)blockDim.x * gridDim.x) {
        for (long long j = p * L; j < (p + 1) * L; ++j) {
            y[p * OHW + indices[j]] = x[j];
        }
    }
}

// dx[p, j] = dy[p].flat[indices[p, j]]: read the gradient back where the value was put (a
// gather, one thread per dx element). NumPy twin: max_unpool2d_backward.
extern "C" __global__ void max_unpool2d_backward(const scalar_t* dy, const long long* indices,
                                                 scalar_t* dx, long long planes, long long L,
                                                 long long OHW) {
    long long n = planes * L;                         // L = H*W inputs per plane
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long p = i / L;
        dx[i] = dy[p * OHW + indices[i]];
    }
}

// ============================================================================ average pooling
// y[p, oh, ow] = (sum of the window's taps inside the input) / (div_h[oh] * div_w[ow]).
// The divisors are the reference's _avg_divisors (window lengths clipped to the padded input,
// or to the input without count_include_pad), computed on the host. The sum runs over the taps
// in (kh, kw) order like the reference's; padding taps add zero and are skipped.
// NumPy twin: avg_pool2d_forward.
extern "C" __global__ void avg_pool2d_forward(const scalar_t* x, scalar_t* y,
                                              const long long* div_h, const long long* div_w,
                                              long long planes, long long H, long long W,
                                              long long OH, long long OW,
                                              long long KH, long long KW, long long SH,
                                              long long SW, long long PH, long long PW) {
    long long n = planes * OH * OW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long ow = i % OW, oh = (i / OW) % OH, p = i / (OW * OH);
        const scalar_t* plane = x + p * H * W;
        scalar_t total = 0;
        for (long long kh = 0; kh < KH; ++kh) {
            long long h = oh * SH - PH + kh;
            if (h < 0 || h >= H) continue;
            for (long long kw = 0; kw < KW; ++kw) {
                long long w = ow * SW - PW + kw;
                if (w < 0 || w >= W) continue;
                total += plane[h * W + w];
            }
        }
        y[i] = total / (scalar_t)(div_h[oh] * div_w[ow]);
    }
}

// dx[p, h, w] = sum over the windows (oh, ow) that have (h, w) as a tap of
//               dy[p, oh, ow] / (div_h[oh] * div_w[ow]).
// A gather, one thread per dx element, with the forward's tap loop turned around: pixel h is
// tap kh of the window oh with oh*SH - PH + kh = h, i.e. oh = (h + PH - kh) / SH when SH divides
// and 0 <= oh < OH. Taps are visited in (kh, kw) order, the order in which the reference adds
// the shares into this pixel. NumPy twin: avg_pool2d_backward.
extern "C" __global__ void avg_pool2d_backward(const scalar_t* dy, scalar_t* dx,
                                               const long long* div_h, const long long* div_w,
                                               long long planes, long long H, long long W,
                                               long long OH, long long OW,
                                               long long KH, long long KW, long long SH,
                                               long long SW, long long PH, long long PW) {
    long long n = planes * H * W;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long w = i % W, h = (i / W) % H, p = i / (W * H);
        const scalar_t* plane = dy + p * OH * OW;
        scalar_t total = 0;
        for (long long kh = 0; kh < KH; ++kh) {
            long long rh = h + PH - kh;               // = oh*SH if tap kh of window oh is h
            if (rh < 0 || rh % SH != 0 || rh / SH >= OH) continue;
            long long oh = rh / SH;
            for (long long kw = 0; kw < KW; ++kw) {
                long long rw = w + PW - kw;
                if (rw < 0 || rw % SW != 0 || rw / SW >= OW) continue;
                long long ow = rw / SW;
                total += plane[oh * OW + ow] / (scalar_t)(div_h[oh] * div_w[ow]);
            }
        }
        dx[i] = total;
    }
}

// ============================================================================ adaptive pooling
// Bin (oh, ow) covers rows [h0[oh], h1[oh]) and columns [w0[ow], w1[ow]): the reference's
// adaptive_pool_bins, computed on the host.

// y[p, oh, ow] = (sum of the bin) / (its pixel count). Column by column: each column of the bin
// is summed over the bin's rows first (the reference's "band" of column sums), then the
// columns are added. NumPy twin: adaptive_avg_pool2d_forward.
extern "C" __global__ void adaptive_avg_pool2d_forward(const scalar_t* x, scalar_t* y,
                                                       const long long* h0, const long long* h1,
                                                       const long long* w0, const long long* w1,
                                                       long long planes, long long H,
                                                       long long W, long long OH, long long OW) {
    long long n = planes * OH * OW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long ow = i % OW, oh = (i / OW) % OH, p = i / (OW * OH);
        const scalar_t* plane = x + p * H * W;
        scalar_t total = 0;
        for (long long w = w0[ow]; w < w1[ow]; ++w) {
            scalar_t column = 0;
            for (long long h = h0[oh]; h < h1[oh]; ++h) column += plane[h * W + w];
            total += column;
        }
        y[i] = total / (scalar_t)((h1[oh] - h0[oh]) * (w1[ow] - w0[ow]));
    }
}

// dx[p, h, w] = sum over the bins (oh, ow) that contain (h, w) of dy[p, oh, ow] / count(oh, ow),
// count = rows[oh] * cols[ow] (the bins' sizes). A gather, one thread per dx element. The bins
// containing row h are the consecutive oh in [oh0[h], oh1[h]): bin h of the same rule with the
// roles swapped, adaptive_pool_bins(OH, H) (and likewise for columns). Summed bin row by bin
// row, as the reference adds its rows of shares. NumPy twin: adaptive_avg_pool2d_backward.
extern "C" __global__ void adaptive_avg_pool2d_backward(const scalar_t* dy, scalar_t* dx,
                                                        const long long* oh0,
                                                        const long long* oh1,
                                                        const long long* ow0,
                                                        const long long* ow1,
                                                        const long long* rows,
                                                        const long long* cols,
                                                        long long planes, long long H,
                                                        long long W, long long OH,
                                                        long long OW) {
    long long n = planes * H * W;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long w = i % W, h = (i / W) % H, p = i / (W * H);
        const scalar_t* plane = dy + p * OH * OW;
        scalar_t total = 0;
        for (long long oh = oh0[h]; oh < oh1[h]; ++oh) {
            scalar_t row = 0;
            for (long long ow = ow0[w]; ow < ow1[w]; ++ow) {
                row += plane[oh * OW + ow] / (scalar_t)(rows[oh] * cols[ow]);
            }
            total += row;
        }
        dx[i] = total;
    }
}

// y[p, oh, ow] = max of the bin, indices[p, oh, ow] = h*W + w of that maximum in its plane;
// the bin is scanned in row-major order with max pooling's rule (first maximum, first NaN),
// which is np.argmax's. NumPy twin: adaptive_max_pool2d_forward.
extern "C" __global__ void adaptive_max_pool2d_forward(const scalar_t* x, scalar_t* y,
                                                       long long* indices,
                                                       const long long* h0, const long long* h1,
                                                       const long long* w0, const long long* w1,
                                                       long long planes, long long H,
                                                       long long W, long long OH, long long OW) {
    long long n = planes * OH * OW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long ow = i % OW, oh = (i / OW) % OH, p = i / (OW * OH);
        const scalar_t* plane = x + p * H * W;
        long long best_at = h0[oh] * W + w0[ow];      // bins are never empty: start at the
        scalar_t best = plane[best_at];               // first pixel
        for (long long h = h0[oh]; h < h1[oh]; ++h) {
            for (long long w = w0[ow]; w < w1[ow]; ++w) {
                scalar_t v = plane[h * W + w];
                if (replaces(v, best)) {
                    best = v;
                    best_at = h * W + w;
                }
            }
        }
        y[i] = best;
        indices[i] = best_at;
    }
}
