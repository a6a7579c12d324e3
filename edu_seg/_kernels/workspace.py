"""Per-thread scratch memory shared by the compiled kernels (pooling, resampling)."""
import numpy as np

from .threads import get_num_threads


def per_thread_rows(length, dtype):
    """One scratch row of ``length`` elements per OpenMP thread (row ``threadid()``).

    Rows are kept a page (4 KiB) apart, and from whatever lies before the buffer, so two
    threads never write near each other: the cores would keep stealing the cache lines from
    each other ("false sharing"; the hardware also prefetches neighbouring lines). Measured on
    2 threads of adaptive pooling: 64-byte gaps were slower than 1 thread, 128 bytes a partial
    speed-up, 1 KiB and more the full one. A few KiB per thread is nothing to pay for that.
    """
    threads = get_num_threads()
    gap = 4096 // np.dtype(dtype).itemsize
    buffer = np.empty(gap + threads * (length + gap), dtype=dtype)
    return buffer[gap:].reshape(threads, length + gap)
