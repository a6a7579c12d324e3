"""One training step of the reference U-Net: forward, cross-entropy, backward, SGD update.

The reference model (issue 6): U-Net with 3 levels (resolutions 64, 32, 16 with 16, 32, 64
channels, i.e. ``depth=2`` poolings), conv-BN-ReLU x2 per level, 2x2 max-pool, 2x2 transposed
conv up, concatenated skips, 1x1 head to 4 classes; batch 8x3x64x64. The same model is built
in PyTorch when it is installed and timed in the same process with the same thread count.

The per-op profile wraps every ``Function.forward``/``backward`` with a timer for a few steps
(inside this benchmark only), so it shows where a step's milliseconds go; "Python and
autograd overhead" is the rest of the step.
"""
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import edu_seg  # first: sets OPENBLAS_CORETYPE before NumPy loads BLAS
import numpy as np

from common import fmt_mb, md_table, peak_extra_memory, set_threads, torch_or_none
from edu_seg import models, nn
from edu_seg.autograd import Function, Tensor
from edu_seg.backend import to_device
from edu_seg.ops.loss import cross_entropy
from edu_seg.optim import SGD

TITLE = "Training step: reference U-Net (forward + loss + backward + SGD)"

N, C_IN, H, W, CLASSES = 8, 3, 64, 64, 4
CONFIG = {"depth": 2, "base_width": 16}           # 3 levels: 16, 32, 64 channels
LR, MOMENTUM = 0.01, 0.9


def _batch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C_IN, H, W)).astype(np.float32)
    target = rng.integers(0, CLASSES, (N, H, W))
    return x, target


def edu_step_fn(device="cpu"):
    """A closure running one training step of our U-Net on a fixed batch (on ``device``)."""
    nn.init.manual_seed(0)
    model = models.create("unet", num_classes=CLASSES, **CONFIG).to(device)
    opt = SGD(list(model.parameters()), lr=LR, momentum=MOMENTUM)
    x, target = _batch()
    x, target = Tensor(x).to(device), to_device(target, device)

    def step():
        loss = cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return model, opt, step


def torch_step_fn(torch, device="cpu"):
    """The identical model in PyTorch (same module tree, so the same state-dict keys)."""
    tnn = torch.nn

    class ConvBNReLU(tnn.Module):
        def __init__(self, i, o):
            super().__init__()
            self.conv = tnn.Conv2d(i, o, 3, padding=1, bias=False)
            self.bn = tnn.BatchNorm2d(o)
            self.relu = tnn.ReLU()

        def forward(self, x):
            return self.relu(self.bn(self.conv(x)))

    class UNet(tnn.Module):
        def __init__(self, depth, width):
            super().__init__()
            ws = [width * 2 ** i for i in range(depth + 1)]

            def double(i, o):
                return tnn.Sequential(ConvBNReLU(i, o), ConvBNReLU(o, o))

            self.encoder = tnn.ModuleList([double(C_IN if i == 0 else ws[i - 1], ws[i])
                                           for i in range(depth)])
            self.pool = tnn.MaxPool2d(2)
            self.bottleneck = double(ws[depth - 1], ws[depth])
            self.up = tnn.ModuleList([tnn.ConvTranspose2d(ws[i + 1], ws[i], 2, stride=2)
                                      for i in reversed(range(depth))])
            self.decoder = tnn.ModuleList([double(2 * ws[i], ws[i])
                                           for i in reversed(range(depth))])
            self.head = tnn.Conv2d(ws[0], CLASSES, 1)

        def forward(self, x):
            skips = []
            for block in self.encoder:
                x = block(x)
                skips.append(x)
                x = self.pool(x)
            x = self.bottleneck(x)
            for up, block, skip in zip(self.up, self.decoder, reversed(skips)):
                x = block(torch.cat([skip, up(x)], 1))
            return self.head(x)

    model = UNet(CONFIG["depth"], CONFIG["base_width"]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    x, target = _batch()
    x, target = torch.from_numpy(x).to(device), torch.from_numpy(target).to(device)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


# ------------------------------------------------------------------------------- the profile
def _all_functions(cls=Function):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_functions(sub)


def profile_step(step, opt, steps=7):
    """Milliseconds spent in each Function's forward and backward during one step, and elsewhere.

    Every ``forward``/``backward`` of every Function subclass (and the optimiser's ``step``) is
    wrapped with a timer for ``steps`` steps; the breakdown of the fastest step is returned, so
    that a step disturbed by another process on this shared machine does not distort it.
    """
    timings = []                                   # one {(name, phase): [seconds, calls]} per step
    patched = []

    def timed(fn, key):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                entry = timings[-1].setdefault(key, [0.0, 0])
                entry[0] += time.perf_counter() - t0
                entry[1] += 1
        return wrapper

    for cls in set(_all_functions()):
        for phase in ("forward", "backward"):
            if phase in cls.__dict__:
                original = cls.__dict__[phase]
                patched.append((cls, phase, original))
                setattr(cls, phase, staticmethod(timed(original.__func__, (cls.__name__, phase))))
    opt.step = timed(opt.step, ("optimizer", f"{type(opt).__name__} step"))
    walls = []
    try:
        for i in range(steps + 1):                 # the first step is a warm-up
            timings.append({})
            t0 = time.perf_counter()
            step()
            walls.append(time.perf_counter() - t0)
    finally:
        for cls, phase, original in patched:
            setattr(cls, phase, original)
        del opt.step                               # back to the class's method
    best = min(range(1, steps + 1), key=lambda i: walls[i])
    wall, ops = walls[best], timings[best]
    rows = [(f"{name} {phase}", calls, f"{t * 1e3:.2f}", f"{t / wall:.0%}")
            for (name, phase), (t, calls) in sorted(ops.items(), key=lambda kv: -kv[1][0])]
    rest = wall - sum(t for t, _ in ops.values())
    rows.append(("Python and autograd overhead (rest)", "", f"{rest * 1e3:.2f}",
                 f"{rest / wall:.0%}"))
    rows.append(("**total step**", "", f"{wall * 1e3:.2f}", "100%"))
    return rows


@contextlib.contextmanager
def im2col_only():
    """The compiled conv kernels without their Winograd and band-by-band paths (the step as it
    ran before they existed, but for the GEMM's faster packing)."""
    from edu_seg._kernels import conv as cy
    saved = cy.WINOGRAD_MIN_CHANNELS, cy.BANDED_MAX_WORK
    cy.WINOGRAD_MIN_CHANNELS, cy.BANDED_MAX_WORK = 2**31, 0.0
    cy._banded_rectangles_cached.cache_clear()
    try:
        yield
    finally:
        cy.WINOGRAD_MIN_CHANNELS, cy.BANDED_MAX_WORK = saved
        cy._banded_rectangles_cached.cache_clear()


# -------------------------------------------------------------------------------------- run
def _on_backend(backend, step):
    def run_step():
        with edu_seg.use_backend(backend):
            step()
    return run_step


def _interleaved(fns, rounds):
    """Median and min ms of each ``fns[name]()``, timed in turns within each round.

    Alternating the variants means a period of load on this shared machine
    slows all of them alike instead of whichever happened to be running.
    """
    for fn in fns.values():                        # warm-up: buffers, caches, thread pools
        fn()
        fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return {name: (statistics.median(s), min(s)) for name, s in samples.items()}


# ------------------------------------------------------------------ resident memory (RSS)
def _rss_mb(field="VmRSS"):
    """This process's resident set size now (VmRSS), or its peak (VmHWM), in MiB (Linux)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def rss_probe(name, threads):
    """In a fresh process: resident MiB once the framework is imported, and the peak while a
    model is built and trained for 4 steps.

    tracemalloc sees only NumPy's arrays, and nothing of PyTorch's allocator; the operating
    system's count of resident pages sees both the same way. The difference between the two
    figures is what training this model costs in memory (weights, optimizer state,
    activations, gradients, workspaces), without the libraries' own code and data.
    (getrusage's maximum would not do: Linux carries it over from the parent process.)
    """
    set_threads(threads)
    if name == "pytorch":
        import torch
        torch.set_num_threads(threads)
        torch.manual_seed(0)
    base = _rss_mb()
    with open("/proc/self/clear_refs", "w") as f:   # restart the peak (VmHWM) from here
        f.write("5")
    step = torch_step_fn(torch) if name == "pytorch" else _on_backend(name, edu_step_fn()[2])
    for _ in range(4):
        step()
    return {"base": base, "peak": _rss_mb("VmHWM")}


def _rss_rows(names, threads):
    """rss_probe for each name, each in its own Python process."""
    rows = []
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--rss", name, str(threads)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        rows.append((name, threads, f"{r['base']:.0f}", f"{r['peak']:.0f}",
                     f"{r['peak'] - r['base']:.0f}"))
    return rows


def run():
    torch = torch_or_none()
    model, _, _ = edu_step_fn()
    flops_fwd = models.summary(model, (N, C_IN, H, W)).total_flops
    # backward costs about twice the forward (grad w.r.t. input and w.r.t. weights)
    flops_step = 3 * flops_fwd
    peaks = {}
    for backend in ("cython", "numpy"):
        with edu_seg.use_backend(backend):
            peaks[backend] = peak_extra_memory(edu_step_fn()[2])
    rows = []
    for threads in (1, 2):
        set_threads(threads)
        # cython and PyTorch in turns; the NumPy reference in rounds of its own afterwards: the
        # BLAS it calls keeps its threads spinning for a while after each call, which slowed
        # whatever ran next (PyTorch's 2-thread step: 117 ms right after it, 50 ms alone).
        fns = {"cython": _on_backend("cython", edu_step_fn()[2])}
        if torch is not None:
            torch.manual_seed(0)
            fns["pytorch"] = torch_step_fn(torch)
        times = _interleaved(fns, rounds=9)
        times.update(_interleaved({"numpy": _on_backend("numpy", edu_step_fn()[2])}, rounds=5))
        for name in ("cython", "numpy", "pytorch"):
            if name not in times:
                continue
            med, mn = times[name]
            ratio = f"{med / times['pytorch'][0]:.2f}x" if "pytorch" in times else "n/a"
            rows.append((name, threads, f"{med:.1f}", f"{mn:.1f}", ratio,
                         f"{flops_step / mn / 1e6:.0f}", fmt_mb(peaks.get(name))))

    set_threads(2)
    with edu_seg.use_backend("cython"):
        model, opt, step = edu_step_fn()
        profile = profile_step(step, opt)
        with im2col_only():
            profile_im2col = profile_step(step, opt)

    rss = _rss_rows(["cython", "numpy"] + (["pytorch"] if torch is not None else []), 2) \
        if os.path.exists("/proc/self/clear_refs") else []
    n_params = sum(p.size for p in model.parameters())
    text = [
        f"Reference U-Net {CONFIG} ({n_params:,} parameters), batch {N}x{C_IN}x{H}x{W}, "
        f"{CLASSES} classes, SGD(lr={LR}, momentum={MOMENTUM}). One forward pass is "
        f"{flops_fwd / 1e9:.2f} GFLOP; a step is counted as 3x that (GFLOP/s column, from "
        f"the minimum time). cython and PyTorch are timed in turns, 9 rounds; the NumPy reference "
        f"alone, 5 rounds. Peak memory: what "
        f"one step allocates above what was live before it (tracemalloc; not available for "
        f"PyTorch's allocator). Target: cython <= 0.8x PyTorch at 1 and at 2 threads.",
        "",
        md_table(("backend", "threads", "median ms", "min ms", "vs PyTorch (median)",
                  "GFLOP/s (min)", "peak extra MB"), rows),
        "",
        "Where a cython step's time goes (2 threads; the fastest of 7 profiled steps; the "
        "timers add a little overhead):",
        "",
        md_table(("op", "calls/step", "ms/step", "share"), profile),
        "",
        "The same with the convolutions on im2col alone (Winograd and the band-by-band path "
        "switched off; `bench_train.im2col_only`), i.e. the step before those paths existed:",
        "",
        md_table(("op", "calls/step", "ms/step", "share"), profile_im2col),
        "",
        "Resident memory of a training process (RSS from the operating system, which sees "
        "PyTorch's allocator too; 2 threads; each in a fresh process): once the framework is "
        "imported, and the peak while the model is built and trained for 4 steps; the "
        "difference is what training costs. Target: cython's <= PyTorch's.",
        "",
        md_table(("backend", "threads", "RSS after imports MiB", "peak RSS MiB",
                  "training's peak above it MiB"), rss) if rss else "Not measured: no /proc.",
    ]
    return "\n".join(text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rss"]:
        print(json.dumps(rss_probe(sys.argv[2], int(sys.argv[3]))))
    else:
        print(run())
