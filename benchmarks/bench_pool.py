"""Pooling and resampling: max_pool2d, PSPNet's adaptive pyramid, bilinear ×4 upsampling.

These ops do a handful of operations per byte, so they are memory-bound: the figure that
matters besides the time is the bandwidth (bytes the op must read and write, divided by the
time). Every case is timed on the NumPy reference and the Cython kernels at 1 and 2 threads,
and on PyTorch in the same process when it is installed.
"""
import numpy as np

import edu_seg
from common import fmt_mb, md_table, peak_extra_memory, set_threads, time_fn, torch_or_none
from edu_seg.ops.pool import adaptive_avg_pool2d, max_pool2d
from edu_seg.ops.resample import interpolate

TITLE = "Pooling and resampling (max_pool2d, adaptive_avg_pool2d pyramid, bilinear x4)"

PSP_BINS = (1, 2, 3, 6)


def _cases():
    """(name, input shape, edu_seg fn, torch fn (given torch.nn.functional), bytes fwd, bytes bwd).

    Each fn maps an input to a list of outputs. Bytes are the least traffic the op needs in
    float32: read the input, write the outputs (+ int64 indices for max pooling), and for the
    backward read dy (+ indices) and write dx.
    """
    f32, i64 = 4, 8
    n_max = 8 * 32 * 64 * 64
    n_psp_in = 8 * 128 * 32 * 32
    n_psp_out = 8 * 128 * sum(b * b for b in PSP_BINS)
    n_up_in, n_up_out = 8 * 32 * 16 * 16, 8 * 32 * 64 * 64
    return [
        ("max_pool2d 2x2, N8 C32 64x64", (8, 32, 64, 64),
         lambda x: [max_pool2d(x, 2)],
         lambda F, x: [F.max_pool2d(x, 2)],
         n_max * f32 + n_max // 4 * (f32 + i64),
         n_max // 4 * (f32 + i64) + n_max * f32),
        ("adaptive_avg_pool2d bins 1,2,3,6, N8 C128 32x32", (8, 128, 32, 32),
         lambda x: [adaptive_avg_pool2d(x, b) for b in PSP_BINS],
         lambda F, x: [F.adaptive_avg_pool2d(x, b) for b in PSP_BINS],
         len(PSP_BINS) * n_psp_in * f32 + n_psp_out * f32,
         n_psp_out * f32 + len(PSP_BINS) * n_psp_in * f32),
        ("bilinear x4 (align_corners=False), N8 C32 16x16 -> 64x64", (8, 32, 16, 16),
         lambda x: [interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)],
         lambda F, x: [F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)],
         (n_up_in + n_up_out) * f32,
         (n_up_out + n_up_in) * f32),
    ]


def _edu_runner(fn, x, dys, backward):
    if not backward:
        def run():
            with edu_seg.no_grad():
                fn(x)
        return run

    def run():
        xt = edu_seg.Tensor(x, requires_grad=True)
        for y, dy in zip(fn(xt), dys):
            y.backward(dy)
    return run


def _torch_runner(torch, fn, x, dys, backward):
    import torch.nn.functional as F

    xt = torch.from_numpy(x)
    dts = [torch.from_numpy(d) for d in dys]
    if not backward:
        def run():
            with torch.no_grad():
                fn(F, xt)
        return run

    def run():
        xg = xt.detach().requires_grad_(True)
        torch.autograd.backward(fn(F, xg), dts)
    return run


def run():
    torch = torch_or_none()
    rng = np.random.default_rng(0)
    rows = []
    for name, shape, fn, torch_fn, bytes_fwd, bytes_bwd in _cases():
        x = rng.standard_normal(shape, dtype=np.float32)
        with edu_seg.no_grad():
            dys = [rng.standard_normal(y.shape, dtype=np.float32) for y in fn(x)]
        for backward in (False, True):
            nbytes = bytes_fwd + (bytes_bwd if backward else 0)
            for threads in (1, 2):
                set_threads(threads)
                with edu_seg.use_backend("numpy"):
                    t_np = time_fn(_edu_runner(fn, x, dys, backward), repeat=5, min_time=0.1)
                with edu_seg.use_backend("cython"):
                    runner = _edu_runner(fn, x, dys, backward)
                    t_cy = time_fn(runner, repeat=15)
                    mem = peak_extra_memory(runner)
                t_th = time_fn(_torch_runner(torch, torch_fn, x, dys, backward), repeat=15) \
                    if torch is not None else None
                rows.append([
                    name, "fwd+bwd" if backward else "fwd", threads,
                    f"{t_np[0]:.2f} ({t_np[1]:.2f})",
                    f"{t_cy[0]:.3f} ({t_cy[1]:.3f})",
                    f"{t_th[0]:.3f} ({t_th[1]:.3f})" if t_th else "n/a",
                    f"{t_cy[0] / t_th[0]:.2f}" if t_th else "n/a",
                    f"{t_np[0] / t_cy[0]:.0f}",
                    f"{nbytes / (t_cy[0] * 1e-3) / 1e9:.1f}",
                    fmt_mb(mem),
                ])
    headers = ["case", "pass", "threads", "numpy ms", "cython ms", "torch ms",
               "cython / torch", "numpy / cython", "cython GB/s", "cython extra MB"]
    notes = ("Median (min) ms, float32. `cython / torch` < 0.5 is the target on 2 threads, "
             "`numpy / cython` >= 10. GB/s counts the least traffic the op needs (input, "
             "outputs, int64 indices; dy and dx for the backward), and 'extra MB' is the peak "
             "memory a call allocates (outputs included) as tracemalloc sees it.")
    return md_table(headers, rows) + "\n\n" + notes
