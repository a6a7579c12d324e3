"""Compile the CUDA sources of this package with CuPy and launch their kernels.

A kernel of ``edu_seg/cuda/<module>.cu`` is launched with :func:`launch`, which picks the grid
for a grid-stride loop over ``n`` work items and passes each argument with the C type the
kernels use (see the package docstring): arrays as device pointers, Python ints and bools as
``long long``, Python floats as ``scalar_t``.
"""
import functools
from pathlib import Path

import numpy as np

#: Threads per block: a multiple of the 32-thread warp, small enough for any register budget.
THREADS_PER_BLOCK = 256
#: Most blocks per launch; a grid-stride loop lets fewer threads cover more items.
MAX_BLOCKS = 4096

_C_TYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def source(module):
    """The CUDA C text of ``edu_seg/cuda/<module>.cu``."""
    return Path(__file__).with_name(f"{module}.cu").read_text()


@functools.lru_cache(maxsize=None)
def compiled(module, dtype):
    """``cupy.RawModule`` of ``<module>.cu`` with ``scalar_t`` = the C type of ``dtype``."""
    import cupy

    return cupy.RawModule(code=source(module),
                          options=("--std=c++14", f"-Dscalar_t={_C_TYPE[np.dtype(dtype)]}"))


def _c_argument(value, dtype):
    """A kernel argument with the C type of the convention: arrays pass through."""
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return np.int64(value)                       # long long
    if isinstance(value, (float, np.floating)):
        return np.dtype(dtype).type(value)           # scalar_t
    return value


def launch(module, kernel, dtype, n, *args):
    """Run ``kernel`` of ``<module>.cu`` (compiled for ``dtype``) over ``n`` work items.

    Parameters
    ----------
    module, kernel : str
    dtype : numpy dtype
        float32 or float64: which compiled version (``scalar_t``) to use.
    n : int
        Work items; the kernel's grid-stride loop runs ``i`` over ``range(n)``.
    *args
        The kernel's arguments in order: CuPy arrays (C-contiguous), ints, bools, floats.
    """
    if n <= 0:
        return
    blocks = min((n + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK, MAX_BLOCKS)
    function = compiled(module, np.dtype(dtype)).get_function(kernel)
    function((blocks,), (THREADS_PER_BLOCK,), tuple(_c_argument(a, dtype) for a in args))
