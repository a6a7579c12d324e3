# cython: language_level=3
"""OpenMP thread control for every kernel in ``edu_seg._kernels``.

All kernels share one OpenMP runtime, so one call here sets the thread count of every ``prange``.
:func:`edu_seg.set_num_threads` calls :func:`set_num_threads` and limits BLAS to match.
"""

cdef extern from "openmp_info.h":
    int edu_seg_openmp_enabled() nogil
    int omp_get_max_threads() nogil
    void omp_set_num_threads(int n) nogil


def openmp_enabled():
    """True if the kernels were compiled with OpenMP (see ``setup.py``'s probe)."""
    return bool(edu_seg_openmp_enabled())


def get_num_threads():
    """Number of threads the next ``prange`` will use (1 in a serial build)."""
    return omp_get_max_threads()


def set_num_threads(int n):
    """Use ``n`` OpenMP threads in every later ``prange`` (no effect in a serial build)."""
    omp_set_num_threads(n)
