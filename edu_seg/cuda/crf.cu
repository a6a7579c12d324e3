// The exact messages of the fully connected CRF on the GPU: every pixel pair, no approximation.
// NumPy twin: edu_seg/reference/crf.py (read it first: same features, same formula).
//
// For every pixel i and label l
//
//     m_i(l) = sum over j != i of [ w1 * k_alpha(i, j) + w2 * k_gamma(i, j) ] * q_j(l)
//
//     k_alpha(i, j) = exp(-(|pa_i - pa_j|^2 + |c_i - c_j|^2))     appearance (bilateral)
//     k_gamma(i, j) = exp(-|pg_i - pg_j|^2)                        smoothness (spatial)
//
// with the features already divided by sqrt(2) * theta, as the reference's _scaled_features
// does: pa = (row, column) / (sqrt(2) theta_alpha), pg = (row, column) / (sqrt(2) theta_gamma),
// c = colour / (sqrt(2) theta_beta). The position features lie on the pixel grid, so the wrapper
// passes them as per-axis tables (ya[row], xa[column], yg[row], xg[column]: H + W numbers each,
// the reference's values to the bit); the colours come as a (3, N) array.
//
// One thread per output pixel i: it walks over all N pixels j, computes the pair's kernel
// value once and adds it, times q_j(l), into its own outputs m_i(l) for every label l. No
// thread writes another's outputs, so there are no races and no atomics. Work O(N^2 L), like
// the reference's matrix product; fine up to the 64x64 images the exact method is meant for.

// exp(-d2) in the precision of scalar_t (expf for float, exp for double).
__device__ inline float gaussian(float d2) { return expf(-d2); }
__device__ inline double gaussian(double d2) { return exp(-d2); }

// m[l, i] = sum_j (w1 k_alpha(i, j) + w2 k_gamma(i, j)) q[l, j] - (w1 + w2) q[l, i].
//
// As in the reference, the sum runs over all j, i included, and the self term is subtracted at
// the end: k_alpha(i, i) = k_gamma(i, i) = 1, so it is (w1 + w2) q[l, i] (self_weight).
// colour: (3, N) planar; q, m: (L, N); N = H * W pixels in raster order.
extern "C" __global__ void dense_crf_messages(const scalar_t* colour, const scalar_t* q,
                                              scalar_t* m,
                                              const scalar_t* ya, const scalar_t* xa,
                                              const scalar_t* yg, const scalar_t* xg,
                                              scalar_t w1, scalar_t w2, scalar_t self_weight,
                                              long long L, long long H, long long W) {
    long long N = H * W;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < N;
         i += (long long)blockDim.x * gridDim.x) {
        long long yi = i / W, xi = i % W;
        scalar_t ci0 = colour[i], ci1 = colour[N + i], ci2 = colour[2 * N + i];
        for (long long l = 0; l < L; ++l) m[l * N + i] = 0;
        for (long long j = 0; j < N; ++j) {
            long long yj = j / W, xj = j % W;
            // Squared distances, summed in the reference's order: (row, column), then colour.
            scalar_t dy = ya[yi] - ya[yj], dx = xa[xi] - xa[xj];
            scalar_t d0 = ci0 - colour[j], d1 = ci1 - colour[N + j], d2 = ci2 - colour[2 * N + j];
            scalar_t position_alpha = dy * dy + dx * dx;
            scalar_t appearance = d0 * d0 + d1 * d1 + d2 * d2;
            scalar_t k_alpha = gaussian(position_alpha + appearance);
            dy = yg[yi] - yg[yj];
            dx = xg[xi] - xg[xj];
            scalar_t k_gamma = gaussian(dy * dy + dx * dx);
            scalar_t kernel = w1 * k_alpha + w2 * k_gamma;      // one entry of the N x N matrix
            for (long long l = 0; l < L; ++l) m[l * N + i] += kernel * q[l * N + j];
        }
        for (long long l = 0; l < L; ++l) m[l * N + i] -= self_weight * q[l * N + i];
    }
}
