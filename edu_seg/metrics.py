"""Segmentation metrics from one confusion matrix accumulated over a whole dataset.

Every score a segmentation paper reports — pixel accuracy, mean class accuracy, per-class IoU,
mIoU, frequency-weighted IoU — is a function of a single ``C x C`` table of pixel counts:

``matrix[i, j]`` = number of pixels whose ground truth is class ``i`` and prediction is class ``j``

Rows are ground truth, columns are predictions; the diagonal holds the correct pixels. So an
evaluation loop only has to add up that table (one ``np.bincount`` per batch) and compute the
scores once at the end.

Why per dataset and not per image
---------------------------------
The standard protocol (PASCAL VOC, Cityscapes, CamVid) sums the counts of **all** pixels of the
whole dataset first and divides once. Averaging a per-image IoU instead gives a different — and
misleading — number: a class absent from an image has no defined IoU there (0/0), one stray
wrong pixel in an image where the class covers three pixels scores IoU 0 and counts as much as a
perfect 100 000-pixel image, and small images weigh as much as large ones. Accumulating the
confusion matrix weighs every pixel equally, and a class's IoU is defined as long as it occurs
*somewhere* in the dataset (in the ground truth or in the predictions).

Classes that never occur — absent from both ground truth and predictions — have IoU 0/0. They
are reported as NaN and left out of the mean (``np.nanmean``), never counted as a perfect 1.0:
a model must not get credit for classes the data never tested.

>>> cm = ConfusionMatrix(num_classes=3)
>>> cm.update(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]]))   # pred, target
>>> cm.matrix
array([[1, 1, 0],
       [0, 2, 0],
       [0, 0, 0]])
>>> cm.iou()                                         # class 2 never occurs -> NaN
array([0.5       , 0.66666667,        nan])
>>> round(cm.miou(), 4)
0.5833

Boundary-band IoU
-----------------
mIoU is dominated by the pixels deep inside objects, which almost any model gets right; a
prediction whose boundaries are off by a pixel or two loses little. :class:`BoundaryConfusion`
counts the same confusion matrix over only the pixels within ``band`` pixels of a true edge,
so its IoU scores where the boundaries were placed (:func:`boundary_band_iou` for one call).
"""
import numpy as np


def _as_numpy(x, name):
    """A NumPy array from an array, a list or an ``edu_seg.Tensor`` (anything with ``.numpy()``)."""
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    if hasattr(x, "get") and not isinstance(x, np.ndarray):  # a CuPy array: copy to the host
        x = x.get()
    x = np.asarray(x)
    if x.dtype == object:
        raise TypeError(f"ConfusionMatrix.update: {name} must be a numeric array, got dtype object")
    return x


class ConfusionMatrix:
    """A ``(C, C)`` table of pixel counts (rows = ground truth, columns = prediction).

    Call :meth:`update` once per batch, then read the scores. Counts are int64, so a dataset of
    billions of pixels accumulates exactly.

    Parameters
    ----------
    num_classes : int
        ``C``; valid class ids are ``0 .. C-1``.
    ignore_index : int, optional
        Ground-truth pixels with this value (e.g. ``-100`` or CamVid's ``Void``) are skipped:
        they count for no class. Predictions are never compared with it.

    Attributes
    ----------
    matrix : ndarray of int64, shape (C, C)
        ``matrix[i, j]`` = pixels of ground-truth class ``i`` predicted as class ``j``.

    Notes
    -----
    With ``TP_c = M[c, c]``, ``GT_c = sum_j M[c, j]`` (row sum) and ``P_c = sum_i M[i, c]``
    (column sum), ``T = sum M``:

    - pixel accuracy ``= sum_c TP_c / T``
    - class accuracy ``acc_c = TP_c / GT_c`` (recall); mean class accuracy = mean over classes
      with ``GT_c > 0``
    - ``IoU_c = TP_c / (GT_c + P_c - TP_c)`` (= TP / (TP + FP + FN)); NaN when the denominator is
      0, i.e. the class is absent from both ground truth and prediction
    - ``mIoU = nanmean_c IoU_c``
    - frequency-weighted IoU ``= sum_c (GT_c / T) IoU_c`` (big classes weigh more)

    See the module docstring for why the counts are summed over the whole dataset before
    dividing, instead of averaging per-image scores.

    Examples
    --------
    >>> cm = ConfusionMatrix(2, ignore_index=255)
    >>> cm.update(np.array([0, 1, 1]), np.array([0, 1, 255]))
    >>> cm.pixel_accuracy()
    1.0
    """

    def __init__(self, num_classes, ignore_index=None):
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
                or num_classes < 1:
            raise ValueError(f"ConfusionMatrix: num_classes must be a positive int, "
                             f"got {num_classes!r}")
        if ignore_index is not None and (isinstance(ignore_index, bool)
                                         or not isinstance(ignore_index, (int, np.integer))):
            raise TypeError(f"ConfusionMatrix: ignore_index must be an int or None, "
                            f"got {ignore_index!r}")
        self.num_classes = int(num_classes)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self):
        """Set all counts back to zero (e.g. before a new evaluation pass)."""
        self.matrix[...] = 0

    def update(self, pred, target):
        """Add one batch of predictions to the counts.

        Parameters
        ----------
        pred : array_like of int, shape (N, H, W) (any shape equal to ``target``'s), or
            float logits/probabilities of shape (N, C, H, W)
            Predicted class ids; logits are reduced with ``argmax`` over axis 1 first.
            NumPy arrays and ``edu_seg.Tensor`` are accepted.
        target : array_like of int, shape (N, H, W)
            Ground-truth class ids in ``[0, C)``, or ``ignore_index``.

        Raises
        ------
        ValueError
            Shapes do not match, or a value lies outside ``[0, C)`` (and is not
            ``ignore_index`` in the target); the message names the value.
        TypeError
            ``target`` is not an integer array, or ``pred`` is a float array that is not
            logits of shape (N, C, ...).
        """
        pred, target = _as_numpy(pred, "pred"), _as_numpy(target, "target")
        C = self.num_classes
        if target.dtype.kind not in "iu":
            raise TypeError(f"ConfusionMatrix.update: target must hold integer class ids, "
                            f"got dtype {target.dtype}")
        if pred.dtype.kind == "f":
            # Logits (N, C, H, W): the predicted class is the arg-max over the class axis.
            if pred.ndim != target.ndim + 1 or pred.shape[1] != C:
                raise TypeError(f"ConfusionMatrix.update: a float pred must be logits of shape "
                                f"(N, {C}, ...) for target shape {target.shape}; got shape "
                                f"{pred.shape} (pass integer class ids otherwise)")
            pred = pred.argmax(axis=1)
        elif pred.dtype.kind not in "iub":
            raise TypeError(f"ConfusionMatrix.update: pred must hold integer class ids or float "
                            f"logits, got dtype {pred.dtype}")
        if pred.shape != target.shape:
            raise ValueError(f"ConfusionMatrix.update: pred has shape {pred.shape} but target "
                             f"has shape {target.shape}")
        pred, target = pred.reshape(-1).astype(np.int64), target.reshape(-1).astype(np.int64)

        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        for name, a in (("target", target), ("pred", pred)):
            bad = (a < 0) | (a >= C)
            if bad.any():
                extra = "" if name == "pred" or self.ignore_index is None else \
                    f" or ignore_index={self.ignore_index}"
                raise ValueError(f"ConfusionMatrix.update: {name} contains {a[bad][0]}, but "
                                 f"class ids must be in [0, {C}){extra}")
        # One pass over the pixels: pair (t, p) -> flat index t*C + p, then count every index.
        self.matrix += np.bincount(target * C + pred, minlength=C * C).reshape(C, C)

    # ------------------------------------------------------------------------------ scores
    def _counts(self):
        """(TP, GT, P, T) as float64: diagonal, row sums, column sums, total."""
        m = self.matrix.astype(np.float64)
        return np.diag(m), m.sum(axis=1), m.sum(axis=0), m.sum()

    @staticmethod
    def _ratio(num, den):
        """num / den elementwise, NaN where den == 0 (no 0/0 warnings)."""
        num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
        out = np.full(np.broadcast(num, den).shape, np.nan)
        np.divide(num, den, out=out, where=den > 0)
        return out

    @staticmethod
    def _nanmean(x):
        """Mean of the non-NaN entries; NaN (and no warning) when there are none."""
        x = x[~np.isnan(x)]
        return float(x.mean()) if x.size else float("nan")

    def pixel_accuracy(self):
        """Fraction of counted pixels predicted correctly, ``sum_c TP_c / T`` (NaN if empty)."""
        tp, _, _, total = self._counts()
        return float(self._ratio(tp.sum(), total))

    def class_accuracy(self):
        """Per-class accuracy (recall) ``TP_c / GT_c``, shape (C,); NaN where ``GT_c == 0``."""
        tp, gt, _, _ = self._counts()
        return self._ratio(tp, gt)

    def mean_class_accuracy(self):
        """Mean of :meth:`class_accuracy` over the classes present in the ground truth."""
        return self._nanmean(self.class_accuracy())

    def iou(self):
        """Per-class intersection over union ``TP / (TP + FP + FN)``, shape (C,).

        NaN for a class absent from both ground truth and predictions (0/0): there is nothing
        to score. A class that is only predicted (false positives) or only in the ground truth
        (missed) scores 0.
        """
        tp, gt, p, _ = self._counts()
        return self._ratio(tp, gt + p - tp)

    def miou(self):
        """Mean IoU over the classes that occur (NaN entries of :meth:`iou` are skipped)."""
        return self._nanmean(self.iou())

    def frequency_weighted_iou(self):
        """``sum_c (GT_c / T) IoU_c``: IoU weighted by each class's share of ground-truth pixels.

        A class with ``GT_c = 0`` has weight 0 (its IoU may be 0 or NaN; either way it adds
        nothing).
        """
        tp, gt, _, total = self._counts()
        if total == 0:
            return float("nan")
        iou = self.iou()
        present = gt > 0
        return float(np.sum(gt[present] / total * iou[present]))

    def summary(self):
        """The scalar scores in one dict: ``pixel_accuracy``, ``mean_class_accuracy``,
        ``miou``, ``frequency_weighted_iou`` (handy for logging a training history)."""
        return {"pixel_accuracy": self.pixel_accuracy(),
                "mean_class_accuracy": self.mean_class_accuracy(),
                "miou": self.miou(),
                "frequency_weighted_iou": self.frequency_weighted_iou()}

    def table(self, class_names=None):
        """A per-class text table: IoU, accuracy and share of ground-truth pixels, then totals.

        Parameters
        ----------
        class_names : sequence of str, optional
            One name per class; default ``"class 0"``, ``"class 1"``, ...

        Returns
        -------
        str
            Absent classes show ``-`` instead of a number.

        Examples
        --------
        >>> cm = ConfusionMatrix(2)
        >>> cm.update(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1]))
        >>> print(cm.table(["background", "circle"]))
        class         IoU    acc   pixels
        ----------  -----  -----  -------
        background  0.500  0.500   50.0 %
        circle      0.667  1.000   50.0 %
        ----------  -----  -----  -------
        mean        0.583  0.750
        pixel accuracy 0.750 · frequency-weighted IoU 0.583 · 4 pixels
        """
        C = self.num_classes
        if class_names is None:
            class_names = [f"class {c}" for c in range(C)]
        class_names = [str(n) for n in class_names]
        if len(class_names) != C:
            raise ValueError(f"ConfusionMatrix.table: got {len(class_names)} class_names for "
                             f"{C} classes")
        _, gt, _, total = self._counts()
        share = self._ratio(gt, total)

        def num(v, fmt):
            return "-" if np.isnan(v) else format(v, fmt)

        w = max(len("class"), len("mean"), *(len(n) for n in class_names))
        rule = f"{'-' * w}  -----  -----  -------"
        lines = [f"{'class':<{w}}  {'IoU':>5}  {'acc':>5}  {'pixels':>7}", rule]
        for name, iou, acc, sh in zip(class_names, self.iou(), self.class_accuracy(), share):
            pct = "-" if np.isnan(sh) else f"{100 * sh:5.1f} %"
            lines.append(f"{name:<{w}}  {num(iou, '5.3f'):>5}  {num(acc, '5.3f'):>5}  "
                         f"{pct:>7}")
        lines += [rule,
                  f"{'mean':<{w}}  {num(self.miou(), '5.3f'):>5}  "
                  f"{num(self.mean_class_accuracy(), '5.3f'):>5}",
                  f"pixel accuracy {num(self.pixel_accuracy(), '.3f')} · frequency-weighted IoU "
                  f"{num(self.frequency_weighted_iou(), '.3f')} · {int(total)} pixels"]
        return "\n".join(lines)

    def __repr__(self):
        return (f"ConfusionMatrix(num_classes={self.num_classes}, "
                f"ignore_index={self.ignore_index}, pixels={int(self.matrix.sum())})")


def boundary_band(target, band=2, ignore_index=None):
    """Pixels within ``band`` pixels (Chebyshev distance) of an edge of the label map ``target``.

    An EDGE pixel has a 4-neighbour (up, down, left, right) with another label; both pixels
    of such a pair are edge pixels, so an edge is two pixels thick, one on each side. The
    band is every pixel whose Chebyshev distance ``max(|di|, |dj|)`` to an edge pixel is at
    most ``band``: the edge dilated by a ``(2·band + 1)`` square. Chebyshev rather than
    Euclidean because the square dilation is exact, separable (a max over rows, then over
    columns) and needs no distance transform; the two differ only at the band's corners.

    The image border is not an edge, and a pair involving an ``ignore_index`` pixel is not
    one either (the label on that side is unknown).

    Parameters
    ----------
    target : ndarray of int, shape (..., H, W)
        Label maps; edges never cross from one map of a batch to the next.
    band : int
        Half-width in pixels; 0 keeps only the edge pixels.
    ignore_index : int, optional

    Returns
    -------
    ndarray of bool, shape (..., H, W)

    Examples
    --------
    >>> boundary_band(np.array([[0, 0, 0, 1, 1, 1]]), band=1).astype(int)
    array([[0, 1, 1, 1, 1, 0]])
    """
    target = np.asarray(target)
    if isinstance(band, bool) or not isinstance(band, (int, np.integer)) or band < 0:
        raise ValueError(f"boundary_band: band must be an int >= 0, got {band!r}")
    valid = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    edge = np.zeros(target.shape, bool)
    for axis in (-2, -1):
        n = target.shape[axis]
        a = [slice(None)] * target.ndim
        b = [slice(None)] * target.ndim
        a[axis], b[axis] = slice(0, n - 1), slice(1, n)
        a, b = tuple(a), tuple(b)
        differ = (target[a] != target[b]) & valid[a] & valid[b]   # a pair across the edge
        edge[a] |= differ
        edge[b] |= differ
    for axis in (-2, -1):                  # dilate by the square: rows, then columns
        grown = edge.copy()
        n = target.shape[axis]
        for shift in range(1, min(band, n - 1) + 1):
            lo = [slice(None)] * target.ndim
            hi = [slice(None)] * target.ndim
            lo[axis], hi[axis] = slice(0, n - shift), slice(shift, n)
            lo, hi = tuple(lo), tuple(hi)
            grown[lo] |= edge[hi]
            grown[hi] |= edge[lo]
        edge = grown
    return edge


class BoundaryConfusion(ConfusionMatrix):
    """A :class:`ConfusionMatrix` that counts only the pixels near a true edge.

    :meth:`update` keeps the pixels of :func:`boundary_band` of the TARGET (the prediction
    is judged where the truth has its edges) and counts them like the parent class, so
    every score (``iou``, ``miou``, ``table``...) is the boundary-band version, accumulated
    over a whole dataset.

    Parameters
    ----------
    num_classes : int
    band : int
        Half-width of the band in pixels (Chebyshev distance to the nearest edge pixel).
    ignore_index : int, optional

    Examples
    --------
    >>> target = np.zeros((1, 8, 8), int); target[0, 2:6, 2:6] = 1
    >>> cm = BoundaryConfusion(2, band=1)
    >>> cm.update(target, target)
    >>> cm.miou(), int(cm.matrix.sum())     # perfect; all pixels but the 4 image corners
    (1.0, 60)
    """

    def __init__(self, num_classes, band=2, ignore_index=None):
        super().__init__(num_classes, ignore_index)
        boundary_band(np.zeros((1, 1), int), band)            # validates band
        self.band = int(band)

    def update(self, pred, target):
        """Add one batch, counting only the band pixels (arguments as
        :meth:`ConfusionMatrix.update`; ``target`` (N, H, W))."""
        pred, target = _as_numpy(pred, "pred"), _as_numpy(target, "target")
        if pred.dtype.kind == "f" and pred.ndim == target.ndim + 1:
            pred = pred.argmax(axis=1)                        # logits -> class ids
        if pred.shape != target.shape:
            raise ValueError(f"BoundaryConfusion.update: pred has shape {pred.shape} but "
                             f"target has shape {target.shape}")
        keep = boundary_band(target, self.band, self.ignore_index)
        super().update(pred[keep], target[keep])

    def __repr__(self):
        return (f"BoundaryConfusion(num_classes={self.num_classes}, band={self.band}, "
                f"ignore_index={self.ignore_index}, pixels={int(self.matrix.sum())})")


def boundary_band_iou(pred, target, num_classes, band=2, ignore_index=None):
    """IoU per class and its mean over the pixels within ``band`` pixels of a true edge.

    One :class:`BoundaryConfusion` update; over a dataset, accumulate a
    :class:`BoundaryConfusion` instead (the counts are summed before dividing, as for mIoU).

    Parameters
    ----------
    pred : array_like of int, shape (N, H, W), or float logits (N, C, H, W)
    target : array_like of int, shape (N, H, W)
    num_classes : int
    band : int
        Half-width in pixels (Chebyshev distance to an edge pixel, see :func:`boundary_band`).
    ignore_index : int, optional

    Returns
    -------
    iou : ndarray of float64, shape (num_classes,)
        NaN for a class absent from the band in both target and prediction.
    miou : float
        The mean of the non-NaN entries.
    """
    cm = BoundaryConfusion(num_classes, band=band, ignore_index=ignore_index)
    cm.update(pred, target)
    return cm.iou(), cm.miou()
