"""RoIAlign / RoIPool forward and backward, and NMS on 2000 boxes (issue 5's targets).

Shape of the targets: features N2 C64 32×32 (float32), 128 boxes of 16–128 px on a 256-px
image, spatial_scale 1/8, output 7×7, sampling_ratio 2, aligned=True.

torchvision is the baseline. Where ``torch.ops.torchvision`` imports, it is timed in this
process (its CPU kernels are single-threaded); otherwise the figures of
:data:`PUBLISHED_TORCHVISION` are used and marked so.
"""
import numpy as np

import edu_seg
from common import md_table, peak_extra_memory, set_threads, time_fn, torch_or_none
from edu_seg import Tensor
from edu_seg.boxes import nms
from edu_seg.ops.roi import roi_align, roi_pool

TITLE = "RoIAlign, RoIPool and NMS"

#: torchvision's times (ms, medians, one thread) on this problem, used when torchvision cannot be
#: imported here: measured 2026-11-29 on the AMD EPYC machine, in a separate virtual
#: environment with torch 2.14.1 and torchvision 0.29.1 (PyPI's torchvision does not load
#: beside the PyTorch this project's environment installs), with the same inputs and timing.
PUBLISHED_TORCHVISION = {"roi_align fwd": 3.1, "roi_align fwd+bwd": 24.6,
                         "roi_pool fwd": 2.36, "roi_pool fwd+bwd": 4.08}


def _torchvision_ops():
    """``torch.ops.torchvision`` if torchvision's compiled ops load here, else None."""
    torch = torch_or_none()
    if torch is None:
        return None
    try:
        import torchvision  # noqa: F401  (registers torch.ops.torchvision)
        torch.ops.torchvision.roi_align  # noqa: B018  (raises if the ops did not register)
        return torch.ops.torchvision
    except Exception:  # ImportError, or a RuntimeError/OSError from a mismatched build
        return None


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 64, 32, 32)).astype(np.float32)
    size = rng.uniform(16, 128, (128, 2))
    corner = rng.uniform(0, 256 - size)
    boxes = np.concatenate([rng.integers(0, 2, (128, 1)), corner, corner + size], axis=1)
    dy = rng.standard_normal((128, 64, 7, 7)).astype(np.float32)
    return x, boxes.astype(np.float32), dy


def _fwd(op, x, boxes, kwargs):
    def run():
        with edu_seg.no_grad():
            op(x, boxes, **kwargs)
    return run


def _fwd_bwd(op, x, boxes, dy, kwargs):
    def run():
        xt = Tensor(x, requires_grad=True)
        op(xt, boxes, **kwargs).backward(dy)
    return run


def _ms(t):
    return f"{t[0]:.3f} ({t[1]:.3f})"


def _roi_rows(name, op, kwargs, x, boxes, dy, baseline):
    """Rows for one op: reference, Cython 1 and 2 threads; speed-ups vs reference/baseline."""
    rows = []
    timings = {}
    for backend, threads in (("numpy", 1), ("cython", 1), ("cython", 2)):
        set_threads(threads)
        edu_seg.set_backend(backend)
        slow = backend == "numpy"   # the reference takes ~1 s a call: time it fewer times
        opts = dict(repeat=3, warmup=1, min_time=0) if slow else {}
        f = time_fn(_fwd(op, x, boxes, kwargs), **opts)
        fb = time_fn(_fwd_bwd(op, x, boxes, dy, kwargs), **opts)
        mem = peak_extra_memory(_fwd_bwd(op, x, boxes, dy, kwargs))
        timings[(backend, threads)] = (f, fb)
        rows.append([name, f"{backend}, {threads} thr", _ms(f), _ms(fb), f"{mem / 2**20:.1f}"])
    edu_seg.set_backend("cython")
    ref_f, ref_fb = timings[("numpy", 1)]
    for row, key in zip(rows, timings):
        f, fb = timings[key]
        row.append(f"{ref_f[0] / f[0]:.0f}× / {ref_fb[0] / fb[0]:.0f}×")
        if baseline:
            row.append(f"{f[0] / baseline[0]:.2f} / {fb[0] / baseline[1]:.2f}")
        else:
            row.append("n/a")
    return rows


def run():
    previous_threads = edu_seg.get_num_threads()
    x, boxes, dy = _problem()
    tv = _torchvision_ops()
    torch = torch_or_none()
    align_kw = dict(output_size=7, spatial_scale=1 / 8, sampling_ratio=2, aligned=True)
    pool_kw = dict(output_size=7, spatial_scale=1 / 8)
    rows, notes = [], []

    if tv is not None:
        set_threads(1)
        tx, tb, tdy = torch.from_numpy(x), torch.from_numpy(boxes), torch.from_numpy(dy)

        def tv_fwd():
            with torch.no_grad():
                tv.roi_align(tx, tb, 1 / 8, 7, 7, 2, True)

        def tv_fwd_bwd():
            xg = tx.clone().requires_grad_(True)
            from torchvision.ops import roi_align as tv_roi_align
            tv_roi_align(xg, tb, 7, 1 / 8, 2, True).backward(tdy)

        def tv_pool_fwd():
            from torchvision.ops import roi_pool as tv_roi_pool
            with torch.no_grad():
                tv_roi_pool(tx, tb, 7, 1 / 8)

        def tv_pool_fwd_bwd():
            from torchvision.ops import roi_pool as tv_roi_pool
            xg = tx.clone().requires_grad_(True)
            tv_roi_pool(xg, tb, 7, 1 / 8).backward(tdy)

        base = (time_fn(tv_fwd)[0], time_fn(tv_fwd_bwd)[0])
        pool_base = (time_fn(tv_pool_fwd)[0], time_fn(tv_pool_fwd_bwd)[0])
        for op, (f, fb) in (("roi_align", base), ("roi_pool", pool_base)):
            rows.append([op, "torchvision, 1 thr", f"{f:.3f}", f"{fb:.3f}", "n/a", "",
                         "1.00 / 1.00"])
        notes.append("torchvision measured in this process.")
    else:
        base, pool_base = ((PUBLISHED_TORCHVISION[f"{op} fwd"],
                            PUBLISHED_TORCHVISION[f"{op} fwd+bwd"])
                           for op in ("roi_align", "roi_pool"))
        for op, (f, fb) in (("roi_align", base), ("roi_pool", pool_base)):
            rows.append([op, "torchvision (published)", f"{f:.2f}", f"{fb:.2f}", "n/a", "",
                         "1.00 / 1.00"])
        notes.append("torchvision's compiled ops do not load beside this PyTorch, so its rows "
                     "are figures measured in a separate environment (PUBLISHED_TORCHVISION in "
                     "bench_roi.py says where and when), not measurements of this run.")
    rows += _roi_rows("roi_align", roi_align, align_kw, x, boxes, dy, base)
    rows += _roi_rows("roi_pool", roi_pool, pool_kw, x, boxes, dy, pool_base)
    table = md_table(["op", "implementation", "fwd ms", "fwd+bwd ms", "fwd+bwd extra MB",
                      "vs reference (fwd / fwd+bwd)", "× torchvision time (fwd / fwd+bwd)"],
                     rows)

    # NMS on 2000 boxes of 10–200 px spread over an 800-px image
    rng = np.random.default_rng(1)
    corner = rng.uniform(0, 800, (2000, 2))
    nboxes = np.concatenate([corner, corner + rng.uniform(10, 200, (2000, 2))], axis=1)
    scores = rng.random(2000)
    nms_rows = []
    for thr in (0.3, 0.5, 0.7):
        kept = len(nms(nboxes, scores, thr))
        row = [f"{thr}", kept, _ms(time_fn(lambda: nms(nboxes, scores, thr)))]
        if tv is not None:
            tbx, tsc = torch.from_numpy(nboxes), torch.from_numpy(scores)
            row.append(_ms(time_fn(lambda: tv.nms(tbx, tsc, thr))))
        else:
            row.append("n/a")
        nms_rows.append(row)
    nms_table = md_table(["IoU threshold", "kept", "edu_seg nms ms", "torchvision nms ms"],
                         nms_rows)
    set_threads(previous_threads)
    return (f"{x.shape} float32 features, {len(boxes)} boxes, output 7×7, spatial_scale 1/8, "
            f"sampling_ratio 2, aligned=True (RoIPool: same boxes). {' '.join(notes)} Targets: "
            f"Cython on 2 threads ≤ 0.5× torchvision's time forward and ≤ 0.25× forward+"
            f"backward; ≥ 20× faster than the NumPy reference.\n\n{table}\n\n"
            f"NMS on 2000 boxes (NumPy, greedy by score):\n\n{nms_table}\n")
