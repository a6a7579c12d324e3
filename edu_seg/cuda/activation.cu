// The ReLU on the GPU. NumPy twin: edu_seg/reference/activation.py (the formulas are there).
// One thread per value, a pure elementwise pass.

// y = max(x, 0), as np.maximum: NaN stays NaN, -0.0 becomes +0.0. NumPy twin: relu_forward.
extern "C" __global__ void relu_forward(const scalar_t* x, scalar_t* y, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        scalar_t v = x[i];
        y[i] = (v > 0 || v != v) ? v : (scalar_t)0;
    }
}

// dx = dy * (y > 0), a product with 1 or 0 as NumPy computes it. NumPy twin: relu_backward.
extern "C" __global__ void relu_backward(const scalar_t* dy, const scalar_t* y, scalar_t* dx,
                                         long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        dx[i] = dy[i] * (y[i] > 0 ? (scalar_t)1 : (scalar_t)0);
    }
}
