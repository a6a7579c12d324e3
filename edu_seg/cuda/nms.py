"""Non-maximum suppression on the GPU (CUDA twin of :func:`edu_seg.boxes.nms` and
:func:`edu_seg.boxes.batched_nms`).

Same rule and results as the NumPy functions, on CuPy arrays; :mod:`edu_seg.boxes` sends CuPy
boxes here after checking them. The design is torchvision's CUDA NMS:

1. **sort** the scores on the device, best first, ties by index (a stable sort);
2. **one kernel** (``suppression_mask`` in ``nms.cu``) computes every overlap test at once,
   packed in bits: row ``r`` of the ``(K, ceil(K/64))`` mask says which worse-ranked boxes
   rank ``r`` suppresses if it is kept;
3. **copy the mask to the host** and run the greedy walk there, ORing the rows of the kept
   boxes. This is the one host round trip, and torchvision makes it too: the walk is
   sequential (whether box ``r`` survives depends on which earlier boxes were kept), so on the
   GPU it would run on one thread, while on the host it is a loop over ``K`` rows of
   ``K/64`` words. The mask is ``K²/8`` bytes (500 KB for 2000 boxes).

The kept ranks are mapped back to box indices on the device, so the result is a CuPy int64
array, as :func:`edu_seg.boxes.nms` returns a NumPy one.
"""
import cupy
import numpy as np

from ._raw import launch

__all__ = ["nms", "batched_nms"]

#: Columns per mask word: one bit each in an ``unsigned long long``.
WORD_BITS = 64


def _greedy_walk(mask):
    """Kept ranks of the greedy walk over the host mask (K, ceil(K/64)) of uint64 words.

    NumPy twin: the ``for i in range(len(tile))`` loop of :func:`edu_seg.boxes.nms`, with the
    booleans of a row packed 64 to a word.
    """
    removed = np.zeros(mask.shape[1], dtype=np.uint64)    # bit s: rank s is suppressed
    keep = []
    for r in range(mask.shape[0]):                         # best first
        word, bit = divmod(r, WORD_BITS)
        if not (int(removed[word]) >> bit) & 1:
            keep.append(r)
            removed |= mask[r]                             # what r suppresses, if kept
    return np.array(keep, dtype=np.int64)


def _suppress(boxes, scores, group, iou_threshold):
    """Greedy NMS where only boxes of the same ``group`` id (int64, on the device) interact."""
    boxes = cupy.ascontiguousarray(boxes, dtype=cupy.float64)
    # Best first, ties by index: a stable ascending sort of -score. 0.0 - s rather than -s
    # makes the keys of scores +0.0 and -0.0 both +0.0, so they tie (as in NumPy's sort)
    # even in a radix sort that orders keys by their bits.
    key = 0.0 - cupy.asarray(scores, dtype=cupy.float64)
    order = cupy.argsort(key, kind="stable").astype(cupy.int64)
    K = len(order)
    col_blocks = (K + WORD_BITS - 1) // WORD_BITS
    mask = cupy.empty((K, col_blocks), dtype=cupy.uint64)
    launch("nms", "suppression_mask", np.float64, mask.size, boxes, order, group, mask, K,
           col_blocks, float(iou_threshold))
    kept_ranks = _greedy_walk(mask.get())                  # the one trip to the host
    return order[cupy.asarray(kept_ranks)]


def nms(boxes, scores, iou_threshold):
    """Greedy NMS: boxes (K, 4), scores (K,) -> kept indices (int64), best first.

    See :func:`edu_seg.boxes.nms` (which checks the inputs before calling this).
    """
    group = cupy.zeros(len(boxes), dtype=cupy.int64)       # one group: every pair interacts
    return _suppress(boxes, scores, group, iou_threshold)


def batched_nms(boxes, scores, classes, iou_threshold):
    """NMS within each class: boxes (K, 4), scores (K,), classes (K,) -> kept indices.

    See :func:`edu_seg.boxes.batched_nms`. Instead of one NMS per class and a merge, one
    mask is computed over all the boxes, with a bit set only for boxes of the same class:
    the walk over the global best-first order then runs every class's NMS at once, and its
    output is already merged by decreasing score, ties by index. (torchvision's "offset
    trick" gets the same effect by moving each class's boxes far apart, which changes their
    coordinates' rounding; comparing class ids is exact.)
    """
    _, group = cupy.unique(cupy.asarray(classes), return_inverse=True)   # class -> 0, 1, ...
    group = cupy.ascontiguousarray(group.reshape(-1), dtype=cupy.int64)
    return _suppress(boxes, scores, group, iou_threshold)
