"""``Shapes``: synthetic scenes of coloured shapes, generated on the fly, with every label a
segmentation chapter needs (semantic mask, instance masks, boxes, instance classes).

Real datasets are slow to download and hard to reason about; a synthetic one can be made to
stress exactly one idea. Each *variant* below is built so that one idea decides the score:

``"default"``
    1 to ``max_objects`` shapes (circle, square, triangle, ...; one shape per class) of varied
    size, colour and position over a textured, noisy background; later shapes occlude earlier
    ones (by at most about half). The hue is drawn per instance from the same range for every
    class, so colour says nothing about the class: the **shape** decides. Learnable to
    mIoU >= 0.9 by a small U-Net in a couple of CPU minutes at 64x64.
``"scale"``
    Object diameters are log-uniform from 3 px to the whole image, drawn largest first so the
    small ones stay visible. A model must handle **scale**: tiny objects vanish after a few
    poolings, huge ones exceed a small receptive field.
``"context"``
    The image is split into two regions with different background textures (stripes and dots,
    same colour). Classes 1 and 2 are the *same* shape with the *same* colour (circles sharing
    one colour per image); a circle is class 1 on the striped region and class 2 on the dotted
    one. Objects never straddle the border. Only the **surroundings** tell the two classes
    apart, and for pixels deep inside a large circle the surroundings are far away: the
    receptive field / global context decides. Classes 3.. are ordinary shapes.
``"thin"``
    Every object is an outline 1-2 px wide; about half hold a nested copy of themselves 1-2 px
    inside, so strokes are separated by background **gaps** of 1-2 px. Output **resolution**
    decides: a model that predicts at 1/8 resolution and upsamples cannot draw them.
``"boundary"``
    Objects touch without overlapping (each new one is slid against an earlier one until
    their pixels are adjacent), and all objects of an image share one hue with only small
    differences in saturation and brightness. The faint **boundaries** between touching
    objects of different classes decide the score.
``"nonconvex"``
    Placed like ``"default"``, but every class is a non-convex shape (:data:`NONCONVEX`:
    ring, cross, crescent) that covers only 40-60% of its bounding box. Made for weak
    supervision from boxes: a **filled box** is a poor mask here (it paints a ring's hole and
    a cross's corners), so only a method that finds the shape inside the box scores well.

Every sample is a pure function of ``(seed, index)`` — its random generator is
``np.random.default_rng([seed, index])`` — so sample ``i`` is identical whether it is made
alone, in a batch or in another process, and nothing needs to be stored: drawing a 64x64 scene
with NumPy coordinate grids costs a fraction of a millisecond, less than a training step
spends on it, so samples are regenerated on every access instead of cached.

Shapes are drawn from signed distance functions (SDFs): ``f(x, y) < 0`` inside, ``> 0``
outside, ``|f|`` about the distance to the edge in pixels. One function per shape gives the
filled shape (``f <= 0``), an outline of width ``w`` (``-w < f <= 0``) and an inset copy
(``f <= -d``) with no extra code.
"""
import colorsys
import math

import numpy as np

from ..boxes import masks_to_boxes

#: Foreground shapes in class order: class ``c`` of the default variant is ``SHAPES[c - 1]``.
SHAPES = ("circle", "square", "triangle", "ring", "cross", "diamond", "crescent")
#: The classes of the ``"nonconvex"`` variant, in class order.
NONCONVEX = ("ring", "cross", "crescent")
#: The scene variants (see the module docstring).
VARIANTS = ("default", "scale", "context", "thin", "boundary", "nonconvex")

_SQRT3_2 = math.sqrt(3.0) / 2.0
# Per-pixel noise on the final image, uniform in [-a, a] (std a / sqrt(3) ~ 0.03): visible but
# not a struggle. Uniform rather than Gaussian because it is several times cheaper to draw,
# and a CNN cannot tell the difference.
_NOISE_AMPLITUDE = 0.05


def _sdf(kind, dx, dy, r):
    """Signed distance (pixels, negative inside) of shape ``kind`` of size ``r``.

    Parameters
    ----------
    kind : str
        One of :data:`SHAPES`.
    dx : ndarray, shape (1, W)
        ``x - cx`` for every pixel column (pixel centres are at ``i + 0.5``).
    dy : ndarray, shape (H, 1)
        ``y - cy`` for every pixel row.
    r : float
        Size: the radius of a circle; the other shapes are scaled to a similar area.

    Returns
    -------
    ndarray, shape (H, W)
        Exact distance inside each shape (what outlines and insets use); outside it is a
        distance-like positive number.
    """
    ax, ay = np.abs(dx), np.abs(dy)
    if kind == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    if kind == "square":  # axis-aligned, half side 0.85 r
        return np.maximum(ax, ay) - 0.85 * r
    if kind == "triangle":
        # Equilateral, apex up, circumradius R = 1.25 r: the largest signed distance to its
        # three edge lines, whose outward normals are (0, 1) and (+-sqrt(3)/2, -1/2).
        R = 1.25 * r
        edges = np.maximum(dy, np.maximum(_SQRT3_2 * dx - 0.5 * dy, -_SQRT3_2 * dx - 0.5 * dy))
        return edges - 0.5 * R  # the inradius of an equilateral triangle is R / 2
    if kind == "ring":  # annulus from 0.5 r to r
        return np.abs(np.sqrt(dx * dx + dy * dy) - 0.75 * r) - 0.25 * r
    if kind == "cross":  # union of two bars = minimum of their distances
        return np.minimum(np.maximum(ax - 0.3 * r, ay - r), np.maximum(ax - r, ay - 0.3 * r))
    if kind == "diamond":  # square rotated 45 degrees, half diagonal 1.2 r
        return (ax + ay - 1.2 * r) / math.sqrt(2.0)
    if kind == "crescent":
        # A disc of radius 1.1 r minus a disc of radius 0.85 r shifted 0.5 r to the right: the
        # intersection of "inside the first" and "outside the second" is the maximum of the
        # first distance and the negated second.
        bite = np.sqrt((dx - 0.5 * r) ** 2 + dy * dy) - 0.85 * r
        return np.maximum(np.sqrt(dx * dx + dy * dy) - 1.1 * r, -bite)
    raise ValueError(f"unknown shape {kind!r}")


def _hsv(h, s, v):
    """An RGB colour, shape (3,) float32, from hue/saturation/value in [0, 1] (hue wraps)."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


    rows, cols = masks.any(axis=2), masks.any(axis=1)  # (K, H), (K, W)
    H, W = masks.shape[1:]
    # argmax finds the first True; on the reversed axis it finds the last one.
    boxes[:, 0] = cols.argmax(axis=1)
    boxes[:, 1] = rows.argmax(axis=1)
    boxes[:, 2] = W - cols[:, ::-1].argmax(axis=1)
    boxes[:, 3] = H - rows[:, ::-1].argmax(axis=1)
    return boxes


class Shapes:
    """Synthetic segmentation scenes, generated on the fly and deterministic per (seed, index).

    Parameters
    ----------
    n : int
        Number of samples (``len(dataset)``).
    size : int
        Image height and width in pixels (at least 16).
    num_classes : int
        Classes including background (class 0). ``"default"``, ``"scale"``, ``"thin"`` and
        ``"boundary"``: ``2 .. 1 + len(SHAPES)``, class ``c`` is ``SHAPES[c - 1]``.
        ``"nonconvex"``: ``2 .. 1 + len(NONCONVEX)``, class ``c`` is ``NONCONVEX[c - 1]``.
        ``"context"``: ``3 .. 2 + len(SHAPES) - 1``: classes 1 and 2 are circles on stripes
        and on dots, classes 3.. are ``SHAPES[1:]``.
    variant : str
        One of :data:`VARIANTS` (see the module docstring).
    seed : int
        Different seeds give independent datasets (use one for training, another for
        validation).
    max_objects : int
        Each scene has between 1 (2 for ``"boundary"``) and ``max_objects`` objects, plus
        nested copies in ``"thin"``. Objects that end up invisible are dropped.

    Attributes
    ----------
    class_names : list of str
        ``num_classes`` names, ``class_names[0] == "background"``.

    Notes
    -----
    ``dataset[i]`` is a dict of new arrays (``K`` = visible instances, may differ per sample):

    - ``image``: (3, H, W) float32 in [0, 1]
    - ``mask``: (H, W) int64 semantic labels, 0 = background
    - ``instance_masks``: (K, H, W) bool, the *visible* pixels of each instance; their union
      per class is exactly ``mask``
    - ``boxes``: (K, 4) float32 ``(x1, y1, x2, y2)``, the tight box of each instance mask in
      pixel-edge coordinates (see :func:`edu_seg.boxes.masks_to_boxes`)
    - ``labels``: (K,) int64 class of each instance (1 .. num_classes-1)

    Examples
    --------
    >>> ds = Shapes(100, size=64, num_classes=4, seed=0)
    >>> s = ds[3]
    >>> s["image"].shape, s["mask"].shape, ds.class_names
    ((3, 64, 64), (64, 64), ['background', 'circle', 'square', 'triangle'])
    """

    def __init__(self, n, size=64, num_classes=4, variant="default", seed=0, max_objects=4):
        def need_int(name, value, low):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < low:
                raise ValueError(f"Shapes: {name} must be an int >= {low}, got {value!r}")
            return int(value)

        self.n = need_int("n", n, 0)
        self.size = need_int("size", size, 16)
        self.max_objects = need_int("max_objects", max_objects, 1)
        self.seed = need_int("seed", seed, 0)
        if variant not in VARIANTS:
            raise ValueError(f"Shapes: variant must be one of {VARIANTS}, got {variant!r}")
        self.variant = variant
        if variant == "context":
            hi = 2 + len(SHAPES) - 1
            self.class_names = ["background", "circle-on-stripes", "circle-on-dots",
                                *SHAPES[1:]]
            # The shape drawn for each class (index 0 unused): both twins are circles.
            self._kinds = ("", "circle", "circle", *SHAPES[1:])
            low = 3
        elif variant == "nonconvex":
            hi = 1 + len(NONCONVEX)
            self.class_names = ["background", *NONCONVEX]
            self._kinds = ("", *NONCONVEX)
            low = 2
        else:
            hi = 1 + len(SHAPES)
            self.class_names = ["background", *SHAPES]
            self._kinds = ("", *SHAPES)
            low = 2
        self.num_classes = need_int("num_classes", num_classes, low)
        if self.num_classes > hi:
            raise ValueError(f"Shapes: variant {variant!r} supports num_classes up to {hi}, "
                             f"got {num_classes}")
        self.class_names = self.class_names[:self.num_classes]
        # Pixel-centre coordinates as a row and a column: arithmetic broadcasts them to the
        # (H, W) grid without ever materialising a meshgrid. float32 represents them exactly
        # and halves the cost of every grid operation.
        self._x = (np.arange(self.size, dtype=np.float32) + 0.5)[None, :]  # (1, W)
        self._y = (np.arange(self.size, dtype=np.float32) + 0.5)[:, None]  # (H, 1)

    def __len__(self):
        return self.n

    def __repr__(self):
        return (f"Shapes(n={self.n}, size={self.size}, num_classes={self.num_classes}, "
                f"variant={self.variant!r}, seed={self.seed}, max_objects={self.max_objects})")

    def __getitem__(self, index):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"Shapes: index must be an int, got {type(index).__name__}")
        if not -self.n <= index < self.n:
            raise IndexError(f"Shapes: index {index} out of range for {self.n} samples")
        index = int(index) % self.n
        rng = np.random.default_rng([self.seed, index])
        draw = getattr(self, f"_draw_{self.variant}")
        background, objects = draw(rng)  # (3, H, W), list of (mask (H, W) bool, class, rgb)
        return self._compose(rng, background, objects)

    # ------------------------------------------------------------------------ building blocks
    def _shape(self, cls, cx, cy, r):
        """The SDF, shape (H, W), of the shape of class ``cls`` centred at (cx, cy)."""
        return _sdf(self._kinds[cls], self._x - cx, self._y - cy, r)

    def _wave(self, k, theta, phase):
        """``sin(k (x cos(theta) + y sin(theta)) + phase)`` on the grid, shape (H, W), float32.

        A plane wave is separable: with ``u = k x cos(theta) + phase`` (one value per column) and
        ``v = k y sin(theta)`` (one per row), ``sin(u + v) = sin u cos v + cos u sin v``. So
        2 x S sines instead of S x S, which is most of the cost of a background.
        """
        u = (k * math.cos(theta)) * self._x + phase  # (1, W)
        v = (k * math.sin(theta)) * self._y          # (H, 1)
        return np.sin(u) * np.cos(v) + np.cos(u) * np.sin(v)

    def _grating(self, rng, period_lo, period_hi, amp_lo, amp_hi):
        """A random sinusoidal grating, shape (H, W): a plane wave of random direction."""
        theta, phase = rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi)
        k = 2 * math.pi / rng.uniform(period_lo, period_hi)
        return np.float32(rng.uniform(amp_lo, amp_hi)) * self._wave(k, theta, phase)

    def _background(self, rng):
        """A dull, dark base colour plus two faint random gratings, shape (3, H, W).

        Objects are saturated and bright, the background grey-ish and dark, so objects stand
        out; the gratings are texture the model must learn to ignore.
        """
        base = _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.15, 0.45))
        texture = self._grating(rng, 6, 24, 0.03, 0.08) + self._grating(rng, 6, 24, 0.03, 0.08)
        return base[:, None, None] + texture[None]

    @staticmethod
    def _object_colour(rng):
        """A random saturated, bright colour; the hue range is the same for every class."""
        return _hsv(rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.65, 1.0))

    def _count(self, rng, low=1):
        return int(rng.integers(min(low, self.max_objects), self.max_objects + 1))

    def _compose(self, rng, background, objects):
        """Paint objects in order (later ones on top), add noise, and derive every label."""
        S = self.size
        owner = np.full((S, S), -1, dtype=np.int64)  # which object is visible at each pixel
        image = background  # a fresh array from the _draw_* method: painted in place
        for k, (m, _, colour) in enumerate(objects):
            owner[m] = k
            np.copyto(image, colour[:, None, None], where=m)  # paint over what lies below
        noise = rng.random(image.shape, dtype=np.float32)  # uniform in [0, 1)
        image += np.float32(2 * _NOISE_AMPLITUDE) * (noise - np.float32(0.5))
        np.clip(image, 0.0, 1.0, out=image)

        # Instances that are still visible, in drawing order; fully occluded ones are dropped.
        visible = np.flatnonzero(np.bincount(owner.ravel() + 1, minlength=len(objects) + 1)[1:])
        instance_masks = owner[None] == visible[:, None, None]
        labels = np.array([objects[k][1] for k in visible], dtype=np.int64)
        # Semantic mask: a lookup table from owner (-1 = background) to class.
        lut = np.array([0] + [cls for _, cls, _ in objects], dtype=np.int64)
        return {"image": image, "mask": lut[owner + 1], "instance_masks": instance_masks,
                "boxes": masks_to_boxes(instance_masks), "labels": labels}

    # ------------------------------------------------------------------------------ variants
    def _draw_default(self, rng):
        """Shapes anywhere, occluding each other by at most about half."""
        S, objects, placed = self.size, [], []
        for _ in range(self._count(rng)):
            cls = int(rng.integers(1, self.num_classes))
            r = rng.uniform(0.1, 0.22) * S
            # Rejection sampling on centres: two objects may overlap, but their centres stay at
            # least the larger radius apart, so no shape loses more than about half to another.
            for _try in range(10):
                cx, cy = rng.uniform(r, S - r, size=2)
                if all(math.hypot(cx - px, cy - py) >= max(r, pr) for px, py, pr in placed):
                    placed.append((cx, cy, r))
                    objects.append((self._shape(cls, cx, cy, r) <= 0, cls,
                                    self._object_colour(rng)))
                    break
        return self._background(rng), objects

    def _draw_nonconvex(self, rng):
        """The default placement; only the shapes differ (their classes are NONCONVEX)."""
        return self._draw_default(rng)

    def _draw_scale(self, rng):
        """Log-uniform sizes from 3 px to the image, drawn largest first."""
        S = self.size
        k = self._count(rng)
        # Log-uniform radius: as many objects between 2 and 4 px as between 16 and 32 px.
        radii = np.sort(np.exp(rng.uniform(math.log(1.5), math.log(S / 2), size=k)))[::-1]
        objects = []
        for r in radii:  # largest first, so the small ones are painted on top
            cls = int(rng.integers(1, self.num_classes))
            # Big objects stay near the middle (an image full of one shape shows no shape).
            cx, cy = rng.uniform(0.5 * r, S - 0.5 * r, size=2)
            objects.append((self._shape(cls, cx, cy, r) <= 0, cls, self._object_colour(rng)))
        return self._background(rng), objects

    def _draw_context(self, rng):
        """Two textured regions; a circle's class is the region it sits in."""
        S = self.size
        # Split the image at a random row or column into two regions.
        axis = int(rng.integers(2))  # 0: a horizontal border (rows), 1: a vertical one
        split = rng.uniform(0.35, 0.65) * S
        high_is_dotted = rng.random() < 0.5  # which side of the border carries the dots
        coord = self._y if axis == 0 else self._x
        dotted = (coord >= split) == high_is_dotted  # (H, 1) or (1, W)
        # Same base colour everywhere; only the texture differs between the regions.
        base = _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.2, 0.45))
        k = 2 * math.pi / rng.uniform(5, 8)
        stripes = 0.1 * self._wave(k, rng.uniform(0, math.pi), 0.0)
        dots = 0.2 * (np.cos(k * self._x) * np.cos(k * self._y) > 0.5) - 0.05
        background = base[:, None, None] + np.where(dotted, dots, stripes).astype(np.float32)

        twin_colour = self._object_colour(rng)  # all circles of this image look alike
        objects, placed = [], []
        for _ in range(self._count(rng)):
            cls = int(rng.integers(1, self.num_classes))
            for _try in range(20):
                # A new size on every try, so a big object that fits nowhere becomes smaller.
                r = rng.uniform(0.08, 0.16) * S
                b = 1.25 * r  # a radius that bounds every shape (the triangle's circumradius)
                # The side of the border: fixed by the class for the twins (class 2 = dots).
                on_dots = cls == 2 if cls in (1, 2) else bool(rng.integers(2))
                # Keep the whole object (and 1 px) off the border and inside the image.
                lo, hi = (split + b + 1, S - b) if on_dots == high_is_dotted \
                    else (b, split - b - 1)
                if lo > hi:
                    continue
                c, other = rng.uniform(lo, hi), rng.uniform(b, S - b)
                cx, cy = (other, c) if axis == 0 else (c, other)
                if any(math.hypot(cx - px, cy - py) < b + pb for px, py, pb in placed):
                    continue
                placed.append((cx, cy, b))
                colour = twin_colour if cls in (1, 2) else self._object_colour(rng)
                objects.append((self._shape(cls, cx, cy, r) <= 0, cls, colour))
                break
        return background, objects

    def _draw_thin(self, rng):
        """Outlines 1-2 px wide, some with a nested copy 1-2 px inside."""
        S, objects, placed = self.size, [], []
        for _ in range(self._count(rng)):
            cls = int(rng.integers(1, self.num_classes))
            r = rng.uniform(0.12, 0.25) * S
            b = 1.25 * r
            for _try in range(10):
                cx, cy = rng.uniform(b, S - b, size=2)
                # Non-overlapping, at least 2 px apart: strokes never cross.
                if all(math.hypot(cx - px, cy - py) >= b + pb + 2 for px, py, pb in placed):
                    break
            else:
                continue
            placed.append((cx, cy, b))
            f = self._shape(cls, cx, cy, r)
            w, colour = rng.uniform(1.0, 2.0), self._object_colour(rng)
            objects.append(((f <= 0) & (f > -w), cls, colour))  # outline: the band -w < f <= 0
            if rng.random() < 0.5:
                # A nested copy: the same band moved ``gap`` px further inside.
                d = w + rng.uniform(1.0, 2.0)
                inner = (f <= -d) & (f > -d - rng.uniform(1.0, 2.0))
                if inner.any():
                    objects.append((inner, cls, self._object_colour(rng)))
        return self._background(rng), objects

    def _draw_boundary(self, rng):
        """Objects of one hue, each slid against an earlier one until they touch."""
        S = self.size
        hue = rng.random()  # one hue per image: neighbours differ only a little

        def colour():
            return _hsv(hue + rng.uniform(-0.04, 0.04), rng.uniform(0.5, 0.9),
                        rng.uniform(0.55, 0.95))

        def new_object():
            cls = int(rng.integers(1, self.num_classes))
            return cls, rng.uniform(0.08, 0.17) * S

        cls, r = new_object()
        b = 1.25 * r
        cx, cy = rng.uniform(b, S - b, size=2)
        placed = [(cx, cy, b, self._shape(cls, cx, cy, r) <= 0)]
        objects = [(placed[0][3], cls, colour())]
        occupied = placed[0][3].copy()
        for _ in range(self._count(rng, low=2) - 1):
            cls, r = new_object()
            b = 1.25 * r
            for _try in range(10):
                ax, ay, ab, am = placed[int(rng.integers(len(placed)))]
                ux, uy = ((1, 0), (-1, 0), (0, 1), (0, -1))[int(rng.integers(4))]
                # Start clear of the anchor (bounding circles apart), on a line parallel to
                # (ux, uy) but offset sideways, then slide back towards the anchor by the
                # smallest pixel gap between the two along that line.
                side = rng.uniform(-0.6, 0.6) * ab
                cx = ax + ux * (ab + b) + abs(uy) * side
                cy = ay + uy * (ab + b) + abs(ux) * side
                if not 0 <= (cy if ux else cx) <= S:  # centre in the image (kept by the slide)
                    continue
                gap = self._gap(am, self._shape(cls, cx, cy, r) <= 0, ux, uy)
                if gap is None:
                    continue
                cx, cy = cx - ux * gap, cy - uy * gap
                if not (0 <= cx <= S and 0 <= cy <= S):  # may be cut by the image border
                    continue
                m = self._shape(cls, cx, cy, r) <= 0
                if (m & occupied).any():  # bumped into another object
                    continue
                placed.append((cx, cy, b, m))
                objects.append((m, cls, colour()))
                occupied |= m
                break
        return self._background(rng), objects

    @staticmethod
    def _gap(anchor, new, ux, uy):
        """Pixels of background between ``anchor`` and ``new`` along direction (ux, uy).

        ``new`` lies beyond ``anchor`` in that direction. We rotate/flip both masks so that the
        direction points along +columns, then for every row occupied by both take the first
        column of ``new`` minus the last column of ``anchor`` minus one. The minimum over rows
        is how far ``new`` can move back before touching. None if no row is shared.
        """
        def view(m):  # make (ux, uy) point along +x
            m = m if ux else m.T
            return m[:, ::-1] if ux < 0 or uy < 0 else m

        a, n = view(anchor), view(new)
        rows = a.any(axis=1) & n.any(axis=1)
        if not rows.any():
            return None
        W = a.shape[1]
        last_a = W - 1 - a[rows, ::-1].argmax(axis=1)
        first_n = n[rows].argmax(axis=1)
        return int((first_n - last_a - 1).min())
