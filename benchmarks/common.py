"""Shared tools of the benchmarks: timing, peak memory, the machine, Markdown tables.

Timing rules: these are noisy 2-vCPU VMs, so every figure is the median AND the
minimum of several runs after a warm-up, variants are interleaved in one process, and the
thread count is set explicitly for both edu_seg and PyTorch.
"""
import os
import platform
import statistics
import time
import tracemalloc

import edu_seg  # noqa: F401  (first: sets OPENBLAS_CORETYPE before NumPy loads BLAS)
import numpy as np


def time_fn(fn, repeat=7, warmup=2, min_time=0.2):
    """Median and minimum wall time of ``fn()`` in milliseconds.

    Each of ``repeat`` samples runs ``fn`` enough times to last about ``min_time / repeat``
    seconds (at least once), so fast ops are not dominated by timer resolution.
    """
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-6)
    inner = max(1, int(min_time / repeat / once))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner * 1e3)
    return statistics.median(samples), min(samples)


def peak_extra_memory(fn):
    """Peak bytes allocated by ``fn()`` above what was live before it (NumPy arrays included).

    tracemalloc sees every NumPy allocation, including those made inside compiled kernels
    through NumPy; it does not see PyTorch's allocator (reported as None there).
    """
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


def fmt_mb(nbytes):
    return "n/a" if nbytes is None else f"{nbytes / 2**20:.1f}"


def torch_or_none():
    """PyTorch if installed (an optional oracle and baseline), else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def set_threads(n):
    """Use ``n`` threads in edu_seg (OpenMP; BLAS as its backend wants it) and in PyTorch."""
    edu_seg.set_num_threads(n)
    torch = torch_or_none()
    if torch is not None:
        torch.set_num_threads(n)


def machine_description():
    """One paragraph on where the benchmark ran: CPU, cores, BLAS, library versions."""
    from threadpoolctl import threadpool_info

    from edu_seg.bench.recipe import cpu_name

    cpu = cpu_name()                          # "AMD EPYC (AVX2)": model name and vectors

    blas = ", ".join(f"{i['internal_api']} {i['version']} ({i.get('architecture')})"
                     for i in threadpool_info() if i.get("user_api") == "blas")
    torch = torch_or_none()
    try:
        from edu_seg._kernels.conv import GEMM_VECTORS
        cpu += f"; conv GEMM built for {GEMM_VECTORS}"
    except ImportError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
            f"NumPy {np.__version__}, BLAS: {blas or 'not loaded'}, "
            f"PyTorch: {torch.__version__ if torch else 'not installed'}, "
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}")


def md_table(headers, rows):
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
