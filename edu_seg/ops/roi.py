"""Region ops: RoIAlign and RoIPool, differentiable with respect to the feature map.

A two-stage detector or Mask R-CNN needs one fixed-size feature per box:
``roi_align(x, boxes, 7)`` turns a feature map ``x: (N, C, H, W)`` and K boxes into
``(K, C, 7, 7)``. The semantics are torchvision's (``torchvision.ops.roi_align``/``roi_pool``); the kernels are in
``edu_seg/reference/roi.py`` (the readable NumPy loops) and ``kernels/roi.pyx`` (Cython/OpenMP).

Boxes are given in input-image coordinates, either as a ``(K, 5)`` array of rows
``(batch_index, x1, y1, x2, y2)`` or, like torchvision, as a list with one ``(K_i, 4)`` array of
``(x1, y1, x2, y2)`` per image. ``spatial_scale`` maps them onto the feature map (1/stride).

What happens with unusual boxes (all valid, all following torchvision):

- A box partly or wholly outside the image: samples outside [-1, H] × [-1, W] contribute 0
  (RoIAlign) and bins that fall off the map are empty, giving 0 (RoIPool).
- x2 < x1 or y2 < y1: RoIAlign with ``aligned=False`` treats the box as 1 feature pixel wide
  (or high); with ``aligned=True`` the width stays negative, so an adaptive sampling grid is
  empty (output 0) and a fixed ``sampling_ratio`` samples mirrored positions. RoIPool rounds
  the box and makes it at least 1 pixel wide: ``rw = max(xe - xs + 1, 1)``.
- No gradient flows to the boxes (as in torchvision); only ``x`` is differentiable.
"""
import math
import numbers

import numpy as np

from ..autograd import Function, Tensor
from ..backend import contiguous, get_array_module, is_array, kernels, to_host
from .limits import MAX_ROI_SAMPLES, check_geometry, check_output_size

__all__ = ["roi_align", "roi_pool", "boxes_to_rois"]

#: Largest |coordinate × spatial_scale| accepted. Beyond 2**24 float32 cannot tell neighbouring
#: feature pixels apart, and the kernels' integer pixel arithmetic could overflow.
MAX_FEATURE_COORD = 2.0 ** 24


# ------------------------------------------------------------------------------ validation
def _features(op, x):
    """x as a float32/float64 (N, C, H, W) Tensor with H, W >= 1."""
    data = x.data if isinstance(x, Tensor) else x
    if not is_array(data):
        raise TypeError(f"{op}: x must be a Tensor or an array, got {type(x).__name__}")
    if data.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: x must be float32 or float64, got dtype {data.dtype}")
    if data.ndim != 4:
        raise ValueError(f"{op}: x must be 4-D (N, C, H, W), got shape {data.shape}")
    if data.shape[2] < 1 or data.shape[3] < 1:
        raise ValueError(f"{op}: x must have H, W >= 1, got shape {data.shape}")
    return x if isinstance(x, Tensor) else Tensor(x)


def _numeric_array(op, name, value):
    value = value.data if isinstance(value, Tensor) else value
    try:
        arr = np.asarray(to_host(value))            # checked on the host: K x 5 numbers
    except (TypeError, ValueError) as exc:  # ragged nested lists
        raise ValueError(f"{op}: {name} is not a rectangular array of numbers ({exc})") from None
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{op}: {name} must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _is_per_image(boxes):
    return isinstance(boxes, (list, tuple)) and all(is_array(b) or isinstance(b, Tensor)
                                                    for b in boxes)


def boxes_to_rois(boxes, op="boxes_to_rois"):
    """Boxes in either accepted form as one float64 ``(K, 5)`` array ``(b, x1, y1, x2, y2)``.

    Parameters
    ----------
    boxes : (K, 5) array_like or Tensor, or a list of (K_i, 4) arrays/Tensors
        A list (or tuple) whose entries are all arrays or Tensors gives image i's boxes as its
        i-th entry (torchvision's ``convert_boxes_to_roi_format``): row j of entry i becomes
        ``(i, x1, y1, x2, y2)``. Anything else, e.g. a nested list of numbers, is read as the
        (K, 5) form.

    Returns
    -------
    rois : (K, 5) float64 array
        Only the shape is checked here; :func:`roi_align` checks the values.
    """
    if _is_per_image(boxes):
        parts = []
        for i, b in enumerate(boxes):
            b = _numeric_array(op, f"boxes[{i}]", b)
            if b.ndim != 2 or b.shape[1] != 4:
                raise ValueError(f"{op}: boxes[{i}] must have shape (K_{i}, 4) = (x1, y1, x2, "
                                 f"y2) rows for image {i}, got shape {b.shape}")
            parts.append(np.concatenate([np.full((len(b), 1), float(i)), b], axis=1))
        return np.concatenate(parts, axis=0) if parts else np.zeros((0, 5))
    rois = _numeric_array(op, "boxes", boxes)
    if rois.ndim == 2 and rois.shape[1] == 4:
        raise ValueError(f"{op}: boxes of shape {rois.shape} have no batch index; pass a (K, 5) "
                         f"array of (batch_index, x1, y1, x2, y2) rows, or a list with one "
                         f"(K_i, 4) array per image")
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"{op}: boxes must have shape (K, 5) = (batch_index, x1, y1, x2, y2) "
                         f"rows, or be a list of (K_i, 4) arrays; got shape {rois.shape}")
    return rois


def _rois(op, boxes, x, spatial_scale):
    """Validated rois, contiguous, in x's dtype (the kernels compute in it)."""
    rois = boxes_to_rois(boxes, op)
    N = x.shape[0]
    if _is_per_image(boxes) and len(boxes) > N:
        raise ValueError(f"{op}: boxes is a list of {len(boxes)} per-image arrays but x has "
                         f"only N={N} images")
    bad = ~np.isfinite(rois).all(axis=1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{op}: box {k} has a non-finite value {rois[k].tolist()}; boxes must "
                         f"be finite")
    b = rois[:, 0]
    bad = (b != np.floor(b)) | (b < 0) | (b >= N)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{op}: box {k} has batch index {float(b[k])}; it must be an integer in "
                         f"[0, N) = [0, {N})")
    too_far = np.abs(rois[:, 1:]) * spatial_scale > MAX_FEATURE_COORD
    if too_far.any():
        k = int(np.flatnonzero(too_far.any(axis=1))[0])
        raise ValueError(f"{op}: box {k} = {rois[k, 1:].tolist()} reaches beyond ±2**24 feature "
                         f"pixels at spatial_scale={spatial_scale}; coordinates × spatial_scale "
                         f"must lie within ±{MAX_FEATURE_COORD:.0f}")
    return contiguous(get_array_module(x).asarray(rois), x.dtype)   # on x's device


def _output_size(op, output_size):
    """output_size as a pair of positive Python ints."""
    pair = (output_size, output_size) if not isinstance(output_size, (tuple, list)) \
        else tuple(output_size)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                 for v in pair):
        raise TypeError(f"{op}: output_size must be an int or a pair of ints (PH, PW), "
                        f"got {output_size!r}")
    if min(pair) <= 0:
        raise ValueError(f"{op}: output_size must be positive, got {output_size!r}")
    check_geometry(op, "output_size", pair)
    return int(pair[0]), int(pair[1])


def _check_align_work(op, rois, C, output_hw, spatial_scale, sampling_ratio, aligned):
    """Refuse a call that would take more than MAX_ROI_SAMPLES bilinear samples.

    Each RoI takes PH·PW·gh·gw samples per channel, gh = sampling_ratio (or, adaptive,
    ceil(roi_h / PH) with the box's height in feature pixels), likewise gw; the kernels run
    them without checking for Ctrl-C, so a typo could otherwise keep them busy for hours.
    """
    PH, PW = output_hw
    if sampling_ratio > 0:
        per_roi = np.full(len(rois), float(PH * PW) * float(sampling_ratio) ** 2)
    else:
        off = 0.5 if aligned else 0.0
        box = rois[:, 1:].astype(np.float64) * spatial_scale - off
        roi_w, roi_h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
        if not aligned:
            roi_w, roi_h = np.maximum(roi_w, 1.0), np.maximum(roi_h, 1.0)
        gh = np.maximum(np.ceil(roi_h / PH), 0.0)
        gw = np.maximum(np.ceil(roi_w / PW), 0.0)
        per_roi = PH * PW * gh * gw
    total = float(per_roi.sum()) * C
    if total > MAX_ROI_SAMPLES:
        k = int(np.argmax(per_roi))
        how = (f"use a smaller sampling_ratio (2 is the usual choice; {sampling_ratio} takes "
               f"{sampling_ratio}x{sampling_ratio} samples per bin)" if sampling_ratio > 0 else
               "pass a fixed sampling_ratio (e.g. 2) instead of the adaptive -1, which takes "
               "ceil(box size / output size) samples per bin side")
        raise ValueError(f"{op}: this call would take {total:.3g} bilinear samples (C={C} "
                         f"channels x {len(rois)} boxes x PH*PW*gh*gw; box {k} alone needs "
                         f"{per_roi[k]:.3g} per channel), above the limit of "
                         f"{MAX_ROI_SAMPLES:.0e} (edu_seg.ops.limits.MAX_ROI_SAMPLES); {how}, "
                         f"keep the boxes inside the image, or check spatial_scale="
                         f"{spatial_scale} (1/stride of x, e.g. 1/16) - a smaller one shrinks "
                         f"the boxes on the feature map")


def _spatial_scale(op, spatial_scale):
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, numbers.Real):
        raise TypeError(f"{op}: spatial_scale must be a real number, got {spatial_scale!r}")
    if not (math.isfinite(spatial_scale) and spatial_scale > 0):
        raise ValueError(f"{op}: spatial_scale must be finite and > 0 (feature pixels per "
                         f"image pixel, e.g. 1/16), got {spatial_scale!r}")
    return float(spatial_scale)


# --------------------------------------------------------------------------------- RoIAlign
class RoIAlignFunction(Function):
    """RoIAlign as an autograd Function; ``rois`` and the options are not differentiable."""

    @staticmethod
    def forward(ctx, x, *, rois, output_hw, spatial_scale, sampling_ratio, aligned):
        ctx.rois, ctx.x_shape = rois, x.shape
        ctx.options = (output_hw, spatial_scale, sampling_ratio, aligned)
        ctx.K = kernels("roi", x, rois)    # backward runs on the backend that ran forward
        return ctx.K.roi_align_forward(contiguous(x), rois, *ctx.options)

    @staticmethod
    def backward(ctx, dy):
        dy = contiguous(dy, ctx.rois.dtype)
        return ctx.K.roi_align_backward(dy, ctx.rois, ctx.x_shape, *ctx.options)


def roi_align(x, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """RoIAlign (Mask R-CNN): a ``PH × PW`` feature per box, read by bilinear sampling.

    Parameters
    ----------
    x : (N, C, H, W) Tensor or array, float32 or float64
        Feature map.
    boxes : (K, 5) array/Tensor of ``(batch_index, x1, y1, x2, y2)``, or a list of N_i ≤ N
        ``(K_i, 4)`` arrays (one per image)
        Boxes in input-image coordinates; converted to x's dtype.
    output_size : int or (int, int)
        ``(PH, PW)``.
    spatial_scale : float
        Feature pixels per image pixel (1/stride of x), > 0.
    sampling_ratio : int
        Sample points per bin side; ``<= 0`` means ``ceil(bin size)`` (adaptive).
    aligned : bool
        True: shift the box by half a feature pixel so samples sit where the box really is
        (use this; False reproduces the original, misaligned Mask R-CNN op).

    Returns
    -------
    Tensor (K, C, PH, PW)
        Differentiable with respect to ``x``.

    Raises
    ------
    TypeError
        x not a float32/float64 array, non-numeric boxes, output_size not ints, spatial_scale
        not a number, sampling_ratio not an int, aligned not a bool.
    ValueError
        x not 4-D or empty in H or W; boxes not (K, 5) (or a list of (K_i, 4)); a batch index
        outside [0, N) or not an integer; a non-finite coordinate; a coordinate beyond ±2**24
        feature pixels; output_size <= 0 or above 2**24; spatial_scale <= 0 or not finite;
        an output above :func:`edu_seg.ops.limits.max_bytes`; more than
        ``MAX_ROI_SAMPLES`` = 2·10⁹ bilinear samples in all (C · Σ_boxes PH·PW·gh·gw; about
        a minute of compute, which the kernels would spend deaf to Ctrl-C): the message says
        how many the call needs and how to reduce them.

    Notes
    -----
    ``y[k, c, ph, pw] = (1/count) Σ bilinear(x[b, c], y1' + (ph + (iy+½)/gh)·bin_h,
    x1' + (pw + (ix+½)/gw)·bin_w)`` over the ``gh × gw`` grid of the bin, where
    ``(x1', y1')`` is the box corner times ``spatial_scale``, minus ½ if ``aligned``.
    The full definition, including the edge cases, is in ``edu_seg.reference.roi``; the
    points it samples are given by ``edu_seg.reference.roi.roi_align_sample_points``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(36.0).reshape(1, 1, 6, 6)           # value 6y + x
    >>> roi_align(x, [[0, 0, 2, 2, 4]], 2, aligned=True).numpy()[0, 0]
    array([[12., 13.],
           [18., 19.]])
    """
    op = "roi_align"
    x = _features(op, x)
    output_hw = _output_size(op, output_size)
    spatial_scale = _spatial_scale(op, spatial_scale)
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, (int, np.integer)):
        raise TypeError(f"{op}: sampling_ratio must be an int (<= 0 for adaptive), got "
                        f"{sampling_ratio!r}")
    if not isinstance(aligned, (bool, np.bool_)):
        raise TypeError(f"{op}: aligned must be a bool, got {aligned!r}")
    rois = _rois(op, boxes, x.data, spatial_scale)
    check_output_size(op, (len(rois), x.shape[1]) + output_hw, x.dtype,
                      f"{len(rois)} boxes and output_size={output_size!r}")
    _check_align_work(op, rois, x.shape[1], output_hw, spatial_scale, int(sampling_ratio),
                      bool(aligned))
    return RoIAlignFunction.apply(x, rois=rois, output_hw=output_hw, spatial_scale=spatial_scale,
                                  sampling_ratio=int(sampling_ratio), aligned=bool(aligned))


# ---------------------------------------------------------------------------------- RoIPool
class RoIPoolFunction(Function):
    """RoIPool as an autograd Function; the argmax of the forward routes the gradient."""

    @staticmethod
    def forward(ctx, x, *, rois, output_hw, spatial_scale):
        ctx.K = kernels("roi", x, rois)    # backward runs on the backend that ran forward
        y, argmax = ctx.K.roi_pool_forward(contiguous(x), rois, output_hw,
                                           spatial_scale)
        ctx.rois, ctx.argmax, ctx.x_shape = rois, argmax, x.shape
        return y

    @staticmethod
    def backward(ctx, dy):
        dy = contiguous(dy, ctx.rois.dtype)
        return ctx.K.roi_pool_backward(dy, ctx.argmax, ctx.rois, ctx.x_shape)


def roi_pool(x, boxes, output_size, spatial_scale=1.0):
    """RoIPool (Fast R-CNN): the maximum of each bin of the box, on whole feature pixels.

    Parameters
    ----------
    x : (N, C, H, W) Tensor or array, float32 or float64
    boxes : (K, 5) array/Tensor, or a list of (K_i, 4) arrays
        As in :func:`roi_align`.
    output_size : int or (int, int)
    spatial_scale : float

    Returns
    -------
    Tensor (K, C, PH, PW)
        Differentiable with respect to ``x``: the gradient of each output goes to the pixel
        that held the maximum (the first one, in row-major order, on a tie).

    Raises
    ------
    TypeError, ValueError
        As :func:`roi_align` (without the sampling_ratio/aligned checks).

    Notes
    -----
    The box is rounded to whole pixels (``xs = round(x1·s)``, ...) and each bin's edges are
    floored/ceiled: ``hstart = floor(ph·bin_h) + ys``, ``hend = ceil((ph+1)·bin_h) + ys``,
    clipped to the map. An empty bin gives 0. These two roundings are why RoIAlign was
    invented; ``edu_seg.reference.roi.roi_pool_bins`` returns the bins for a picture.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(36.0).reshape(1, 1, 6, 6)
    >>> roi_pool(x, [[0, 0, 2, 2, 4]], 2).numpy()[0, 0]
    array([[19., 20.],
           [25., 26.]])
    """
    op = "roi_pool"
    x = _features(op, x)
    output_hw = _output_size(op, output_size)
    spatial_scale = _spatial_scale(op, spatial_scale)
    rois = _rois(op, boxes, x.data, spatial_scale)
    check_output_size(op, (len(rois), x.shape[1]) + output_hw, x.dtype,
                      f"{len(rois)} boxes and output_size={output_size!r}")
    return RoIPoolFunction.apply(x, rois=rois, output_hw=output_hw, spatial_scale=spatial_scale)
