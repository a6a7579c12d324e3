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

Instance-weighted IoU (Cityscapes' iIoU)
----------------------------------------
Because every pixel weighs the same, a class's IoU over the dataset is decided by its large
objects: a model that misses every small object loses little. :class:`InstanceWeightedIoU`
weighs each ground-truth pixel by the inverse size of the object it belongs to (times the
class's mean object size), so every object of a class counts the same; false positives,
which belong to no object, are counted as they are.

Instance average precision (COCO)
---------------------------------
An instance model returns a list of objects per image — a box, a class, a score, a mask —
not a label per pixel, so it is scored like a detector: each detection, most confident first,
either finds a not-yet-found object of its class (IoU above a threshold: a true positive) or
does not (a false positive). :class:`InstanceAP` follows COCO's evaluation (pycocotools'
COCOeval) to the letter — ten IoU thresholds 0.50..0.95, 101-point interpolated precision,
object-size ranges — for box IoU and mask IoU, and returns the numbers papers report: AP,
AP50, AP75, APs, APm, APl (:func:`instance_average_precision` for one call,
:func:`format_instance_ap` to print them).
"""
import numpy as np

from .boxes import box_area, box_iou


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


class InstanceWeightedIoU:
    """Cityscapes' instance-level IoU (iIoU): every object of a class weighs the same.

    The dataset-wide :class:`ConfusionMatrix` weighs every pixel equally, so a class's IoU is
    decided by its large objects: missing every object of 10 pixels costs almost nothing next
    to one object of 1000. iIoU (Cordts et al., "The Cityscapes Dataset for Semantic Urban
    Scene Understanding", CVPR 2016) reweights each ground-truth pixel by the size of the
    object it belongs to, so a small object that is missed counts as much as a large one.
    The counts are still summed over the whole dataset before dividing, as for mIoU.

    Call :meth:`update` once per image (images hold different numbers of objects), then
    read :meth:`iou` and :meth:`miou`.

    Parameters
    ----------
    num_classes : int
        ``C``; class ids are ``0 .. C-1``.
    ignore_index : int, optional
        Ground-truth pixels with this value count nowhere: not in an object, not as a false
        positive.

    Attributes
    ----------
    confusion : ConfusionMatrix
        The ordinary pixel counts of the same images; its pixel IoU is what iIoU reweights,
        and its off-diagonal column entries are iIoU's false positives.

    Notes
    -----
    For object ``k`` of class ``c`` (an instance mask), with ``size_k`` pixels of which
    ``tp_k`` are predicted ``c``:

    - weight ``w_k = S_c / size_k``, with ``S_c`` the mean size of the class's objects over
      every image seen;
    - ``iTP_c = sum_k w_k tp_k``, ``iFN_c = sum_k w_k (size_k - tp_k)``;
    - ``FP_c`` = pixels predicted ``c`` whose ground truth is another (not ignored) class,
      NOT weighted: a false positive lies in no ground-truth object, so it has no size;
    - ``iIoU_c = iTP_c / (iTP_c + FP_c + iFN_c)``; ``NaN`` for a class with no object (the
      background, or a class the images never contain). ``mIoU`` = the mean over the others.

    Since ``S_c`` is the mean over the objects seen, ``iTP_c + iFN_c = sum_k size_k`` (the
    class's object pixels) and ``iTP_c`` is that total times the MEAN RECALL of the objects,
    ``mean_k tp_k / size_k``, where the pixel IoU uses the pooled recall
    ``sum_k tp_k / sum_k size_k``. With objects of one size the two agree. Cityscapes'
    evaluation script takes ``S_c`` from a fixed table of average sizes; here it is the
    evaluated images' own mean, so no table is needed. Pixels of class ``c`` outside every instance
    mask (Cityscapes' "group" regions) count in neither ``iTP`` nor ``iFN``, and are not
    false positives either.

    Examples
    --------
    >>> objects = np.zeros((2, 8, 8), bool)                     # (G, H, W)
    >>> objects[0, 0:4, 0:4] = True                             # a 16-pixel object
    >>> objects[1, 6, 6] = True                                 # a 1-pixel object
    >>> target = objects.any(axis=0).astype(int)                # (H, W), both of class 1
    >>> pred = target.copy(); pred[6, 6] = 0                    # the small one is missed
    >>> metric = InstanceWeightedIoU(2)
    >>> metric.update(pred, target, objects, np.array([1, 1]))
    >>> round(float(metric.confusion.iou()[1]), 3), float(metric.iou()[1])  # pixel IoU, iIoU
    (0.941, 0.5)
    """

    def __init__(self, num_classes, ignore_index=None):
        self.confusion = ConfusionMatrix(num_classes, ignore_index)   # validates both
        self.num_classes = self.confusion.num_classes
        self.ignore_index = self.confusion.ignore_index
        self.reset()

    def reset(self):
        """Forget every image seen."""
        self.confusion.reset()
        C = self.num_classes
        self._objects = np.zeros(C, np.int64)        # number of objects of each class
        self._pixels = np.zeros(C, np.int64)         # their total size
        self._recall = np.zeros(C, np.float64)       # sum over them of tp_k / size_k

    def update(self, pred, target, instance_masks, instance_labels):
        """Add one image.

        Parameters
        ----------
        pred : array_like of int, shape (H, W)
            Predicted class ids.
        target : array_like of int, shape (H, W)
            Ground-truth class ids in ``[0, C)``, or ``ignore_index``.
        instance_masks : array_like of bool, shape (G, H, W)
            One mask per ground-truth object (``G`` may be 0), e.g. a
            :class:`edu_seg.data.Shapes` sample's ``instance_masks``.
        instance_labels : array_like of int, shape (G,)
            Each object's class (a sample's ``labels``).

        Raises
        ------
        ValueError
            Shapes disagree; a class id is outside ``[0, C)``; an object covers a pixel
            whose target is another class.
        """
        op = "InstanceWeightedIoU.update"
        pred, target = _as_numpy(pred, "pred"), _as_numpy(target, "target")
        masks = _as_numpy(instance_masks, "instance_masks").astype(bool)
        labels = _as_numpy(instance_labels, "instance_labels")
        if target.ndim != 2:
            raise ValueError(f"{op}: target must be one (H, W) image, got shape {target.shape}")
        if masks.ndim != 3 or masks.shape[1:] != target.shape:
            raise ValueError(f"{op}: instance_masks must be (G, {target.shape[0]}, "
                             f"{target.shape[1]}) like the target, got shape {masks.shape}")
        if labels.shape != (len(masks),) or labels.dtype.kind not in "iu":
            raise ValueError(f"{op}: instance_labels must be {len(masks)} integer class ids "
                             f"(one per mask), got shape {labels.shape} dtype {labels.dtype}")
        if ((labels < 0) | (labels >= self.num_classes)).any():
            raise ValueError(f"{op}: instance_labels must be in [0, {self.num_classes}), got "
                             f"{labels.tolist()}")
        labels = labels.astype(np.int64)
        if self.ignore_index is not None:
            masks = masks & (target != self.ignore_index)
        wrong = masks & (target != labels[:, None, None])                 # (G, H, W)
        if wrong.any():
            k = int(np.flatnonzero(wrong.any(axis=(1, 2)))[0])
            raise ValueError(f"{op}: object {k} has class {labels[k]} but covers pixels whose "
                             f"target is {np.unique(target[wrong[k]]).tolist()}")
        # The confusion matrix checks pred against target (shape, class ids) and raises
        # before it counts anything; the objects are counted only after it.
        self.confusion.update(pred[None], target[None])
        size = masks.sum(axis=(1, 2))                                      # (G,)
        hit = (masks & (pred == labels[:, None, None])).sum(axis=(1, 2))   # (G,) tp_k
        seen = size > 0                        # an empty (fully ignored) object has no size
        np.add.at(self._objects, labels[seen], 1)
        np.add.at(self._pixels, labels[seen], size[seen])
        np.add.at(self._recall, labels[seen], hit[seen] / size[seen])

    def iou(self):
        """iIoU per class, shape (C,); NaN for a class without objects (e.g. the background)."""
        ratio = ConfusionMatrix._ratio
        mean_size = ratio(self._pixels, self._objects)                  # S_c, NaN if no object
        itp = mean_size * self._recall                                  # sum_k w_k tp_k
        ifn = mean_size * (self._objects - self._recall)                # sum_k w_k fn_k
        m = self.confusion.matrix
        fp = m.sum(axis=0) - np.diag(m)                                 # unweighted
        return ratio(itp, itp + fp + ifn)

    def miou(self):
        """Mean iIoU over the classes with objects (NaN entries of :meth:`iou` skipped)."""
        return ConfusionMatrix._nanmean(self.iou())

    def __repr__(self):
        return (f"InstanceWeightedIoU(num_classes={self.num_classes}, "
                f"ignore_index={self.ignore_index}, objects={int(self._objects.sum())})")


# ==========================================================================================
# Instance metrics: COCO-style box and mask average precision
# ==========================================================================================
#: The ten IoU thresholds 0.50, 0.55, .., 0.95, made with ``np.linspace`` exactly as COCOeval
#: makes them (``np.arange`` drifts above the true values), so that an IoU of exactly 0.6
#: compares with the third threshold the same way in both.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)

#: The 101 recall points 0, 0.01, .., 1 at which COCO samples the precision curve.
COCO_RECALL_POINTS = np.linspace(0.0, 1.0, 101)

#: The object-size ranges, in the order of the summaries' ``AP``, ``APs``, ``APm``, ``APl``.
AREA_NAMES = ("all", "small", "medium", "large")

IOU_TYPES = ("box", "mask")


def coco_area_ranges(image_size):
    """COCO's small / medium / large object areas, scaled to images of side ``image_size``.

    Parameters
    ----------
    image_size : int or (int, int)
        The image side ``S`` in pixels, or ``(H, W)`` (then ``S = max(H, W)``).

    Returns
    -------
    dict
        ``{"all": (0, inf), "small": (0, a), "medium": (a, b), "large": (b, inf)}`` in
        pixels², with ``a = (32·S/640)²`` and ``b = (96·S/640)²``.

    Notes
    -----
    COCO (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014) calls an object
    small below 32² px², large above 96² px²; its images are about 640 px on their longer
    side. On a 64-pixel image every object would be "small" by those absolute numbers, and
    the split would say nothing. What the ranges mean is a fraction of the image — small is
    under 5 % of the side, large over 15 % — so both thresholds are scaled by ``S/640``:
    at ``S = 64``, small < 10.24 px² (3.2²), large > 92.16 px² (9.6²); at ``S = 640`` they
    are COCO's own. Like COCOeval, both ends of a range are inclusive.

    Examples
    --------
    >>> coco_area_ranges(64)["medium"]
    (10.24, 92.16)
    """
    pair = (image_size, image_size) if np.ndim(image_size) == 0 else tuple(image_size)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                 and v > 0 for v in pair):
        raise ValueError(f"coco_area_ranges: image_size must be a positive int or a pair "
                         f"(H, W) of them, got {image_size!r}")
    side = max(int(v) for v in pair)
    # (32·S)² / 640² divides two exact integers once, so S = 64 gives 10.24 to the last bit.
    small, large = (32 * side) ** 2 / 640 ** 2, (96 * side) ** 2 / 640 ** 2
    return {"all": (0.0, float("inf")), "small": (0.0, small), "medium": (small, large),
            "large": (large, float("inf"))}


def coco_match(ious, gt_ignore, iou_thresholds=COCO_IOU_THRESHOLDS):
    """COCOeval's greedy matching of score-sorted detections to ground truths.

    One image and one class, every (area range, IoU threshold) at once.

    Parameters
    ----------
    ious : (D, G) float
        IoU of each detection (rows, sorted by decreasing score) with each ground truth.
    gt_ignore : (A, G) bool
        One row per area range: the ground truths that range ignores (their area lies
        outside it).
    iou_thresholds : (T,) float

    Returns
    -------
    (A, T, D) int64
        The ground truth each detection matched under each (range, threshold); -1 for none.

    Notes
    -----
    For each range and threshold ``t``, on its own: the detections take their turn in score
    order; a detection takes, among the ground truths not yet taken whose IoU with it is
    ``>= t``, the one with the highest IoU — but it takes an ignored ground truth only when
    no ground truth of the range qualifies; equal IoUs go to the later ground truth. A
    ground truth is taken at most once, so a duplicate detection of an object already found
    stays unmatched (a false positive). This is greedy, not an optimal assignment: a
    confident detection keeps the object it grabbed even if that leaves a later detection
    without one, exactly as COCOeval (``evaluateImg``) does it.

    Examples
    --------
    >>> ious = np.array([[0.9, 0.6], [0.8, 0.55]])     # 2 detections x 2 ground truths
    >>> coco_match(ious, np.zeros((1, 2), bool), [0.5, 0.7])[0]
    array([[ 0,  1],
           [ 0, -1]])
    """
    ious = np.asarray(ious, dtype=np.float64)
    gt_ignore = np.asarray(gt_ignore)
    iou_thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    if ious.ndim != 2:
        raise ValueError(f"coco_match: ious must be a (D, G) matrix, got shape {ious.shape}")
    if gt_ignore.dtype != bool or gt_ignore.ndim != 2 or gt_ignore.shape[1] != ious.shape[1]:
        raise ValueError(f"coco_match: gt_ignore must be a bool (A, {ious.shape[1]}) array, one "
                         f"row per area range; got {gt_ignore.dtype} shape {gt_ignore.shape}")
    if iou_thresholds.ndim != 1:
        raise ValueError(f"coco_match: iou_thresholds must be 1-D, got shape "
                         f"{iou_thresholds.shape}")
    return _coco_match(ious, gt_ignore, iou_thresholds)


def _coco_match(ious, gt_ignore, thresholds):
    """:func:`coco_match` on checked arrays."""
    (D, G), A, T = ious.shape, len(gt_ignore), len(thresholds)
    match = np.full((A, T, D), -1, dtype=np.int64)
    if G == 0:
        return match
    # COCOeval caps a threshold just below 1, so that a threshold of 1 still matches an IoU
    # of 1 up to rounding.
    thresholds = np.minimum(thresholds, 1 - 1e-10)[:, None]                # (T, 1)
    regular = ~gt_ignore[:, None, :]                                        # (A, 1, G)
    taken = np.zeros((A, T, G), dtype=bool)
    # A detection whose best IoU is under every threshold can match nothing: skip it.
    for d in np.flatnonzero(ious.max(axis=1) >= thresholds.min()):
        free = ~taken & (ious[d] >= thresholds)                            # (A, T, G)
        if not free.any():          # e.g. a duplicate whose objects are all taken already
            continue
        free_regular = free & regular
        pool = np.where(free_regular.any(axis=2, keepdims=True), free_regular, free)
        best = np.where(pool, ious[d], -1.0)
        g = G - 1 - np.argmax(best[..., ::-1], axis=2)     # argmax of the reversed row: the
        hit = pool.any(axis=2)                             # LAST of equal IoUs wins
        match[:, :, d] = np.where(hit, g, -1)
        a, t = np.nonzero(hit)
        taken[a, t, g[a, t]] = True
        if taken.all():
            break
    return match


def _interpolated_precision(scores, matched, ignored, num_gt):
    """COCO's precision at the 101 recall points, for one class and one area range.

    scores: (N,) the class's detections over the whole dataset, image after image;
    matched, ignored: (T, N) bool; num_gt: ground truths of the range (> 0). Returns (T, 101).
    """
    order = np.argsort(-scores, kind="mergesort")     # stable: equal scores keep image order
    matched, ignored = matched[:, order], ignored[:, order]
    tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)     # ignored detections are
    fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)    # neither TP nor FP
    recall = tp / num_gt
    # + eps: while every detection so far was ignored, precision is 0 rather than 0/0. (So a
    # perfect score is 1/(1 + eps) = 1 - 2.2e-16, in COCOeval too.)
    precision = tp / (fp + tp + np.spacing(1))
    # Make precision non-increasing: the value at recall r is the best precision reachable
    # at any recall >= r (the "interpolated" precision of PASCAL VOC and COCO).
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    out = np.zeros((len(matched), len(COCO_RECALL_POINTS)))
    for t in range(len(matched)):
        # The first detection whose recall reaches each point; points never reached stay 0.
        first = np.searchsorted(recall[t], COCO_RECALL_POINTS, side="left")
        reached = first < len(scores)
        out[t, reached] = precision[t, first[reached]]
    return out


def _instance_array(op, x, name):
    """A NumPy array from an array, a list, an ``edu_seg.Tensor`` or a CuPy array."""
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    if hasattr(x, "get") and not isinstance(x, np.ndarray):   # a CuPy array: copy to the host
        x = x.get()
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{op}: {name} must be a numeric array, got dtype {x.dtype}")
    return x


def _instance_inputs(op, sample, who, need_masks):
    """Check one image's dict; returns (boxes (K, 4) float64, labels (K,) int64, scores (K,)
    float64 or None, masks (K, H, W) bool or None). ``who`` is ``"predictions[i]"`` or
    ``"targets[i]"``."""
    if not isinstance(sample, dict):
        raise TypeError(f"{op}: {who} must be a dict with boxes, labels, ... (one per image), "
                        f"got {type(sample).__name__}")
    is_pred = who.startswith("predictions")
    keys = ["boxes", "labels"] + (["scores"] if is_pred else []) + (["masks"] if need_masks
                                                                      else [])
    missing = [k for k in keys if k not in sample]
    if missing:
        hint = "" if is_pred or "instance_masks" not in sample else \
            " (a Shapes sample calls them instance_masks: pass them as masks)"
        raise ValueError(f"{op}: {who} has no {', '.join(missing)}{hint}")
    arrays = {k: _instance_array(op, sample[k], f"{who}['{k}']") for k in keys}

    boxes = arrays["boxes"].astype(np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{op}: {who}['boxes'] must have shape (K, 4) = (x1, y1, x2, y2) "
                         f"rows, got shape {boxes.shape}")
    K = len(boxes)
    bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2:] < boxes[:, :2]).any(axis=1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{op}: {who}['boxes'][{k}] = {boxes[k].tolist()} must be finite "
                         f"(x1, y1, x2, y2) with x2 >= x1 and y2 >= y1")
    labels = arrays["labels"]
    if labels.dtype.kind not in "iu" or labels.shape != (K,):
        raise ValueError(f"{op}: {who}['labels'] must be {K} integer class ids, one per box; "
                         f"got dtype {labels.dtype} shape {labels.shape}")
    if K and labels.min() < 0:
        raise ValueError(f"{op}: {who}['labels'] contains {labels.min()}; class ids must be "
                         f">= 0")
    scores = None
    if is_pred:
        scores = arrays["scores"].astype(np.float64)
        if scores.shape != (K,):
            raise ValueError(f"{op}: {who}['scores'] must have shape ({K},), one per box, got "
                             f"{scores.shape}")
        if not np.isfinite(scores).all():
            raise ValueError(f"{op}: {who}['scores'] must be finite, got "
                             f"{scores[~np.isfinite(scores)][0]} (NaN has no place in a ranking)")
    masks = None
    if need_masks:
        masks = arrays["masks"]
        if masks.ndim != 3 or len(masks) != K:
            raise ValueError(f"{op}: {who}['masks'] must have shape ({K}, H, W), one per box, "
                             f"got {masks.shape}")
        if masks.dtype != bool and masks.size:
            lo, hi = masks.min(), masks.max()
            if is_pred and not 0 <= lo <= hi <= 1:
                raise ValueError(f"{op}: {who}['masks'] must be bool or probabilities in [0, 1], "
                                 f"got values in [{lo}, {hi}] (logits? apply a sigmoid first)")
            if not is_pred and not np.isin(masks, (0, 1)).all():
                raise ValueError(f"{op}: {who}['masks'] must be bool (or 0/1), got values in "
                                 f"[{lo}, {hi}]")
        # A predicted mask covers the pixels of probability >= 0.5 (torchvision's COCO
        # evaluation binarises the same way).
        masks = masks >= 0.5 if is_pred else masks.astype(bool)
    return boxes, labels.astype(np.int64), scores, masks


def _check_area_ranges(op, area_ranges):
    """The dict of :func:`coco_area_ranges` as a (4, 2) float array in AREA_NAMES order."""
    if not isinstance(area_ranges, dict) or set(area_ranges) != set(AREA_NAMES):
        got = sorted(area_ranges) if isinstance(area_ranges, dict) else type(area_ranges).__name__
        raise ValueError(f"{op}: area_ranges must be a dict with keys {list(AREA_NAMES)}, got "
                         f"{got} (see coco_area_ranges)")
    out = np.zeros((len(AREA_NAMES), 2))
    for a, name in enumerate(AREA_NAMES):
        try:
            lo, hi = (float(v) for v in area_ranges[name])
        except (TypeError, ValueError):
            lo = hi = float("nan")
        if not 0 <= lo <= hi:
            raise ValueError(f"{op}: area_ranges[{name!r}] must be a pair (low, high) with "
                             f"0 <= low <= high, got {area_ranges[name]!r}")
        out[a] = lo, hi
    return out


class InstanceAP:
    """COCO-style box and mask average precision, accumulated over a dataset batch by batch.

    Parameters
    ----------
    iou_types : sequence of {"box", "mask"}
        Which overlaps to score: box IoU, mask IoU, or both.
    max_detections : int
        Detections kept per image and class, the highest scores first (COCO: 100).
    area_ranges : dict, optional
        ``{"all", "small", "medium", "large"}`` -> ``(low, high)`` object areas in px².
        Default: :func:`coco_area_ranges` of the images' longer side (then every image must
        have the size of the first).

    Notes
    -----
    This is COCOeval's protocol (pycocotools; Lin et al., "Microsoft COCO: Common Objects in
    Context", ECCV 2014), step by step, and it gives the same numbers:

    1. **Per image and class** (:meth:`update`): sort the detections by score (a stable sort)
       and keep the first ``max_detections``; compute the IoU of every detection with every
       ground truth — boxes: ``|A ∩ B| / |A ∪ B|`` with widths ``x2 − x1``; masks: pixel
       counts, a predicted mask being its pixels of probability >= 0.5. For each area range
       and each IoU threshold ``t`` in 0.50, 0.55, .., 0.95, match greedily
       (:func:`coco_match`).
    2. **Ignore what the range does not cover.** A ground truth whose area (its mask's pixel
       count, for box AP too, like COCO's ``area`` field) is outside the range is ignored;
       so is a detection matched to an ignored ground truth, and an unmatched detection
       whose own area (mask pixels for mask AP, box ``w·h`` for box AP) is outside the
       range. Ignored ones count neither as hits nor as misses.
    3. **Per class, over the whole dataset** (:meth:`summary`): pool the class's detections
       from every image, sort them by score, and walk down the list: a matched one is a true
       positive, an unmatched one a false positive. After each detection,
       ``recall = TP / G`` (``G`` = ground truths of the range) and
       ``precision = TP / (TP + FP)``. Make precision non-increasing from the right (the best
       precision at this recall or beyond), read it at recall 0, 0.01, .., 1 (the first
       detection to reach that recall; 0 if never reached): AP is the mean of those 101
       values.
    4. **Average**: ``AP`` = the mean over the 10 thresholds and the classes; ``AP50``,
       ``AP75`` = one threshold; ``APs``, ``APm``, ``APl`` = the other ranges. A class with no
       ground truth in the range has no AP (COCO's -1) and stays out of the mean; a result
       with no class at all is -1.

    COCOeval evaluates each (image, class) pair on its own, so ``max_detections`` caps each
    class of each image, not the image as a whole.

    Examples
    --------
    >>> masks = np.zeros((1, 64, 64), bool); masks[0, 10:30, 10:20] = True
    >>> target = {"boxes": np.array([[10., 10., 20., 30.]]), "labels": np.array([1]),
    ...           "masks": masks}
    >>> pred = dict(target, scores=np.array([0.9]))
    >>> metric = InstanceAP()
    >>> metric.update([pred], [target])
    >>> ap = metric.summary()
    >>> round(ap["mask"]["AP"], 12), ap["box"]["APs"]      # no small object: APs undefined
    (1.0, -1.0)
    """

    def __init__(self, iou_types=IOU_TYPES, max_detections=100, area_ranges=None):
        op = "InstanceAP"
        if not isinstance(iou_types, (list, tuple)) or not all(t in IOU_TYPES for t in iou_types) \
                or not len(iou_types) or len(set(iou_types)) != len(iou_types):
            raise ValueError(f"{op}: iou_types must be a non-empty sequence of distinct names "
                             f"from {IOU_TYPES}, got {iou_types!r}")
        if isinstance(max_detections, bool) or not isinstance(max_detections, (int, np.integer)) \
                or max_detections < 1:
            raise ValueError(f"{op}: max_detections must be a positive int, got "
                             f"{max_detections!r}")
        self.iou_types = tuple(iou_types)
        self.max_detections = int(max_detections)
        self.area_ranges = area_ranges
        self._fixed_ranges = None if area_ranges is None else _check_area_ranges(op, area_ranges)
        self.reset()

    def reset(self):
        """Forget every image seen (e.g. before a new evaluation pass)."""
        # _records[kind][c]: one (scores (D,), matched (A, T, D), ignored (A, T, D)) per image
        # that has detections or ground truths of class c; _num_gt[c]: (A,) ground truths of
        # class c inside each area range.
        self._records = {kind: {} for kind in self.iou_types}
        self._num_gt = {}
        self._ranges = self._fixed_ranges
        self._image_size = None
        self.num_images = 0

    def update(self, predictions, targets):
        """Match one batch of images' detections to their ground truths.

        Parameters
        ----------
        predictions : list of dict, one per image
            ``boxes`` (K, 4) float ``(x1, y1, x2, y2)`` in pixel-edge coordinates, ``labels``
            (K,) int, ``scores`` (K,) float, and ``masks`` (K, H, W) float in [0, 1] or bool
            (needed for mask AP) — what an instance model's eval forward returns.
        targets : list of dict, one per image
            ``boxes`` (G, 4), ``labels`` (G,), ``masks`` (G, H, W) bool (always needed: an
            object's area is its mask's pixel count) — a :class:`edu_seg.data.Shapes` sample's
            ``boxes``, ``labels`` and ``instance_masks``.

        Raises
        ------
        ValueError
            The lists differ in length; a dict misses a key; ``boxes``, ``labels``,
            ``scores``, ``masks`` disagree on ``K``; a box is not finite or has ``x2 < x1``;
            a label is negative; a score is NaN; predicted masks are outside [0, 1]; a
            prediction's masks differ in size from its target's.
        """
        op = "InstanceAP.update"
        for name, value in (("predictions", predictions), ("targets", targets)):
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{op}: {name} must be a list with one dict per image, got "
                                f"{type(value).__name__}")
        if len(predictions) != len(targets):
            raise ValueError(f"{op}: got {len(predictions)} predictions for {len(targets)} "
                             f"targets; pass one of each per image")
        need_pred_masks = "mask" in self.iou_types
        images = []                          # check the whole batch before recording any of it
        for i, (pred, target) in enumerate(zip(predictions, targets)):
            p = _instance_inputs(op, pred, f"predictions[{i}]", need_pred_masks)
            t = _instance_inputs(op, target, f"targets[{i}]", True)
            if need_pred_masks and p[3].shape[1:] != t[3].shape[1:]:
                raise ValueError(f"{op}: predictions[{i}]['masks'] are {p[3].shape[1:]} pixels "
                                 f"but targets[{i}]['masks'] are {t[3].shape[1:]}")
            images.append((p, t))
        for p, t in images:
            self._add_image(p, t)

    def _ranges_for(self, image_size):
        """The (4, 2) area ranges, fixed by the first image unless given."""
        if self._image_size is None:
            self._image_size = image_size
            if self._ranges is None:
                self._ranges = _check_area_ranges("InstanceAP",
                                                  coco_area_ranges(tuple(image_size)))
        elif self.area_ranges is None and image_size != self._image_size:
            raise ValueError(f"InstanceAP.update: an image of {image_size} pixels after images "
                             f"of {self._image_size}; the default area ranges follow the image "
                             f"size, so pass area_ranges=coco_area_ranges(S) for one S")
        return self._ranges

    def _add_image(self, pred, target):
        """Match one checked image, class by class, and record the outcome."""
        boxes, labels, scores, masks = pred
        gt_boxes, gt_labels, _, gt_masks = target
        ranges = self._ranges_for(gt_masks.shape[1:])
        lo, hi = ranges[:, :1], ranges[:, 1:]                     # (A, 1) each

        def outside(area):                                        # (N,) -> (A, N)
            return (area < lo) | (area > hi)

        pixels = gt_masks.shape[1] * gt_masks.shape[2]
        flat_gt = gt_masks.reshape(len(gt_masks), pixels).astype(np.float64)
        gt_area = flat_gt.sum(axis=1)          # COCO's "area": the mask's pixel count
        gt_ignore = outside(gt_area)
        order = np.argsort(-scores, kind="mergesort")             # highest score first, stable
        for c in np.union1d(labels, gt_labels):
            d = order[labels[order] == c][:self.max_detections]
            g = np.flatnonzero(gt_labels == c)
            self._num_gt[c] = self._num_gt.get(c, 0) + (~gt_ignore[:, g]).sum(axis=1)
            for kind in self.iou_types:
                if kind == "box":
                    ious, det_area = box_iou(boxes[d], gt_boxes[g]), box_area(boxes[d])
                else:
                    flat = masks[d].reshape(len(d), pixels).astype(np.float64)
                    inter = flat @ flat_gt[g].T                   # (D, G) pixel counts
                    det_area = flat.sum(axis=1)
                    union = det_area[:, None] + gt_area[g] - inter
                    ious = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
                match = _coco_match(ious, gt_ignore[:, g], COCO_IOU_THRESHOLDS)
                matched = match >= 0
                # Taking an ignored ground truth makes the detection ignored too; so does
                # matching nothing while being outside the range itself.
                took_ignored = np.zeros_like(matched)
                if len(g):                    # the ignore flag of the ground truth taken
                    took_ignored = matched & np.take_along_axis(
                        gt_ignore[:, g][:, None, :], np.maximum(match, 0), axis=2)
                ignored = took_ignored | (~matched & outside(det_area)[:, None, :])
                self._records[kind].setdefault(c, []).append((scores[d], matched, ignored))
        self.num_images += 1

    def precision(self, iou_type):
        """COCO's precision table for one IoU type.

        Returns
        -------
        classes : (C,) int64
            The class ids seen (in ground truths or detections), ascending.
        precision : (T, R, C, A) float
            Interpolated precision at IoU threshold ``T`` (:data:`COCO_IOU_THRESHOLDS`),
            recall point ``R`` (:data:`COCO_RECALL_POINTS`), class and area range
            (:data:`AREA_NAMES`); -1 where the class has no ground truth in the range.
        """
        if iou_type not in self.iou_types:
            raise ValueError(f"InstanceAP.precision: iou_type must be one of {self.iou_types}, "
                             f"got {iou_type!r}")
        classes = np.array(sorted(self._num_gt), dtype=np.int64)
        table = -np.ones((len(COCO_IOU_THRESHOLDS), len(COCO_RECALL_POINTS), len(classes),
                          len(AREA_NAMES)))
        for k, c in enumerate(classes):
            records = self._records[iou_type][c]
            scores = np.concatenate([r[0] for r in records])
            for a in range(len(AREA_NAMES)):
                if self._num_gt[c][a] == 0:
                    continue
                matched = np.concatenate([r[1][a] for r in records], axis=1)
                ignored = np.concatenate([r[2][a] for r in records], axis=1)
                table[:, :, k, a] = _interpolated_precision(scores, matched, ignored,
                                                            self._num_gt[c][a])
        return classes, table

    def summary(self):
        """COCO's six AP numbers per IoU type.

        Returns
        -------
        dict
            ``{"box": {"AP", "AP50", "AP75", "APs", "APm", "APl"}, "mask": {...}}`` (the
            ``iou_types`` asked for) of floats in [0, 1]; -1 where no class has a ground truth
            to score (e.g. ``APl`` when no object is large).
        """
        mean = _mean_defined
        out = {}
        for kind in self.iou_types:
            p = self.precision(kind)[1]                           # (T, R, C, A)
            # COCO_IOU_THRESHOLDS[0] is 0.50 and [5] is 0.75.
            out[kind] = {"AP": mean(p[..., 0]), "AP50": mean(p[0, ..., 0]),
                         "AP75": mean(p[5, ..., 0]), "APs": mean(p[..., 1]),
                         "APm": mean(p[..., 2]), "APl": mean(p[..., 3])}
        return out

    def ap_by_threshold(self, iou_type, area="all"):
        """AP at each IoU threshold separately: where in 0.50..0.95 a model loses.

        Parameters
        ----------
        iou_type : {"box", "mask"}
        area : one of :data:`AREA_NAMES`

        Returns
        -------
        (T,) float array
            AP at each of :data:`COCO_IOU_THRESHOLDS` (their mean is ``summary()``'s AP for
            that area); -1 where undefined.
        """
        if area not in AREA_NAMES:
            raise ValueError(f"InstanceAP.ap_by_threshold: area must be one of {AREA_NAMES}, "
                             f"got {area!r}")
        p = self.precision(iou_type)[1][..., AREA_NAMES.index(area)]   # (T, R, C)
        return np.array([_mean_defined(p[t]) for t in range(len(p))])

    def __repr__(self):
        return (f"InstanceAP(iou_types={self.iou_types}, max_detections={self.max_detections}, "
                f"images={self.num_images})")


def _mean_defined(values):
    """Mean of the entries that are not -1 (COCO's mark for "undefined"); -1 if none are."""
    values = values[values > -1]
    return float(values.mean()) if values.size else -1.0


def instance_average_precision(predictions, targets, iou_types=IOU_TYPES, max_detections=100,
                               area_ranges=None):
    """COCO box and mask AP of a list of images' detections in one call.

    One :class:`InstanceAP` update (see it for the protocol); an evaluation loop over
    batches uses :class:`InstanceAP` itself.

    Parameters
    ----------
    predictions : list of dict, one per image
        ``boxes`` (K, 4), ``labels`` (K,), ``scores`` (K,), ``masks`` (K, H, W) in [0, 1]
        (see :meth:`InstanceAP.update`).
    targets : list of dict, one per image
        ``boxes`` (G, 4), ``labels`` (G,), ``masks`` (G, H, W) bool.
    iou_types, max_detections, area_ranges
        As for :class:`InstanceAP`.

    Returns
    -------
    dict
        ``{"box": {"AP", "AP50", "AP75", "APs", "APm", "APl"}, "mask": {...}}``, -1 where
        undefined (:meth:`InstanceAP.summary`).

    Examples
    --------
    >>> masks = np.zeros((1, 64, 64), bool); masks[0, 10:30, 10:20] = True
    >>> target = {"boxes": np.array([[10., 10., 20., 30.]]), "labels": np.array([1]),
    ...           "masks": masks}
    >>> miss = {"boxes": np.array([[40., 40., 50., 60.]]), "labels": np.array([1]),
    ...         "scores": np.array([0.9]), "masks": np.roll(masks, 30, axis=(1, 2))}
    >>> instance_average_precision([miss], [target])["box"]["AP"]
    0.0
    """
    metric = InstanceAP(iou_types, max_detections, area_ranges)
    metric.update(predictions, targets)
    return metric.summary()


def format_instance_ap(results):
    """One line per IoU type: ``box AP 0.512 AP50 0.804 AP75 0.553`` (``-`` when undefined).

    Parameters
    ----------
    results : dict
        What :meth:`InstanceAP.summary` or :func:`instance_average_precision` returns.

    Examples
    --------
    >>> print(format_instance_ap({"mask": {"AP": 0.5, "AP50": 0.75, "AP75": -1.0}}))
    mask AP 0.500 AP50 0.750 AP75 -
    """
    if not isinstance(results, dict) or not all(
            isinstance(v, dict) and {"AP", "AP50", "AP75"} <= set(v) for v in results.values()):
        raise ValueError("format_instance_ap: results must map an IoU type to a dict with "
                         "AP, AP50 and AP75, as InstanceAP.summary() returns")
    return "\n".join(f"{kind} " + " ".join(
        f"{key} {'-' if stats[key] < 0 else format(stats[key], '.3f')}"
        for key in ("AP", "AP50", "AP75")) for kind, stats in results.items())
