"""RoIPool and RoIAlign in plain NumPy: the textbook twin of ``kernels/roi.pyx``.

A detector or an instance-segmentation head (Fast/Mask R-CNN) needs a fixed-size feature for
every box, whatever the box's size: a ``(PH, PW)`` grid of values per channel. Both ops cut the
box into ``PH × PW`` bins and summarise each bin; they differ in how they read the feature map.

- **RoIPool** (Fast R-CNN) rounds the box to whole feature pixels, then floors/ceils each bin's
  edges to whole pixels and takes the maximum inside. Two quantisations: the pooled feature can
  be half a feature pixel (at stride 16: 8 image pixels) away from the box.
- **RoIAlign** (Mask R-CNN) never rounds. It puts a regular grid of sample points in each bin,
  reads the feature map at those fractional positions by bilinear interpolation and averages.

The semantics are torchvision's CPU kernels exactly (the spec of record, checked against them
in ``tests/test_roi.py``), including how they treat malformed and out-of-image boxes. All
arithmetic is done in the dtype of ``x``, as torchvision does, and in its order (the one
exception: the backward divides ``dy`` by the sample count once per bin, not once per tap), so
results agree with torchvision's to rounding; ``tests/test_roi.py`` checks it wherever
torchvision is installed.

The two geometry helpers :func:`roi_pool_bins` and :func:`roi_align_sample_points` are what
the forward passes below actually use; the pictures of the RoI chapter are drawn from them, so
a picture and the kernel cannot disagree.

Shapes: ``x: (N, C, H, W)``, ``rois: (K, 5)`` rows ``(batch_index, x1, y1, x2, y2)`` in
input-image coordinates (same dtype as ``x``), output ``(K, C, PH, PW)``.
"""
from dataclasses import dataclass

import numpy as np

__all__ = ["roi_align_forward", "roi_align_backward", "roi_pool_forward", "roi_pool_backward",
           "roi_align_sample_points", "roi_pool_bins", "bilinear_neighbours",
           "RoIAlignSamples", "RoIPoolBins"]

#: RoIPool starts each bin's running maximum at -FLT_MAX (torchvision's C++ constant, for
#: float64 inputs too): a value must be strictly larger to be taken, so NaN never wins.
_LOWEST = -3.4028234663852886e38


# --------------------------------------------------------------------------------- RoIAlign
@dataclass
class RoIAlignSamples:
    """Where RoIAlign samples one box, in feature-map coordinates (pixel i spans [i, i+1)).

    Attributes
    ----------
    box : tuple of 4 scalars
        ``(x1', y1', x2', y2')``: the box scaled to the feature map and, if aligned, shifted by
        half a pixel. Never rounded.
    bin_h, bin_w : scalar
        Height and width of one bin (fractional).
    grid : (int, int)
        ``(gh, gw)`` sample points per bin along y and x.
    count : int
        ``max(gh * gw, 1)``: every bin's sum is divided by this.
    y_edges : (PH + 1,) array
        Bin edges along y: ``y1' + ph * bin_h``. ``x_edges`` (PW + 1,) likewise.
    ys : (PH, gh) array
        y of the sample rows of each bin row; ``xs`` (PW, gw) the x of the sample columns.
        Bin ``(ph, pw)`` samples every point ``(ys[ph, iy], xs[pw, ix])``.
    """

    box: tuple
    bin_h: object
    bin_w: object
    grid: tuple
    count: int
    y_edges: np.ndarray
    x_edges: np.ndarray
    ys: np.ndarray
    xs: np.ndarray

    def bin_points(self, ph, pw):
        """The ``(gh * gw, 2)`` array of ``(y, x)`` sample points of bin ``(ph, pw)``."""
        yy, xx = np.meshgrid(self.ys[ph], self.xs[pw], indexing="ij")
        return np.stack([yy.ravel(), xx.ravel()], axis=1)


def roi_align_sample_points(box, output_size, spatial_scale, sampling_ratio, aligned,
                            dtype=np.float64):
    """The bins and the sample points RoIAlign uses for one box.

    Parameters
    ----------
    box : sequence of 4 numbers
        ``(x1, y1, x2, y2)`` in input-image coordinates.
    output_size : (int, int)
        ``(PH, PW)``.
    spatial_scale : float
        Feature-map pixels per image pixel (1/stride).
    sampling_ratio : int
        Sample points per bin side; ``<= 0`` picks ``ceil(bin size)`` (adaptive).
    aligned : bool
        If True, shift the box by -0.5 feature pixel (the half-pixel model, see Notes).
    dtype : NumPy float dtype
        The arithmetic is done in this dtype (the forward passes the dtype of ``x``).

    Returns
    -------
    RoIAlignSamples

    Notes
    -----
    ::

        off = 0.5 if aligned else 0
        x1' = x1·s − off, ..., y2' = y2·s − off           (never rounded)
        rw = x2' − x1', rh = y2' − y1'; if not aligned: rw, rh = max(rw, 1), max(rh, 1)
        bin_h = rh / PH, bin_w = rw / PW
        gh = sampling_ratio if > 0 else ceil(rh / PH)     (gw likewise)
        y(ph, iy) = y1' + ph·bin_h + (iy + ½)·bin_h / gh  (x likewise)

    With ``aligned=False`` a box with x2 < x1 becomes 1 feature pixel wide (legacy Detectron
    behaviour). With ``aligned=True`` a negative width is kept: the adaptive grid is then
    empty (the output is 0), a fixed ``sampling_ratio`` samples the mirrored positions.

    Why aligned: feature pixel i covers [i, i+1) of the scaled image, so its value lives at
    continuous coordinate i + ½; shifting the box by −½ makes "bilinear at y" read the value
    at image position (y + ½)/s, where the box really is.
    """
    f = np.dtype(dtype).type
    PH, PW = (int(n) for n in output_size)   # Python ints: NumPy ints would promote f to float64
    sampling_ratio = int(sampling_ratio)
    s = f(spatial_scale)
    off = f(0.5) if aligned else f(0)
    x1, y1, x2, y2 = (f(v) * s - off for v in box)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:                # legacy: malformed boxes are forced to be 1x1
        roi_w, roi_h = max(roi_w, f(1)), max(roi_h, f(1))
    bin_h, bin_w = roi_h / PH, roi_w / PW
    gh = sampling_ratio if sampling_ratio > 0 else int(np.ceil(roi_h / PH))
    gw = sampling_ratio if sampling_ratio > 0 else int(np.ceil(roi_w / PW))
    ys = np.empty((PH, max(gh, 0)), dtype=dtype)
    xs = np.empty((PW, max(gw, 0)), dtype=dtype)
    for ph in range(PH):
        for iy in range(gh):
            ys[ph, iy] = y1 + ph * bin_h + (iy + f(0.5)) * bin_h / gh
    for pw in range(PW):
        for ix in range(gw):
            xs[pw, ix] = x1 + pw * bin_w + (ix + f(0.5)) * bin_w / gw
    y_edges = np.array([y1 + ph * bin_h for ph in range(PH + 1)], dtype=dtype)
    x_edges = np.array([x1 + pw * bin_w for pw in range(PW + 1)], dtype=dtype)
    return RoIAlignSamples(box=(x1, y1, x2, y2), bin_h=bin_h, bin_w=bin_w, grid=(gh, gw),
                           count=max(gh * gw, 1), y_edges=y_edges, x_edges=x_edges, ys=ys, xs=xs)


def _linear_neighbours(v, size):
    """The 1-D half of a bilinear sample at coordinate ``v`` on an axis of ``size`` pixels.

    Returns None if ``v`` is outside [-1, size] (the sample then contributes nothing), else
    ``(lo, hi, l, h)``: the two neighbouring pixels and their weights ``h`` (for lo) and
    ``l`` (for hi), ``h + l = 1``. Between -1 and 0 the value of pixel 0 is used (clamped),
    from size-1 to size that of pixel size-1.
    """
    f = type(v)                    # keep v's float type (float32 stays float32)
    if v < -1 or v > size:
        return None
    if v <= 0:
        v = f(0)
    lo = int(v)                    # floor, as v >= 0
    if lo >= size - 1:             # at or past the last pixel centre: no right neighbour
        lo = hi = size - 1
        v = f(lo)
    else:
        hi = lo + 1
    l = v - lo
    h = 1 - l
    return lo, hi, l, h


def bilinear_neighbours(y, x, height, width):
    """The four pixels around ``(y, x)`` and their bilinear weights.

    Parameters
    ----------
    y, x : scalar
        Continuous feature-map position (pixel (i, j) sits at (i, j)).
    height, width : int
        H and W of the feature map.

    Returns
    -------
    None, if the point is outside [-1, H] × [-1, W] (it contributes 0); else
    ``(y_lo, y_hi, x_lo, x_hi, (w1, w2, w3, w4))`` with the weights of pixels
    ``(y_lo, x_lo), (y_lo, x_hi), (y_hi, x_lo), (y_hi, x_hi)``.

    Notes
    -----
    ``w1 = hy·hx, w2 = hy·lx, w3 = ly·hx, w4 = ly·lx`` with ``ly = y − y_lo``, ``hy = 1 − ly``
    (x likewise). The forward reads ``Σ wᵢ·X[pixelᵢ]``; the backward adds ``wᵢ·g`` into the
    same pixels: one helper for both, so they are each other's adjoint by construction.
    """
    ny = _linear_neighbours(y, height)
    nx = _linear_neighbours(x, width)
    if ny is None or nx is None:
        return None
    y_lo, y_hi, ly, hy = ny
    x_lo, x_hi, lx, hx = nx
    return y_lo, y_hi, x_lo, x_hi, (hy * hx, hy * lx, ly * hx, ly * lx)


def roi_align_forward(x, rois, output_hw, spatial_scale, sampling_ratio, aligned):
    """RoIAlign: average of bilinear samples on a regular grid in each bin.

    Parameters
    ----------
    x : (N, C, H, W) float array
    rois : (K, 5) array, dtype of x
        ``(batch_index, x1, y1, x2, y2)`` per box, image coordinates.
    output_hw : (int, int)
        ``(PH, PW)``.
    spatial_scale : float
    sampling_ratio : int
        ``<= 0``: adaptive (``ceil(bin size)`` samples per side).
    aligned : bool

    Returns
    -------
    y : (K, C, PH, PW) array

    Notes
    -----
    ``y[k, c, ph, pw] = (1/count) Σ_{iy<gh, ix<gw} bilinear(x[b, c], y(ph, iy), x(pw, ix))``
    with the geometry of :func:`roi_align_sample_points` and the weights of
    :func:`bilinear_neighbours`. Samples outside [-1, H] × [-1, W] add 0 but still count.
    """
    N, C, H, W = x.shape
    PH, PW = output_hw
    K = rois.shape[0]
    y = np.zeros((K, C, PH, PW), dtype=x.dtype)
    for k in range(K):
        b = int(rois[k, 0])
        geo = roi_align_sample_points(rois[k, 1:], output_hw, spatial_scale, sampling_ratio,
                                      aligned, dtype=x.dtype)
        for ph in range(PH):
            for pw in range(PW):
                acc = np.zeros(C, dtype=x.dtype)   # one bin, all channels at once
                for yy in geo.ys[ph]:
                    for xx in geo.xs[pw]:
                        nb = bilinear_neighbours(yy, xx, H, W)
                        if nb is None:
                            continue
                        y_lo, y_hi, x_lo, x_hi, (w1, w2, w3, w4) = nb
                        acc += (w1 * x[b, :, y_lo, x_lo] + w2 * x[b, :, y_lo, x_hi]
                                + w3 * x[b, :, y_hi, x_lo] + w4 * x[b, :, y_hi, x_hi])
                y[k, :, ph, pw] = acc / geo.count
    return y


def roi_align_backward(dy, rois, x_shape, output_hw, spatial_scale, sampling_ratio, aligned):
    """Gradient of :func:`roi_align_forward` with respect to ``x``.

    Parameters
    ----------
    dy : (K, C, PH, PW) array
    rois : (K, 5) array
    x_shape : (N, C, H, W)
    output_hw, spatial_scale, sampling_ratio, aligned
        As in the forward.

    Returns
    -------
    dx : (N, C, H, W) array, dtype of dy

    Notes
    -----
    RoIAlign is linear in x, so its gradient is its adjoint: every sample point hands
    ``dy[k, c, ph, pw] / count`` back to its four neighbours, weighted ``w1..w4``, and ADDS it
    there (boxes and bins overlap, so one pixel collects from many). The boxes are visited in
    order k, which the compiled twin keeps per feature plane so the sums round identically.
    """
    N, C, H, W = x_shape
    PH, PW = output_hw
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for k in range(rois.shape[0]):
        b = int(rois[k, 0])
        geo = roi_align_sample_points(rois[k, 1:], output_hw, spatial_scale, sampling_ratio,
                                      aligned, dtype=dy.dtype)
        for ph in range(PH):
            for pw in range(PW):
                g = dy[k, :, ph, pw] / geo.count   # (C,): this bin's gradient per sample
                for yy in geo.ys[ph]:
                    for xx in geo.xs[pw]:
                        nb = bilinear_neighbours(yy, xx, H, W)
                        if nb is None:
                            continue
                        y_lo, y_hi, x_lo, x_hi, (w1, w2, w3, w4) = nb
                        dx[b, :, y_lo, x_lo] += w1 * g
                        dx[b, :, y_lo, x_hi] += w2 * g
                        dx[b, :, y_hi, x_lo] += w3 * g
                        dx[b, :, y_hi, x_hi] += w4 * g
    return dx


# ---------------------------------------------------------------------------------- RoIPool
@dataclass
class RoIPoolBins:
    """RoIPool's quantised geometry of one box, in feature-map pixels.

    Attributes
    ----------
    box : (int, int, int, int)
        ``(xs, ys, xe, ye)``: the box corners rounded to whole feature pixels (first
        quantisation); the end is inclusive.
    hstart, hend : (PH,) int arrays
        Bin row ``ph`` covers pixel rows ``[hstart[ph], hend[ph])`` (second quantisation).
    wstart, wend : (PW,) int arrays
        Bin column ``pw`` covers pixel columns ``[wstart[pw], wend[pw])``.
        Bin ``(ph, pw)`` is empty if ``hend <= hstart`` or ``wend <= wstart``.
    """

    box: tuple
    hstart: np.ndarray
    hend: np.ndarray
    wstart: np.ndarray
    wend: np.ndarray


def _round_half_away(v):
    """C's ``round``: halves go away from zero (NumPy's ``np.round`` goes to even)."""
    t = int(v)                      # truncates toward zero; v - t is exact in floating point
    if abs(v - t) >= 0.5:
        t += 1 if v > 0 else -1
    return t


def roi_pool_bins(box, output_size, spatial_scale, feature_size=None, dtype=np.float64):
    """The quantised bins RoIPool takes the maximum over, for one box.

    Parameters
    ----------
    box : sequence of 4 numbers
        ``(x1, y1, x2, y2)`` in input-image coordinates.
    output_size : (int, int)
        ``(PH, PW)``.
    spatial_scale : float
    feature_size : (int, int), optional
        ``(H, W)`` of the feature map: bin edges are clipped to it (as in the forward). If
        omitted, the bins are not clipped (handy for drawing a box that leaves the map).
    dtype : NumPy float dtype
        Arithmetic dtype (the forward passes the dtype of ``x``).

    Returns
    -------
    RoIPoolBins

    Notes
    -----
    ::

        xs = round(x1·s), ys = round(y1·s), xe = round(x2·s), ye = round(y2·s)  (half away from 0)
        rw = max(xe − xs + 1, 1),  rh = max(ye − ys + 1, 1)                    (inclusive end)
        bin_h = rh / PH,  bin_w = rw / PW
        hstart = clip(floor(ph·bin_h) + ys, 0, H),  hend = clip(ceil((ph+1)·bin_h) + ys, 0, H)

    A box with x2 < x1 rounds to a 1-pixel-wide box at xs (``rw`` is at least 1).
    Neighbouring bins may share a pixel row or column.
    """
    f = np.dtype(dtype).type
    PH, PW = (int(n) for n in output_size)
    s = f(spatial_scale)
    xs, ys, xe, ye = (_round_half_away(f(v) * s) for v in box)
    roi_w, roi_h = max(xe - xs + 1, 1), max(ye - ys + 1, 1)
    bin_h, bin_w = f(roi_h) / f(PH), f(roi_w) / f(PW)
    hstart = np.array([int(np.floor(f(ph) * bin_h)) + ys for ph in range(PH)])
    hend = np.array([int(np.ceil(f(ph + 1) * bin_h)) + ys for ph in range(PH)])
    wstart = np.array([int(np.floor(f(pw) * bin_w)) + xs for pw in range(PW)])
    wend = np.array([int(np.ceil(f(pw + 1) * bin_w)) + xs for pw in range(PW)])
    if feature_size is not None:
        H, W = feature_size
        hstart, hend = np.clip(hstart, 0, H), np.clip(hend, 0, H)
        wstart, wend = np.clip(wstart, 0, W), np.clip(wend, 0, W)
    return RoIPoolBins(box=(xs, ys, xe, ye), hstart=hstart, hend=hend, wstart=wstart, wend=wend)


def roi_pool_forward(x, rois, output_hw, spatial_scale):
    """RoIPool: maximum over each quantised bin, and where it was.

    Parameters
    ----------
    x : (N, C, H, W) float array
    rois : (K, 5) array, dtype of x
    output_hw : (int, int)
    spatial_scale : float

    Returns
    -------
    y : (K, C, PH, PW) array
    argmax : (K, C, PH, PW) int64 array
        Flat index ``h * W + w`` into ``x[b, c]`` of each maximum; -1 for an empty bin.

    Notes
    -----
    Bins come from :func:`roi_pool_bins`. An empty bin gives 0 and argmax -1. Otherwise the
    bin is scanned in row-major order keeping the FIRST strict maximum, starting from
    -FLT_MAX (so NaN is never chosen, and a bin whose values are all <= -FLT_MAX keeps
    -FLT_MAX with argmax -1, exactly like torchvision).
    """
    N, C, H, W = x.shape
    PH, PW = output_hw
    K = rois.shape[0]
    y = np.zeros((K, C, PH, PW), dtype=x.dtype)
    argmax = np.full((K, C, PH, PW), -1, dtype=np.int64)
    for k in range(K):
        b = int(rois[k, 0])
        bins = roi_pool_bins(rois[k, 1:], output_hw, spatial_scale, (H, W), dtype=x.dtype)
        for ph in range(PH):
            for pw in range(PW):
                h0, h1 = bins.hstart[ph], bins.hend[ph]
                w0, w1 = bins.wstart[pw], bins.wend[pw]
                if h1 <= h0 or w1 <= w0:
                    continue                      # empty bin: 0, argmax -1
                best = np.full(C, _LOWEST, dtype=x.dtype)
                where = np.full(C, -1, dtype=np.int64)
                for h in range(h0, h1):           # row-major scan: the first maximum wins
                    for w in range(w0, w1):
                        v = x[b, :, h, w]
                        better = v > best         # strict, so ties keep the earlier pixel
                        best[better] = v[better]
                        where[better] = h * W + w
                y[k, :, ph, pw] = best
                argmax[k, :, ph, pw] = where
    return y, argmax


def roi_pool_backward(dy, argmax, rois, x_shape):
    """Gradient of :func:`roi_pool_forward` with respect to ``x``.

    Parameters
    ----------
    dy : (K, C, PH, PW) array
    argmax : (K, C, PH, PW) int64 array
        From the forward.
    rois : (K, 5) array
        Only the batch index is read.
    x_shape : (N, C, H, W)

    Returns
    -------
    dx : (N, C, H, W) array

    Notes
    -----
    ``dx[b, c].flat[argmax[k, c, ph, pw]] += dy[k, c, ph, pw]`` for every bin whose argmax is
    not -1: the maximum is the only input that moved the output. Boxes are visited in order k.
    """
    N, C, H, W = x_shape
    K, _, PH, PW = dy.shape
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for k in range(K):
        plane = dx[int(rois[k, 0])].reshape(C, H * W)     # a view: writes land in dx
        for c in range(C):
            for ph in range(PH):
                for pw in range(PW):
                    i = argmax[k, c, ph, pw]
                    if i != -1:
                        plane[c, i] += dy[k, c, ph, pw]
    return dx
