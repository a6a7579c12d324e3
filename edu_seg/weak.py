"""Weak supervision: training a segmentation network from bounding boxes only (BoxSup).

Drawing a mask around every object of a data set costs minutes per image; drawing a box costs
seconds. Dai, He & Sun ("BoxSup: Exploiting Bounding Boxes to Supervise Convolutional Networks
for Semantic Segmentation", ICCV 2015) train an FCN when only the boxes and their classes are
known. The missing masks are guessed, the network is trained on the guesses, and the trained
network helps to guess better:

1. **Candidates.** A class-agnostic region proposal method (the paper: MCG; here
   :func:`edu_seg.proposals.selective_search`) cuts every training image into candidate
   segments ``S`` once; they never change, so they are computed once and cached.
2. **Initial masks.** Each box ``B`` takes the candidate that overlaps it best (``init=
   "segment"``, the paper's start), or simply the filled box (``init="box"``).
3. **Alternate**, round after round:

   a. train the network for a while on the current estimated masks (as if they were true);
   b. for every box, choose the candidate with the lowest cost (:func:`segment_cost`)

          E(S) = (1 − IoU(B, S))  +  λ · D(S),
          D(S) = ½ (mean over S ∩ B of (1 − q)  +  mean over B ∖ S of q),
          q = P_net(class of B | p),

      the first term wanting ``S`` to fill its box, the second wanting the network, which has
      seen every other image, to agree with the labelling that ``S`` gives the box: the
      box's class on ``S``, background on the rest of the box;
   c. paint the chosen segments into each image's semantic mask (:func:`paint_segments`).

Why it works: the candidates follow the image's edges, so the estimate is never a crude
rectangle; and the network, fitted to the guesses of a thousand images at once, learns what
is *common* to them (the shape of a triangle) rather than the random mistakes of one guess,
so its opinion repairs the individual choices. Only ``image``, ``boxes`` and ``labels`` of the
training data are ever read (:class:`BoxesOnly` enforces it); true masks, where a data set has
them, serve only to *measure* how good the estimate is.

Choices made here, where the paper leaves room:

- **The network term** compares, inside the box, the labelling that ``S`` implies (the box's
  class on ``S``, "not this object" on the rest of the box) with the network's softmax
  probability ``q`` of the box's class: the mean doubt ``1 − q`` on the pixels ``S`` claims,
  and the mean belief ``q`` on the pixels it leaves out, averaged with equal weights (a
  *balanced* error, like mean class accuracy). It lies in [0, 1] like ``1 − IoU``, so λ
  weighs comparable quantities, and it is smooth where a count of disagreeing pixels would
  jump. The paper sums a per-pixel loss over the whole labelling. Two simpler versions
  failed here, measured on Shapes with a U-Net: (1) the mean of ``1 − q`` over ``S`` alone
  rewards a small segment deep inside the object, where the network is surest, and nothing
  charges it for the object it leaves out: the estimate shrank round after round (mIoU
  against the true masks 0.97 after two rounds, 0.86 after five); (2) the plain mean of
  ``|[p in S] − q|`` over the box, closer to the paper, collapses when the network is still
  weak: where it sees no object (``q`` near 0 everywhere) every claimed pixel costs, the
  emptiest segment wins, and the masks became background (mIoU 0.88 -> 0.19 in one round,
  7 classes). The balanced version is ½ for every segment that claims part of its box when
  ``q`` is constant over the box, so a network without a spatial opinion leaves the choice
  to the box overlap; only where it separates object from surroundings does it move the
  choice.
- **λ = 3**, the paper's value. With both terms in [0, 1], λ = 3 means that a segment may lose
  up to 3 points of box overlap for each point of network agreement it gains: once trained,
  the network is trusted more than the box, whose overlap with a non-convex object is poor
  (a triangle fills half of its box). Before the first training round there is no network
  and the cost is ``1 − IoU`` alone.
- **top-k.** The paper picks at random among the k lowest-cost candidates "to increase the
  sample variance"; ``top_k=1`` (the default) is the plain minimum, ``top_k > 1`` samples
  with a generator seeded by ``(seed, round, image)``, so runs stay reproducible.
- **Painting.** A chosen segment is clipped to its box; where segments of two boxes overlap,
  the smaller one is painted last (on top: a large segment spilling over an occluder is more
  likely than a small one covering it); all other pixels are background.
- **Rounds = epochs.** The estimate is renewed after every ``epochs_per_round`` epochs of ONE
  :class:`edu_seg.train.Trainer` run: the optimiser's state and the learning-rate schedule
  continue across rounds, exactly as if the masks had changed under a normal training run.

The whole loop is :class:`BoxSup` (its docstring has an example); ``edu-seg train
--supervision boxes`` runs it from the command line.
"""
import dataclasses
import math
import numbers

import numpy as np

from .metrics import ConfusionMatrix
from .proposals import SELECTIVE_SEARCH_SCALES, selective_search
from .train import Trainer, TrainConfig, predict_probabilities

__all__ = ["SUPERVISIONS", "BoxSupConfig", "BoxesOnly", "box_overlap", "disagreement", "segment_cost",
           "choose_segment", "paint_segments", "filled_box_masks", "candidate_segments",
           "estimate_mask", "BoxSup"]

#: What a semantic model can be trained from (``edu-seg train --supervision``, the zoo's
#: supervision column): the true masks; boxes and classes with BoxSup's estimated masks; or
#: boxes and classes with the filled boxes as masks, never re-estimated (the baseline).
SUPERVISIONS = ("masks", "boxes", "filled-boxes")

#: The keys of a training sample that box supervision is allowed to read.
BOX_KEYS = ("image", "boxes", "labels")


# ---------------------------------------------------------------------------- validation
def _box_pixels(op, box, size):
    """The pixel rows and columns ``(y1, y2, x1, x2)`` a box covers, clipped to the image.

    A box is ``(x1, y1, x2, y2)`` in pixel-edge coordinates (:mod:`edu_seg.boxes`): pixel
    ``(i, j)`` is inside when its centre ``(j + 0.5, i + 0.5)`` is, i.e. columns
    ``round(x1) .. round(x2) - 1``.
    """
    b = np.asarray(box, dtype=np.float64)
    if b.shape != (4,) or not np.isfinite(b).all():
        raise ValueError(f"{op}: a box must be 4 finite numbers (x1, y1, x2, y2), got {box!r}")
    if b[2] < b[0] or b[3] < b[1]:
        raise ValueError(f"{op}: box {b.tolist()} has x2 < x1 or y2 < y1; boxes are "
                         f"(x1, y1, x2, y2) with x2 >= x1 and y2 >= y1")
    H, W = size
    x1, x2 = (int(np.clip(np.floor(v + 0.5), 0, W)) for v in (b[0], b[2]))
    y1, y2 = (int(np.clip(np.floor(v + 0.5), 0, H)) for v in (b[1], b[3]))
    return y1, y2, x1, x2


def _segment_masks(op, segment_masks):
    m = np.asarray(segment_masks)
    if m.ndim != 3 or m.dtype != bool:
        raise ValueError(f"{op}: segment_masks must be a (R, H, W) bool array, got shape "
                         f"{m.shape} and dtype {m.dtype}")
    return m


def _check_lam(op, lam):
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not math.isfinite(lam) \
            or lam < 0:
        raise ValueError(f"{op}: lam must be a finite number >= 0 (the weight of the network "
                         f"term; the paper uses 3), got {lam!r}")
    return float(lam)


def _check_class(op, cls, num_classes):
    if isinstance(cls, bool) or not isinstance(cls, numbers.Integral) \
            or not 1 <= cls < num_classes:
        raise ValueError(f"{op}: cls must be an object class in [1, {num_classes}) (0 is the "
                         f"background), got {cls!r}")
    return int(cls)


# ----------------------------------------------------------------------------- the cost
def box_overlap(box, segment_masks):
    """IoU between the filled box and each candidate segment, as pixel sets.

    Parameters
    ----------
    box : (4,) float
        ``(x1, y1, x2, y2)`` in pixel-edge coordinates.
    segment_masks : (R, H, W) bool

    Returns
    -------
    (R,) float64
        ``|S ∩ B| / |S ∪ B|`` per segment; 0 for an empty segment and an empty box.

    Examples
    --------
    >>> m = np.zeros((1, 4, 4), bool); m[0, :2, :2] = True
    >>> box_overlap([0, 0, 4, 2], m)     # the segment covers half of the box
    array([0.5])
    """
    op = "box_overlap"
    masks = _segment_masks(op, segment_masks)
    y1, y2, x1, x2 = _box_pixels(op, box, masks.shape[1:])
    inside = masks[:, y1:y2, x1:x2].sum(axis=(1, 2), dtype=np.int64)
    union = masks.sum(axis=(1, 2), dtype=np.int64) + (y2 - y1) * (x2 - x1) - inside
    return np.divide(inside, union, out=np.zeros(len(masks)), where=union > 0)


def disagreement(box, segment_masks, class_probs, cls):
    """How much the network disagrees with each segment as the mask of box ``box``.

    Parameters
    ----------
    box : (4,) float
        ``(x1, y1, x2, y2)`` in pixel-edge coordinates.
    segment_masks : (R, H, W) bool
    class_probs : (C, H, W) float
        The network's softmax probabilities (:func:`edu_seg.train.predict_probabilities`).
    cls : int
        The box's class, in ``[1, C)``.

    Returns
    -------
    (R,) float64
        ``D(S) = ½ (mean over S ∩ B of (1 − q) + mean over B ∖ S of q)`` with ``q =
        class_probs[cls]``, in [0, 1]: the network's doubt on the pixels the segment claims
        and its belief on the box's pixels the segment leaves out, equally weighted. An
        empty part contributes as if entirely wrong on S ∩ B (1: nothing supports the
        class) and entirely right on B ∖ S (0: nothing is left out).

    Notes
    -----
    With ``s`` the segment's 0/1 indicator and ``q`` the class probability, both cropped to
    the box: ``Σ_{S∩B} q = Σ s·q``, one matrix product of the (R, pixels) masks with the
    (pixels,) ``q`` for all segments at once, and ``Σ_{B∖S} q = Σ q − Σ s·q``. A ``q``
    constant over the box gives ``½ ((1 − c) + c) = ½`` for every segment that claims part of
    the box but not all of it (a segment covering the whole box gets ``½ (1 − c)``).

    Examples
    --------
    >>> m = np.zeros((1, 2, 4), bool); m[0, :, :2] = True      # the left half of the box
    >>> q = np.zeros((2, 2, 4)); q[1] = 1.0                   # "class 1" on the whole box
    >>> disagreement([0, 0, 4, 2], m, q, 1)       # sure where claimed, wrong where left out
    array([0.5])
    """
    op = "disagreement"
    masks = _segment_masks(op, segment_masks)
    probs = np.asarray(class_probs, dtype=np.float64)
    if probs.ndim != 3 or probs.shape[1:] != masks.shape[1:]:
        raise ValueError(f"{op}: class_probs must be (C, H, W) with the masks' (H, W) = "
                         f"{masks.shape[1:]}, got shape {probs.shape}")
    cls = _check_class(op, cls, probs.shape[0])
    y1, y2, x1, x2 = _box_pixels(op, box, masks.shape[1:])
    pixels = (y2 - y1) * (x2 - x1)
    if pixels == 0:
        return np.zeros(len(masks))
    s = masks[:, y1:y2, x1:x2].reshape(len(masks), -1)        # (R, pixels) 0/1
    q = probs[cls, y1:y2, x1:x2].ravel()                       # (pixels,)
    claimed = s.sum(axis=1, dtype=np.int64)                   # |S ∩ B|
    support = s.astype(np.float64) @ q                         # Σ_{S∩B} q
    doubt = np.divide(claimed - support, claimed, out=np.ones(len(masks)), where=claimed > 0)
    left = pixels - claimed                                    # |B ∖ S|
    missed = np.divide(q.sum() - support, left, out=np.zeros(len(masks)), where=left > 0)
    return 0.5 * (doubt + missed)


def segment_cost(box, segment_masks, class_probs, cls, lam):
    """BoxSup's cost of giving box ``box`` (class ``cls``) each candidate segment as its mask.

    Parameters
    ----------
    box : (4,) float
        ``(x1, y1, x2, y2)`` in pixel-edge coordinates.
    segment_masks : (R, H, W) bool
        The candidates.
    class_probs : (C, H, W) float or None
        The network's probabilities; None before the network exists (the cost is then the
        overlap term alone: the initial choice).
    cls : int
        The box's class, in ``[1, C)``.
    lam : float
        λ >= 0, the weight of the network term.

    Returns
    -------
    (R,) float64
        ``E(S) = (1 − IoU(B, S)) + λ · D(S)``, in ``[0, 1 + λ]``.

    Notes
    -----
    ``IoU(B, S)`` is :func:`box_overlap` (filled box against segment, as pixel sets) and
    ``D(S)`` is :func:`disagreement`. A segment that fills its box exactly, where the network
    sees class ``cls`` everywhere, costs 0; a segment covering half of its box costs at least
    0.5; every point of disagreement with the network adds λ.

    Examples
    --------
    >>> m = np.zeros((1, 4, 4), bool); m[0, :2, :] = True
    >>> probs = np.zeros((2, 4, 4)); probs[1] = 1.0      # the network says "class 1" everywhere
    >>> segment_cost([0, 0, 4, 2], m, probs, cls=1, lam=3.0)
    array([0.])
    """
    op = "segment_cost"
    lam = _check_lam(op, lam)
    cost = 1.0 - box_overlap(box, segment_masks)
    if class_probs is not None:
        cost = cost + lam * disagreement(box, segment_masks, class_probs, cls)
    elif isinstance(cls, bool) or not isinstance(cls, numbers.Integral) or cls < 1:
        raise ValueError(f"{op}: cls must be an object class >= 1 (0 is the background), "
                         f"got {cls!r}")
    return cost


def choose_segment(costs, top_k=1, rng=None):
    """The index of the chosen candidate: the cheapest, or one of the ``top_k`` cheapest.

    Parameters
    ----------
    costs : (R,) float, R >= 1
    top_k : int
        1: the minimum (ties: the first). ``k > 1``: uniformly at random among the k lowest
        costs (the paper's way to vary the training targets early on).
    rng : numpy.random.Generator
        Required when ``top_k > 1``.

    Returns
    -------
    int

    Examples
    --------
    >>> choose_segment(np.array([0.7, 0.2, 0.4]))
    1
    """
    op = "choose_segment"
    costs = np.asarray(costs, dtype=np.float64)
    if costs.ndim != 1 or len(costs) == 0:
        raise ValueError(f"{op}: costs must be a non-empty (R,) array, got shape {costs.shape}")
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
        raise ValueError(f"{op}: top_k must be an int >= 1, got {top_k!r}")
    if top_k == 1:
        return int(np.argmin(costs))
    if rng is None:
        raise ValueError(f"{op}: top_k={top_k} samples at random; pass rng="
                         f"np.random.default_rng(...) (a seeded one, for reproducible runs)")
    cheapest = np.argsort(costs, kind="stable")[:top_k]
    return int(cheapest[rng.integers(len(cheapest))])


# ------------------------------------------------------------------------- the masks
def paint_segments(segments, boxes, labels, size):
    """The semantic mask of an image from one segment per box.

    Parameters
    ----------
    segments : sequence of (H, W) bool, one per box
    boxes : (K, 4) float
    labels : (K,) int
        The boxes' classes, >= 1.
    size : (int, int)
        ``(H, W)``.

    Returns
    -------
    (H, W) int64
        Each segment's pixels inside its box get the box's class; where two overlap, the
        smaller (fewer pixels after clipping) wins; everything else is 0 (background).

    Examples
    --------
    >>> s = np.ones((3, 3), bool)
    >>> paint_segments([s, s], [[0, 0, 3, 3], [1, 1, 2, 2]], [1, 2], (3, 3))
    array([[1, 1, 1],
           [1, 2, 1],
           [1, 1, 1]])
    """
    op = "paint_segments"
    H, W = (int(v) for v in size)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels)
    if len(segments) != len(boxes) or len(labels) != len(boxes):
        raise ValueError(f"{op}: need one segment and one label per box, got "
                         f"{len(segments)} segments, {len(labels)} labels and {len(boxes)} boxes")
    clipped = []
    for segment, box in zip(segments, boxes):
        if np.shape(segment) != (H, W):
            raise ValueError(f"{op}: every segment must be (H, W) = {(H, W)}, got shape "
                             f"{np.shape(segment)}")
        y1, y2, x1, x2 = _box_pixels(op, box, (H, W))
        inside = np.zeros((H, W), dtype=bool)
        inside[y1:y2, x1:x2] = np.asarray(segment, dtype=bool)[y1:y2, x1:x2]
        clipped.append(inside)
    mask = np.zeros((H, W), dtype=np.int64)
    # Largest first, so the smaller segments are painted over them (stable: ties keep order).
    for k in sorted(range(len(clipped)), key=lambda k: -int(clipped[k].sum())):
        mask[clipped[k]] = int(labels[k])
    return mask


def filled_box_masks(boxes, labels, size):
    """The crudest guess of a semantic mask: every box filled with its class.

    Parameters
    ----------
    boxes : (K, 4) float
    labels : (K,) int
    size : (int, int)
        ``(H, W)``.

    Returns
    -------
    (H, W) int64
        As :func:`paint_segments` with each box's own rectangle as its segment: smaller boxes
        on top, background elsewhere.

    Examples
    --------
    >>> filled_box_masks([[1, 0, 3, 2]], [2], (2, 4))
    array([[0, 2, 2, 0],
           [0, 2, 2, 0]])
    """
    H, W = (int(v) for v in size)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return paint_segments([np.ones((H, W), dtype=bool)] * len(boxes), boxes, labels, (H, W))


def candidate_segments(image, boxes, max_candidates=32, scales=SELECTIVE_SEARCH_SCALES):
    """The candidate segments of each box of an image, from selective search.

    Parameters
    ----------
    image : (3, H, W) float
        Colours in [0, 1].
    boxes : (K, 4) float
    max_candidates : int
        Keep, per box, this many proposals: those with the largest :func:`box_overlap`
        (proposals that do not touch the box are never kept).
    scales : sequence of float
        Selective search's segmentation scales.

    Returns
    -------
    list of K (R_k, H, W) bool arrays, 1 <= R_k <= max_candidates
        Best overlap first. A box that touches no proposal (impossible with selective search,
        whose last region is the whole image) gets its filled rectangle.

    Notes
    -----
    Selective search returns about 140 proposals per 64x64 Shapes image; most lie far from
    any given box and would cost ``1 + λ·D >= 1`` anyway. Keeping the best-overlapping few
    makes the cache small (1024 images x ~2.5 boxes x 32 candidates, packed 8 pixels a byte:
    about 40 MB) at the price that a segment outside a box's top ``max_candidates`` by overlap
    can never be chosen, however much the network likes it.
    """
    op = "candidate_segments"
    if isinstance(max_candidates, bool) or not isinstance(max_candidates, numbers.Integral) \
            or max_candidates < 1:
        raise ValueError(f"{op}: max_candidates must be an int >= 1, got {max_candidates!r}")
    proposals = selective_search(image, scales=scales)
    H, W = proposals.masks.shape[1:]
    out = []
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        iou = box_overlap(box, proposals.masks)
        order = np.argsort(-iou, kind="stable")[:max_candidates]
        order = order[iou[order] > 0]
        if len(order):
            out.append(proposals.masks[order])
        else:
            y1, y2, x1, x2 = _box_pixels(op, box, (H, W))
            filled = np.zeros((1, H, W), dtype=bool)
            filled[0, y1:y2, x1:x2] = True
            out.append(filled)
    return out


def estimate_mask(boxes, labels, candidates, class_probs, lam, top_k=1, rng=None, size=None):
    """One image's estimated semantic mask: choose a segment per box and paint them.

    Parameters
    ----------
    boxes : (K, 4) float
    labels : (K,) int
    candidates : list of K (R_k, H, W) bool
        :func:`candidate_segments` of the image.
    class_probs : (C, H, W) float or None
        The network's probabilities; None for the initial choice (best box overlap).
    lam : float
    top_k : int
    rng : numpy.random.Generator, optional
        For ``top_k > 1``.
    size : (int, int), optional
        ``(H, W)``; needed only for an image without boxes (no candidate tells the size).

    Returns
    -------
    mask : (H, W) int64
    chosen : (K,) int64
        The index of the chosen candidate of each box.
    """
    if len(candidates) != len(boxes):
        raise ValueError(f"estimate_mask: need one candidate array per box, got "
                         f"{len(candidates)} for {len(boxes)} boxes")
    chosen = np.array([choose_segment(segment_cost(box, cands, class_probs, int(cls), lam),
                                      top_k, rng)
                       for box, cls, cands in zip(boxes, labels, candidates)], dtype=np.int64)
    if size is None:
        if not candidates:
            raise ValueError("estimate_mask: an image without boxes needs size=(H, W)")
        size = candidates[0].shape[1:]
    segments = [cands[c] for cands, c in zip(candidates, chosen)]
    return paint_segments(segments, boxes, labels, size), chosen


# ----------------------------------------------------------------------- the data view
class _BoxSample(dict):
    """A training sample of :class:`BoxesOnly`; asking it for any other key explains why not."""

    def __missing__(self, key):
        raise KeyError(f"BoxesOnly: a box-supervised sample has no {key!r}: it holds only "
                       f"{', '.join(BOX_KEYS)} and 'mask', the CURRENT ESTIMATE of the semantic "
                       f"mask (true masks and instance masks are for evaluation only)")


class BoxesOnly:
    """A view of a data set that exposes only what box supervision may read.

    ``view[i]`` is ``{"image", "boxes", "labels", "mask"}`` where ``mask`` is NOT the data
    set's mask but the current estimate (:attr:`masks`), which a :class:`~edu_seg.train.Trainer`
    and its :class:`~edu_seg.data.DataLoader` then train on. The underlying sample is asked for
    ``image``, ``boxes`` and ``labels`` and nothing else; asking the view's sample for
    ``instance_masks`` (or any other key) raises a KeyError saying why.

    Parameters
    ----------
    dataset : sequence of dict
        Samples with ``image`` (3, H, W), ``boxes`` (K, 4) and ``labels`` (K,), e.g.
        :class:`edu_seg.data.Shapes`.
    masks : (N, H, W) int array, optional
        The initial estimate; default the filled boxes (:func:`filled_box_masks`).

    Attributes
    ----------
    masks : (N, H, W) int64
        The current estimate; :meth:`set_masks` replaces it.
    class_names : list of str or None
        The data set's, if it has them.

    Examples
    --------
    >>> from edu_seg.data import Shapes
    >>> view = BoxesOnly(Shapes(4, seed=0))
    >>> sorted(view[0])
    ['boxes', 'image', 'labels', 'mask']
    """

    def __init__(self, dataset, masks=None):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"BoxesOnly: dataset needs __len__ and __getitem__, got "
                            f"{type(dataset).__name__}")
        self.dataset = dataset
        self.class_names = getattr(dataset, "class_names", None)
        if masks is None:
            masks = []
            for i in range(len(dataset)):
                s = dataset[i]
                masks.append(filled_box_masks(s["boxes"], s["labels"], s["image"].shape[1:]))
            masks = np.stack(masks) if masks else np.zeros((0, 1, 1), np.int64)
        self.masks = None
        self.set_masks(masks)

    def set_masks(self, masks):
        """Replace the estimate: ``masks`` (N, H, W) int, N = ``len(self)``."""
        masks = np.asarray(masks)
        if masks.ndim != 3 or len(masks) != len(self.dataset) or masks.dtype.kind not in "iu":
            raise ValueError(f"BoxesOnly.set_masks: masks must be ({len(self.dataset)}, H, W) "
                             f"int, one per sample, got shape {masks.shape} and dtype "
                             f"{masks.dtype}")
        self.masks = masks.astype(np.int64)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        s = self.dataset[index]
        return _BoxSample(image=s["image"], boxes=s["boxes"], labels=s["labels"],
                          mask=self.masks[index])

    def __repr__(self):
        return f"BoxesOnly({self.dataset!r})"


# ------------------------------------------------------------------------ the training
@dataclasses.dataclass
class BoxSupConfig:
    """Hyper-parameters of :class:`BoxSup`.

    Attributes
    ----------
    epochs_per_round : int
        Training epochs between two re-estimations of the masks. The run's length is the
        ``TrainConfig``'s (its ``steps`` or ``epochs``), so the number of rounds is
        ``ceil(total epochs / epochs_per_round)``.
    init : {"segment", "box"}
        The first estimate: the candidate with the best box overlap (the paper's start) or the
        filled box.
    refine : bool
        False: never re-estimate; the whole run trains on the first estimate (with
        ``init="box"``: the filled-box baseline).
    lam : float
        λ >= 0, the weight of the network term of :func:`segment_cost` (paper: 3).
    top_k : int
        Choose at random among the ``top_k`` cheapest candidates (1: always the cheapest).
    max_candidates : int
        Candidates kept per box (:func:`candidate_segments`).
    seed : int
        Seeds the ``top_k`` sampling: round ``r`` of image ``i`` uses
        ``np.random.default_rng([seed, r, i])``.
    """

    epochs_per_round: int = 1
    init: str = "segment"
    refine: bool = True
    lam: float = 3.0
    top_k: int = 1
    max_candidates: int = 32
    seed: int = 0

    def __post_init__(self):
        for name, low in (("epochs_per_round", 1), ("top_k", 1), ("max_candidates", 1),
                          ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"BoxSupConfig: {name} must be an int >= {low}, got {value!r}")
        if self.init not in ("segment", "box"):
            raise ValueError(f"BoxSupConfig: init must be 'segment' (best-overlapping "
                             f"candidate) or 'box' (filled box), got {self.init!r}")
        if not isinstance(self.refine, bool):
            raise ValueError(f"BoxSupConfig: refine must be True or False, got "
                             f"{self.refine!r}")
        _check_lam("BoxSupConfig", self.lam)


def _pack(masks):
    """(R, H, W) bool -> (R, H, ceil(W / 8)) uint8: 8 pixels a byte, for the cache."""
    return np.packbits(masks, axis=-1)


def _unpack(packed, width):
    return np.unpackbits(packed, axis=-1, count=width).astype(bool)


class BoxSup:
    """BoxSup's alternation around ONE :class:`~edu_seg.train.Trainer` run, a round at a time.

    The loop is EM-like: :meth:`train_round` fits the network to the current masks (the
    M-step: the masks are fixed, the weights move); :meth:`estimate` chooses every box's
    segment again with the network's opinion (the E-step: the weights are fixed, the masks
    move). :meth:`fit` alternates them until the run's epochs are spent; calling the two
    steps yourself lets you look at the masks in between.

    Parameters
    ----------
    model : SegmentationModel
        A semantic model of :mod:`edu_seg.models` (seed the library first for reproducible
        weights: :func:`edu_seg.train.seed_everything`).
    train_data : dataset or BoxesOnly
        Samples with ``image``, ``boxes`` and ``labels``; wrapped in :class:`BoxesOnly` unless
        it is one.
    val_data : dataset, optional
        With TRUE masks: the model's val mIoU after every epoch, as in any Trainer run.
    config : BoxSupConfig, optional
    train_config : TrainConfig, optional
        The training recipe of the whole run (all rounds together); with ``verbose`` a line
        per round is printed after the Trainer's epoch lines.
    truth : dataset, optional
        Gives the true ``mask`` of training sample ``i`` as ``truth[i]["mask"]``, read only to
        report how good each round's estimate is (never to train).
    cache : list, optional
        The candidates of every training image, packed 8 pixels a byte. An empty list is
        filled when the candidates are first needed; pass the filled list to later runs on the
        same training data (and ``max_candidates``) so that selective search runs once.
    **trainer_options
        More keyword arguments of the Trainer (``out_dir``, ``data_info``, ``on_epoch_end``,
        ``on_step``, ...): checkpoints and plots as in a normal run. (Resuming is not
        supported: the estimated masks are not checkpointed.)

    Attributes
    ----------
    view : BoxesOnly
        What the Trainer reads; ``view.masks`` (N, H, W) is the current estimate.
    trainer : Trainer
    rounds : list of dict
        One record per finished round: ``round`` (1-based), ``epoch`` and ``step`` at its
        end, ``changed`` (fraction of boxes whose chosen candidate differs from the previous
        estimate's; None when there was no earlier choice: round 1, and round 2 after
        ``init="box"``), ``train_loss``, ``estimate_miou`` (the masks trained on in this round
        against ``truth``; None without it), and ``val_miou`` with ``val_data``.

    Examples
    --------
    >>> from edu_seg import models
    >>> from edu_seg.data import Shapes
    >>> from edu_seg.train import TrainConfig, seed_everything
    >>> seed_everything(0)
    >>> model = models.create("unet", num_classes=4)
    >>> train, val = Shapes(1024, seed=0), Shapes(256, seed=1)
    >>> boxsup = BoxSup(model, train, val, BoxSupConfig(), TrainConfig(steps=300, lr=3e-3),
    ...                 truth=train)                                         # doctest: +SKIP
    >>> [round(r["estimate_miou"], 3) for r in boxsup.fit()]                 # doctest: +SKIP
    """

    def __init__(self, model, train_data, val_data=None, config=None, train_config=None,
                 truth=None, cache=None, **trainer_options):
        self.config = config if config is not None else BoxSupConfig()
        train_config = train_config if train_config is not None else TrainConfig()
        if not isinstance(self.config, BoxSupConfig):
            raise TypeError(f"BoxSup: config must be a BoxSupConfig, got "
                            f"{type(self.config).__name__}")
        if getattr(model, "task", None) != "semantic":
            raise ValueError(f"BoxSup: the model must be a semantic segmentation model (one "
                             f"class map), got task {getattr(model, 'task', None)!r}")
        self.view = train_data if isinstance(train_data, BoxesOnly) else BoxesOnly(train_data)
        if len(self.view) == 0:
            raise ValueError("BoxSup: train_data is empty")
        self.cache = [] if cache is None else cache
        if self.cache and len(self.cache) != len(self.view):
            raise ValueError(f"BoxSup: cache holds {len(self.cache)} images, train_data "
                             f"{len(self.view)}; pass cache=None to compute it")
        self.model, self.truth, self.rounds = model, truth, []
        self.verbose, self.batch_size = train_config.verbose, train_config.batch_size
        self.chosen, self._changed = None, None
        if self.config.init == "segment":
            self._set_estimate(None)
        else:
            self.view.set_masks(np.stack([filled_box_masks(
                self.view[i]["boxes"], self.view[i]["labels"], self.view.masks.shape[1:])
                for i in range(len(self.view))]))
        self.trainer = Trainer(model, self.view, val_data, train_config, **trainer_options)

    @property
    def done(self):
        """True once the run's epochs are all trained."""
        return self.trainer.epoch >= self.trainer.total_epochs

    def estimate_miou(self):
        """mIoU of the current estimate against ``truth`` (None without it); reporting only."""
        if self.truth is None:
            return None
        cm = ConfusionMatrix(self.model.config.num_classes)
        for i in range(len(self.view)):
            cm.update(self.view.masks[i], np.asarray(self.truth[i]["mask"]))
        return cm.miou()

    def train_round(self):
        """Train ``epochs_per_round`` epochs (all remaining ones with ``refine=False``) on the
        current masks; returns the round's record (also appended to :attr:`rounds`)."""
        if self.done:
            raise RuntimeError(f"BoxSup: all {self.trainer.total_epochs} epochs are trained; "
                               f"build a new BoxSup (or a longer TrainConfig) to train more")
        record = {"round": len(self.rounds) + 1, "changed": self._changed,
                  "estimate_miou": self.estimate_miou()}
        self.trainer.fit(epochs=self.config.epochs_per_round if self.config.refine else None)
        last = self.trainer.history[-1]
        record.update(epoch=self.trainer.epoch, step=self.trainer.step,
                      train_loss=last["train_loss"])
        if "val_miou" in last:
            record["val_miou"] = last["val_miou"]
        self.rounds.append(record)
        if self.verbose:
            quality = ("" if record["estimate_miou"] is None
                       else f", its masks' mIoU against the truth {record['estimate_miou']:.4f}")
            changed = ("" if record["changed"] is None
                       else f", {100 * record['changed']:.1f}% of the boxes chose anew")
            print(f"round {record['round']} (epochs up to {record['epoch']}){quality}{changed}",
                  flush=True)
        return record

    def estimate(self):
        """Choose every box's segment again with the network's probabilities and rebuild the
        masks; returns the fraction of boxes whose choice changed (None if there was none)."""
        self._set_estimate(self.model)
        return self._changed

    def fit(self):
        """Alternate :meth:`train_round` and :meth:`estimate` (only the first with
        ``refine=False``) until the run's epochs are spent; returns :attr:`rounds`."""
        while not self.done:
            self.train_round()
            if not self.done and self.config.refine:
                self.estimate()
        return self.rounds

    def _set_estimate(self, model):
        """Estimate every mask (best box overlap when ``model`` is None) and install it."""
        width = self.view.masks.shape[2]
        if not self.cache:
            for i in range(len(self.view)):
                s = self.view[i]
                self.cache.append([_pack(c) for c in candidate_segments(
                    s["image"], s["boxes"], self.config.max_candidates)])
        masks, chosen = np.empty_like(self.view.masks), []
        for start in range(0, len(self.view), self.batch_size):
            stop = min(start + self.batch_size, len(self.view))
            samples = [self.view[i] for i in range(start, stop)]
            probs = [None] * len(samples)
            if model is not None:
                probs = predict_probabilities(model, np.stack([s["image"] for s in samples]))
            for offset, (s, p) in enumerate(zip(samples, probs)):
                i = start + offset
                candidates = [_unpack(c, width) for c in self.cache[i]]
                rng = np.random.default_rng([self.config.seed, len(self.rounds), i])
                masks[i], picked = estimate_mask(s["boxes"], s["labels"], candidates, p,
                                                 self.config.lam, self.config.top_k, rng,
                                                 size=self.view.masks.shape[1:])
                chosen.append(picked)
        if self.chosen is not None:
            changed = sum(int((a != b).sum()) for a, b in zip(self.chosen, chosen))
            self._changed = changed / max(sum(len(c) for c in chosen), 1)
        self.chosen = chosen
        self.view.set_masks(masks)
