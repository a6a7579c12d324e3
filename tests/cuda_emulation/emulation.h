// The subset of CUDA C that edu_seg/cuda/*.cu is written in, as plain C++ for the CPU.
//
// The kernels use one thread per output element in grid-stride loops, atomics for scatters,
// and nothing else of CUDA (no shared memory, no __syncthreads, no warp functions). Under that
// rule a kernel is an ordinary function of (blockIdx, threadIdx): the generated launcher of
// cupy_on_cpu.py sets these globals and calls the kernel once per (block, thread), one after
// the other, so atomicAdd can be a plain add. A kernel that steps outside the subset does not
// compile here (__shared__ and __syncthreads are not defined), which is the point.
#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>

struct dim3 {
    unsigned x, y, z;
};
static dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict

template <typename T>
static inline T atomicAdd(T *address, T value) {
    T old = *address;
    *address = old + value;
    return old;
}

// __dmul_rn: a double product that the compiler never fuses with an addition into an FMA
// (a fused a*b + c rounds once, not twice). On the CPU a volatile store rounds it on its own.
static inline double __dmul_rn(double x, double y) {
    volatile double product = x * y;
    return product;
}

// CUDA's device min/max are overloaded for each arithmetic type.
using std::max;
using std::min;
