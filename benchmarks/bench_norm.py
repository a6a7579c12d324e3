"""Batch norm and the losses: forward+backward through the autograd, numpy vs cython vs PyTorch."""
import numpy as np

import common
from edu_seg import Tensor, nn, use_backend
from edu_seg.ops.loss import cross_entropy

TITLE = "BatchNorm2d and cross-entropy (forward + backward)"


def run():
    torch = common.torch_or_none()
    rng = np.random.default_rng(0)
    rows = []
    cases = [("BN N8 C16 64x64", (8, 16, 64, 64)), ("BN N8 C32 32x32", (8, 32, 32, 32)),
             ("BN N8 C64 16x16", (8, 64, 16, 16)), ("CE N8 C4 64x64", (8, 4, 64, 64))]
    for threads in (1, 2):
        common.set_threads(threads)
        for name, shape in cases:
            x = rng.standard_normal(shape).astype(np.float32)
            if name.startswith("BN"):
                dy = rng.standard_normal(shape).astype(np.float32)
                layer = nn.BatchNorm2d(shape[1])
                ours = lambda: layer(Tensor(x, requires_grad=True)).backward(dy)  # noqa: E731
            else:
                t = rng.integers(0, shape[1], shape[:1] + shape[2:])
                ours = lambda: cross_entropy(Tensor(x, requires_grad=True), t).backward()  # noqa
            times = {}
            for backend in ("numpy", "cython"):
                with use_backend(backend):
                    times[backend] = common.time_fn(ours)
            ref = None
            if torch is not None:
                tx = torch.from_numpy(x)
                if name.startswith("BN"):
                    tl, tdy = torch.nn.BatchNorm2d(shape[1]), torch.from_numpy(dy)
                    theirs = lambda: tl(tx.clone().requires_grad_()).backward(tdy)  # noqa
                else:
                    tt = torch.from_numpy(t)
                    theirs = lambda: torch.nn.functional.cross_entropy(  # noqa: E731
                        tx.clone().requires_grad_(), tt).backward()
                ref = common.time_fn(theirs)
            fmt = lambda mm: f"{mm[0]:.3f} / {mm[1]:.3f}"  # noqa: E731
            rows.append([name, threads, fmt(times["numpy"]), fmt(times["cython"]),
                         "n/a" if ref is None else fmt(ref),
                         "n/a" if ref is None else f"{times['cython'][0] / ref[0]:.2f}"])
    return common.md_table(["case", "threads", "numpy ms (median / min)",
                            "cython ms (median / min)", "PyTorch ms", "cython / PyTorch"], rows)


if __name__ == "__main__":
    print(run())
