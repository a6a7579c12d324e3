"""The GPU twin of the kernels: CUDA C launched through CuPy.

Each module here (``conv``, ``pool``, ...) provides the functions of
:data:`edu_seg.backend.KERNEL_CONTRACT`, with the same signatures and results as its NumPy twin
in :mod:`edu_seg.reference` and its Cython twin in :mod:`edu_seg._kernels`, but it takes and
returns CuPy arrays. The CUDA source of module ``name`` is the file ``name.cu`` beside it,
compiled by CuPy (``cupy.RawModule``, NVRTC) the first time a kernel of it runs, once per
dtype (``scalar_t`` is ``float`` or ``double``), and cached by CuPy on disk.

How the kernels are written, and why
------------------------------------
- **One thread per output element**, in a *grid-stride loop*::

      for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
           i += (long long)blockDim.x * gridDim.x) { ... output element i ... }

  Any grid covers any ``n`` (the launcher caps the number of blocks), and each element's work
  reads like one iteration of the NumPy twin's loop.
- **Atomics only where a scatter needs them** (a backward pass that adds into shared inputs,
  e.g. ``col2im``, max-pool backward); everything else is a gather that writes its own output.
- **No shared memory, no ``__syncthreads``, no warp intrinsics.** That keeps each kernel a
  plain function of its thread index, so the test suite can compile the same ``.cu`` files as
  C++ for the CPU (``tests/cuda_emulation``: ``blockIdx``/``threadIdx`` become loop variables
  and ``atomicAdd`` a plain add) and check them against the NumPy reference on machines without
  a GPU. It costs some speed on a real GPU; the matrix products, which is where the time goes,
  are cuBLAS calls through ``cupy.matmul``.
- Integer parameters are ``long long`` and real ones ``scalar_t``; :func:`edu_seg.cuda._raw.launch`
  converts Python numbers to those types.
- The ``.cu`` files are plain ASCII (write ``sum``, ``<=``, ``*`` in comments): CuPy's compile
  cache has failed on non-ASCII source.

Importing this package does not import CuPy; :mod:`edu_seg.backend` imports a module here only
for CuPy arrays or the ``"cupy"`` backend.
"""
