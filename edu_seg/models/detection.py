"""The training-time bookkeeping of a two-stage detector: who is matched to whom, and which
examples are sampled.

A region-based network (Faster R-CNN, Mask R-CNN) never trains on all its candidate boxes.
Twice per image it asks the same two questions:

1. **Matching.** For each candidate box (an anchor, for the region proposal network; a
   proposal, for the box and mask heads), which ground-truth object does it belong to, if
   any? Answer by IoU: a candidate whose best IoU with the objects is high is a *positive*
   for that object, one whose best IoU is low is a *negative* (background), and one in
   between is *ignored* (neither: training it either way would teach a lie).
2. **Sampling.** An image has thousands of anchors and only a few objects, so nearly every
   candidate is a negative. A loss over all of them would be dominated by easy background.
   Both stages therefore draw a fixed number of examples per image with at most a given
   fraction of positives (Faster R-CNN: 256 anchors, up to half positive; 512 RoIs, up to a
   quarter positive), filling the rest with negatives.

The two functions below answer them, in NumPy (no gradient flows through a decision), and
:func:`mask_targets` cuts each positive RoI's ground-truth mask into the ``M x M`` target of
Mask R-CNN's mask head.

Ren, He, Girshick and Sun, "Faster R-CNN: Towards Real-Time Object Detection with Region
Proposal Networks", NeurIPS 2015 (arXiv:1506.01497); He, Gkioxari, Dollár and Girshick, "Mask
R-CNN", ICCV 2017 (arXiv:1703.06870).
"""
import numpy as np

from ..ops.roi import roi_align

__all__ = ["match_boxes", "sample_balanced", "mask_targets", "BACKGROUND", "IGNORE"]

#: What :func:`match_boxes` returns for a candidate that is a negative, or ignored.
BACKGROUND, IGNORE = -1, -2


def match_boxes(iou, high, low, allow_low_quality=False):
    """Match each candidate box to a ground-truth box by IoU.

    Parameters
    ----------
    iou : (G, M) array
        IoU of each ground-truth box (rows) with each candidate (columns),
        e.g. ``edu_seg.boxes.box_iou(gt_boxes, anchors)``.
    high, low : float
        A candidate whose best IoU is ``>= high`` is positive, ``< low`` negative, and in
        between ignored (the RPN uses 0.7 and 0.3; the RoI heads 0.5 and 0.5, so nothing is
        ignored there).
    allow_low_quality : bool
        Also make positive, for each ground-truth box, the candidates with ITS highest IoU
        (ties included), even below ``high`` (the RPN's rule: a small or oddly shaped object
        that no anchor overlaps by 0.7 still gets an anchor to learn from).

    Returns
    -------
    matched : (M,) int64 array
        The index of the matched ground-truth box, or :data:`BACKGROUND` (-1), or
        :data:`IGNORE` (-2). With no ground truth (G = 0), every candidate is background.
    """
    iou = np.asarray(iou, dtype=np.float64)
    if iou.ndim != 2:
        raise ValueError(f"match_boxes: iou must be a (G, M) matrix, got shape {iou.shape}")
    if not 0 <= low <= high <= 1:
        raise ValueError(f"match_boxes: need 0 <= low <= high <= 1, got low={low}, high={high}")
    G, M = iou.shape
    if G == 0:
        return np.full(M, BACKGROUND, dtype=np.int64)
    best = iou.max(axis=0)                       # (M,) each candidate's best IoU
    matched = iou.argmax(axis=0).astype(np.int64)
    matched[best < high] = IGNORE
    matched[best < low] = BACKGROUND
    if allow_low_quality:
        # For each object, the candidates it overlaps most (its best IoU > 0) keep their match.
        best_per_gt = iou.max(axis=1, keepdims=True)                       # (G, 1)
        _, m = np.nonzero((iou == best_per_gt) & (best_per_gt > 0))
        matched[m] = iou[:, m].argmax(axis=0)
    return matched


def sample_balanced(matched, batch_size, positive_fraction, rng):
    """Draw at most ``batch_size`` candidates, at most ``positive_fraction`` of them positive.

    Parameters
    ----------
    matched : (M,) int array
        What :func:`match_boxes` returned (>= 0 positive, -1 negative, -2 ignored).
    batch_size : int
        Examples per image (Faster R-CNN's RPN: 256; its RoI head: 512).
    positive_fraction : float in (0, 1]
        The most positives may fill (0.5 for the RPN, 0.25 for the RoI head). When there are
        fewer positives, negatives fill the rest, so the batch stays full when it can.
    rng : numpy.random.Generator

    Returns
    -------
    positive, negative : int64 arrays
        Indices into ``matched``; positives are drawn uniformly without replacement, and so
        are negatives. ``len(positive) = min(#positives, int(batch_size * fraction))``,
        ``len(negative) = min(#negatives, batch_size - len(positive))``.
    """
    matched = np.asarray(matched)
    if not 0 < positive_fraction <= 1:
        raise ValueError(f"sample_balanced: positive_fraction must be in (0, 1], got "
                         f"{positive_fraction}")
    positives = np.flatnonzero(matched >= 0)
    negatives = np.flatnonzero(matched == BACKGROUND)
    n_pos = min(len(positives), int(batch_size * positive_fraction))
    n_neg = min(len(negatives), batch_size - n_pos)
    return (rng.choice(positives, n_pos, replace=False).astype(np.int64),
            rng.choice(negatives, n_neg, replace=False).astype(np.int64))


def mask_targets(gt_masks, boxes, size):
    """The mask head's targets: each RoI's ground-truth mask cut out and resized to ``size``.

    Parameters
    ----------
    gt_masks : (G, H, W) bool array
        The objects' masks in image coordinates.
    boxes : (P, 5) float array
        ``(gt_index, x1, y1, x2, y2)``: each positive RoI and the object it is matched to.
        The RoI is the PROPOSAL, not the object's box: the head predicts the object's mask
        inside whatever box it is given, including the parts of the box it does not fill.
    size : int
        ``M``: the mask head's output size (28 in Mask R-CNN).

    Returns
    -------
    targets : (P, M, M) float32 array of 0s and 1s
        RoIAlign (``aligned=True``, 2x2 samples per bin) of the 0/1 mask, thresholded at 0.5:
        the same bilinear reading the head's features get, so target pixel ``(u, v)`` is what
        the image holds under mask-head pixel ``(u, v)``.
    """
    if len(boxes) == 0:
        return np.zeros((0, size, size), np.float32)
    masks = np.asarray(gt_masks, dtype=np.float32)[:, None]            # (G, 1, H, W)
    cut = roi_align(masks, np.asarray(boxes, np.float32), size, spatial_scale=1.0,
                    sampling_ratio=2, aligned=True).data                 # (P, 1, M, M)
    return (cut[:, 0] >= 0.5).astype(np.float32)
