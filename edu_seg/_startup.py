"""Process settings that must be made before NumPy loads its BLAS (imported first by ``edu_seg``).

Two measured facts about CPUs like the course machine decide this (measured on the 2-core AVX-512 machines this project runs on):

1. NumPy's and SciPy's bundled OpenBLAS pick AVX2 ("Haswell") GEMM kernels on AVX-512 CPUs of
   recent AMD generations, which halves the speed of every im2col + GEMM convolution. OpenBLAS
   reads ``OPENBLAS_CORETYPE`` once, when the library loads, so we can only set it if NumPy has
   not been imported yet. We never override a value the user set.
2. glibc returns large freed blocks to the OS and page-faults them back on the next call, so a
   kernel that allocates a fresh 10 MB buffer per call pays for it every time. ``mallopt`` keeps
   blocks up to 32 MB in the heap instead.

``EDU_SEG_NO_TUNING=1`` turns both off. :func:`edu_seg.show_config` reports what happened.
"""
import ctypes
import os
import sys

from . import _cpu

#: What this module did, for ``show_config()``.
STATUS = {"openblas_coretype": None, "malloc_tuned": False}

_AVX512_FLAGS = ("avx512f", "avx512bw", "avx512dq", "avx512vl")  # what OpenBLAS's SkylakeX needs


def _cpu_has_avx512():
    flags = _cpu.cpu_flags()
    return flags is not None and all(fl in flags for fl in _AVX512_FLAGS)


def _tune():
    if os.environ.get("EDU_SEG_NO_TUNING", "0") not in ("", "0"):
        return
    if "OPENBLAS_CORETYPE" in os.environ:
        STATUS["openblas_coretype"] = os.environ["OPENBLAS_CORETYPE"] + " (set in the environment)"
    elif "numpy" in sys.modules:
        STATUS["openblas_coretype"] = "not set: NumPy was imported before edu_seg"
    elif _cpu_has_avx512():
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
        STATUS["openblas_coretype"] = "SkylakeX (set by edu_seg: the CPU has AVX-512)"
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
            ok = (libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)    # largest glibc allows
                  and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # keep freed memory for reuse
                  and libc.mallopt(M_TOP_PAD, 64 * 2**20))
            STATUS["malloc_tuned"] = bool(ok)
        except (OSError, AttributeError):
            pass


_tune()
