// im2col and col2im on the GPU: the two data-movement halves of a convolution.
// NumPy twin: edu_seg/reference/conv.py (read im2col and col2im there first).
//
// Everything else of the conv family is a matrix product (cuBLAS through cupy.matmul, in
// conv.py): y = W * im2col(x), dx = col2im(W^T * dy), dW = sum_n dy[n] * im2col(x)[n]^T.
//
// Layout of the column matrix, as in the reference: cols (N, C*KH*KW, OH*OW) in C order, i.e.
// a flat index i of cols decomposes as (n, c, kh, kw, oh, ow) with ow fastest. The window grid
// (OH, OW) is a parameter, not recomputed here: the full grid of an (H, W) input for
// im2col/col2im themselves, and the (possibly shorter) grid of dy for the gradients of a
// transposed conv with output_padding (windows beyond dy's grid simply do not exist).

// cols[n, (c*KH + kh)*KW + kw, oh*OW + ow] = x[n, c, ih, iw] with
//     ih = oh*sh - ph + kh*dh,  iw = ow*sw - pw + kw*dw,
// and 0 where (ih, iw) falls in the zero padding (outside 0 <= ih < H, 0 <= iw < W).
// One thread per element of cols: a gather. NumPy twin: im2col (one strided slice per tap).
extern "C" __global__ void im2col(const scalar_t* x, scalar_t* cols, long long samples,
                                  long long C, long long H, long long W, long long KH,
                                  long long KW, long long sh, long long sw, long long ph,
                                  long long pw, long long dh, long long dw, long long OH,
                                  long long OW) {
    long long n = samples * C * KH * KW * OH * OW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long ow = i % OW, oh = (i / OW) % OH;
        long long kw = (i / (OW * OH)) % KW, kh = (i / (OW * OH * KW)) % KH;
        long long plane = i / (OW * OH * KW * KH);  // n*C + c
        long long ih = oh * sh - ph + kh * dh, iw = ow * sw - pw + kw * dw;
        bool inside = 0 <= ih && ih < H && 0 <= iw && iw < W;
        cols[i] = inside ? x[(plane * H + ih) * W + iw] : scalar_t(0);
    }
}

// The adjoint of im2col: x[n, c, ih, iw] = sum cols[n, (c*KH + kh)*KW + kw, oh*OW + ow] over the
// taps (kh, kw) and windows (oh, ow) that copied this pixel, i.e. those with
//     oh*sh - ph + kh*dh = ih,  ow*sw - pw + kw*dw = iw,  0 <= oh < OH,  0 <= ow < OW.
// Written as a GATHER, one thread per pixel of x: for each tap (kh, kw) at most one window
// reads the pixel, namely oh = (ih + ph - kh*dh) / sh when that division is exact and lands in
// [0, OH) (same for ow). So each thread owns its output and sums its few column entries itself:
// no atomics, no zeroing of x first, and the result is deterministic (the sum runs in the
// reference's (kh, kw) order, starting from 0, so it is bit-identical to the NumPy twin).
// The scatter alternative (one thread per column entry, atomicAdd into x) would add in an
// order that changes from run to run. Entries copied from the padding have no pixel and are
// dropped. NumPy twin: col2im (x_pad[...] += cols[:, :, kh, kw], then crop the padding).
extern "C" __global__ void col2im(const scalar_t* cols, scalar_t* x, long long samples,
                                  long long C, long long H, long long W, long long KH,
                                  long long KW, long long sh, long long sw, long long ph,
                                  long long pw, long long dh, long long dw, long long OH,
                                  long long OW) {
    long long n = samples * C * H * W;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long iw = i % W, ih = (i / W) % H, plane = i / (W * H);  // plane = n*C + c
        const scalar_t* taps = cols + plane * KH * KW * OH * OW;     // cols[n, c*KH*KW:, :]
        scalar_t total = 0;
        for (long long kh = 0; kh < KH; ++kh) {
            long long th = ih + ph - kh * dh;  // = oh*sh if some window oh uses this tap here
            if (th < 0 || th % sh != 0 || th / sh >= OH) continue;
            long long oh = th / sh;
            for (long long kw = 0; kw < KW; ++kw) {
                long long tw = iw + pw - kw * dw;
                if (tw < 0 || tw % sw != 0 || tw / sw >= OW) continue;
                long long ow = tw / sw;
                total += taps[((kh * KW + kw) * OH + oh) * OW + ow];
            }
        }
        x[i] = total;
    }
}
