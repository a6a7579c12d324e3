"""Convolutions: forward and forward+backward of conv2d / conv_transpose2d on the issue's shapes.

For each shape: the NumPy reference and the Cython kernels on 1 and 2 threads, and PyTorch in
the same process when it is installed, with the ratio Cython / PyTorch on 2 threads (the target
is <= 1.5 for forward+backward) and NumPy / Cython (the target is >= 2). GFLOP/s counts
2·MACs of the forward, three times that for forward+backward (dx and dw each cost a forward).
"""
import time
from dataclasses import dataclass

import numpy as np

import edu_seg
from edu_seg import Tensor
from edu_seg.ops.conv import conv2d, conv2d_output_size, conv_transpose2d

from common import fmt_mb, md_table, peak_extra_memory, set_threads, time_fn, torch_or_none

TITLE = "Convolution (conv2d, dilated, depthwise, GCN 1-D, transposed), float32"


@dataclass
class Case:
    name: str
    N: int
    C: int
    C_out: int
    H: int
    layers: tuple        # per layer: (kernel (KH, KW), stride, padding, dilation, groups)
    transposed: bool = False


CASES = [
    Case("conv3x3 C32→32 64²", 8, 32, 32, 64, (((3, 3), 1, 1, 1, 1),)),
    Case("conv3x3 C64→64 32²", 8, 64, 64, 32, (((3, 3), 1, 1, 1, 1),)),
    Case("conv3x3 C3→16 128² (stem)", 8, 3, 16, 128, (((3, 3), 1, 1, 1, 1),)),
    Case("dilated 3x3 d=2 C64 32²", 8, 64, 64, 32, (((3, 3), 1, 2, 2, 1),)),
    Case("dilated 3x3 d=6 C64 32²", 8, 64, 64, 32, (((3, 3), 1, 6, 6, 1),)),
    # deep in a backbone: small maps, many channels (ResNet's last stages on 64x64 images,
    # dilated to output stride 8 in DeepLabV3+), where many taps read padding
    Case("conv3x3 C256→256 4²", 8, 256, 256, 4, (((3, 3), 1, 1, 1, 1),)),
    Case("dilated 3x3 d=4 C256 8²", 8, 256, 256, 8, (((3, 3), 1, 4, 4, 1),)),
    Case("depthwise 3x3 C64 32²", 8, 64, 64, 32, (((3, 3), 1, 1, 1, 64),)),
    Case("GCN 15x1 then 1x15 C64 32²", 8, 64, 64, 32,
         (((15, 1), 1, (7, 0), 1, 1), ((1, 15), 1, (0, 7), 1, 1))),
    Case("transposed k2s2 C64→32 16²→32²", 8, 64, 32, 16, (((2, 2), 2, 0, 1, 1),), True),
    Case("transposed k4s2p1 C64→32 16²→32²", 8, 64, 32, 16, (((4, 4), 2, 1, 1, 1),), True),
]


def _make(case, rng):
    """Inputs, one (w, b) per layer, dy, and the forward FLOPs."""
    x = rng.standard_normal((case.N, case.C, case.H, case.H), dtype=np.float32)
    params, flops, c, size = [], 0, case.C, (case.H, case.H)
    for k, s, p, d, g in case.layers:
        c_out = case.C_out
        shape = (c, c_out // g, *k) if case.transposed else (c_out, c // g, *k)
        w = rng.standard_normal(shape, dtype=np.float32) * np.float32(1 / np.sqrt(c * k[0] * k[1]))
        b = rng.standard_normal(c_out, dtype=np.float32)
        params.append((w, b))
        if case.transposed:  # every input pixel meets C_out/g * KH * KW weights
            flops += 2 * case.N * c * size[0] * size[1] * (c_out // g) * k[0] * k[1]
            size = tuple((i - 1) * s - 2 * p + d * (kk - 1) + 1 for i, kk in zip(size, k))
        else:
            size = conv2d_output_size(size, k, s, p, d)
            flops += 2 * case.N * c_out * size[0] * size[1] * (c // g) * k[0] * k[1]
        c = c_out
    dy = rng.standard_normal((case.N, c, *size), dtype=np.float32)
    return x, params, dy, flops


def _edu_fns(case, x, params, dy):
    op = conv_transpose2d if case.transposed else conv2d

    def run(inp, ps):
        y = inp
        for (k, s, p, d, g), (w, b) in zip(case.layers, ps):
            y = op(y, w, b, s, p, d, g) if not case.transposed else op(y, w, b, s, p, 0, g, d)
        return y

    def forward():
        with edu_seg.no_grad():
            return run(Tensor(x), params)

    def forward_backward():
        xt = Tensor(x, requires_grad=True)
        ps = [(Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)) for w, b in params]
        run(xt, ps).backward(dy)

    return forward, forward_backward


def _torch_fns(torch, case, x, params, dy):
    F = torch.nn.functional
    xt = torch.from_numpy(x).requires_grad_()
    ps = [(torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_())
          for w, b in params]
    dyt = torch.from_numpy(dy)

    def run():
        y = xt
        for (k, s, p, d, g), (w, b) in zip(case.layers, ps):
            y = F.conv_transpose2d(y, w, b, s, p, 0, g, d) if case.transposed else \
                F.conv2d(y, w, b, s, p, d, g)
        return y

    def forward():
        with torch.no_grad():
            return run()

    def forward_backward():
        for t in [xt] + [t for pair in ps for t in pair]:
            t.grad = None
        run().backward(dyt)

    return forward, forward_backward


def _fmt(t):
    return f"{t[0]:.2f} ({t[1]:.2f})"


def run():
    torch = torch_or_none()
    rng = np.random.default_rng(0)
    rows = []
    for case in CASES:
        x, params, dy, flops = _make(case, rng)
        edu = _edu_fns(case, x, params, dy)
        ref = _torch_fns(torch, case, x, params, dy) if torch is not None else None
        times = {}  # (pass, impl, threads) -> (median, min)
        for threads in (1, 2):
            set_threads(threads)
            for backend in ("cython", "numpy"):
                with edu_seg.use_backend(backend):
                    for i, name in enumerate(("fwd", "fwd+bwd")):
                        times[name, backend, threads] = time_fn(edu[i])
                # NumPy's threaded GEMM leaves its BLAS threads spinning for a while; let them
                # sleep before the next variant competes with them for the two cores.
                time.sleep(0.2)
            if ref is not None:
                for i, name in enumerate(("fwd", "fwd+bwd")):
                    times[name, "torch", threads] = time_fn(ref[i])
        set_threads(2)
        memory = {}
        for backend in ("cython", "numpy"):
            with edu_seg.use_backend(backend):
                memory[backend] = peak_extra_memory(edu[1])
        for name, factor in (("fwd", 1), ("fwd+bwd", 3)):
            cy2 = times[name, "cython", 2]
            torch2 = times.get((name, "torch", 2))
            rows.append([
                case.name if name == "fwd" else "", name,
                _fmt(times[name, "numpy", 1]), _fmt(times[name, "numpy", 2]),
                _fmt(times[name, "cython", 1]), _fmt(cy2),
                _fmt(times[name, "torch", 1]) if torch2 else "n/a",
                _fmt(torch2) if torch2 else "n/a",
                f"{cy2[1] / torch2[1]:.2f}" if torch2 else "n/a",
                f"{times[name, 'numpy', 2][1] / cy2[1]:.1f}",
                f"{factor * flops / cy2[1] / 1e6:.0f}",
                f"{factor * flops / torch2[1] / 1e6:.0f}" if torch2 else "n/a",
                f"{fmt_mb(memory['cython'])} / {fmt_mb(memory['numpy'])}" if name == "fwd+bwd" else "",
            ])
    headers = ["shape (N=8)", "pass", "numpy 1t", "numpy 2t", "cython 1t", "cython 2t",
               "torch 1t", "torch 2t", "cython/torch 2t", "numpy/cython 2t",
               "cython GFLOP/s 2t", "torch GFLOP/s 2t", "peak extra MB fwd+bwd cython / numpy"]
    notes = ("Times in ms, median (min); ratios and GFLOP/s use the minimum. "
             f"edu_seg backend default: {edu_seg.get_backend()}; "
             "PyTorch " + (torch.__version__ if torch else "not installed") + ". "
             "Peak memory is what tracemalloc sees (NumPy arrays, including the kernels' "
             "workspaces); PyTorch's allocator is not traced.")
    return md_table(headers, rows) + "\n\n" + notes
