"""Which implementation of the kernels runs: the compiled core, the NumPy textbook, or the GPU.

Every kernel exists up to three times, with the same name, signature and result:

=========  ===================================  ===========================================
backend    module                               what it is
=========  ===================================  ===========================================
"cython"   ``edu_seg._kernels.<name>``          compiled Cython/OpenMP loops + BLAS (default)
"numpy"    ``edu_seg.reference.<name>``         the readable NumPy reference
"cupy"     ``edu_seg.cuda.<name>``              CUDA C kernels launched through CuPy
=========  ===================================  ===========================================

:data:`KERNEL_CONTRACT` is the written list of what every one of these modules provides (a test
checks all three against it). The differentiable ops in :mod:`edu_seg.functional` never import a
kernel module directly; they ask :func:`kernels` for one, passing their input arrays: **the data
decides**. CuPy arrays run the CUDA twin whatever the global backend says; NumPy arrays run the
backend chosen with :func:`set_backend` (``"cython"`` or ``"numpy"``); a mix raises an error
naming both devices. This file also owns the thread count (OpenMP, and BLAS set to match the
backend, so that the two pools never fight over the cores) and ``show_config()``.

Examples
--------
>>> import edu_seg
>>> with edu_seg.use_backend("numpy"):
...     pass  # everything here runs on the NumPy reference
"""
import contextlib
import importlib
import os
import warnings

import numpy as np

from . import _cpu, _startup

BACKENDS = ("cython", "numpy", "cupy")

#: The kernel contract: for each kernel module, the functions every backend provides and their
#: parameters. ``reference``, ``_kernels`` and ``cuda`` each implement exactly these (a module
#: may add private helpers, and the documented extras of :data:`BACKEND_EXTRAS`).
KERNEL_CONTRACT = {
    "conv": {
        "im2col": "(x, kernel_size, stride, padding, dilation)",
        "col2im": "(cols, x_shape, kernel_size, stride, padding, dilation)",
        "conv2d_forward": "(x, w, b, stride, padding, dilation, groups)",
        "conv2d_backward_input": "(dy, w, x_shape, stride, padding, dilation, groups)",
        "conv2d_backward_weight": "(dy, x, w_shape, stride, padding, dilation, groups)",
        "conv2d_backward_bias": "(dy)",
        "conv_transpose2d_forward": "(x, w, b, stride, padding, output_padding, dilation, groups)",
    },
    "norm": {
        "batch_norm_stats": "(x)",
        "batch_norm_forward": "(x, mean, invstd, weight, bias)",
        "batch_norm_backward": "(dy, x, mean, invstd, weight, training)",
    },
    "pool": {
        "pool_output_size": "(size, kernel_size, stride, padding, dilation=1, ceil_mode=False)",
        "adaptive_pool_bins": "(size, bins)",
        "max_pool2d_forward": "(x, kernel_size, stride, padding, dilation, ceil_mode)",
        "max_pool2d_backward": "(dy, indices, x_shape)",
        "max_unpool2d_forward": "(x, indices, output_hw)",
        "max_unpool2d_backward": "(dy, indices)",
        "avg_pool2d_forward": "(x, kernel_size, stride, padding, ceil_mode, count_include_pad)",
        "avg_pool2d_backward": "(dy, x_shape, kernel_size, stride, padding, ceil_mode, "
                               "count_include_pad)",
        "adaptive_avg_pool2d_forward": "(x, output_hw)",
        "adaptive_avg_pool2d_backward": "(dy, x_shape)",
        "adaptive_max_pool2d_forward": "(x, output_hw)",
    },
    "resample": {
        "linear_source_taps": "(in_size, out_size, align_corners, scale=None)",
        "nearest_source_index": "(in_size, out_size, scale=None)",
        "interpolate_bilinear_forward": "(x, out_hw, align_corners, scales)",
        "interpolate_bilinear_backward": "(dy, in_hw, align_corners, scales)",
        "interpolate_nearest_forward": "(x, out_hw, scales)",
        "interpolate_nearest_backward": "(dy, in_hw, scales)",
    },
    "roi": {
        "roi_align_forward": "(x, rois, output_hw, spatial_scale, sampling_ratio, aligned)",
        "roi_align_backward": "(dy, rois, x_shape, output_hw, spatial_scale, sampling_ratio, "
                              "aligned)",
        "roi_pool_forward": "(x, rois, output_hw, spatial_scale)",
        "roi_pool_backward": "(dy, argmax, rois, x_shape)",
    },
    "crf": {
        "dense_crf_messages": "(image, q, theta_alpha, theta_beta, theta_gamma, w1, w2)",
    },
    "graph_segmentation": {
        "segment_graph": "(edges, weights, num_vertices, k, min_size)",
    },
    "activation": {
        "relu_forward": "(x)",
        "relu_backward": "(dy, y)",
    },
    "nms": {
        "nms": "(boxes, scores, iou_threshold)",
        "batched_nms": "(boxes, scores, classes, iou_threshold)",
    },
    "optim": {
        "adam_update": "(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, "
                       "beta2, eps)",
    },
}

#: Public functions a backend may have beyond the contract, and why.
BACKEND_EXTRAS = {
    # The textbook's other views of the same operation, which chapters 02 and 03 compare.
    "numpy": {"conv": ("conv2d_naive", "conv_transpose2d_scatter",
                       "conv_transpose2d_zero_insertion", "conv2d_winograd"),
              # the geometry the reference spells out step by step for the pictures
              "roi": ("bilinear_neighbours", "roi_align_sample_points", "roi_pool_bins")},
    # Introspection of the compiled core (show_config, the thread tests).
    "cython": {"conv": ("blas_thread_control_found",), "pool": ("per_thread_rows",),
               "resample": ("per_thread_rows",), "crf": ("per_thread_rows",),
               "roi": ("per_thread_rows",)},
    "cupy": {},
}

_PACKAGE_OF = {"cython": "edu_seg._kernels", "numpy": "edu_seg.reference", "cupy": "edu_seg.cuda"}

_state = {"backend": "cython", "num_threads": None, "blas_limiter": None}
_warned_missing = set()


def _load_compiled_core():
    """Import the compiled thread-control module; None (with one warning) if the build is
    missing, or was compiled for instructions this CPU does not have (see :mod:`edu_seg._cpu`:
    importing it would kill the process with an illegal instruction)."""
    missing = _cpu.flags_missing_here(_cpu.read_build_flags(), _cpu.cpu_flags())
    if missing:
        warnings.warn(
            f"edu_seg: the compiled core was built on a CPU with {', '.join(missing)}, which "
            "this CPU lacks; its code would stop the process with an illegal instruction here. "
            "Running on the NumPy reference backend, which is correct but slower. Rebuild on "
            "this machine with `make build` (or `pip install -e .`), or build with "
            "EDU_SEG_NO_NATIVE=1 for a copy that runs on other CPUs.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
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


#: How to get CuPy: its wheels on PyPI are built per CUDA major version.
CUPY_INSTALL = ("`pip install cupy-cuda12x` (for a CUDA 12 driver; cupy-cuda11x or cupy-cuda13x "
                "for CUDA 11 or 13; `nvidia-smi` prints the driver's CUDA version)")


def _cupy_problem():
    """None if the CuPy backend can run here, else a sentence saying what is missing and the fix."""
    try:
        import cupy
    except ImportError:
        return f"CuPy is not installed; install it with {CUPY_INSTALL}"
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
        without CuPy or a GPU; the message says what to install.

    Notes
    -----
    The backend chooses the kernels for NumPy arrays. Arrays on the GPU (CuPy) always run the
    CUDA twin, so ``"cupy"`` is the backend for code that moved its data with
    ``Tensor.to("cuda")`` / ``Module.to("cuda")``; with ``"cupy"`` selected, an op on NumPy
    arrays raises an error that says to move them.
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
    _limit_blas()


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
        _limit_blas()


def is_cupy_array(a):
    """True if ``a`` is a CuPy array (data on the GPU); checked without importing CuPy."""
    return type(a).__module__.split(".")[0] == "cupy"


def is_array(a):
    """True for a NumPy or a CuPy array (the two kinds of data a Tensor can hold)."""
    return isinstance(a, np.ndarray) or is_cupy_array(a)


def device_of(*arrays):
    """``"cuda"`` if the arrays live on the GPU, ``"cpu"`` if on the host (None entries ignored).

    Raises
    ------
    ValueError
        If some arrays are CuPy arrays and others NumPy arrays: an op cannot mix devices.
    """
    devices = {"cuda" if is_cupy_array(a) else "cpu" for a in arrays if a is not None}
    if len(devices) > 1:
        shapes = ", ".join(f"{'cuda' if is_cupy_array(a) else 'cpu'} {tuple(a.shape)}"
                           for a in arrays if a is not None)
        raise ValueError(f"inputs live on different devices ({shapes}); move them to one "
                         f"device first, e.g. with Tensor.to('cuda') or Module.to('cuda')")
    return devices.pop() if devices else "cpu"


def kernels(module, *arrays):
    """The kernel module ``module`` (e.g. ``"conv"``) that should run on ``arrays``.

    CuPy arrays select the CUDA twin (:mod:`edu_seg.cuda`) whatever :func:`get_backend` says;
    NumPy arrays (or no arrays) select the current backend. If the compiled core was built
    before this module existed, the NumPy reference stands in (with one warning), so a stale
    build is slow, never broken.

    Raises
    ------
    ValueError
        If ``arrays`` mix devices, or the backend is ``"cupy"`` and they are NumPy arrays.
    """
    device = device_of(*arrays)
    backend = "cupy" if device == "cuda" else _state["backend"]
    if _state["blas_limiter"] is None:    # the first kernel of the process: the BLAS rule
        _limit_blas()
    if backend == "cupy" and arrays and device == "cpu":
        raise ValueError(f"{module}: the 'cupy' backend runs on GPU arrays, but the inputs are "
                         f"NumPy arrays on the host; move them with Tensor.to('cuda') (and the "
                         f"model with Module.to('cuda')), or set_backend('cython')")
    try:
        return importlib.import_module(f"{_PACKAGE_OF[backend]}.{module}")
    except ImportError:
        if backend != "cython":
            raise
        if module not in _warned_missing:
            _warned_missing.add(module)
            warnings.warn(f"edu_seg: compiled kernel module {module!r} is missing (rebuild with "
                          "`make build`); using the NumPy reference for it", RuntimeWarning,
                          stacklevel=2)
        return importlib.import_module(f"edu_seg.reference.{module}")


def host_kernels(module):
    """The CPU kernels of ``module`` for host-side work on NumPy arrays that never goes to the
    GPU (data augmentation, region proposals, pictures): the current backend, or the compiled
    core (the reference where it is not built) while the backend is ``"cupy"``."""
    if _state["backend"] != "cupy":
        return kernels(module)
    package = _PACKAGE_OF["cython" if _threads is not None else "numpy"]
    return importlib.import_module(f"{package}.{module}")


def get_array_module(*arrays):
    """``cupy`` if any argument is a CuPy array, else ``numpy`` (write device-agnostic code)."""
    for a in arrays:
        if is_cupy_array(a):
            import cupy
            return cupy
    return np


#: Where a Tensor's data can live: the host (NumPy) or the GPU (CuPy).
DEVICES = ("cpu", "cuda")


def check_device(op, device):
    """``device`` if it is one of :data:`DEVICES`; for ``"cuda"``, CuPy and a GPU must be there.

    Raises
    ------
    ValueError
        An unknown device name.
    RuntimeError
        ``"cuda"`` without CuPy or without a GPU; the message says what to install.
    """
    if device not in DEVICES:
        raise ValueError(f"{op}: device must be one of {DEVICES}, got {device!r}")
    if device == "cuda":
        problem = _cupy_problem()
        if problem:
            raise RuntimeError(f"{op}: device 'cuda' needs CuPy and a GPU: {problem}")
    return device


def to_device(a, device):
    """``a`` on ``device`` (``"cpu"`` or ``"cuda"``): the same array if it is already there,
    else a copy (host -> GPU with ``cupy.asarray``, GPU -> host with ``.get()``)."""
    if device == "cpu":
        return to_host(a)
    if is_cupy_array(a):
        return a
    import cupy

    return cupy.asarray(a)


def contiguous(a, dtype=None):
    """``a`` as a C-contiguous array of ``dtype`` on its own device (a no-op when it already is):
    what every kernel expects."""
    return get_array_module(a).ascontiguousarray(a, dtype=dtype)


def to_host(a):
    """``a`` as a NumPy array: CuPy arrays are copied to the host, anything else is returned."""
    return a.get() if is_cupy_array(a) else a


# ----------------------------------------------------------------------------------- threads
#: Most threads :func:`set_num_threads` accepts per CPU (see :func:`max_num_threads`).
MAX_THREADS_PER_CPU = 4


def max_num_threads():
    """The largest thread count :func:`set_num_threads` accepts: 4 × ``os.cpu_count()``, >= 1."""
    return max(1, MAX_THREADS_PER_CPU * (os.cpu_count() or 1))


def set_num_threads(n):
    """Use ``n`` threads in the OpenMP kernels, and set the BLAS threads to match the backend.

    BLAS (NumPy's and SciPy's OpenBLAS) gets ``n`` threads under the ``"numpy"`` backend, whose
    convolutions are BLAS products, and ONE under ``"cython"`` (and ``"cupy"``), whose kernels
    do their own threading: a multi-threaded BLAS call (the matmul of a Linear layer, a mask
    IoU) leaves its worker threads spinning for a while after it returns, and on a 2-core
    machine they take the cores from the next OpenMP loop. Measured (AMD EPYC, 2 threads): a
    RoIAlign right after a NumPy matmul took 7.7 ms instead of 0.67, and a Mask R-CNN training
    step (whose box head is a matmul) 1.12 s instead of 0.99. The rule holds from the first
    kernel call on, whether or not this function was called; :func:`set_backend` re-applies
    it. ``n`` is also read at import from the environment variable ``EDU_SEG_NUM_THREADS``.

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
    if _threads is not None:
        _threads.set_num_threads(n)
    _state["num_threads"] = n
    _limit_blas()


def _limit_blas():
    """BLAS threads for the backend in use (see :func:`set_num_threads`)."""
    from threadpoolctl import threadpool_limits

    # The float64 conv kernels call the OpenBLAS that SciPy bundles, a different library from
    # NumPy's; threadpoolctl limits only the libraries loaded when it runs, so load it now.
    import scipy.linalg.cython_blas  # noqa: F401
    if _state["backend"] != "numpy":
        n = 1
    else:   # the threads asked for, else every CPU (also without the compiled core)
        n = _state["num_threads"] or os.cpu_count() or 1
    _state["blas_limiter"] = threadpool_limits(limits=n, user_api="blas")


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
            lines.append("  conv GEMM            : float32 our own, built for "
                         f"{_conv.GEMM_VECTORS}; float64 scipy OpenBLAS, 1 thread inside "
                         "OpenMP loops: "
                         + ("yes" if _conv.blas_thread_control_found()
                            else "no (loops run serially)"))
        except ImportError:
            pass
    lines.append(f"  CuPy / GPU           : {_gpu_description()}")
    print("\n".join(lines), file=file)


def _gpu_description():
    """One line for show_config: the GPU, CuPy's and CUDA's versions, or why there is none."""
    problem = _cupy_problem()
    if problem:
        return "no - " + problem
    import cupy

    runtime = cupy.cuda.runtime
    name = runtime.getDeviceProperties(0)["name"]
    name = name.decode() if isinstance(name, bytes) else name
    version = runtime.runtimeGetVersion()        # e.g. 12040 for CUDA 12.4
    return (f"{name} ({runtime.getDeviceCount()} visible), CuPy {cupy.__version__}, "
            f"CUDA runtime {version // 1000}.{version % 1000 // 10}")


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
