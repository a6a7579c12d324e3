"""Pictures of region-based detection and instance segmentation (Mask R-CNN, chapter 05).

Every picture is drawn from the model's OWN code: the anchors come from ``model.anchors``,
the proposals from ``model.rpn`` and ``model.propose``, the sampled examples from
:func:`edu_seg.models.detection.match_boxes` and :func:`~edu_seg.models.detection.sample_balanced`
with the model's config, the RoI features from the ops ``model.roi_features`` calls, and the
masks from ``model.mask_head``. So what a picture shows is what the model computes.

- :func:`draw_detections`, :func:`show_detections`, :func:`render_detections`: each detected
  object's mask, box and "class score" tag over the image (and the ground truth beside it);
  ``render_detections`` returns the drawing as an RGB array, e.g. to save as a PNG.
- :func:`show_anchors`: the ``A`` anchors of a few feature cells, over the stride-4 grid.
- :func:`show_proposals`: the RPN's objectness, and its best boxes before and after NMS.
- :func:`show_sampled_rois`: the anchors and the RoIs one training image contributes to the
  losses (positives green, negatives red, ground truth white).
- :func:`show_roi_ops_on_features`: RoIPool's bins and RoIAlign's sample points on the real
  feature map, and the two ops' outputs.
- :func:`show_mask_head`: the mask head's 28x28 mask of every class for one detection, and
  the chosen one pasted into the image.

Coordinates. Boxes are ``(x1, y1, x2, y2)`` with pixel ``(i, j)`` covering
``[j, j+1) × [i, i+1)`` (:mod:`edu_seg.boxes`). Every image here is drawn with
``extent=(0, W, H, 0)``, which puts pixel ``(i, j)`` on exactly that square, so a box is
drawn at its own coordinates with no half-pixel shift. Feature maps are drawn the same way in
feature pixels, the convention of :mod:`edu_seg.viz.roi`.

Patches carry a ``gid`` naming what they are (``"detection"``, ``"anchor"``, ``"proposal"``,
``"positive"``, ``"negative"``, ``"ground truth"``, ``"pool bin"``, ``"box"``), so a program
(or a test) can count what a picture shows.

He, Gkioxari, Dollár and Girshick, "Mask R-CNN", ICCV 2017 (arXiv:1703.06870); Ren, He,
Girshick and Sun, "Faster R-CNN: Towards Real-Time Object Detection with Region Proposal
Networks", NeurIPS 2015 (arXiv:1506.01497).
"""
from contextlib import contextmanager

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from ..autograd import Tensor, no_grad
from ..boxes import box_iou, paste_masks
from ..models.detection import match_boxes, sample_balanced
from ..train import detect
from ..ops.roi import roi_align
from .roi import roi_sampling_geometry

__all__ = ["INSTANCE_COLOURS", "draw_detections", "show_detections", "render_detections",
           "show_anchors", "show_proposals", "show_sampled_rois", "show_roi_ops_on_features",
           "show_mask_head"]

#: (10, 3) uint8: one colour per INSTANCE (matplotlib's "tab10"), cycled over the objects of
#: an image. Instance segmentation's point is that two circles are two objects, so they get
#: two colours; the class is written in each object's tag.
INSTANCE_COLOURS = (np.array(colormaps["tab10"].colors) * 255).round().astype(np.uint8)

#: A mask probability above this is foreground (Mask R-CNN's binarisation threshold).
MASK_THRESHOLD = 0.5


# ------------------------------------------------------------------------------ helpers
def _image(op, image):
    """image as a (3, H, W) float32 array, or a ValueError that says what was wrong."""
    a = np.asarray(image)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{op}: image must hold numbers, got dtype {a.dtype}")
    if a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"{op}: image must be one (3, H, W) image in [0, 1], got shape "
                         f"{a.shape}; from a batch pass images[i]")
    return a.astype(np.float32)


def _rgb(image):
    """A (3, H, W) image as (H, W, 3) in [0, 1], ready for imshow."""
    return np.clip(image.transpose(1, 2, 0), 0, 1)


def _show(ax, rgb, W, H):
    """imshow with pixel (i, j) on the square [j, j+1) x [i, i+1): boxes need no shift."""
    ax.imshow(rgb, extent=(0, W, H, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _rect(ax, box, gid, **style):
    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, gid=gid, **style))


def _names(class_names, num_classes):
    return list(class_names) if class_names is not None else [str(k) for k in
                                                              range(num_classes)]


def _objects(op, objects, H, W, name="detections"):
    """One image's objects as a dict of arrays: ``boxes`` (D, 4), ``labels`` (D,), ``scores``
    (D,) (1 for ground truth, which has none) and ``masks`` (D, H, W) or None.

    A model's detection dict has ``masks``; a :class:`edu_seg.data.Shapes` sample has
    ``instance_masks``; either is accepted.
    """
    if not isinstance(objects, dict) or "boxes" not in objects or "labels" not in objects:
        raise ValueError(f"{op}: {name} must be a dict with 'boxes' (D, 4) and 'labels' (D,) "
                         f"(and 'scores', 'masks'), e.g. one entry of model(images) in eval "
                         f"mode, got {type(objects).__name__}")
    boxes = np.asarray(objects["boxes"], np.float64)
    if boxes.size == 0:                          # no objects: an empty list is (0, 4) too
        boxes = boxes.reshape(0, 4)
    D = len(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{op}: {name}['boxes'] must be (D, 4) (x1, y1, x2, y2), got shape "
                         f"{boxes.shape}")
    labels = np.asarray(objects["labels"]).astype(np.int64).reshape(-1)
    scores = np.asarray(objects.get("scores", np.ones(D)), np.float64).reshape(-1)
    if len(labels) != D or len(scores) != D:
        raise ValueError(f"{op}: {name} has {D} boxes, {len(labels)} labels and {len(scores)} "
                         f"scores; need one of each per object")
    masks = objects.get("masks", objects.get("instance_masks"))
    if masks is not None:
        masks = np.asarray(masks, np.float32)
        if masks.shape != (D, H, W):
            raise ValueError(f"{op}: {name} masks must be (D, H, W) = {(D, H, W)} like the "
                             f"image, got shape {masks.shape}")
    return {"boxes": boxes, "labels": labels, "scores": scores, "masks": masks}


@contextmanager
def _mode(model, training):
    """Run a block with the model in training (or eval) mode, then put its mode back: a
    picture must not change the model it looks at."""
    was = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was)


def _batch_of_one(model, image):
    x = Tensor(image[None])                                  # (1, 3, H, W)
    model.check_input_size(x.shape)
    return x


def _rpn_outputs(model, image):
    """The model's stage one on one image, in eval mode: features (1, D, H/4, W/4),
    objectness (1, M), deltas (1, M, 4) and the anchors (M, 4)."""
    x = _batch_of_one(model, image)
    with _mode(model, False), no_grad():
        features, objectness, deltas, anchors = model.first_stage(x)
    return features, objectness.data, deltas.data, anchors


def _detect(model, image):
    """``model(image)`` in eval mode: the one image's detection dict."""
    model.check_input_size(image[None].shape)
    return detect(model, image[None])[0]


# --------------------------------------------------------------------------- detections
def draw_detections(ax, image, detections, class_names=None, score_threshold=0.5,
                    palette=None, alpha=0.5, fontsize=8):
    """Draw one image's detections on ``ax``: each mask blended in, its box and its tag.

    Parameters
    ----------
    ax : matplotlib Axes
    image : (3, H, W) float array in [0, 1]
    detections : dict
        ``boxes`` (D, 4) ``(x1, y1, x2, y2)``, ``labels`` (D,), optionally ``scores`` (D,)
        (ground truth has none: every object is drawn, tagged with its class only) and
        ``masks`` (D, H, W) probabilities (or ``instance_masks`` (D, H, W) bool, as in a
        :class:`edu_seg.data.Shapes` sample). One entry of ``model(images)`` in eval mode.
    class_names : list of str, optional
        ``class_names[k]`` names class ``k``; default the class id.
    score_threshold : float
        Detections scoring below it are not drawn.
    palette : (P, 3) uint8 array, optional
        Instance colours; the n-th drawn object gets ``palette[n % P]``. Default
        :data:`INSTANCE_COLOURS`.
    alpha : float
        Opacity of a mask's colour over the image.
    fontsize : float
        Size of the tags, in points.

    Returns
    -------
    drawn : (n,) int64 array
        The indices of the detections drawn (those scoring ``>= score_threshold``), in
        order: drawn object ``n`` is ``detections[...][drawn[n]]``, in colour ``n``.

    Notes
    -----
    A mask is the pixels whose probability is above 0.5 (Mask R-CNN's threshold). Masks are
    blended from the lowest score to the highest, so where two overlap the more confident
    one is on top.

    Examples
    --------
    >>> fig = Figure()                                                  # doctest: +SKIP
    >>> draw_detections(fig.subplots(), image, model(Tensor(image[None]))[0])  # doctest: +SKIP
    """
    image = _image("draw_detections", image)
    _, H, W = image.shape
    d = _objects("draw_detections", detections, H, W)
    palette = INSTANCE_COLOURS if palette is None else np.asarray(palette, np.uint8)
    names = _names(class_names, int(d["labels"].max(initial=0)) + 1)
    drawn = np.flatnonzero(d["scores"] >= score_threshold)
    colours = [palette[n % len(palette)] / 255 for n in range(len(drawn))]
    rgb = _rgb(image)
    if d["masks"] is not None:
        for n in np.argsort(d["scores"][drawn], kind="stable"):     # most confident last
            inside = d["masks"][drawn[n]] > MASK_THRESHOLD
            rgb[inside] = (1 - alpha) * rgb[inside] + alpha * colours[n]
    _show(ax, rgb, W, H)
    scored = "scores" in detections
    for n, k in enumerate(drawn):
        x1, y1, _, _ = d["boxes"][k]
        _rect(ax, d["boxes"][k], "detection", edgecolor=colours[n], lw=1.5)
        label = int(d["labels"][k])
        tag = names[label] if label < len(names) else str(label)
        if scored:
            tag += f" {d['scores'][k]:.2f}"
        # Above the box when there is room, else just inside its top edge.
        ax.text(x1, y1, tag, fontsize=fontsize, color="white", clip_on=True,
                va="bottom" if y1 > 0.1 * H else "top",
                bbox=dict(facecolor=colours[n], edgecolor="none", pad=1, alpha=0.9))
    return drawn


def show_detections(images, detections, class_names=None, targets=None, score_threshold=0.5,
                    palette=None, max_images=6):
    """Detections over their images, one column per image, with the ground truth below.

    Parameters
    ----------
    images : (N, 3, H, W) float array in [0, 1]
    detections : list of N dicts
        What ``model(Tensor(images))`` returns in eval mode (see :func:`draw_detections`).
    class_names : list of str, optional
    targets : list of N dicts, optional
        The ground truth (``boxes``, ``labels`` and ``instance_masks`` or ``masks``), e.g.
        :class:`edu_seg.data.Shapes` samples; adds a second row.
    score_threshold : float
        Detections below it are not drawn.
    palette : (P, 3) uint8 array, optional
        Instance colours (default :data:`INSTANCE_COLOURS`).
    max_images : int
        At most this many columns.

    Returns
    -------
    matplotlib.figure.Figure
        Row 1: each image with its detections (title: how many scored above the threshold);
        row 2 (with ``targets``): its ground-truth objects.

    Examples
    --------
    >>> model.eval()                                                    # doctest: +SKIP
    >>> fig = show_detections(images, model(Tensor(images)), data.class_names)  # doctest: +SKIP
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"show_detections: images must be a batch (N, 3, H, W), got shape "
                         f"{images.shape}; for one image pass image[None] and [detections]")
    if len(detections) != len(images):
        raise ValueError(f"show_detections: {len(images)} images but {len(detections)} "
                         f"detection dicts; need one per image")
    if targets is not None and len(targets) != len(images):
        raise ValueError(f"show_detections: {len(images)} images but {len(targets)} targets; "
                         f"need one per image")
    n = min(len(images), max_images)
    rows = 1 if targets is None else 2
    fig = Figure(figsize=(2.8 * n, 2.9 * rows + 0.2), layout="constrained")
    axes = np.asarray(fig.subplots(rows, n, squeeze=False))
    for i in range(n):
        drawn = draw_detections(axes[0, i], images[i], detections[i], class_names,
                                score_threshold, palette)
        axes[0, i].set_title(f"prediction: {len(drawn)} with score ≥ {score_threshold:g}",
                             fontsize=9)
        if targets is not None:
            drawn = draw_detections(axes[1, i], images[i], targets[i], class_names, 0.0,
                                    palette)
            axes[1, i].set_title(f"ground truth: {len(drawn)} objects", fontsize=9)
    return fig


def render_detections(image, detections, class_names=None, scale=4, score_threshold=0.5,
                      palette=None):
    """The drawing of :func:`draw_detections` as an RGB array, ``scale`` times the image size.

    Parameters
    ----------
    image : (3, H, W) float array in [0, 1]
    detections : dict
        One image's detections (see :func:`draw_detections`).
    class_names : list of str, optional
    scale : int
        Output pixels per image pixel. A 64x64 image is too small to write on; at 4x a tag
        of a few letters is readable.
    score_threshold : float
    palette : (P, 3) uint8 array, optional

    Returns
    -------
    rgb : (scale·H, scale·W, 3) uint8 array
        E.g. ``PIL.Image.fromarray(rgb).save("detections.png")``.

    Notes
    -----
    A figure exactly ``scale·W x scale·H`` pixels (at 100 dpi) holds one axes filling it;
    the Agg canvas draws it into memory and its RGBA buffer is returned without alpha. Each
    image pixel becomes a ``scale x scale`` block (nearest-neighbour), so outside the
    drawings the array is the plain upscaled image.

    Examples
    --------
    >>> rgb = render_detections(image, model(Tensor(image[None]))[0])  # doctest: +SKIP
    """
    image = _image("render_detections", image)
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"render_detections: scale must be a positive int, got {scale!r}")
    _, H, W = image.shape
    dpi = 100
    fig = Figure(figsize=(W * scale / dpi, H * scale / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    draw_detections(ax, image, detections, class_names, score_threshold, palette,
                    fontsize=max(6, 2 * scale))
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# ------------------------------------------------------------------------------ anchors
def show_anchors(model, image, cells=None):
    """The anchors of a few feature cells over the image, and the stride-4 feature grid.

    Parameters
    ----------
    model : edu_seg.models.mask_rcnn.MaskRCNN
    image : (3, H, W) float array in [0, 1]
    cells : list of (row, column), optional
        Feature cells whose anchors to draw. Default: the centre cell and cell (1, 1), whose
        large anchors hang over the image's edge.

    Returns
    -------
    matplotlib.figure.Figure
        One panel: the image, the grid of ``H/4 x W/4`` cells, each chosen cell filled with
        a dot at its centre, and its ``A`` anchors (``model.anchors``), coloured by size.

    Notes
    -----
    The RPN's head is a conv, so at every cell it predicts ``A`` objectness scores and
    ``A`` box deltas, one per anchor: ``len(anchor_sizes) x len(aspect_ratios)`` boxes centred
    on the cell, of area ``s²`` and height/width ``r`` (:func:`edu_seg.boxes.make_anchors`).
    The anchors of cell ``(i, j)`` are rows ``(i·FW + j)·A`` to ``(i·FW + j + 1)·A - 1``.

    Examples
    --------
    >>> fig = show_anchors(models.create("mask_rcnn", num_classes=4), image)  # doctest: +SKIP
    """
    image = _image("show_anchors", image)
    model.check_input_size((1,) + image.shape)
    _, H, W = image.shape
    c, stride, A = model.config, model.feature_stride, model.num_anchors
    FH, FW = H // stride, W // stride
    anchors = model.anchors((FH, FW))                                 # (FH·FW·A, 4)
    cells = [(FH // 2, FW // 2), (1, 1)] if cells is None else [tuple(v) for v in cells]
    for cell in cells:
        if len(cell) != 2 or not (0 <= cell[0] < FH and 0 <= cell[1] < FW):
            raise ValueError(f"show_anchors: cell {cell} is not a (row, column) of the "
                             f"{FH}x{FW} feature grid; rows 0..{FH - 1}, columns 0..{FW - 1}")
    fig = Figure(figsize=(6.2, 6.0), layout="constrained")
    ax = fig.subplots()
    _show(ax, _rgb(image), W, H)
    for t in range(stride, max(H, W), stride):
        ax.axhline(t, color="white", lw=0.4, alpha=0.6)
        ax.axvline(t, color="white", lw=0.4, alpha=0.6)
    size_colours = colormaps["autumn"](np.linspace(0, 0.85, len(c.anchor_sizes)))
    drawn = []
    for i, j in cells:
        ax.add_patch(Rectangle((j * stride, i * stride), stride, stride, color="cyan",
                               alpha=0.6, gid="cell"))
        ax.plot((j + 0.5) * stride, (i + 0.5) * stride, "o", color="cyan", ms=4, mec="black")
        first = (i * FW + j) * A
        for a in range(A):                       # anchor a = ratio · len(sizes) + size
            _rect(ax, anchors[first + a], "anchor", lw=1.3,
                  edgecolor=size_colours[a % len(c.anchor_sizes)])
        drawn.append(anchors[first:first + A])
    drawn = np.concatenate(drawn)
    ax.set_xlim(min(0, drawn[:, 0].min()) - 1, max(W, drawn[:, 2].max()) + 1)
    ax.set_ylim(max(H, drawn[:, 3].max()) + 1, min(0, drawn[:, 1].min()) - 1)
    ax.set_title(f"{A} anchors per cell: sizes {list(c.anchor_sizes)} x ratios (h/w) "
                 f"{list(c.aspect_ratios)}\n{FH}x{FW} cells of stride {stride}: "
                 f"{FH * FW * A} anchors in all", fontsize=9)
    ax.legend(handles=[Line2D([], [], color=col, lw=2, label=f"size {s:g}")
                       for col, s in zip(size_colours, c.anchor_sizes)],
              loc="lower center", bbox_to_anchor=(0.5, -0.1), ncol=len(c.anchor_sizes),
              fontsize=8, frameon=False)
    return fig


# ---------------------------------------------------------------------------- proposals
def show_proposals(model, image, max_boxes=30, gt_boxes=None):
    """The RPN at inference: objectness per cell, and its best boxes before and after NMS.

    Parameters
    ----------
    model : edu_seg.models.mask_rcnn.MaskRCNN
    image : (3, H, W) float array in [0, 1]
    max_boxes : int
        Boxes drawn per panel: the best ``max_boxes`` by objectness.
    gt_boxes : (G, 4) array, optional
        Ground-truth boxes, drawn dashed white for comparison.

    Returns
    -------
    matplotlib.figure.Figure
        Three panels: the objectness probability of each cell (the highest over its ``A``
        anchors); the top ``rpn_pre_nms`` anchors moved by their deltas (before NMS); the
        proposals ``model.propose`` returns (after NMS at ``rpn_nms_threshold``). Boxes are
        coloured by rank, brightest first.

    Notes
    -----
    Stage one runs in eval mode (the test-time ``rpn_pre_nms[1]`` and ``rpn_post_nms[1]``).
    "Before NMS" is ``model.top_anchor_boxes``, the first half of ``model.propose``: the
    anchors of highest objectness moved by their deltas and clipped. Neighbouring anchors
    that saw the same object all move onto it, so before NMS the best boxes are near copies
    of each other; NMS keeps one of each cluster.

    Examples
    --------
    >>> fig = show_proposals(model, sample["image"], gt_boxes=sample["boxes"])  # doctest: +SKIP
    """
    image = _image("show_proposals", image)
    _, H, W = image.shape
    c = model.config
    features, objectness, deltas, anchors = _rpn_outputs(model, image)
    with _mode(model, False):
        after = model.propose(objectness, deltas, anchors, (H, W))[0]     # (P, 4)
        before, _ = model.top_anchor_boxes(objectness[0], deltas[0], anchors, (H, W))
    logits = objectness[0]

    FH, FW = features.shape[-2:]
    cells = 1 / (1 + np.exp(-logits.reshape(FH, FW, -1).max(axis=-1)))  # (FH, FW)
    fig = Figure(figsize=(13, 4.6), layout="constrained")
    ax_obj, ax_before, ax_after = fig.subplots(1, 3)
    _show(ax_obj, _rgb(image), W, H)
    shown = ax_obj.imshow(cells, extent=(0, W, H, 0), cmap="magma", vmin=0, vmax=1,
                          alpha=0.75, interpolation="nearest")
    fig.colorbar(shown, ax=ax_obj, fraction=0.046)
    ax_obj.set_title(f"objectness per cell (best of its {model.num_anchors} anchors)",
                     fontsize=9)
    rank_colours = colormaps["plasma_r"](np.linspace(0.05, 0.95, max_boxes))
    for ax, boxes, title in (
            (ax_before, before, f"before NMS: best {min(max_boxes, len(before))} of "
                                f"{len(before)} (rpn_pre_nms = {c.rpn_pre_nms[1]})"),
            (ax_after, after, f"after NMS at IoU {c.rpn_nms_threshold:g}: best "
                              f"{min(max_boxes, len(after))} of {len(after)} proposals")):
        _show(ax, _rgb(image), W, H)
        for n in reversed(range(min(max_boxes, len(boxes)))):     # the best drawn on top
            _rect(ax, boxes[n], "proposal", edgecolor=rank_colours[n], lw=1.2)
        if gt_boxes is not None:
            for b in np.asarray(gt_boxes, np.float64).reshape(-1, 4):
                _rect(ax, b, "ground truth", edgecolor="white", lw=1.5, ls="--")
        ax.set_title(title, fontsize=9)
    return fig


# -------------------------------------------------------------------------- sampled rois
def show_sampled_rois(model, sample, rng=0):
    """The examples one training image gives each stage: sampled anchors, sampled RoIs.

    Parameters
    ----------
    model : edu_seg.models.mask_rcnn.MaskRCNN
    sample : dict
        A training sample with ``image`` (3, H, W) and ``boxes`` (G, 4), e.g. an
        :class:`edu_seg.data.Shapes` sample.
    rng : int or numpy.random.Generator
        Seed (or generator) of the sampling; the RPN's anchors are drawn first, then the
        RoIs, in the order of ``model.forward``.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels. RPN: the sampled anchors, positives (IoU >= 0.7 with an object, or an
        object's best anchor) in green, negatives (IoU < 0.3) in red. RoI head: the sampled
        RoIs out of the proposals plus the ground-truth boxes, positives (IoU >= 0.5) green,
        negatives red. Ground truth dashed white in both; titles give the counts.

    Notes
    -----
    The matching and sampling are ``model.rpn_losses`` and ``model.head_losses``'s:
    :func:`edu_seg.models.detection.match_boxes` then
    :func:`~edu_seg.models.detection.sample_balanced` with ``rpn_batch_size``,
    ``rpn_positive_fraction``, ``roi_batch_size`` and ``roi_positive_fraction``. The
    proposals are the training-time ones (``rpn_pre_nms[0]``, ``rpn_post_nms[0]``), from
    features computed in eval mode (batch norm with its running statistics), so looking
    does not update the model. Most sampled anchors are negatives: the image is mostly
    background, and sampling caps positives at a fraction, never negatives below it.

    Examples
    --------
    >>> fig = show_sampled_rois(model, Shapes(1, size=64, seed=0)[0])  # doctest: +SKIP
    """
    if not isinstance(sample, dict) or "image" not in sample or "boxes" not in sample:
        raise ValueError("show_sampled_rois: sample must be a dict with 'image' (3, H, W) and "
                         "'boxes' (G, 4), e.g. Shapes(...)[i]")
    image = _image("show_sampled_rois", sample["image"])
    _, H, W = image.shape
    gt = np.asarray(sample["boxes"], np.float64).reshape(-1, 4)
    c, rng = model.config, np.random.default_rng(rng)
    _, objectness, deltas, anchors = _rpn_outputs(model, image)
    with _mode(model, True):                 # propose reads the training-time budgets
        proposals = model.propose(objectness, deltas, anchors, (H, W))[0]

    matched = match_boxes(box_iou(gt, anchors), 0.7, 0.3, allow_low_quality=True)
    rpn_pos, rpn_neg = sample_balanced(matched, c.rpn_batch_size, c.rpn_positive_fraction, rng)
    candidates = np.concatenate([proposals, gt])     # as head_losses: the truth joins them
    matched = match_boxes(box_iou(gt, candidates), 0.5, 0.5)
    roi_pos, roi_neg = sample_balanced(matched, c.roi_batch_size, c.roi_positive_fraction, rng)

    fig = Figure(figsize=(10, 5.4), layout="constrained")
    ax_rpn, ax_roi = fig.subplots(1, 2)
    for ax, boxes, pos, neg, title in (
            (ax_rpn, anchors, rpn_pos, rpn_neg,
             f"RPN: {len(rpn_pos)} positive + {len(rpn_neg)} negative anchors\nsampled of "
             f"{len(anchors)} (IoU ≥ 0.7 or best / < 0.3; batch {c.rpn_batch_size})"),
            (ax_roi, candidates, roi_pos, roi_neg,
             f"RoI head: {len(roi_pos)} positive + {len(roi_neg)} negative RoIs\nsampled of "
             f"{len(proposals)} proposals + {len(gt)} truth (IoU ≥ 0.5; batch "
             f"{c.roi_batch_size})")):
        _show(ax, _rgb(image) * 0.6, W, H)           # darkened: the boxes are the subject
        for k in neg:
            _rect(ax, boxes[k], "negative", edgecolor="red", lw=0.6, alpha=0.6)
        for k in pos:
            _rect(ax, boxes[k], "positive", edgecolor="lime", lw=1.2)
        for b in gt:
            _rect(ax, b, "ground truth", edgecolor="white", lw=1.8, ls="--")
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        ax.set_title(title, fontsize=9)
    fig.legend(handles=[Patch(facecolor="0.35", edgecolor=e, ls=ls, label=n) for e, ls, n in
                        (("lime", "-", "positive"), ("red", "-", "negative"),
                         ("white", "--", "ground truth"))],
               loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig


# ----------------------------------------------------------------------- roi ops on features
def show_roi_ops_on_features(model, image, box, size=7, channel=None):
    """RoIPool against RoIAlign on the model's own stride-4 feature map, for one box.

    Parameters
    ----------
    model : edu_seg.models.mask_rcnn.MaskRCNN
    image : (3, H, W) float array in [0, 1]
    box : 4 numbers
        ``(x1, y1, x2, y2)`` in image pixels, with ``x2 > x1`` and ``y2 > y1``.
    size : int
        Bins per side: 7 (the box head's) or ``mask_size // 2`` = 14 (the mask head's).
    channel : int, optional
        The feature channel to show; default the mean over channels.

    Returns
    -------
    matplotlib.figure.Figure
        Top: the image with the box; the features around the box with RoIPool's rounded
        box and its bins; the same with RoIAlign's bins and sample points. Bottom: the image
        under the box (RoIAlign of the image itself, ``size x size``), then RoIPool's and
        RoIAlign's ``size x size`` outputs of the shown channel.

    Notes
    -----
    The outputs are ``model.roi_features(..., op="pool")`` and ``op="align"``: what the
    model's heads would read with either setting of ``roi_op``. The bins and points are :func:`edu_seg.viz.roi.roi_sampling_geometry`'s, the
    helpers the kernels themselves use. RoIPool takes the MAX of each bin and RoIAlign the
    MEAN of its samples, so their colour scales differ; compare where things are, not how
    bright they are.

    Examples
    --------
    >>> fig = show_roi_ops_on_features(model, image, (6, 32, 32, 54))  # doctest: +SKIP
    """
    image = _image("show_roi_ops_on_features", image)
    _, H, W = image.shape
    box = np.asarray(box, np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"show_roi_ops_on_features: box must be 4 finite numbers (x1, y1, "
                         f"x2, y2) with x2 > x1 and y2 > y1, got {box.tolist()}")
    features, _, _, _ = _rpn_outputs(model, image)
    D, FH, FW = features.shape[1:]
    if channel is not None and not 0 <= channel < D:
        raise ValueError(f"show_roi_ops_on_features: channel must be in 0..{D - 1} (the "
                         f"features have {D} channels), or None for their mean; got {channel}")
    scale = 1.0 / model.feature_stride
    rois = np.concatenate([[0.0], box])[None].astype(np.float32)       # (1, 5)
    with no_grad():
        aligned = model.roi_features(features, rois, size, op="align").data[0]  # (D, s, s)
        pooled = model.roi_features(features, rois, size, op="pool").data[0]    # (D, s, s)
        crop = roi_align(image[None], rois, size, spatial_scale=1.0, sampling_ratio=2,
                         aligned=True).data[0]                         # (3, size, size)

    def pick(maps):                              # (D, h, w) -> the channel shown
        return maps.mean(axis=0) if channel is None else maps[channel]

    heat = pick(features.data[0])                                       # (FH, FW)
    what = "channel mean" if channel is None else f"channel {channel}"
    g = roi_sampling_geometry(box, (FH, FW), (size, size), scale, sampling_ratio=2,
                              aligned=True)
    fig = Figure(figsize=(12, 8), layout="constrained")
    axes = fig.subplots(2, 3)
    _show(axes[0, 0], _rgb(image), W, H)
    _rect(axes[0, 0], box, "box", edgecolor="yellow", lw=1.8)
    axes[0, 0].set_title(f"the box on the image ({box[2] - box[0]:g}x{box[3] - box[1]:g} px)",
                         fontsize=9)
    # Show the features around the box: a margin of 1.5 cells, inside the map.
    x0, y0 = max(0.0, g.true_box[0] - 1.5), max(0.0, g.true_box[1] - 1.5)
    x1, y1 = min(FW, g.true_box[2] + 1.5), min(FH, g.true_box[3] + 1.5)
    for ax in axes[0, 1:]:
        ax.imshow(heat, extent=(0, FW, FH, 0), cmap="viridis", interpolation="nearest")
        ax.set_xlim(x0, x1)
        ax.set_ylim(y1, y0)
        ax.set_xlabel("feature column", fontsize=8)
        ax.set_ylabel("feature row", fontsize=8)
    ax = axes[0, 1]
    for by0, by1, bx0, bx1 in g.pool_bins:
        if by1 > by0 and bx1 > bx0:                 # an empty bin reads nothing (outputs 0)
            _rect(ax, (bx0, by0, bx1, by1), "pool bin", edgecolor="white", lw=0.5, alpha=0.7)
    _rect(ax, g.pool_box, "rounded box", edgecolor="red", lw=2)
    _rect(ax, g.true_box, "true box", edgecolor="black", lw=1.5, ls="--")
    ax.set_title(f"RoIPool: rounded box (red), {size}x{size} whole-cell bins\nworst edge off "
                 f"by {g.pool_error:.2f} cells = {g.pool_error / scale:.1f} image px",
                 fontsize=9)
    ax = axes[0, 2]
    for v in np.linspace(g.align_box[1], g.align_box[3], size + 1):
        ax.plot([g.align_box[0], g.align_box[2]], [v, v], color="white", lw=0.4, alpha=0.7)
    for v in np.linspace(g.align_box[0], g.align_box[2], size + 1):
        ax.plot([v, v], [g.align_box[1], g.align_box[3]], color="white", lw=0.4, alpha=0.7)
    points = g.align_points.reshape(-1, 2)
    ax.scatter(points[:, 1], points[:, 0], s=4, c="red", zorder=3)
    _rect(ax, g.true_box, "true box", edgecolor="black", lw=1.5, ls="--")
    ax.set_title(f"RoIAlign: exact bins, {len(points)} bilinear samples\nworst edge off by "
                 f"{g.align_error:.2f} cells = {g.align_error / scale:.1f} image px",
                 fontsize=9)
    panels = ((np.clip(crop.transpose(1, 2, 0), 0, 1), f"the image under the box, {size}x{size}"),
              (pick(pooled), f"roi_pool output ({what})"),
              (pick(aligned), f"roi_align output ({what})"))
    for ax, (values, title) in zip(axes[1], panels):
        ax.imshow(values, cmap="viridis", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"RoI ops on the model's stride-{model.feature_stride} features "
                 f"({D}x{FH}x{FW}, {what} shown); the model uses roi_op="
                 f"'{model.config.roi_op}'", fontsize=10)
    return fig


# ---------------------------------------------------------------------------- mask head
def show_mask_head(model, image, detection_index=0, class_names=None):
    """For one detection: the mask head's ``M x M`` mask of every class, and the pasted one.

    Parameters
    ----------
    model : edu_seg.models.mask_rcnn.MaskRCNN
    image : (3, H, W) float array in [0, 1]
    detection_index : int
        Which of ``model(image)``'s detections (they are sorted by score, best first).
    class_names : list of str, optional

    Returns
    -------
    matplotlib.figure.Figure
        ``K + 2`` panels and a colour bar: the image with the detection's box; the
        ``M x M`` mask probabilities the head predicts for each of the ``K`` classes (the
        detected class's framed: only it is used); that mask pasted into the box at full
        size, ``(H, W)`` (the detection's ``masks`` entry).

    Notes
    -----
    As ``model.detect``: the mask head reads ``model.roi_features(features, box, M / 2)``
    of the FINAL box and predicts ``K`` logit maps; the sigmoid of the detected class's map
    is resized into the box (:func:`edu_seg.boxes.paste_masks`). The other classes' masks are
    computed and thrown away: Mask R-CNN decouples "which class" (the box head) from "which
    pixels" (the mask head), so classes never compete for a pixel.

    Examples
    --------
    >>> fig = show_mask_head(model, sample["image"], detection_index=0)  # doctest: +SKIP
    """
    image = _image("show_mask_head", image)
    _, H, W = image.shape
    det = _detect(model, image)
    D = len(det["boxes"])
    if isinstance(detection_index, bool) or not isinstance(detection_index, (int, np.integer)) \
            or not 0 <= detection_index < D:
        raise ValueError(f"show_mask_head: detection_index must be an int in 0..{D - 1} (the "
                         f"model found {D} detections in this image), got {detection_index!r}")
    c, K = model.config, model.config.num_classes
    box = det["boxes"][detection_index].astype(np.float64)
    label = int(det["labels"][detection_index])
    x = _batch_of_one(model, image)
    with _mode(model, False), no_grad():
        features = model.neck(model.backbone.features(x))
        rois = np.concatenate([[0.0], box])[None]                      # (1, 5)
        logits = model.mask_head(model.roi_features(features, rois, c.mask_size // 2)).data
    probs = 1 / (1 + np.exp(-logits[0]))                                # (K, M, M)
    pasted = paste_masks(probs[label][None].astype(np.float32), box[None], (H, W))[0]
    names = _names(class_names, K)

    fig = Figure(figsize=(2.4 * (K + 2), 3.0), layout="constrained")
    axes = fig.subplots(1, K + 2)
    _show(axes[0], _rgb(image), W, H)
    _rect(axes[0], box, "box", edgecolor="yellow", lw=1.8)
    axes[0].set_title(f"detection {detection_index}: {names[label]} "
                      f"{det['scores'][detection_index]:.2f}", fontsize=9)
    for k in range(K):
        ax = axes[k + 1]
        shown = ax.imshow(probs[k], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        used = k == label
        ax.set_title(f"{names[k]}{' (used)' if used else ''}", fontsize=9,
                     color="tab:red" if used else "black")
        for spine in ax.spines.values():
            spine.set_edgecolor("tab:red" if used else "0.6")
            spine.set_linewidth(3 if used else 1)
    axes[-1].imshow(pasted, extent=(0, W, H, 0), cmap="gray", vmin=0, vmax=1,
                    interpolation="nearest")
    axes[-1].set_xticks([])
    axes[-1].set_yticks([])
    _rect(axes[-1], box, "box", edgecolor="yellow", lw=1)
    axes[-1].set_title(f"'{names[label]}' mask pasted into the box\n({H}x{W}, 0 outside it)",
                       fontsize=9)
    fig.colorbar(shown, ax=axes[-1], fraction=0.046, label="mask probability")
    return fig
