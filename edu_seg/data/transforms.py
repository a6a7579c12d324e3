"""Joint image/mask augmentation: every geometric change is applied to the image AND its labels.

Segmentation labels are pictures too: if the image is flipped, cropped or rescaled, the mask
(and the instance masks and boxes, when the sample has them) must move exactly the same way,
or the model is taught to predict labels one pixel off. Each transform here takes a sample dict
and returns a new one (the input is never modified)::

    sample = transform(sample, rng)     # rng: a np.random.Generator

The random generator is an explicit argument, never a hidden global, so that augmentation is
reproducible: the ``DataLoader`` hands every sample a generator seeded by
``(seed, epoch, index)``, and a resumed run sees exactly the same augmented images.

Keys a sample may have (those of ``Shapes`` and ``FolderDataset``):

- ``image``: (C, H, W) float — resampled bilinearly (the only key colour changes touch)
- ``mask``: (H, W) int — resampled with nearest neighbour: class ids must not be blended
- ``instance_masks``: (K, H, W) bool, ``labels``: (K,) int, ``boxes``: (K, 4) float
  ``(x1, y1, x2, y2)`` in pixel-edge coordinates — instance masks move with the mask;
  instances left with no pixel (cropped away, shrunk to nothing) are dropped together with
  their label; boxes are then recomputed as the tight boxes of the instance masks, so they
  always agree. A sample with boxes but no instance masks has its boxes moved arithmetically.

Other keys are passed through unchanged.
"""
import numpy as np

from ..backend import host_kernels
from ..boxes import masks_to_boxes


def _size_of(sample, who):
    """(H, W) of a sample, after checking that the image and mask agree."""
    image, mask = sample["image"], sample["mask"]
    if image.ndim != 3 or mask.ndim != 2 or image.shape[1:] != mask.shape:
        raise ValueError(f"{who}: needs image (C, H, W) and mask (H, W) of the same H, W; got "
                         f"image {image.shape} and mask {mask.shape}")
    return mask.shape


def _moved(sample, image, mask, masks, move_boxes):
    """A new sample with the geometric results; instance keys kept consistent.

    ``masks`` are the transformed instance masks (or None if the sample has none);
    ``move_boxes`` maps a (K, 4) box array to the new geometry (used only without masks).
    """
    out = dict(sample, image=image, mask=mask)
    if masks is not None:
        keep = masks.any(axis=(1, 2))
        out["instance_masks"] = masks[keep]
        out["boxes"] = masks_to_boxes(masks[keep])
    elif "boxes" in sample:
        boxes = move_boxes(np.asarray(sample["boxes"], dtype=np.float32))
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        out["boxes"] = boxes[keep]
    else:
        return out
    if "labels" in sample:
        out["labels"] = np.asarray(sample["labels"])[keep]
    return out


class Compose:
    """Apply transforms one after the other, all drawing from the same generator.

    Parameters
    ----------
    transforms : sequence of callables ``t(sample, rng) -> sample``

    Examples
    --------
    >>> t = Compose([RandomScale((0.75, 1.25)), RandomCrop(48, mask_fill=0), RandomFlip()])
    >>> # sample = t(sample, np.random.default_rng(0))
    """

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: every transform must be callable, got {t!r}")

    def __call__(self, sample, rng):
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self):
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"


class RandomFlip:
    """Mirror the sample left-right with probability ``p``.

    Parameters
    ----------
    p : float in [0, 1]

    Notes
    -----
    Column ``x`` goes to ``W - 1 - x``; a box ``(x1, y1, x2, y2)`` in pixel-edge coordinates
    goes to ``(W - x2, y1, W - x1, y2)``. Flipping twice is the identity.
    """

    def __init__(self, p=0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomFlip: p must be in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, sample, rng):
        H, W = _size_of(sample, "RandomFlip")
        if rng.random() >= self.p:
            return dict(sample)
        masks = sample.get("instance_masks")

        def flip(a):  # a copy, so the result owns C-contiguous memory
            return np.ascontiguousarray(a[..., ::-1])

        def move(b):
            return np.stack([W - b[:, 2], b[:, 1], W - b[:, 0], b[:, 3]], axis=1)

        return _moved(sample, flip(sample["image"]), flip(sample["mask"]),
                      None if masks is None else flip(masks), move)

    def __repr__(self):
        return f"RandomFlip(p={self.p})"


class RandomCrop:
    """Cut a random ``size`` window out of the sample.

    Parameters
    ----------
    size : int or (int, int)
        Output ``(h, w)``; an int means a square.
    mask_fill : int, optional
        If the sample is smaller than ``size``, it is first padded at the bottom/right: the image
        with 0 and the mask with ``mask_fill`` — use the loss's ``ignore_index`` so the padding
        is not learned, or 0 to call it background. None (default): a smaller sample raises
        ``ValueError``.

    Notes
    -----
    The window's top-left corner is uniform over every position where it fits; a box moves by
    ``(-left, -top)`` and is clipped to the window.
    """

    def __init__(self, size, mask_fill=None):
        size = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
            raise ValueError(f"RandomCrop: size must be a positive int or (h, w), got {size!r}")
        self.size = (int(size[0]), int(size[1]))
        self.mask_fill = mask_fill

    def __call__(self, sample, rng):
        H, W = _size_of(sample, "RandomCrop")
        h, w = self.size
        image, mask, masks = sample["image"], sample["mask"], sample.get("instance_masks")
        if H < h or W < w:
            if self.mask_fill is None:
                raise ValueError(f"RandomCrop: sample is {H}x{W} (HxW), smaller than the crop "
                                 f"{h}x{w}; pass mask_fill= (e.g. the loss's ignore_index) "
                                 f"to pad it")
            pad = ((0, max(h - H, 0)), (0, max(w - W, 0)))
            image = np.pad(image, ((0, 0),) + pad)
            mask = np.pad(mask, pad, constant_values=self.mask_fill)
            masks = None if masks is None else np.pad(masks, ((0, 0),) + pad)
            H, W = mask.shape
        top, left = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        win = (slice(top, top + h), slice(left, left + w))

        def move(b):
            b = b - np.array([left, top, left, top], dtype=np.float32)
            return np.clip(b, 0, [w, h, w, h]).astype(np.float32)

        return _moved(sample, np.ascontiguousarray(image[(slice(None),) + win]),
                      np.ascontiguousarray(mask[win]),
                      None if masks is None else np.ascontiguousarray(masks[(slice(None),) + win]),
                      move)

    def __repr__(self):
        return f"RandomCrop(size={self.size}, mask_fill={self.mask_fill})"


def resize_bilinear(x, out_h, out_w):
    """Resize the last two axes of a float array ``x`` (..., H, W) bilinearly.

    Runs the library's own bilinear kernel, i.e. ``F.interpolate(x, size=(out_h, out_w),
    mode="bilinear", align_corners=False)``: output centre ``o + 0.5`` samples the input at
    ``(o + 0.5) * H / out_h - 0.5``.
    """
    lead = x.shape[:-2]
    planes = np.ascontiguousarray(x.reshape((1, -1) + x.shape[-2:]))  # (1, prod(lead), H, W)
    y = host_kernels("resample").interpolate_bilinear_forward(planes, (out_h, out_w), False, None)
    return y.reshape(lead + (out_h, out_w))


def resize_nearest(x, out_h, out_w):
    """Resize the last two axes of ``x`` (..., H, W) by nearest neighbour (labels, masks).

    Each output pixel takes the input pixel that contains its centre, the same mapping as
    :func:`resize_bilinear`, so a resized mask stays aligned with the resized image.
    """
    def index(n_in, n_out):  # floor of the centre's input coordinate (o + 0.5) * n_in / n_out
        return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp), n_in - 1)

    iy, ix = index(x.shape[-2], out_h), index(x.shape[-1], out_w)
    return x[..., iy[:, None], ix[None, :]]


class RandomScale:
    """Resize the sample by a random factor drawn uniformly from ``scales = (low, high)``.

    Parameters
    ----------
    scales : (float, float)
        ``0 < low <= high``. The output is ``round(H * s) x round(W * s)`` (at least 1x1).

    Notes
    -----
    The image is resampled bilinearly, the mask and instance masks by nearest neighbour, with
    the same pixel-centre mapping (:func:`resize_bilinear`, :func:`resize_nearest`). Follow it
    with a ``RandomCrop`` to get a fixed training size back.
    """

    def __init__(self, scales=(0.75, 1.25)):
        lo, hi = scales
        if not 0 < lo <= hi:
            raise ValueError(f"RandomScale: scales must be (low, high) with 0 < low <= high, "
                             f"got {scales!r}")
        self.scales = (float(lo), float(hi))

    def __call__(self, sample, rng):
        H, W = _size_of(sample, "RandomScale")
        s = rng.uniform(*self.scales)
        OH, OW = max(1, round(H * s)), max(1, round(W * s))
        masks = sample.get("instance_masks")
        factor = np.array([OW / W, OH / H, OW / W, OH / H], dtype=np.float32)
        return _moved(sample, resize_bilinear(sample["image"], OH, OW),
                      resize_nearest(sample["mask"], OH, OW),
                      None if masks is None else resize_nearest(masks, OH, OW),
                      lambda b: b * factor)

    def __repr__(self):
        return f"RandomScale(scales={self.scales})"


class ColorJitter:
    """Randomly change brightness, contrast and saturation of the image (labels untouched).

    Parameters
    ----------
    brightness, contrast, saturation : float >= 0
        Each factor ``f`` is drawn uniformly from ``[max(0, 1 - v), 1 + v]``; 0 disables it.

    Notes
    -----
    Applied in this order, then clipped to [0, 1], with the luma
    ``gray = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, as torchvision):

    - brightness: ``x * f``
    - contrast: ``mean(gray) + f (x - mean(gray))``
    - saturation: ``gray + f (x - gray)`` per pixel (needs 3 channels)
    """

    def __init__(self, brightness=0.2, contrast=0.2, saturation=0.2):
        for name, v in (("brightness", brightness), ("contrast", contrast),
                        ("saturation", saturation)):
            if not v >= 0:
                raise ValueError(f"ColorJitter: {name} must be >= 0, got {v!r}")
        self.brightness, self.contrast, self.saturation = (float(brightness), float(contrast),
                                                           float(saturation))

    @staticmethod
    def _gray(x):
        return 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]  # (H, W)

    def __call__(self, sample, rng):
        x = sample["image"]
        if self.saturation > 0 and x.shape[0] != 3:
            raise ValueError(f"ColorJitter: saturation needs a 3-channel RGB image, got shape "
                             f"{x.shape}")
        b, c, s = (rng.uniform(max(0.0, 1 - v), 1 + v)
                   for v in (self.brightness, self.contrast, self.saturation))
        dt = x.dtype.type
        x = x * dt(b)
        if self.contrast > 0:
            m = self._gray(x).mean() if x.shape[0] == 3 else x.mean()
            x = dt(m) + dt(c) * (x - dt(m))
        if self.saturation > 0:
            g = self._gray(x)
            x = g + dt(s) * (x - g)
        return dict(sample, image=np.clip(x, 0, 1).astype(sample["image"].dtype, copy=False))

    def __repr__(self):
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation})")
