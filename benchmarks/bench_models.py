"""Training step of every zoo model that has a PyTorch twin: ours against the same network in
PyTorch, in the same process, with the same thread count.

One step = forward in training mode, the model's loss (cross-entropy plus the weighted
auxiliary terms), backward, Adam update; batch 16 of 64x64 Shapes images, 4 classes: the
zoo's recipe. The twin (``benchmarks/twins/<model>.py``) holds our weights, so both libraries
run exactly the same network; the two are timed in turns so that load on the machine slows
both alike. Target: ours <= 1.5x PyTorch.
"""
import statistics
import time

import edu_seg  # noqa: F401  (first: sets OPENBLAS_CORETYPE before NumPy loads BLAS)
import numpy as np

import twins
from common import md_table, set_threads, torch_or_none
from edu_seg.autograd import Tensor
from edu_seg.data import Shapes
from edu_seg.optim import Adam

TITLE = "Training step of the zoo's models: ours vs the same network in PyTorch"

BATCH, SIZE, CLASSES, LR, THREADS, ROUNDS = 16, 64, 4, 3e-3, 2, 7


def _batch():
    data = Shapes(BATCH, size=SIZE, num_classes=CLASSES, seed=0)
    return {"image": np.stack([data[i]["image"] for i in range(BATCH)]),
            "mask": np.stack([data[i]["mask"] for i in range(BATCH)])}


def step_fns(torch, name, preset=None):
    """One training step of our model and one of its twin, as two closures."""
    ours, twin = twins.build_pair(torch, name, preset=preset)
    batch = _batch()
    ours_opt = Adam(ours.parameters(), lr=LR)
    twin_opt = torch.optim.Adam(twin.parameters(), lr=LR)
    x, target = torch.from_numpy(batch["image"]), torch.from_numpy(batch["mask"]).long()

    def ours_step():
        total, _ = ours.loss(ours.forward_train(batch), batch)
        ours_opt.zero_grad()
        total.backward()
        ours_opt.step()

    def twin_step():
        total = twins.torch_loss(torch, ours, twin(x), target)
        twin_opt.zero_grad()
        total.backward()
        twin_opt.step()

    return ours, ours_step, twin_step


def _interleaved(a, b, rounds=ROUNDS):
    for fn in (a, b, a, b):                           # warm-up: workspaces, thread pools
        fn()
    times = ([], [])
    for _ in range(rounds):
        for fn, out in zip((a, b), times):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def run():
    torch = torch_or_none()
    if torch is None:
        return "PyTorch is not installed: nothing to compare with."
    set_threads(THREADS)
    rows = []
    for name in twins.available():
        for preset in twins.checked_presets(name):
            model, ours_step, twin_step = step_fns(torch, name, preset)
            ours_ms, torch_ms = _interleaved(ours_step, twin_step)
            label = name if preset is None else f"{name}:{preset}"
            rows.append((label, f"{model.num_parameters():,}", f"{ours_ms:.1f}",
                         f"{torch_ms:.1f}", f"{ours_ms / torch_ms:.2f}x"))
            print(" | ".join(rows[-1]), flush=True)
    return (f"Batch {BATCH}x3x{SIZE}x{SIZE}, {CLASSES} classes, Adam, {THREADS} threads, "
            f"median of {ROUNDS} interleaved steps.\n\n"
            + md_table(["model", "params", "ours ms", "PyTorch ms", "ours / PyTorch"], rows))
