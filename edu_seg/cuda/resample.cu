// Resizing kernels on the GPU: bilinear and nearest interpolation and their adjoints.
// NumPy twin: edu_seg/reference/resample.py (read it first: the tables are the same).
//
// The per-axis tables (for every output row/column: the input taps and the weight of the
// second one) are built on the host by the reference's linear_source_taps and
// nearest_source_index, a few hundred numbers, and copied over. Forward passes are gathers,
// one thread per output element; backward passes scatter, one thread per dy element, with
// atomicAdd because several outputs read the same input pixel when upsampling.

// y[p, oh, ow] = (1-a)(1-b) x[h0, w0] + (1-a) b x[h0, w1] + a (1-b) x[h1, w0] + a b x[h1, w1]
// with a = lh[oh], b = lw[ow]; p runs over the N*C planes.
extern "C" __global__ void bilinear_forward(const scalar_t* x, scalar_t* y,
                                            const long long* h0, const long long* h1,
                                            const scalar_t* lh, const long long* w0,
                                            const long long* w1, const scalar_t* lw,
                                            long long planes, long long H, long long W,
                                            long long OH, long long OW) {
    long long n = planes * OH * OW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long ow = i % OW, oh = (i / OW) % OH, p = i / (OW * OH);
        const scalar_t* plane = x + p * H * W;
        scalar_t a = lh[oh], b = lw[ow];
        // Along W first, then along H: the reference's order of operations.
        scalar_t top = plane[h0[oh] * W + w0[ow]] * (1 - b) + plane[h0[oh] * W + w1[ow]] * b;
        scalar_t bottom = plane[h1[oh] * W + w0[ow]] * (1 - b) + plane[h1[oh] * W + w1[ow]] * b;
        y[i] = top * (1 - a) + bottom * a;
    }
}

// The adjoint: each dy element adds its four weighted shares into dx (zeroed by the caller).
extern "C" __global__ void bilinear_backward(const scalar_t* dy, scalar_t* dx,
                                             const long long* h0, const long long* h1,
                                             const scalar_t* lh, const long long* w0,
                                             const long long* w1, const scalar_t* lw,
                                             long long planes, long long H, long long W,
                                             long long OH, long long OW) {
    long long n = planes * OH * OW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long ow = i % OW, oh = (i / OW) % OH, p = i / (OW * OH);
        scalar_t* plane = dx + p * H * W;
        scalar_t a = lh[oh], b = lw[ow], g = dy[i];
        atomicAdd(plane + h0[oh] * W + w0[ow], g * (1 - a) * (1 - b));
        atomicAdd(plane + h0[oh] * W + w1[ow], g * (1 - a) * b);
        atomicAdd(plane + h1[oh] * W + w0[ow], g * a * (1 - b));
        atomicAdd(plane + h1[oh] * W + w1[ow], g * a * b);
    }
}

// y[p, oh, ow] = x[p, rows[oh], cols[ow]]
extern "C" __global__ void nearest_forward(const scalar_t* x, scalar_t* y,
                                           const long long* rows, const long long* cols,
                                           long long planes, long long H, long long W,
                                           long long OH, long long OW) {
    long long n = planes * OH * OW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long ow = i % OW, oh = (i / OW) % OH, p = i / (OW * OH);
        y[i] = x[p * H * W + rows[oh] * W + cols[ow]];
    }
}

// The adjoint: each input pixel receives the dy of every output that copied it.
extern "C" __global__ void nearest_backward(const scalar_t* dy, scalar_t* dx,
                                            const long long* rows, const long long* cols,
                                            long long planes, long long H, long long W,
                                            long long OH, long long OW) {
    long long n = planes * OH * OW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long ow = i % OW, oh = (i / OW) % OH, p = i / (OW * OH);
        atomicAdd(dx + p * H * W + rows[oh] * W + cols[ow], dy[i]);
    }
}
