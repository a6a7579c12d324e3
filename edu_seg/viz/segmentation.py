"""Segmentation masks over images, with a legend, in the palette every plot of the library uses.

- :func:`show_segmentation`: an image, its ground-truth mask and optionally a prediction (and
  where the prediction is wrong), each mask blended over the image.
- :func:`show_tasks`: one scene seen by the three tasks of chapter 1: classification (which
  classes are present), detection (a box and a class per object) and semantic segmentation
  (a class per pixel).

Figures are built with ``matplotlib.figure.Figure`` (no ``pyplot``), so they work headless and
show inline in Jupyter when returned from a cell.
"""
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from .palette import PALETTE, colorize
from .training import overlay

__all__ = ["show_segmentation", "show_tasks"]


def _channels_first(image):
    a = np.asarray(image)
    return a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3)


def _spatial(image):
    """(H, W) of a (C, H, W), (H, W, C) or (H, W) image."""
    a = np.asarray(image)
    return a.shape[1:] if _channels_first(a) else a.shape[:2]


def _hwc(image):
    """The image as (H, W, 3) float in [0, 1], whatever its layout."""
    a = np.asarray(image, dtype=np.float32)
    if _channels_first(a):
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.clip(a, 0, 1)


def _legend(fig, class_ids, class_names):
    names = class_names if class_names is not None else [str(c) for c in range(max(class_ids) + 1)]
    handles = [Patch(facecolor=PALETTE[c] / 255, edgecolor="0.5", label=names[c])
               for c in class_ids if c < len(names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False,
               fontsize=9)


def _classes_in(*masks):
    ids = np.unique(np.concatenate([np.asarray(m).ravel() for m in masks if m is not None]))
    return [int(c) for c in ids if 0 <= c < len(PALETTE)]


def show_segmentation(image, mask, pred=None, class_names=None, alpha=0.7):
    """Show an image with its ground-truth mask and, optionally, a prediction.

    Parameters
    ----------
    image : array, (3, H, W) or (H, W, 3) float in [0, 1]
    mask : array of int, (H, W)
        Ground-truth class ids (ids outside the palette, e.g. an ignore label, are white).
    pred : array of int, (H, W), optional
        Predicted class ids. Adds a prediction panel and an error panel (wrong pixels in red).
    class_names : list of str, optional
        Names for the legend (``class_names[c]`` is class ``c``).
    alpha : float
        Opacity of the class colours over the image.

    Returns
    -------
    matplotlib.figure.Figure
        Panels: image, ground truth, [prediction, errors], and a legend of the classes that
        occur.

    Examples
    --------
    >>> from edu_seg.data import Shapes
    >>> s = Shapes(1)[0]
    >>> fig = show_segmentation(s["image"], s["mask"], class_names=Shapes(1).class_names)
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape != tuple(_spatial(image)):
        raise ValueError(f"show_segmentation: mask must be (H, W) = {tuple(_spatial(image))} "
                         f"like the image, got shape {mask.shape}")
    panels = [("image", _hwc(image)), ("ground truth", overlay(image, mask, alpha))]
    if pred is not None:
        pred = np.asarray(pred)
        if pred.shape != mask.shape:
            raise ValueError(f"show_segmentation: pred must have the mask's shape {mask.shape}, "
                             f"got {pred.shape}")
        wrong = pred != mask
        errors = _hwc(image) * 0.35 + 0.65          # a faded image ...
        errors[wrong] = (0.85, 0.1, 0.1)            # ... with the wrong pixels in red
        panels += [("prediction", overlay(image, pred, alpha)),
                   (f"errors: {wrong.mean():.1%} of pixels", errors)]
    fig = Figure(figsize=(3.0 * len(panels), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (title, rgb) in zip(axes, panels):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    _legend(fig, _classes_in(mask, pred), class_names)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def show_tasks(sample, class_names=None):
    """One scene as classification, detection and semantic segmentation see it.

    Parameters
    ----------
    sample : dict
        A :class:`edu_seg.data.Shapes` sample: ``image`` (3, H, W), ``mask`` (H, W),
        ``boxes`` (K, 4) ``(x1, y1, x2, y2)`` and ``labels`` (K,).
    class_names : list of str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Four panels: the image; classification (the set of classes present: one label vector
        per image); detection (one box and label per object); semantic segmentation (one
        label per pixel: ``H·W`` labels).
    """
    image, mask = sample["image"], np.asarray(sample["mask"])
    boxes, labels = np.asarray(sample["boxes"]), np.asarray(sample["labels"])
    names = class_names if class_names is not None else [str(c) for c in range(mask.max() + 1)]
    rgb = _hwc(image)
    fig = Figure(figsize=(12.5, 3.9))
    ax_img, ax_cls, ax_det, ax_seg = fig.subplots(1, 4)
    ax_img.imshow(rgb)
    ax_img.set_title("image", fontsize=10)

    ax_cls.imshow(rgb)
    present = sorted(set(int(c) for c in labels))
    ax_cls.set_title("classification: which classes?", fontsize=10)
    ax_cls.text(0.03, 0.97, "\n".join(names[c] for c in present), transform=ax_cls.transAxes,
                va="top", fontsize=10, bbox=dict(facecolor="white", alpha=0.85))

    ax_det.imshow(rgb)
    ax_det.set_title(f"detection: {len(boxes)} boxes + labels", fontsize=10)
    for (x1, y1, x2, y2), c in zip(boxes, labels):
        colour = PALETTE[int(c)] / 255
        # Boxes are in pixel-edge coordinates; imshow puts pixel i's centre at i.
        ax_det.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                   ec=colour, lw=2))
        ax_det.text(x1 - 0.5, y1 - 1, names[int(c)], color="white", fontsize=8,
                    bbox=dict(facecolor=colour, edgecolor="none", pad=1))

    ax_seg.imshow(colorize(mask), interpolation="nearest")
    ax_seg.set_title(f"segmentation: {mask.size} pixel labels", fontsize=10)
    for ax in (ax_img, ax_cls, ax_det, ax_seg):
        ax.set_xticks([])
        ax.set_yticks([])
    _legend(fig, _classes_in(mask), names)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
