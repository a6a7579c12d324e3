// RoIAlign and RoIPool on the GPU, forward and backward (torchvision's semantics).
// NumPy twin: edu_seg/reference/roi.py (read it first: the geometry and the rules are the same,
// and the helpers below carry the names of its helpers).
//
// Layout: x (N, C, H, W); rois (K, 5), rows (batch_index, x1, y1, x2, y2) in image coordinates,
// in the dtype of x; outputs (K, C, PH, PW). Thread i works on output element
// i = ((k*C + c)*PH + ph)*PW + pw: box k, channel c, bin (ph, pw). Like torchvision's CUDA
// kernels, each thread recomputes its box's geometry (a handful of flops) rather than reading
// it from a table: it is cheaper than a second launch.
//
// All arithmetic is in scalar_t, the dtype of x, in the reference's order (torchvision
// computes the sample positions in the input's dtype too, so float32 boxes give float32
// coordinates). Forward passes are gathers; the backward passes scatter every dy element into
// the pixels it came from with atomicAdd, as boxes and bins overlap.
//
// Rounding: on a GPU the compiler fuses a*b + c into one FMA by default (NVRTC's --fmad=true),
// which rounds once where the reference rounds twice, and atomicAdd adds in whatever order the
// threads arrive. So results agree with the reference to rounding, not bit for bit (the C twin
// turns FMA off to be bit-exact: kernels/roi_fp.h). RoIPool's geometry has no a*b + c (floor,
// ceil and round sit between the operations), so its bins and argmax are the reference's exactly.

// ================================================================================ RoIAlign
// The four pixels around a continuous position and their bilinear weights.
struct Neighbours {
    long long y_lo, y_hi, x_lo, x_hi;   // pixels (y_lo, x_lo), (y_lo, x_hi), (y_hi, x_lo),
    scalar_t w1, w2, w3, w4;            // (y_hi, x_hi) and their weights, in this order
};

// The 1-D half of a bilinear sample at v on an axis of `size` pixels: false if v is outside
// [-1, size] (the sample adds nothing); else the neighbours lo, hi and the weights h (of lo)
// and l (of hi). Between -1 and 0 pixel 0 is used, from size-1 to size pixel size-1 (clamped).
// NumPy twin: _linear_neighbours.
__device__ inline bool linear_neighbours(scalar_t v, long long size, long long* lo,
                                         long long* hi, scalar_t* l, scalar_t* h) {
    if (v < -1 || v > size) return false;
    if (v <= 0) v = 0;
    *lo = (long long)v;                     // floor, as v >= 0
    if (*lo >= size - 1) {                  // at or past the last pixel centre: clamp
        *lo = *hi = size - 1;
        v = (scalar_t)*lo;
    } else {
        *hi = *lo + 1;
    }
    *l = v - *lo;
    *h = 1 - *l;
    return true;
}

// w1 = hy*hx, w2 = hy*lx, w3 = ly*hx, w4 = ly*lx; false if (y, x) is outside
// [-1, H] x [-1, W]. The forward reads sum w_i*x[pixel_i], the backward adds w_i*g to the same
// pixels: one helper for both. NumPy twin: bilinear_neighbours.
__device__ inline bool bilinear_neighbours(scalar_t y, scalar_t x, long long H, long long W,
                                           Neighbours* nb) {
    scalar_t ly, hy, lx, hx;
    if (!linear_neighbours(y, H, &nb->y_lo, &nb->y_hi, &ly, &hy)) return false;
    if (!linear_neighbours(x, W, &nb->x_lo, &nb->x_hi, &lx, &hx)) return false;
    nb->w1 = hy * hx;
    nb->w2 = hy * lx;
    nb->w3 = ly * hx;
    nb->w4 = ly * lx;
    return true;
}

// Where RoIAlign samples one box (feature-map coordinates, never rounded).
struct AlignGeometry {
    scalar_t y1, x1;          // top-left corner of the box: bin (ph, pw) starts at
    scalar_t bin_h, bin_w;    //     (y1 + ph*bin_h, x1 + pw*bin_w)
    long long gh, gw;         // sample points per bin along y and x
    scalar_t count;           // max(gh*gw, 1): every bin's sum is divided by it
};

// off = 1/2 if aligned else 0;  x1' = x1*s - off, ..., y2' = y2*s - off;
// rw = x2' - x1', rh = y2' - y1' (at least 1 each if not aligned: legacy 1x1 boxes);
// bin_h = rh / PH, bin_w = rw / PW;  gh = sampling_ratio if > 0 else ceil(rh / PH) (gw alike).
// NumPy twin: roi_align_sample_points.
__device__ inline AlignGeometry roi_align_sample_points(const scalar_t* box, scalar_t s,
                                                        bool aligned, long long sampling_ratio,
                                                        long long PH, long long PW) {
    AlignGeometry geo;
    scalar_t off = aligned ? (scalar_t)0.5 : (scalar_t)0;
    scalar_t x1 = box[0] * s - off, y1 = box[1] * s - off;
    scalar_t x2 = box[2] * s - off, y2 = box[3] * s - off;
    scalar_t roi_w = x2 - x1, roi_h = y2 - y1;
    if (!aligned) {                         // legacy: malformed boxes are forced to be 1x1
        if (roi_w < 1) roi_w = 1;
        if (roi_h < 1) roi_h = 1;
    }
    geo.y1 = y1;
    geo.x1 = x1;
    geo.bin_h = roi_h / PH;
    geo.bin_w = roi_w / PW;
    geo.gh = sampling_ratio > 0 ? sampling_ratio : (long long)ceil(roi_h / PH);
    geo.gw = sampling_ratio > 0 ? sampling_ratio : (long long)ceil(roi_w / PW);
    long long count = geo.gh * geo.gw;      // may be <= 0: an empty adaptive grid (aligned)
    geo.count = (scalar_t)(count > 1 ? count : 1);
    return geo;
}

// y[k, c, ph, pw] = (1/count) sum_{iy<gh, ix<gw} bilinear(x[b, c], y(ph, iy), x(pw, ix)) with
//     y(ph, iy) = y1' + ph*bin_h + (iy + 1/2)*bin_h / gh     (x likewise),
// samples outside [-1, H] x [-1, W] adding 0 but still counted. NumPy twin: roi_align_forward
// (its loop body over one bin, for one channel).
extern "C" __global__ void roi_align_forward(const scalar_t* x, const scalar_t* rois,
                                             scalar_t* y, long long K, long long C,
                                             long long H, long long W, long long PH,
                                             long long PW, scalar_t spatial_scale,
                                             long long sampling_ratio, long long aligned) {
    long long n = K * C * PH * PW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long pw = i % PW, ph = (i / PW) % PH, c = (i / (PW * PH)) % C;
        long long k = i / (PW * PH * C);
        const scalar_t* roi = rois + k * 5;
        long long b = (long long)roi[0];
        AlignGeometry geo = roi_align_sample_points(roi + 1, spatial_scale, aligned,
                                                    sampling_ratio, PH, PW);
        const scalar_t* plane = x + (b * C + c) * H * W;
        scalar_t acc = 0;
        for (long long iy = 0; iy < geo.gh; ++iy) {
            scalar_t yy = geo.y1 + ph * geo.bin_h + (iy + (scalar_t)0.5) * geo.bin_h / geo.gh;
            for (long long ix = 0; ix < geo.gw; ++ix) {
                scalar_t xx = geo.x1 + pw * geo.bin_w + (ix + (scalar_t)0.5) * geo.bin_w / geo.gw;
                Neighbours nb;
                if (!bilinear_neighbours(yy, xx, H, W, &nb)) continue;   // adds 0, counted
                acc += nb.w1 * plane[nb.y_lo * W + nb.x_lo] + nb.w2 * plane[nb.y_lo * W + nb.x_hi]
                     + nb.w3 * plane[nb.y_hi * W + nb.x_lo] + nb.w4 * plane[nb.y_hi * W + nb.x_hi];
            }
        }
        y[i] = acc / geo.count;
    }
}

// The adjoint (RoIAlign is linear in x): every sample point of bin (k, c, ph, pw) hands
// g = dy[k, c, ph, pw] / count to its four neighbours, weighted w1..w4, and ADDS it there
// (dx zeroed by the caller). Boxes and bins overlap, so several threads add into one pixel:
// atomicAdd, as in torchvision's CUDA kernel. NumPy twin: roi_align_backward.
extern "C" __global__ void roi_align_backward(const scalar_t* dy, const scalar_t* rois,
                                              scalar_t* dx, long long K, long long C,
                                              long long H, long long W, long long PH,
                                              long long PW, scalar_t spatial_scale,
                                              long long sampling_ratio, long long aligned) {
    long long n = K * C * PH * PW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long pw = i % PW, ph = (i / PW) % PH, c = (i / (PW * PH)) % C;
        long long k = i / (PW * PH * C);
        const scalar_t* roi = rois + k * 5;
        long long b = (long long)roi[0];
        AlignGeometry geo = roi_align_sample_points(roi + 1, spatial_scale, aligned,
                                                    sampling_ratio, PH, PW);
        scalar_t* plane = dx + (b * C + c) * H * W;
        scalar_t g = dy[i] / geo.count;     // this bin's gradient per sample
        for (long long iy = 0; iy < geo.gh; ++iy) {
            scalar_t yy = geo.y1 + ph * geo.bin_h + (iy + (scalar_t)0.5) * geo.bin_h / geo.gh;
            for (long long ix = 0; ix < geo.gw; ++ix) {
                scalar_t xx = geo.x1 + pw * geo.bin_w + (ix + (scalar_t)0.5) * geo.bin_w / geo.gw;
                Neighbours nb;
                if (!bilinear_neighbours(yy, xx, H, W, &nb)) continue;
                atomicAdd(plane + nb.y_lo * W + nb.x_lo, nb.w1 * g);
                atomicAdd(plane + nb.y_lo * W + nb.x_hi, nb.w2 * g);
                atomicAdd(plane + nb.y_hi * W + nb.x_lo, nb.w3 * g);
                atomicAdd(plane + nb.y_hi * W + nb.x_hi, nb.w4 * g);
            }
        }
    }
}

// ================================================================================= RoIPool
// RoIPool's running maximum starts at -FLT_MAX (torchvision's constant, for double too): a
// value must be strictly larger to be taken, so NaN never wins. NumPy twin: _LOWEST.
#define ROI_POOL_LOWEST (-3.4028234663852886e38)

// C's round (halves away from zero), like the reference's _round_half_away.
__device__ inline long long round_half_away(scalar_t v) {
    return (long long)round(v);
}

// RoIPool's quantised box: corners rounded to whole feature pixels (first quantisation),
// bin sizes from the inclusive width/height, at least 1 pixel. NumPy twin: roi_pool_bins.
struct PoolGeometry {
    long long xs, ys;         // rounded top-left corner
    scalar_t bin_h, bin_w;    // max(ye - ys + 1, 1) / PH,  max(xe - xs + 1, 1) / PW
};

__device__ inline PoolGeometry roi_pool_bins(const scalar_t* box, scalar_t s, long long PH,
                                             long long PW) {
    PoolGeometry geo;
    geo.xs = round_half_away(box[0] * s);
    geo.ys = round_half_away(box[1] * s);
    long long xe = round_half_away(box[2] * s), ye = round_half_away(box[3] * s);
    long long roi_w = xe - geo.xs + 1, roi_h = ye - geo.ys + 1;     // the end is inclusive
    if (roi_w < 1) roi_w = 1;               // an inverted box becomes 1 pixel wide
    if (roi_h < 1) roi_h = 1;
    geo.bin_h = (scalar_t)roi_h / (scalar_t)PH;
    geo.bin_w = (scalar_t)roi_w / (scalar_t)PW;
    return geo;
}

// v limited to [lo, hi] (np.clip).
__device__ inline long long clip(long long v, long long lo, long long hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

// [lo, hi) of bin p along one axis, floored/ceiled to whole pixels (second quantisation) and
// clipped to [0, size]: lo = clip(floor(p*bin) + start), hi = clip(ceil((p+1)*bin) + start).
__device__ inline void pool_bin_edges(long long p, scalar_t bin_size, long long start,
                                      long long size, long long* lo, long long* hi) {
    *lo = clip((long long)floor((scalar_t)p * bin_size) + start, 0, size);
    *hi = clip((long long)ceil((scalar_t)(p + 1) * bin_size) + start, 0, size);
}

// y[k, c, ph, pw] = max of x[b, c] over the bin's pixels [h0, h1) x [w0, w1), scanned in
// row-major order keeping the FIRST strict maximum; argmax = h*W + w of it. An empty bin
// gives 0 and argmax -1 (so does a bin whose values are all <= -FLT_MAX, with y = -FLT_MAX).
// NumPy twin: roi_pool_forward.
extern "C" __global__ void roi_pool_forward(const scalar_t* x, const scalar_t* rois,
                                            scalar_t* y, long long* argmax, long long K,
                                            long long C, long long H, long long W,
                                            long long PH, long long PW,
                                            scalar_t spatial_scale) {
    long long n = K * C * PH * PW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long pw = i % PW, ph = (i / PW) % PH, c = (i / (PW * PH)) % C;
        long long k = i / (PW * PH * C);
        const scalar_t* roi = rois + k * 5;
        long long b = (long long)roi[0];
        PoolGeometry geo = roi_pool_bins(roi + 1, spatial_scale, PH, PW);
        long long h0, h1, w0, w1;
        pool_bin_edges(ph, geo.bin_h, geo.ys, H, &h0, &h1);
        pool_bin_edges(pw, geo.bin_w, geo.xs, W, &w0, &w1);
        if (h1 <= h0 || w1 <= w0) {         // empty bin: 0, argmax -1
            y[i] = 0;
            argmax[i] = -1;
            continue;
        }
        const scalar_t* plane = x + (b * C + c) * H * W;
        scalar_t best = (scalar_t)ROI_POOL_LOWEST;
        long long where = -1;
        for (long long h = h0; h < h1; ++h) {         // row-major scan: the first maximum wins
            for (long long w = w0; w < w1; ++w) {
                if (plane[h * W + w] > best) {        // strict, so ties keep the earlier pixel
                    best = plane[h * W + w];
                    where = h * W + w;
                }
            }
        }
        y[i] = best;
        argmax[i] = where;
    }
}

// dx[b, c].flat[argmax[k, c, ph, pw]] += dy[k, c, ph, pw] for every bin whose argmax is not -1
// (dx zeroed by the caller); bins of overlapping boxes can share a pixel, hence atomicAdd.
// NumPy twin: roi_pool_backward.
extern "C" __global__ void roi_pool_backward(const scalar_t* dy, const long long* argmax,
                                             const scalar_t* rois, scalar_t* dx, long long K,
                                             long long C, long long H, long long W,
                                             long long PH, long long PW) {
    long long n = K * C * PH * PW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long c = (i / (PW * PH)) % C, k = i / (PW * PH * C);
        long long b = (long long)rois[k * 5];
        if (argmax[i] != -1) atomicAdd(dx + (b * C + c) * H * W + argmax[i], dy[i]);
    }
}
