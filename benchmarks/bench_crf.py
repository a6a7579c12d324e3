"""The fully connected CRF (``edu_seg.crf.dense_crf``): one mean-field iteration.

Exact messages sum over all N² pixel pairs: at 64×64 that is 16.8 million pairs, each a colour
exp, two table lookups and L multiply-adds; timed on the NumPy reference (blocks of the N×N
kernel matrix and a matrix product) and the Cython kernel. The approximate method (bilateral
grid + separable Gaussian, O(N)) is timed at 256×256, where exact would need 4.3 billion pairs.
Each timing is a whole ``dense_crf(..., iterations=1)`` call: validation, the unary softmax,
the grid's set-up and one iteration.
"""
import numpy as np

import edu_seg
from common import md_table, set_threads, time_fn
from edu_seg.crf import dense_crf

TITLE = "Dense CRF (one mean-field iteration: exact 64x64, bilateral grid 256x256)"


def _case(rng, size, classes=4):
    """A float32 image with a few flat regions plus noise, and random probabilities."""
    image = np.zeros((3, size, size), dtype=np.float32)
    for k in range(4):
        image[:, k * size // 4:, :] = rng.random((3, 1, 1)) * 255
    image[:, :, size // 2:] = 255 - image[:, :, size // 2:]
    image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.float32)
    probs = rng.random((classes, size, size)).astype(np.float32)
    return image, probs / probs.sum(axis=0)


def _fmt(t):
    return f"{t[0]:.1f} ({t[1]:.1f})"


def run():
    rng = np.random.default_rng(0)
    rows = []
    image, probs = _case(rng, 64)
    for threads in (1, 2):
        set_threads(threads)
        with edu_seg.use_backend("numpy"):
            t_np = time_fn(lambda: dense_crf(image, probs, iterations=1, method="exact"),
                           repeat=3, min_time=0.1)
        t_cy = time_fn(lambda: dense_crf(image, probs, iterations=1, method="exact"), repeat=9)
        rows.append(["exact, 64x64, 4 classes", threads, _fmt(t_np), _fmt(t_cy),
                     f"{t_np[0] / t_cy[0]:.0f}"])
    image, probs = _case(rng, 256)
    for threads in (1, 2):
        set_threads(threads)
        t_ap = time_fn(lambda: dense_crf(image, probs, iterations=1, method="approximate"),
                       repeat=9)
        rows.append(["approximate, 256x256, 4 classes", threads, "n/a", _fmt(t_ap), "n/a"])
    headers = ["case", "threads", "numpy ms", "cython ms", "numpy / cython"]
    notes = ("Median (min) ms, float32, one `dense_crf(..., iterations=1)` call. Targets on 2 "
             "threads: exact 64x64 <= 50 ms, approximate 256x256 <= 200 ms. The approximate "
             "method is NumPy + SciPy (bincount splat, correlate1d blurs, gather slice) on "
             "either backend, so its 'cython ms' column is the same code; its second thread "
             "helps only inside NumPy/BLAS, i.e. hardly at all.")
    return md_table(headers, rows) + "\n\n" + notes
