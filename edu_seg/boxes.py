"""The box toolkit of region-based segmentation, in NumPy: IoU, NMS, box coding, anchors, masks.

Everything a Mask R-CNN-style pipeline does with boxes besides RoIAlign itself
(:mod:`edu_seg.ops.roi`): generate anchors, encode ground truth against them, decode
predictions, suppress duplicates, route each box to a pyramid level, and paste a predicted
``M × M`` mask back into the image.

Box conventions
---------------
- A box is ``(x1, y1, x2, y2)`` in continuous pixel coordinates: pixel ``(i, j)`` (row, column)
  covers ``[j, j+1) × [i, i+1)``, so its centre is ``(j + ½, i + ½)``, and a box's width is
  ``x2 − x1``. Boxes arrays are ``(K, 4)``; the functions require ``x2 >= x1`` and
  ``y2 >= y1`` (a ValueError names the first box that is not).
- Results are float64 unless stated; index arrays are int64.
"""
import math

import numpy as np

from .backend import host_kernels, is_cupy_array, kernels
# The IoU formula lives with the NMS kernels, which compare it with the threshold.
from .reference.nms import _iou

__all__ = ["box_area", "box_iou", "nms", "batched_nms", "encode_boxes", "decode_boxes",
           "make_anchors", "clip_boxes", "masks_to_boxes", "paste_masks", "fpn_level"]

#: torchvision's ``BoxCoder`` default limit for the log-size deltas: exp(4.135) ≈ 62.5, so a
#: decoded box is at most 1000/16 times its reference box.
DEFAULT_CLAMP = math.log(1000.0 / 16)


def _boxes(op, boxes, name="boxes", ordered=True):
    """boxes as a float64 (K, 4) array; optionally require x2 >= x1 and y2 >= y1."""
    arr = np.asarray(boxes)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{op}: {name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{op}: {name} must have shape (K, 4) = (x1, y1, x2, y2) rows, got "
                         f"shape {arr.shape}")
    if not np.isfinite(arr).all():
        k = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise ValueError(f"{op}: {name}[{k}] = {arr[k].tolist()} is not finite")
    if ordered:
        bad = (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{op}: {name}[{k}] = {arr[k].tolist()} has x2 < x1 or y2 < y1; "
                             f"boxes must be (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1")
    return arr


def _scores(op, scores, K, name="scores"):
    arr = np.asarray(scores)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{op}: {name} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != (K,):
        raise ValueError(f"{op}: {name} must have shape ({K},), one per box, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{op}: {name} must be finite (NaN has no place in a ranking)")
    return arr.astype(np.float64)


def _size_pair(op, name, value):
    pair = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                 for v in pair):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) <= 0:
        raise ValueError(f"{op}: {name} must be positive, got {value!r}")
    return int(pair[0]), int(pair[1])


# ---------------------------------------------------------------------------------- overlap
def box_area(boxes):
    """Area of each box, ``(x2 − x1)·(y2 − y1)``. boxes: (K, 4) -> (K,)."""
    b = _boxes("box_area", boxes)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def box_iou(a, b):
    """Intersection over union of every pair of boxes.

    Parameters
    ----------
    a : (M, 4) array
    b : (N, 4) array

    Returns
    -------
    (M, N) array
        ``iou[i, j] = |a_i ∩ b_j| / |a_i ∪ b_j|``, in [0, 1]; 0 where the union is empty
        (two zero-area boxes), so ``box_iou(a, a)`` has 1 on the diagonal for boxes of
        positive area.
    """
    a, b = _boxes("box_iou", a, "a"), _boxes("box_iou", b, "b")
    return _iou(a[:, None, :], b[None, :, :])


def nms(boxes, scores, iou_threshold):
    """Greedy non-maximum suppression: keep the best box, drop those overlapping it, repeat.

    Parameters
    ----------
    boxes : (K, 4) array
    scores : (K,) array
    iou_threshold : float
        A box is dropped if its IoU with an already kept box is strictly greater.

    Returns
    -------
    keep : (K',) int64 array
        Indices of the kept boxes, by decreasing score. Equal scores are ranked by index
        (a stable order), so the result never depends on how a sort breaks ties.

    Notes
    -----
    The definition is a loop: walk the boxes best first; keep a box unless a box kept
    before it overlaps it by more than the threshold. The loop runs in the kernel module
    ``nms`` of the current backend, after the checks here: the NumPy reference
    (:mod:`edu_seg.reference.nms`, the loop cut into tiles of vector operations), the compiled
    loop (``kernels/nms.pyx``), or, for CuPy boxes, the GPU (:mod:`edu_seg.cuda.nms`,
    torchvision's bitmask design, giving a CuPy int64 array; checked on a host copy).
    """
    if is_cupy_array(boxes):
        b = _boxes("nms", boxes.get())             # K×4 numbers: checked here, same messages
        _scores("nms", scores.get() if is_cupy_array(scores) else scores, len(b))
        return kernels("nms", boxes).nms(boxes, scores, iou_threshold)
    b = _boxes("nms", boxes)
    s = _scores("nms", scores, len(b))
    return host_kernels("nms").nms(b, s, float(iou_threshold))


def batched_nms(boxes, scores, classes, iou_threshold):
    """NMS within each class separately: boxes of different classes never suppress each other.

    Parameters
    ----------
    boxes : (K, 4) array
    scores : (K,) array
    classes : (K,) int array
        Class (or image, or any group) of each box.
    iou_threshold : float

    Returns
    -------
    keep : (K',) int64 array
        Kept indices over all classes, by decreasing score (ties by index).

    Notes
    -----
    The NumPy reference runs one :func:`nms` per class, then one merge. (torchvision also
    offers the "offset trick", shifting each class's boxes far apart and running one NMS; the
    loop is exact and as clear.) The compiled loop and the GPU make one walk over all the
    boxes in which a box only suppresses boxes of its own class: the same result.
    """
    on_gpu = is_cupy_array(boxes)
    b = _boxes("batched_nms", boxes.get() if on_gpu else boxes)
    s = _scores("batched_nms", scores.get() if is_cupy_array(scores) else scores, len(b))
    cls = np.asarray(classes.get() if is_cupy_array(classes) else classes)
    if cls.shape != (len(b),):
        raise ValueError(f"batched_nms: classes must have shape ({len(b)},), got {cls.shape}")
    if on_gpu:
        return kernels("nms", boxes).batched_nms(boxes, scores, classes, iou_threshold)
    _, group = np.unique(cls, return_inverse=True)             # class -> 0, 1, ... (int64)
    return host_kernels("nms").batched_nms(b, s, group.reshape(-1).astype(np.int64),
                                           float(iou_threshold))


# ------------------------------------------------------------------------------- box coding
def _centre_size(b):
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return b[:, 0] + 0.5 * w, b[:, 1] + 0.5 * h, w, h


def encode_boxes(boxes, reference, weights=(1.0, 1.0, 1.0, 1.0)):
    """Deltas that move each reference box (anchor or proposal) onto its target box.

    Parameters
    ----------
    boxes : (K, 4) array
        Target boxes (e.g. the ground truth matched to each anchor).
    reference : (K, 4) array
        Reference boxes; widths and heights must be > 0.
    weights : (wx, wy, ww, wh)
        Scale of each delta (Faster R-CNN's second stage uses (10, 10, 5, 5)).

    Returns
    -------
    deltas : (K, 4) array ``(dx, dy, dw, dh)``

    Notes
    -----
    torchvision's ``BoxCoder`` convention, with centres ``(cx, cy)`` and sizes ``(w, h)``::

        dx = wx·(cx − cx_ref)/w_ref,   dy = wy·(cy − cy_ref)/h_ref
        dw = ww·log(w / w_ref),        dh = wh·log(h / h_ref)

    Shifts are relative to the reference size and sizes are logarithmic, so a regression
    head predicts numbers of the same scale for small and large boxes.
    """
    b = _boxes("encode_boxes", boxes)
    r = _boxes("encode_boxes", reference, "reference")
    if b.shape != r.shape:
        raise ValueError(f"encode_boxes: boxes {b.shape} and reference {r.shape} must have "
                         f"the same shape (one reference per box)")
    if ((r[:, 2] <= r[:, 0]) | (r[:, 3] <= r[:, 1])).any():
        raise ValueError("encode_boxes: every reference box needs width and height > 0")
    if ((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any():
        raise ValueError("encode_boxes: every target box needs width and height > 0 (log size)")
    wx, wy, ww, wh = weights
    cx, cy, w, h = _centre_size(b)
    rcx, rcy, rw, rh = _centre_size(r)
    return np.stack([wx * (cx - rcx) / rw, wy * (cy - rcy) / rh,
                     ww * np.log(w / rw), wh * np.log(h / rh)], axis=1)


def decode_boxes(deltas, reference, weights=(1.0, 1.0, 1.0, 1.0), clamp=DEFAULT_CLAMP):
    """Apply deltas to reference boxes: the inverse of :func:`encode_boxes`.

    Parameters
    ----------
    deltas : (K, 4) array ``(dx, dy, dw, dh)``
    reference : (K, 4) array
    weights : (wx, wy, ww, wh)
    clamp : float
        ``dw/ww`` and ``dh/wh`` are clamped to at most this before ``exp``, so a wild
        prediction cannot overflow (default ``log(1000/16)``, as torchvision).

    Returns
    -------
    boxes : (K, 4) array

    Notes
    -----
    ``cx = cx_ref + (dx/wx)·w_ref``, ``w = w_ref·exp(min(dw/ww, clamp))`` (y, h likewise),
    then ``x1 = cx − w/2``, ``x2 = cx + w/2``.
    """
    d = np.asarray(deltas, dtype=np.float64)
    r = _boxes("decode_boxes", reference, "reference")
    if d.shape != r.shape:
        raise ValueError(f"decode_boxes: deltas {d.shape} and reference {r.shape} must have "
                         f"the same shape (K, 4)")
    wx, wy, ww, wh = weights
    rcx, rcy, rw, rh = _centre_size(r)
    cx = d[:, 0] / wx * rw + rcx
    cy = d[:, 1] / wy * rh + rcy
    w = np.exp(np.minimum(d[:, 2] / ww, clamp)) * rw
    h = np.exp(np.minimum(d[:, 3] / wh, clamp)) * rh
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1)


# ---------------------------------------------------------------------------------- anchors
def make_anchors(feature_size, stride, sizes, aspect_ratios):
    """Anchor boxes for one feature map: ``A = len(aspect_ratios)·len(sizes)`` per cell.

    Parameters
    ----------
    feature_size : int or (int, int)
        ``(FH, FW)`` of the feature map.
    stride : int or (int, int)
        Image pixels per feature cell, ``(sy, sx)``.
    sizes : sequence of float
        Anchor sizes: an anchor of size s has area s².
    aspect_ratios : sequence of float
        Height / width of the anchors.

    Returns
    -------
    anchors : (FH·FW·A, 4) array
        Ordered by cell row, cell column, then anchor ``a = r·len(sizes) + j`` (ratio r,
        size j), the order a conv head's ``A`` output channels use.

    Notes
    -----
    Cell ``(i, j)``'s anchors are centred at ``((j + ½)·sx, (i + ½)·sy)``: the image-space
    centre of the cell, the half-pixel model of ``roi_align(aligned=True)``. (torchvision's
    ``AnchorGenerator`` centres them at ``(j·sx, i·sy)`` and rounds the corners; ours are
    symmetric over the image and unrounded.) For ratio r and size s: ``w = s/√r``,
    ``h = s·√r``.

    Examples
    --------
    >>> make_anchors(1, 16, [32], [1.0])
    array([[-8., -8., 24., 24.]])
    """
    FH, FW = _size_pair("make_anchors", "feature_size", feature_size)
    sy, sx = _size_pair("make_anchors", "stride", stride)
    sizes = np.asarray(sizes, dtype=np.float64).ravel()
    ratios = np.asarray(aspect_ratios, dtype=np.float64).ravel()
    if sizes.size == 0 or ratios.size == 0 or (sizes <= 0).any() or (ratios <= 0).any():
        raise ValueError(f"make_anchors: sizes and aspect_ratios must be non-empty and > 0, "
                         f"got {sizes.tolist()} and {ratios.tolist()}")
    h = (sizes[None, :] * np.sqrt(ratios)[:, None]).ravel()      # (A,), ratio-major
    w = (sizes[None, :] / np.sqrt(ratios)[:, None]).ravel()
    base = np.stack([-w, -h, w, h], axis=1) / 2                   # (A, 4) around (0, 0)
    cy, cx = np.meshgrid((np.arange(FH) + 0.5) * sy, (np.arange(FW) + 0.5) * sx, indexing="ij")
    centres = np.stack([cx, cy, cx, cy], axis=-1).reshape(-1, 1, 4)   # (FH·FW, 1, 4)
    return (centres + base[None]).reshape(-1, 4)


def clip_boxes(boxes, image_size):
    """Clip boxes to the image: x into [0, W], y into [0, H]. image_size: (H, W)."""
    b = _boxes("clip_boxes", boxes, ordered=False)
    H, W = _size_pair("clip_boxes", "image_size", image_size)
    return np.stack([np.clip(b[:, 0], 0, W), np.clip(b[:, 1], 0, H),
                     np.clip(b[:, 2], 0, W), np.clip(b[:, 3], 0, H)], axis=1)


# ------------------------------------------------------------------------------------ masks
def masks_to_boxes(masks):
    """The tight box around each mask's non-zero pixels.

    Parameters
    ----------
    masks : (K, H, W) array (bool or numbers; non-zero is foreground)

    Returns
    -------
    boxes : (K, 4) float32 array
        ``(min col, min row, max col + 1, max row + 1)``: the pixel EDGES of the mask's extent
        (see the module conventions), so ``paste_masks`` of an all-ones mask into this box
        redraws the mask's bounding rectangle. (torchvision returns ``max col`` without the
        +1.)

    Raises
    ------
    ValueError
        If a mask is empty (it has no box), naming its index.
    """
    m = np.asarray(masks)
    if m.ndim != 3:
        raise ValueError(f"masks_to_boxes: masks must be (K, H, W), got shape {m.shape}")
    K, H, W = m.shape
    rows, cols = m.any(axis=2), m.any(axis=1)  # (K, H), (K, W): which rows/cols are touched
    empty = np.flatnonzero(~rows.any(axis=1))
    if empty.size:
        raise ValueError(f"masks_to_boxes: mask {empty[0]} is empty, so it has no bounding box")
    out = np.zeros((K, 4), dtype=np.float32)
    # argmax finds the first True; on the reversed axis it finds the last one.
    out[:, 0] = cols.argmax(axis=1)
    out[:, 1] = rows.argmax(axis=1)
    out[:, 2] = W - cols[:, ::-1].argmax(axis=1)
    out[:, 3] = H - rows[:, ::-1].argmax(axis=1)
    return out


def _sample_axis(centres, lo, hi, M):
    """Mask coordinates of image pixel centres inside [lo, hi): neighbours and lerp weight.

    The box's extent maps onto the mask's M pixels with the half-pixel model
    (``align_corners=False``); past the mask's outer pixel centres the border value is used.
    """
    u = (centres - lo) / (hi - lo) * M - 0.5
    u = np.clip(u, 0, M - 1)
    u0 = np.floor(u).astype(np.intp)
    u1 = np.minimum(u0 + 1, M - 1)
    return u0, u1, u - u0


def paste_masks(masks, boxes, image_size):
    """Resize each ``MH × MW`` mask into its box on a full-size canvas (Mask R-CNN inference).

    Parameters
    ----------
    masks : (K, MH, MW) array
        Mask probabilities (or logits) predicted for each box.
    boxes : (K, 4) array
        Box of each mask in image coordinates.
    image_size : (int, int)
        ``(H, W)`` of the output.

    Returns
    -------
    pasted : (K, H, W) array
        Float32 for float32 masks, else float64. Pixel (i, j) of image k is the mask sampled
        at the pixel's centre if that centre lies in ``[x1, x2) × [y1, y2)``, else 0.

    Notes
    -----
    Each pixel centre ``(j + ½, i + ½)`` inside the box is mapped to mask coordinates
    ``u = (j + ½ − x1)/(x2 − x1)·MW − ½`` (v likewise) and read by bilinear interpolation,
    written as two lerps ``a + (b − a)·t`` so that a constant mask pastes exactly that
    constant. Threshold the result (e.g. ``> 0.5``) for a binary instance mask.
    (torchvision resizes each mask to its rounded box with ``F.interpolate`` and pastes it;
    sampling at pixel centres gives the same picture up to the edge pixels, with no rounding.)
    """
    m = np.asarray(masks)
    if m.ndim != 3 or m.shape[1] < 1 or m.shape[2] < 1:
        raise ValueError(f"paste_masks: masks must be (K, MH, MW) with MH, MW >= 1, got shape "
                         f"{m.shape}")
    if m.dtype.kind not in "fiub":
        raise TypeError(f"paste_masks: masks must be numbers or bools, got dtype {m.dtype}")
    b = _boxes("paste_masks", boxes)
    if len(b) != len(m):
        raise ValueError(f"paste_masks: {len(m)} masks but {len(b)} boxes; need one box per mask")
    H, W = _size_pair("paste_masks", "image_size", image_size)
    dtype = np.float32 if m.dtype == np.float32 else np.float64
    m = m.astype(dtype)
    out = np.zeros((len(m), H, W), dtype=dtype)
    cols, rows = np.arange(W) + 0.5, np.arange(H) + 0.5
    for k, (x1, y1, x2, y2) in enumerate(b):
        jj = np.flatnonzero((cols >= x1) & (cols < x2))    # pixel columns whose centre is inside
        ii = np.flatnonzero((rows >= y1) & (rows < y2))
        if jj.size == 0 or ii.size == 0:
            continue
        u0, u1, tu = _sample_axis(cols[jj], x1, x2, m.shape[2])
        v0, v1, tv = _sample_axis(rows[ii], y1, y2, m.shape[1])
        tu, tv = tu.astype(dtype), tv.astype(dtype)[:, None]
        top = m[k][np.ix_(v0, u0)] + (m[k][np.ix_(v0, u1)] - m[k][np.ix_(v0, u0)]) * tu
        bottom = m[k][np.ix_(v1, u0)] + (m[k][np.ix_(v1, u1)] - m[k][np.ix_(v1, u0)]) * tu
        out[k][np.ix_(ii, jj)] = top + (bottom - top) * tv
    return out


# ---------------------------------------------------------------------------- FPN levels
def fpn_level(boxes, k0=4, canonical=224, k_min=2, k_max=5, eps=1e-6):
    """The feature-pyramid level each box is pooled from (FPN paper, eq. 1).

    Parameters
    ----------
    boxes : (K, 4) array
        Boxes in image coordinates.
    k0 : int
        Level of a box of the canonical size (4: P4, stride 16).
    canonical : float
        The canonical box size, 224 (an ImageNet crop).
    k_min, k_max : int
        The pyramid's levels (P2..P5 by default); results are clamped into them.
    eps : float
        Added before the floor (as torchvision's ``LevelMapper``) so a box of exactly
        ``224·2^j`` lands on level ``k0 + j`` despite rounding in ``log2``.

    Returns
    -------
    (K,) int64 array

    Notes
    -----
    ``k = clamp(⌊k0 + log2(√(w·h) / canonical) + eps⌋, k_min, k_max)``: a box half the
    canonical size goes one level down (finer map, stride halves), twice the size one up.
    Zero-area boxes go to ``k_min``.
    """
    if k_min > k_max:
        raise ValueError(f"fpn_level: k_min={k_min} must be <= k_max={k_max}")
    if canonical <= 0:
        raise ValueError(f"fpn_level: canonical must be > 0, got {canonical}")
    b = _boxes("fpn_level", boxes)
    size = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    with np.errstate(divide="ignore"):             # log2(0) = -inf -> k_min
        k = np.floor(k0 + np.log2(size / canonical) + eps)
    return np.clip(k, k_min, k_max).astype(np.int64)
