"""Which implementation of the kernels runs: the compiled core, the NumPy textbook, or the GPU.

Every kernel exists up to three times, with the same name, signature and result:

=========  ===================================  ===========================================
backend    module                               what it is
=========  ===================================  ===========================================
"cython"   ``edu_seg._kernels.<name>``          compiled Cython/OpenMP loops + BLAS (default)
"numpy"    ``edu_seg.reference.<name>``         the readable NumPy reference
"cupy"     ``edu_seg.cuda.<name>``              the CuPy twin (not written yet)
=========  ===================================  ===========================================

The differentiable ops in :mod:`edu_seg.functional` never import a kernel module directly; they
ask :func:`kernels` for the one the current backend selects. This file also owns the thread
count (OpenMP and BLAS together, so they never oversubscribe the cores) and ``show_config()``.

Examples
--------
>>> import edu_seg
>>> with edu_seg.use_backend("numpy"):
...     pass  # everything here runs on the NumPy reference
"""
import contextlib
import importlib
import importlib.util
import os
import warnings

import numpy as np

from . import _startup

BACKENDS = ("cython", "numpy", "cupy")
_PACKAGE_OF = {"cython": "edu_seg._kernels", "numpy": "edu_seg.reference", "cupy": "edu_seg.cuda"}

_state = {"backend": "cython", "num_threads": None, "blas_limiter": None}
_warned_missing = set()


def _load_compiled_core():
    """Import the compiled thread-control module; None (with one warning) if the build is missing."""
    try:
        from ._kernels import threads
        return threads
    except ImportError as exc:
        warnings.warn(
            f"edu_seg: the compiled core could not be imported ({exc}); running on the NumPy "
            "reference backend, which is correct but slower. Build it with `make build` or "
            "`pip install -e .`.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


_threads = _load_compiled_core()
if _threads is None:
    _state["backend"] = "numpy"


def compiled_core_available():
    """True if the Cython/OpenMP kernels were built and import."""
    return _threads is not None


def _cupy_twin_written():
    """True if the CuPy kernels exist in this version (``edu_seg/cuda`` holds the twins)."""
    return importlib.util.find_spec("edu_seg.cuda.conv") is not None


def _cupy_problem():
    """None if the CuPy backend can run here, else a sentence saying what is missing and the fix."""
    if not _cupy_twin_written():
        return ("this version of edu_seg has no CuPy kernels yet (edu_seg/cuda holds none), so "
                "there is nothing to run on a GPU; use 'cython' (the default) or 'numpy'")
    try:
        import cupy
    except ImportError:
        return ("CuPy is not installed; install the GPU extra with `pip install edu_seg[gpu]` "
                "(or `pip install cupy-cuda12x` matching your CUDA version)")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy raises its own CUDARuntimeError without a driver
        return f"CuPy is installed but cannot reach a GPU ({exc})"
    if count == 0:
        return "CuPy is installed but no GPU is visible"
    return None


def set_backend(name):
    """Select the kernels every later op uses: ``"cython"``, ``"numpy"`` or ``"cupy"``.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`BACKENDS`.
    RuntimeError
        If ``"cython"`` is asked for but the compiled core is missing, or ``"cupy"`` is asked for
        without its kernels (not written yet), CuPy or a GPU; the message says what to do.
    """
    if name not in BACKENDS:
        raise ValueError(f"set_backend: unknown backend {name!r}; choose one of {BACKENDS}")
    if name == "cython" and _threads is None:
        raise RuntimeError("set_backend('cython'): the compiled core is not built; run "
                           "`make build` or `pip install -e .` (needs a C compiler)")
    if name == "cupy":
        problem = _cupy_problem()
        if problem:
            raise RuntimeError(f"set_backend('cupy'): {problem}")
    _state["backend"] = name


def get_backend():
    """The name of the backend in use: ``"cython"``, ``"numpy"`` or ``"cupy"``."""
    return _state["backend"]


@contextlib.contextmanager
def use_backend(name):
    """Context manager: run the ``with`` block on backend ``name``, then restore the previous one."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        _state["backend"] = previous


def kernels(module):
    """The kernel module ``module`` (e.g. ``"conv"``) of the current backend.

    If the compiled core was built before this module existed, the NumPy reference stands in
    (with one warning), so a stale build is slow, never broken.
    """
    backend = _state["backend"]
    try:
        return importlib.import_module(f"{_PACKAGE_OF[backend]}.{module}")
    except ImportError:
        if backend == "cupy":
            raise NotImplementedError(f"the 'cupy' backend has no {module!r} kernels yet; use "
                                      "set_backend('cython') or 'numpy' for this op") from None
        if backend != "cython":
            raise
        if module not in _warned_missing:
            _warned_missing.add(module)
            warnings.warn(f"edu_seg: compiled kernel module {module!r} is missing (rebuild with "
                          "`make build`); using the NumPy reference for it", RuntimeWarning,
                          stacklevel=2)
        return importlib.import_module(f"edu_seg.reference.{module}")


def get_array_module(*arrays):
    """``cupy`` if any argument is a CuPy array, else ``numpy`` (write device-agnostic code)."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy
            return cupy
    return np


# ----------------------------------------------------------------------------------- threads
#: Most threads :func:`set_num_threads` accepts per CPU (see :func:`max_num_threads`).
MAX_THREADS_PER_CPU = 4


def max_num_threads():
    """The largest thread count :func:`set_num_threads` accepts: 4 × ``os.cpu_count()``, >= 1."""
    return max(1, MAX_THREADS_PER_CPU * (os.cpu_count() or 1))


def set_num_threads(n):
    """Use ``n`` threads in the OpenMP kernels AND in BLAS.

    Both pools are limited together so that a GEMM called between two parallel loops never
    runs ``n`` BLAS threads on top of ``n`` OpenMP threads. Also read at import from the
    environment variable ``EDU_SEG_NUM_THREADS``.

    ``n`` is bounded by :func:`max_num_threads` (``MAX_THREADS_PER_CPU`` = 4 threads per CPU
    of ``os.cpu_count()``, at least 1). More threads than cores only adds contention (the
    kernels are compute-bound, so extra threads wait for a core and thrash the caches), and an
    absurd count is worse than slow: libgomp *aborts the whole process* ("Thread creation
    failed") when it cannot create the threads, and OpenBLAS can segfault. A few threads per
    core are still allowed for machines whose cores are shared or hyper-threaded.

    Raises
    ------
    ValueError
        ``n`` not a positive integer, or above :func:`max_num_threads`; the message names the
        value, the bound and the CPU count.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive integer, got {n!r}")
    n = int(n)
    bound = max_num_threads()
    if n > bound:
        raise ValueError(f"set_num_threads: n={n} is more than the {bound} threads allowed on "
                         f"this machine ({MAX_THREADS_PER_CPU} per CPU, os.cpu_count()="
                         f"{os.cpu_count()}); more threads than cores only adds contention, "
                         f"and the OpenMP runtime aborts the process when it cannot create "
                         f"them. Use at most {bound} (e.g. the CPU count)")
    from threadpoolctl import threadpool_limits

    if _threads is not None:
        _threads.set_num_threads(n)
        # The conv kernels call the OpenBLAS that SciPy bundles, a different library from
        # NumPy's; threadpoolctl limits only the libraries loaded when it runs, so load it now.
        import scipy.linalg.cython_blas  # noqa: F401
    _state["blas_limiter"] = threadpool_limits(limits=n, user_api="blas")
    _state["num_threads"] = n


def get_num_threads():
    """Threads the kernels use: the last :func:`set_num_threads`, else the OpenMP default."""
    if _state["num_threads"] is not None:
        return _state["num_threads"]
    return _threads.get_num_threads() if _threads is not None else 1


def _blas_info():
    from threadpoolctl import threadpool_info

    return [i for i in threadpool_info() if i.get("user_api") == "blas"]


def show_config(file=None):
    """Print what edu_seg runs on: version, backend, compiled core, threads, BLAS, GPU.

    Read this first when something is slow: the BLAS ``architecture`` line says whether GEMM
    uses the CPU's widest vector units (e.g. ``SkylakeX`` = AVX-512, ``Haswell`` = AVX2).
    """
    from . import __version__

    lines = [
        f"edu_seg {__version__}",
        f"  backend              : {get_backend()}",
        f"  compiled core        : {'loaded' if _threads is not None else 'MISSING (NumPy fallback)'}",
        f"  OpenMP               : {'yes' if _threads is not None and _threads.openmp_enabled() else 'no (serial kernels)'}",
        f"  threads              : {get_num_threads()} (of {os.cpu_count()} CPUs; "
        f"EDU_SEG_NUM_THREADS={os.environ.get('EDU_SEG_NUM_THREADS', 'unset')})",
        f"  OPENBLAS_CORETYPE    : {_startup.STATUS['openblas_coretype'] or 'unset'}",
        f"  malloc tuned for reuse: {'yes' if _startup.STATUS['malloc_tuned'] else 'no'}",
        f"  numpy                : {np.__version__}",
    ]
    for info in _blas_info():
        lines.append(f"  BLAS                 : {info.get('internal_api')} {info.get('version')} "
                     f"arch={info.get('architecture')} threads={info.get('num_threads')} "
                     f"({os.path.basename(info.get('filepath', ''))})")
    if _threads is not None:
        try:
            from ._kernels import conv as _conv
            lines.append("  conv GEMM            : scipy OpenBLAS, 1 thread inside OpenMP loops: "
                         + ("yes" if _conv.blas_thread_control_found()
                            else "no (loops run serially)"))
        except ImportError:
            pass
    problem = _cupy_problem()
    lines.append(f"  CuPy / GPU           : {'available' if problem is None else 'no - ' + problem}")
    print("\n".join(lines), file=file)


def _init_threads_from_env():
    value = os.environ.get("EDU_SEG_NUM_THREADS")
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"EDU_SEG_NUM_THREADS must be a positive integer, got "
                             f"{value!r}") from None
        try:
            set_num_threads(n)
        except ValueError as exc:
            raise ValueError(f"EDU_SEG_NUM_THREADS={value!r}: {exc}") from None


_init_threads_from_env()
