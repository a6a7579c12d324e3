// The Adam update on the GPU. NumPy twin: edu_seg/reference/optim.py (read it first: the
// formula and the order of the operations are the same).
//
// One thread per value, a pure elementwise pass: value i of p, m, v (and v_max) is read and
// written by thread i only. The scalars come in as scalar_t, cast by the wrapper exactly where
// the reference casts them: step_size = lr/(1 - beta1^t), bias_root = sqrt(1 - beta2^t).
// A GPU may fuse a multiply and an add into one rounding, so float32 results can differ from
// the reference in the last bit; the compiled CPU kernel does not fuse and matches it exactly.
extern "C" __global__ void adam_update(scalar_t* p, const scalar_t* g, scalar_t* m,
                                       scalar_t* v, scalar_t* v_max, long long has_max,
                                       scalar_t one_minus_beta1, scalar_t beta1,
                                       scalar_t one_minus_beta2, scalar_t beta2,
                                       scalar_t step_size, scalar_t bias_root, scalar_t eps,
                                       long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        scalar_t mi = m[i] * beta1 + one_minus_beta1 * g[i];
        scalar_t vi = v[i] * beta2 + one_minus_beta2 * (g[i] * g[i]);
        m[i] = mi;
        v[i] = vi;
        if (has_max) {
            // np.maximum: a NaN on either side gives NaN
            if (vi < v_max[i] || v_max[i] != v_max[i]) vi = v_max[i];
            v_max[i] = vi;
        }
        scalar_t denom = sqrt(vi) / bias_root + eps;
        p[i] -= step_size * (mi / denom);
    }
}
