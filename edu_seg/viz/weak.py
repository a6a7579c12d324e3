"""Pictures of weak supervision from boxes (BoxSup, chapter 07).

- :func:`show_box_supervision`: one training sample as box supervision sees it: the image, the
  true mask (which BoxSup never reads), the boxes and their classes (all it reads), and the
  filled-box mask, the crudest guess of the mask from the boxes.
- :func:`show_candidates`: the candidate segments of one box, cheapest first when their costs
  are given: which segments BoxSup chooses among, and why one wins.
- :func:`show_estimates`: the same images round after round, with the mask each round trained
  on: the estimate improving (or not) under the network's vote.

Everything drawn comes from :mod:`edu_seg.weak`'s own functions
(:func:`~edu_seg.weak.filled_box_masks`, :func:`~edu_seg.weak.box_overlap`), so a picture
cannot disagree with what BoxSup computes.

Coordinates. Boxes are ``(x1, y1, x2, y2)`` with pixel ``(i, j)`` covering
``[j, j+1) × [i, i+1)`` (:mod:`edu_seg.boxes`). Images are drawn with ``extent=(0, W, H, 0)``,
which puts pixel ``(i, j)`` on exactly that square, so a box is drawn at its own coordinates.
Class colours are :data:`edu_seg.viz.palette.PALETTE`'s, as in every picture of the library.

Dai, He and Sun, "BoxSup: Exploiting Bounding Boxes to Supervise Convolutional Networks for
Semantic Segmentation", ICCV 2015 (arXiv:1503.01640).
"""
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from ..metrics import ConfusionMatrix
from ..weak import box_overlap, filled_box_masks
from .palette import PALETTE
from .training import overlay

__all__ = ["show_box_supervision", "show_candidates", "show_estimates"]

#: Panels per row of :func:`show_candidates` (the box panel included).
CANDIDATE_COLUMNS = 5


# ------------------------------------------------------------------------------ helpers
def _image(op, image, name="image"):
    """image as a (3, H, W) float32 array, or a ValueError naming ``name``."""
    a = np.asarray(image)
    if a.dtype.kind not in "fiu" or a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"{op}: {name} must be one (3, H, W) image in [0, 1], got shape "
                         f"{a.shape} and dtype {a.dtype}")
    return a.astype(np.float32)


def _boxes(op, boxes, name="boxes"):
    """(K, 4) float64 boxes ``(x1, y1, x2, y2)`` with x2 >= x1 and y2 >= y1."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4 or not np.isfinite(b).all() \
            or (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise ValueError(f"{op}: {name} must be (K, 4) finite (x1, y1, x2, y2) with x2 >= x1 "
                         f"and y2 >= y1, got {np.asarray(boxes).tolist()!r}")
    return b


def _show(ax, rgb, W, H):
    """imshow with pixel (i, j) on the square [j, j+1) x [i, i+1): boxes need no shift."""
    ax.imshow(rgb, extent=(0, W, H, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _rect(ax, box, gid="box", **style):
    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, gid=gid, **style))


def _names(class_names, num_classes):
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    names = list(class_names)
    return names + [str(c) for c in range(len(names), num_classes)]


def _legend(fig, class_ids, names):
    handles = [Patch(facecolor=PALETTE[c] / 255, edgecolor="0.5", label=names[c])
               for c in class_ids]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
                   frameon=False, fontsize=9)


# ------------------------------------------------------------------ what a box tells
def show_box_supervision(sample, class_names=None):
    """One sample as box supervision sees it: what a box tells and what it does not.

    Parameters
    ----------
    sample : dict
        ``image`` (3, H, W) in [0, 1], ``mask`` (H, W) int (the true mask, drawn for
        comparison only), ``boxes`` (K, 4) ``(x1, y1, x2, y2)`` and ``labels`` (K,) int >= 1,
        e.g. an :class:`edu_seg.data.Shapes` sample.
    class_names : list of str, optional
        ``class_names[c]`` names class ``c``; default the class id.

    Returns
    -------
    matplotlib.figure.Figure
        Four panels: the image; the true mask; the boxes on the image, each tagged with its
        class and the fraction of the box its object fills; the filled-box mask
        (:func:`edu_seg.weak.filled_box_masks`) with its pixel accuracy against the truth.
        A legend of the classes present.

    Notes
    -----
    The fraction a box's object fills is ``|{p in B : mask[p] = class of B}| / |B|``: 1 for a
    square, π/4 for a circle, about half for a triangle or a cross. The filled-box mask is
    wrong on exactly the other ``1 - fill`` of every box (and right everywhere else), so the
    less an object fills its box, the worse that guess.

    Examples
    --------
    >>> from edu_seg.data import Shapes
    >>> data = Shapes(1, variant="nonconvex")
    >>> fig = show_box_supervision(data[0], data.class_names)
    """
    op = "show_box_supervision"
    if not isinstance(sample, dict) or not all(k in sample for k in
                                               ("image", "mask", "boxes", "labels")):
        raise ValueError(f"{op}: sample must be a dict with 'image' (3, H, W), 'mask' (H, W), "
                         f"'boxes' (K, 4) and 'labels' (K,), e.g. Shapes(...)[i]; got "
                         f"{sorted(sample) if isinstance(sample, dict) else type(sample).__name__}")
    image = _image(op, sample["image"], "sample['image']")
    _, H, W = image.shape
    mask = np.asarray(sample["mask"])
    if mask.shape != (H, W) or mask.dtype.kind not in "iu":
        raise ValueError(f"{op}: sample['mask'] must be (H, W) = {(H, W)} int like the image, "
                         f"got shape {mask.shape} and dtype {mask.dtype}")
    boxes = _boxes(op, sample["boxes"], "sample['boxes']")
    labels = np.asarray(sample["labels"]).reshape(-1)
    if len(labels) != len(boxes) or labels.dtype.kind not in "iu" or (labels < 1).any():
        raise ValueError(f"{op}: sample['labels'] must hold one int class >= 1 per box "
                         f"({len(boxes)} boxes), got {labels.tolist()!r}")
    filled = filled_box_masks(boxes, labels, (H, W))                     # (H, W) int64
    num_classes = int(max(mask.max(initial=0), labels.max(initial=0))) + 1
    names = _names(class_names, num_classes)

    fig = Figure(figsize=(12, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    _show(axes[0], np.clip(image.transpose(1, 2, 0), 0, 1), W, H)
    axes[0].set_title("the image", fontsize=9)
    _show(axes[1], overlay(image, mask), W, H)
    axes[1].set_title("the true mask\n(never read by BoxSup)", fontsize=9)
    _show(axes[2], np.clip(image.transpose(1, 2, 0), 0, 1), W, H)
    for box, label in zip(boxes, labels):
        y1, y2 = (int(np.clip(np.floor(v + 0.5), 0, H)) for v in (box[1], box[3]))
        x1, x2 = (int(np.clip(np.floor(v + 0.5), 0, W)) for v in (box[0], box[2]))
        area = max((y2 - y1) * (x2 - x1), 1)
        fill = (mask[y1:y2, x1:x2] == label).sum() / area
        colour = PALETTE[int(label)] / 255
        _rect(axes[2], box, edgecolor=colour, lw=2)
        axes[2].text(box[0], box[1], f"{names[label]} {fill:.0%}", fontsize=7, color="white",
                     va="bottom" if box[1] > 0.1 * H else "top", clip_on=True,
                     bbox=dict(facecolor=colour, edgecolor="none", pad=1, alpha=0.9))
    axes[2].set_title("what BoxSup reads: boxes + classes\n(tag: how much of its box the object "
                      "fills)", fontsize=9)
    _show(axes[3], overlay(image, filled), W, H)
    axes[3].set_title(f"the filled boxes as a mask\n{(filled == mask).mean():.1%} of pixels "
                      f"right", fontsize=9)
    present = sorted(set(np.unique(mask).tolist()) | set(labels.tolist()) | {0})
    _legend(fig, [c for c in present if 0 <= c < len(PALETTE)], names)
    return fig


# ------------------------------------------------------------------------- candidates
def show_candidates(image, box, candidates, costs=None, max_show=14):
    """The candidate segments of one box, cheapest first when their costs are given.

    Parameters
    ----------
    image : (3, H, W) float in [0, 1]
    box : 4 numbers
        ``(x1, y1, x2, y2)``.
    candidates : (R, H, W) bool
        The box's candidate segments, e.g. one entry of :func:`edu_seg.weak.candidate_segments`.
    costs : (R,) float, optional
        Each candidate's cost, e.g. :func:`edu_seg.weak.segment_cost`. Given: the candidates
        are drawn from the cheapest (BoxSup's choice, framed in red) to the dearest. Not given:
        in the order passed (:func:`~edu_seg.weak.candidate_segments` passes them best box
        overlap first).
    max_show : int
        At most this many candidates are drawn (the first ones in the order above).

    Returns
    -------
    matplotlib.figure.Figure
        ``1 + min(R, max_show)`` panels, :data:`CANDIDATE_COLUMNS` to a row: the image with the
        box, then each candidate (yellow) over the darkened image with the box, titled with its
        rank, its overlap with the box ``IoU(B, S)`` (:func:`edu_seg.weak.box_overlap`) and its
        cost ``E`` when given.

    Notes
    -----
    A candidate is drawn whole, also where it leaves the box; when it is chosen, only its part
    inside the box is painted into the mask (:func:`edu_seg.weak.paint_segments`).

    Examples
    --------
    >>> from edu_seg.data import Shapes
    >>> from edu_seg.weak import candidate_segments
    >>> s = Shapes(1, variant="nonconvex")[0]
    >>> fig = show_candidates(s["image"], s["boxes"][0],
    ...                       candidate_segments(s["image"], s["boxes"])[0])  # doctest: +SKIP
    """
    op = "show_candidates"
    image = _image(op, image)
    _, H, W = image.shape
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    if box.shape != (4,):
        raise ValueError(f"{op}: box must be 4 numbers (x1, y1, x2, y2), got {box.tolist()!r}")
    box = _boxes(op, box[None], "box")[0]
    masks = np.asarray(candidates)
    if masks.ndim != 3 or masks.dtype != bool or masks.shape[1:] != (H, W) or len(masks) == 0:
        raise ValueError(f"{op}: candidates must be a non-empty (R, H, W) bool array with the "
                         f"image's (H, W) = {(H, W)}, got shape {masks.shape} and dtype "
                         f"{masks.dtype}")
    if isinstance(max_show, bool) or not isinstance(max_show, (int, np.integer)) or max_show < 1:
        raise ValueError(f"{op}: max_show must be an int >= 1, got {max_show!r}")
    iou = box_overlap(box, masks)                                       # (R,)
    order = np.arange(len(masks))
    if costs is not None:
        costs = np.asarray(costs, dtype=np.float64).reshape(-1)
        if costs.shape != (len(masks),) or not np.isfinite(costs).all():
            raise ValueError(f"{op}: costs must hold one finite number per candidate "
                             f"({len(masks)}), got shape {np.asarray(costs).shape}")
        order = np.argsort(costs, kind="stable")          # the cheapest first: the choice
    order = order[:max_show]

    panels = 1 + len(order)
    cols = min(panels, CANDIDATE_COLUMNS)
    rows = -(-panels // cols)
    fig = Figure(figsize=(2.3 * cols, 2.5 * rows + 0.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[panels:]:                             # an incomplete last row
        ax.remove()
    rgb = np.clip(image.transpose(1, 2, 0), 0, 1)
    _show(axes[0], rgb, W, H)
    _rect(axes[0], box, edgecolor="yellow", lw=1.8)
    axes[0].set_title(f"the box: {len(masks)} candidates", fontsize=9)
    dark = rgb * 0.45
    for n, (ax, r) in enumerate(zip(axes[1:], order)):
        shown = dark.copy()
        shown[masks[r]] = 0.35 * shown[masks[r]] + 0.65 * np.array([1.0, 0.85, 0.0])
        _show(ax, shown, W, H)
        chosen = costs is not None and n == 0
        _rect(ax, box, edgecolor="red" if chosen else "white", lw=1.8 if chosen else 1.0)
        title = f"#{n + 1}: IoU(B,S) {iou[r]:.2f}"
        if costs is not None:
            title += f"\nE = {costs[r]:.3f}" + (" (chosen)" if chosen else "")
        ax.set_title(title, fontsize=8, color="tab:red" if chosen else "black")
        if chosen:
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:red")
                spine.set_linewidth(2.5)
    return fig


# -------------------------------------------------------------------------- estimates
def show_estimates(images, snapshots, truth=None, titles=None, class_names=None):
    """The estimated masks of the same images, round after round.

    Parameters
    ----------
    images : (N, 3, H, W) float in [0, 1]
        The images, one per column (a handful: 4 to 8 read well).
    snapshots : sequence of R (N, H, W) int arrays, or one (R, N, H, W) array
        Snapshot ``k``: the masks of these images that round ``k + 1`` trained on (e.g.
        ``boxsup.view.masks[indices]`` right after :meth:`edu_seg.weak.BoxSup.train_round`).
    truth : (N, H, W) int, optional
        The true masks: adds a last row, and each round's row is labelled with the mIoU of
        its masks of these N images against them.
    titles : sequence of R str, optional
        A label per snapshot row; default ``"round 1"``, ``"round 2"``, ...
    class_names : list of str, optional
        For the legend; default the class id.

    Returns
    -------
    matplotlib.figure.Figure
        ``(1 + R + [truth]) x N`` panels: the images, then one row per snapshot, then the
        truth. Pixels whose class changed since the previous snapshot are outlined in white
        (none in the first row), so you see where the network's vote moved the masks.

    Examples
    --------
    >>> fig = show_estimates(images, [round1, round2], truth=true_masks)  # doctest: +SKIP
    """
    op = "show_estimates"
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype.kind not in "fiu" \
            or len(images) == 0:
        raise ValueError(f"{op}: images must be a non-empty (N, 3, H, W) batch in [0, 1], got "
                         f"shape {images.shape}")
    N, _, H, W = images.shape
    try:
        snaps = np.stack([np.asarray(s) for s in snapshots]) if len(snapshots) else None
    except ValueError:
        snaps = None                                      # ragged: reported just below
    if snaps is None or snaps.shape[1:] != (N, H, W) or snaps.dtype.kind not in "iu":
        raise ValueError(f"{op}: snapshots must be a non-empty sequence of (N, H, W) = "
                         f"{(N, H, W)} int masks (one per round), got "
                         f"{[np.shape(s) for s in snapshots]}")
    R = len(snaps)
    if truth is not None:
        truth = np.asarray(truth)
        if truth.shape != (N, H, W) or truth.dtype.kind not in "iu":
            raise ValueError(f"{op}: truth must be (N, H, W) = {(N, H, W)} int like the "
                             f"snapshots, got shape {truth.shape} and dtype {truth.dtype}")
    if titles is None:
        titles = [f"round {k + 1}" for k in range(R)]
    elif isinstance(titles, str) or len(titles) != R:
        raise ValueError(f"{op}: titles must be a sequence of one str per snapshot ({R}), got "
                         f"{titles!r}")
    num_classes = int(max(snaps.max(), 0 if truth is None else truth.max())) + 1
    names = _names(class_names, num_classes)

    rows = [("image", None)] + [(str(t), snaps[k]) for k, t in enumerate(titles)]
    if truth is not None:
        rows.append(("the truth", truth))
    fig = Figure(figsize=(1.7 * N + 0.6, 1.75 * len(rows) + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(len(rows), N, squeeze=False))
    for row, (label, masks) in enumerate(rows):
        if masks is not None and truth is not None and row <= R:
            cm = ConfusionMatrix(num_classes)
            cm.update(masks, truth)
            label += f"\nmIoU {cm.miou():.3f}"
        for i in range(N):
            ax = axes[row, i]
            if masks is None:
                _show(ax, np.clip(images[i].transpose(1, 2, 0), 0, 1), W, H)
            else:
                _show(ax, overlay(images[i], masks[i]), W, H)
                if 1 < row <= R:              # where the previous round's mask was different
                    moved = masks[i] != snaps[row - 2][i]
                    if moved.any():
                        ax.contour(np.arange(W) + 0.5, np.arange(H) + 0.5, moved.astype(float),
                                   levels=[0.5], colors="white", linewidths=0.7)
            if i == 0:
                ax.set_ylabel(label, fontsize=9)
    present = sorted(set(np.unique(snaps).tolist())
                     | (set() if truth is None else set(np.unique(truth).tolist())))
    _legend(fig, [c for c in present if 0 <= c < len(PALETTE)], names)
    return fig
