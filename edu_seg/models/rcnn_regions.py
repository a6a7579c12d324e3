"""R-CNN for semantic segmentation: classify region proposals one by one, then paint the winners.

Girshick, Donahue, Darrell and Malik, "Rich feature hierarchies for accurate object detection
and semantic segmentation", CVPR 2014 (arXiv:1311.2524), section 5; Hariharan, Arbeláez,
Girshick and Malik, "Simultaneous Detection and Segmentation", ECCV 2014 (arXiv:1407.1808).

Before fully convolutional networks, a CNN was an image CLASSIFIER: a fixed-size picture in,
one label out. R-CNN turned that into a segmenter by asking it about regions instead of
pixels. A cheap, class-agnostic algorithm (selective search, :mod:`edu_seg.proposals`)
proposes a hundred or so regions that might be whole objects; each region is cut out,
warped to the CNN's fixed input size and classified; each pixel then takes the label of the
best region that covers it::

    image ── selective search ── R regions: boxes (R, 4), masks (R, H, W)        (no learning)
                  │
                  ├─ BOX pathway:    the box, warped to S x S ─────────── CNN ─┐
                  │                                                            ├─ concat ─┐
                  └─ REGION pathway: pixels outside the mask blanked, ── CNN ──┘          │
                                     the same box warped to S x S                         │
                                                                                          │
    SVMs: one linear score per class, (R, K) ◄────────────────────────────────────────────┘
      │
      └─ paint: each pixel takes the scores of its most confident covering region ── (K, H, W)

The two pathways are R-CNN's "full" and "fg" features (SDS trains them as two networks): the
box shows the object in its surroundings, the blanked region shows its SHAPE alone (blanked
pixels are set to the mean colour, i.e. zero once the mean is subtracted). The classifier on
their concatenation is one linear SVM per class, trained one-vs-rest with the hinge loss.

The approach has two built-in limits that the chapter measures against an FCN of similar size:

- **Slow**: a full CNN pass per REGION, about 137 of them per 64x64 Shapes image (R-CNN ran
  2000 per photo), plus selective search itself. An FCN runs one pass per IMAGE and shares
  the computation of overlapping windows.
- **Coarse**: a pixel can only be labelled along the edge of some proposal. If no proposal
  follows an object's outline, nothing downstream can; :func:`region_oracle` computes the
  best labelling the proposals allow (and the best that this model's labelling rule allows).

What this small version keeps from the papers
    - Class-agnostic region proposals, computed once per image and cached
      (:class:`ProposalCache`): they do not depend on the weights. Selective search is
      R-CNN's detector's choice; its segmentation experiments used CPMC regions, SDS used MCG.
      All three give regions with masks, which is what segmentation needs.
    - Every region is warped, whatever its aspect ratio, to one fixed square (R-CNN's
      "warp"), here by RoIAlign on the image itself (:func:`edu_seg.ops.roi.roi_align`).
    - The two pathways, box and region-on-a-blank-background, as two separate CNNs whose
      features are concatenated (as in SDS).
    - Training labels by overlap with the ground-truth objects: IoU >= 0.5 takes the
      object's class, IoU < 0.3 is background, in between is left out; a fixed number of
      regions per image, at most a quarter of them positive (R-CNN: 32 positives and 96
      background regions per batch of 128).
    - One linear SVM per class (background included), one-vs-rest hinge loss with an L2
      penalty on the weights (the SVM's regulariser), fed features that the SVM loss does not
      change (in R-CNN the CNN was frozen when the SVMs were trained).
    - At test time EVERY proposal goes through both CNNs.

What it changes, and why
    - No ImageNet: R-CNN fine-tuned a pretrained AlexNet with a softmax classifier on region
      labels, THEN froze it and trained the SVMs on its features. With no pretrained CNN and
      one training loop, the two stages run at once: each step, a softmax layer's
      cross-entropy on the region labels (the ``"ce"`` term) trains the CNNs, and the SVMs
      take a hinge-loss step (the ``"hinge"`` term) on the same features with their gradient
      stopped (:meth:`~edu_seg.autograd.Tensor.detach`), so no hinge gradient reaches the
      CNNs. Only the SVMs' scores are used at test time; the softmax layer is for training.
    - Overlap is MASK IoU (SDS's region overlap), not box IoU: the targets are masks. The same
      labels train both losses (R-CNN's SVMs took only the ground-truth boxes as positives
      and mined hard negatives; with ~137 regions per image, sampling them is enough).
    - Small sizes: a 24x24 warp (R-CNN: 227x227, the box first enlarged so that 16 of those
      pixels show context around it; no context here), three conv-BN-ReLU blocks per pathway
      instead of AlexNet.
    - Blanking uses the image's own mean colour (the papers: the dataset's mean image).
    - Painting: each pixel takes the SVM scores of the covering region whose best foreground
      score is highest (:func:`paint_regions`). R-CNN's segmentation used the region scoring
      and pasting of O2P (Carreira, Caseiro, Batista and Sminchisescu, "Semantic
      Segmentation with Second-Order Pooling", ECCV 2012); SDS refined the masks of its top
      detections. The simplest rule keeps the idea visible: pixels follow proposal outlines.
    - Proposals see the image clipped to [0, 1] (selective search bins colours in that range);
      the CNNs see it unclipped.

Measured with the zoo's recipe (Shapes "default", 4 classes, 300 steps of batch 16, one
thread of an AMD EPYC): mIoU 0.733 against 0.827 for ``fcn8s``; a training step takes 261 ms
against 39 ms; inference takes 34 ms per image once the proposals are cached (32 ms of it the
crops and the two CNNs over ~140 regions) plus 12.5 ms of selective search, against 0.8 ms
for ``fcn8s``. The proposals themselves are nearly exact on Shapes (:func:`region_oracle`
``"best"``: 0.99 mIoU); a classifier perfect on the training labels, painted by the rule
above, reaches 0.81 (``"all"``): the loose regions that the 0.5 threshold calls positive
spill over onto the background.

The classified regions are objects too: :meth:`RCNNRegions.detect_objects` lists them as an
instance model does (each region's mask, its class, its SVM score, per-class NMS), so that the
zoo scores the region approach by mask AP beside Mask R-CNN (SDS's "region detection").

Shapes: ``x: (N, C, H, W)`` with ``C = in_channels`` (1 or 3) -> scores ``(N, num_classes, H,
W)``; in training, :meth:`RCNNRegions.forward_train` returns the sampled regions' scores.
"""
import dataclasses
import hashlib
from collections import OrderedDict

import numpy as np
from scipy import ndimage

from .. import nn
from ..autograd import Tensor, cat, no_grad
from ..boxes import batched_nms
from ..ops.activations import relu
from ..ops.loss import cross_entropy
from ..ops.misc import default_generator
from ..ops.roi import roi_align
from ..proposals import Proposals, selective_search
from . import register
from .base import SegmentationModel
from .blocks import ConvBNReLU
from .detection import match_boxes, sample_balanced

__all__ = ["RCNNRegionsConfig", "RCNNRegions", "RegionCNN", "ProposalCache", "paint_regions",
           "hinge_loss", "region_oracle"]

#: Bilinear samples per side of each warped pixel: a 64-pixel box warped to 24 pixels spans
#: 2.7 image pixels per output pixel, which 2 x 2 samples cover.
SAMPLING_RATIO = 2


# ---------------------------------------------------------------------------- the config
@dataclasses.dataclass
class RCNNRegionsConfig:
    """Hyper-parameters of :class:`RCNNRegions` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
        Classes including the background (class 0), >= 2.
    in_channels : int
        1 (grey) or 3 (RGB): what selective search reads.
    crop_size : int
        ``S``: every region is warped to ``S x S`` pixels (R-CNN: 227).
    widths : tuple of ints
        Channels of each pathway's conv-BN-ReLU blocks (a 2x2 max-pool between blocks); each
        pathway's feature is its last width, so the SVMs read ``2 * widths[-1]`` numbers.
    regions_per_image : int
        Regions sampled per image and training step (R-CNN fine-tuned on batches of 128).
    positive_fraction : float
        At most this fraction of the sampled regions is positive (R-CNN: 0.25).
    positive_iou, negative_iou : float
        A region whose best mask IoU with an object is >= ``positive_iou`` takes its class;
        below ``negative_iou`` it is background; in between it is not sampled.
    svm_l2 : float
        ``λ`` of the SVMs' regulariser ``λ·‖W‖²`` (added to the hinge term).
    eval_chunk : int
        Regions per CNN call at test time (bounds the memory, changes no result).
    detection_nms_threshold, detections_per_image : float, int
        :meth:`RCNNRegions.detect_objects`: the box IoU above which a region is suppressed
        by a better one of the same class, and how many objects an image keeps (Mask R-CNN's
        0.5 and 100, so that the two are scored alike).
    proposal_cache_size : int
        Images whose proposals are kept (least recently used dropped first; 0: none). About
        70 kB per 64x64 Shapes image, so the default holds a 1024-image training set and its
        validation set in under 150 MB.
    """

    num_classes: int
    in_channels: int = 3
    crop_size: int = 24
    widths: tuple[int, ...] = (16, 32, 64)
    regions_per_image: int = 32
    positive_fraction: float = dataclasses.field(default=0.25,
                                                 metadata={"min": 0.01, "max": 1.0})
    positive_iou: float = dataclasses.field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    negative_iou: float = dataclasses.field(default=0.3, metadata={"min": 0.0, "max": 1.0})
    svm_l2: float = dataclasses.field(default=1e-3, metadata={"min": 0.0, "max": 1.0})
    eval_chunk: int = 256
    proposal_cache_size: int = dataclasses.field(default=2048, metadata={"min": 0})
    detection_nms_threshold: float = dataclasses.field(default=0.5,
                                                       metadata={"min": 0.0, "max": 1.0})
    detections_per_image: int = dataclasses.field(default=100, metadata={"min": 1})

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"RCNNRegionsConfig: num_classes counts the background, so it "
                             f"must be >= 2, got {self.num_classes}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"RCNNRegionsConfig: in_channels must be 1 (grey) or 3 (RGB), "
                             f"the images selective search reads, got {self.in_channels}")
        if self.negative_iou > self.positive_iou:
            raise ValueError(f"RCNNRegionsConfig: negative_iou ({self.negative_iou}) must not "
                             f"exceed positive_iou ({self.positive_iou})")


# ------------------------------------------------------------------------ the proposals
class ProposalCache:
    """Selective-search proposals of each image, computed once and then looked up.

    Proposals depend on the image alone, never on the weights, so an image's second visit
    (the next epoch, an evaluation) costs a lookup instead of ~13 ms of selective search. The
    key is a SHA-1 hash of the image's bytes (with its shape and dtype): equal images share
    an entry whichever batch they come in. The masks are stored packed 8 pixels to a byte.

    Parameters
    ----------
    max_images : int
        Images kept; when full, the least recently used is dropped. 0 disables the cache.

    Attributes
    ----------
    hits, misses : int
        Lookups answered from the cache, and those that ran selective search.

    Examples
    --------
    >>> from edu_seg.data import Shapes
    >>> cache = ProposalCache(max_images=8)
    >>> image = Shapes(1, size=64, seed=1)[0]["image"]
    >>> first, again = cache(image), cache(image)
    >>> (cache.misses, cache.hits), np.array_equal(first.masks, again.masks)
    ((1, 1), True)
    """

    def __init__(self, max_images):
        if isinstance(max_images, bool) or not isinstance(max_images, (int, np.integer)) \
                or max_images < 0:
            raise ValueError(f"ProposalCache: max_images must be an int >= 0, got "
                             f"{max_images!r}")
        self.max_images = int(max_images)
        self.hits = self.misses = 0
        self._entries = OrderedDict()                # key -> (boxes, packed masks)

    def __len__(self):
        return len(self._entries)

    def __call__(self, image):
        """The proposals of ``image: (C, H, W)`` float (colours clipped to [0, 1] for them)."""
        image = np.ascontiguousarray(image)
        key = (image.shape, image.dtype.str, hashlib.sha1(image.tobytes()).hexdigest())
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)           # most recently used last
            boxes, packed = self._entries[key]
            masks = np.unpackbits(packed, axis=-1, count=image.shape[-1]).astype(bool)
            return Proposals(boxes=boxes, masks=masks)             # masks (R, H, W)
        self.misses += 1
        proposals = selective_search(np.clip(image, 0.0, 1.0))
        if self.max_images:
            self._entries[key] = (proposals.boxes, np.packbits(proposals.masks, axis=-1))
            if len(self._entries) > self.max_images:
                self._entries.popitem(last=False)    # the least recently used
        return proposals


# --------------------------------------------------------------- painting and the oracle
def _check_masks(op, name, masks):
    masks = np.asarray(masks)
    if masks.dtype != bool or masks.ndim != 3:
        raise ValueError(f"{op}: {name} must be a (R, H, W) bool array, got dtype "
                         f"{masks.dtype} and shape {masks.shape}")
    return masks


def paint_regions(masks, scores):
    """Per-pixel class scores from per-region scores: the most confident covering region wins.

    Parameters
    ----------
    masks : (R, H, W) bool array
        The regions.
    scores : (R, K) float array
        Each region's class scores; class 0 is the background.

    Returns
    -------
    painted : (K, H, W) float32
        Each pixel holds the score vector of the region that covers it and has the highest
        best-foreground score ``max_{k >= 1} scores[r, k]``; a pixel no region covers holds
        the background one-hot ``(1, 0, ..., 0)``. ``painted.argmax(0)`` is the labelling.

    Notes
    -----
    ``best(p) = argmax_{r : masks[r, p]} max_{k>=1} scores[r, k]`` (the first region on a
    tie), ``painted[:, p] = scores[best(p)]``. The region wins a pixel as a whole: its class
    AND its background score travel together, so a winning region that the background SVM
    prefers labels its pixels background. A pixel can therefore only change label where some
    region's edge runs: the labelling is as coarse as the proposals.

    Examples
    --------
    >>> masks = np.zeros((2, 1, 3), bool)
    >>> masks[0, 0, :2] = True                       # region 0 covers pixels 0 and 1
    >>> masks[1, 0, 1:] = True                       # region 1 covers pixels 1 and 2
    >>> scores = np.array([[0.0, 2.0, -1.0], [0.0, -1.0, 0.5]])
    >>> paint_regions(masks, scores).argmax(0)       # pixel 1: region 0 is more confident
    array([[1, 1, 2]])
    """
    op = "paint_regions"
    masks = _check_masks(op, "masks", masks)
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2 or scores.shape[0] != masks.shape[0] or scores.shape[1] < 2:
        raise ValueError(f"{op}: scores must be (R, K) with R = {masks.shape[0]} regions (one "
                         f"row per mask) and K >= 2 classes, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{op}: scores must be finite; they hold NaN or inf")
    confidence = scores[:, 1:].max(axis=1)                            # (R,)
    ranked = np.where(masks, confidence[:, None, None], -np.inf)      # (R, H, W)
    best = ranked.argmax(axis=0)                                      # (H, W) a region index
    painted = scores[best].transpose(2, 0, 1).copy()                  # (K, H, W)
    uncovered = ~masks.any(axis=0)                                    # (H, W)
    painted[:, uncovered] = 0.0
    painted[0, uncovered] = 1.0
    return painted


def _mask_iou(a, b):
    """IoU of every mask of ``a: (A, H, W)`` with every mask of ``b: (B, H, W)``: (A, B)."""
    a = a.reshape(len(a), -1).astype(np.float32)                       # (A, H·W)
    b = b.reshape(len(b), -1).astype(np.float32)                       # (B, H·W)
    inter = a @ b.T                                                    # (A, B)
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter              # (A, B)
    return inter / np.maximum(union, 1.0)


def region_oracle(masks, instance_masks, instance_labels, num_classes, match="best", iou=0.5):
    """Labellings an oracle builds from the proposals: how far regions alone can go.

    Regions given an object's class are scored by their mask IoU with it, every other region
    is background, and the regions are painted with :func:`paint_regions`, exactly as the
    model paints its SVM scores. Which regions get a class is ``match``:

    - ``"best"``: each object's best-fitting proposal. The CEILING of any labelling made of
      whole proposals: it measures how well the proposals follow the objects' outlines.
    - ``"all"``: every proposal whose best IoU is at least ``iou``, i.e. what a classifier
      that is perfect on the model's training labels (``positive_iou``) would paint. Loose
      regions (an object and a band of background) then win the pixels around their object
      that no tighter region covers: the ceiling of this model's labels and painting rule.

    Parameters
    ----------
    masks : (R, H, W) bool array
        The proposals of one image.
    instance_masks : (G, H, W) bool array
        The objects (``G = 0`` allowed), disjoint.
    instance_labels : (G,) int array
        Their classes, in ``1 .. num_classes - 1``.
    num_classes : int
        ``K``, including the background.
    match : {"best", "all"}
    iou : float
        For ``"all"``: least mask IoU for a region to take an object's class.

    Returns
    -------
    labels : (H, W) int64
        Class of each pixel.

    Notes
    -----
    A region that takes class ``c`` from an object scores ``IoU`` for ``c`` and ``-1`` for
    every other class; every other region scores ``1`` for the background and ``-1`` for the
    rest. So a pixel covered by a region with a class takes the class of the covering region
    that fits its object best, and every other pixel is background.

    On the zoo's validation set (256 Shapes images, 4 classes) with selective search's
    defaults: ``"best"`` 0.99 mIoU (an object's best proposal has mask IoU 0.98 on average),
    ``"all"`` 0.81. The proposals are nearly exact; it is labelling every region of IoU
    >= 0.5 that costs accuracy.

    Examples
    --------
    >>> square = np.zeros((1, 4, 4), bool); square[0, :2, :2] = True
    >>> tight, loose = square[0], np.zeros((4, 4), bool)
    >>> loose[:2, :3] = True                                     # IoU 4/6 with the square
    >>> regions = np.stack([tight, loose])
    >>> region_oracle(regions, square, [1], num_classes=2, match="best")[0]
    array([1, 1, 0, 0])
    >>> region_oracle(regions, square, [1], num_classes=2, match="all")[0]
    array([1, 1, 1, 0])
    """
    op = "region_oracle"
    masks = _check_masks(op, "masks", masks)
    objects = _check_masks(op, "instance_masks", instance_masks)
    if objects.shape[1:] != masks.shape[1:]:
        raise ValueError(f"{op}: instance_masks are {objects.shape[1:]} images but masks are "
                         f"{masks.shape[1:]}; both must be of the same image")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 2:
        raise ValueError(f"{op}: num_classes must be an int >= 2 (background included), got "
                         f"{num_classes!r}")
    classes = np.asarray(instance_labels)
    if classes.shape != (len(objects),) or (len(classes) and (
            classes.dtype.kind not in "iu" or classes.min() < 1 or classes.max() >= num_classes)):
        raise ValueError(f"{op}: instance_labels must be {len(objects)} ints (one per "
                         f"instance mask) in [1, {num_classes}), got {classes!r}")
    if match not in ("best", "all"):
        raise ValueError(f"{op}: match must be 'best' (each object's best proposal) or 'all' "
                         f"(every proposal of IoU >= iou), got {match!r}")
    scores = np.full((len(masks), num_classes), -1.0, np.float32)       # (R, K)
    scores[:, 0] = 1.0
    if len(objects):
        overlap = _mask_iou(objects, masks)                            # (G, R)
        if match == "best":
            g = np.arange(len(objects))
            r = overlap.argmax(axis=1)                                 # (G,) a region each
        else:
            # the objects are disjoint, so a region reaches IoU 0.5 with one of them at most
            # (with two only if it is exactly their union, each object half of it)
            g, r = np.nonzero(overlap >= iou)                          # (P,), (P,) pairs
        scores[r, 0] = -1.0
        scores[r, classes[g]] = overlap[g, r]
    return paint_regions(masks, scores).argmax(axis=0)


# ------------------------------------------------------------------------- the hinge loss
def hinge_loss(scores, labels):
    """One-vs-rest hinge loss of linear SVMs: each class's SVM says "mine" or "not mine".

    Parameters
    ----------
    scores : (R, K) Tensor
        The SVMs' scores of R examples (one column per class's SVM).
    labels : (R,) int array
        The class of each example, in ``[0, K)``.

    Returns
    -------
    Tensor, shape ()
        ``mean_{r, k} max(0, 1 - y[r, k] · scores[r, k])`` with ``y[r, k] = +1`` if
        ``labels[r] == k`` and ``-1`` otherwise.

    Notes
    -----
    Each column is a separate binary SVM (Cortes and Vapnik, "Support-vector networks",
    Machine Learning 1995): an example of class ``k`` should score at least +1 on SVM ``k``
    and at most -1 on every other; inside that margin it costs linearly, beyond it nothing.
    Unlike softmax cross-entropy, a confidently right example contributes no gradient at
    all: the SVM is shaped by the examples near its boundary.

    Examples
    --------
    >>> scores = Tensor(np.array([[2.0, 0.5], [-1.0, -0.5]]))
    >>> float(hinge_loss(scores, np.array([0, 1])).item())   # (0 + 1.5 + 0 + 1.5) / 4
    0.75
    """
    op = "hinge_loss"
    if not isinstance(scores, Tensor) or scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"{op}: scores must be a (R, K) Tensor with K >= 2 classes, got "
                         f"{type(scores).__name__} of shape {np.shape(scores)}")
    labels = np.asarray(labels)
    R, K = scores.shape
    if labels.shape != (R,) or labels.dtype.kind not in "iu" or (R and (
            labels.min() < 0 or labels.max() >= K)):
        raise ValueError(f"{op}: labels must be {R} ints (one per row of scores) in [0, {K}), "
                         f"got {labels!r}")
    y = np.where(np.arange(K)[None, :] == labels[:, None], 1.0, -1.0)  # (R, K)
    return relu(1.0 - scores * y.astype(scores.dtype)).mean()


# -------------------------------------------------------------------------------- the CNN
class RegionCNN(nn.Module):
    """One pathway: conv-BN-ReLU blocks, a 2x2 max-pool between them, global average pool.

    Shapes: ``crops (R, in_channels, S, S) -> features (R, widths[-1])``.
    """

    def __init__(self, in_channels, widths):
        super().__init__()
        layers, c = [], in_channels
        for i, w in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers.append(ConvBNReLU(c, w))
            c = w
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, crops):
        R = crops.shape[0]
        h = self.blocks(crops)                       # (R, widths[-1], S / 2^(B-1), same)
        return self.pool(h).reshape(R, -1)           # (R, widths[-1])


# ------------------------------------------------------------------------------ the model
@register("rcnn_regions")
class RCNNRegions(SegmentationModel):
    """R-CNN / SDS region classification as a semantic segmenter: see the module docstring.

    Examples
    --------
    >>> from edu_seg import models
    >>> model = models.create("rcnn_regions", num_classes=4).eval()
    >>> with no_grad():                                                # doctest: +SKIP
    ...     scores = model(Tensor(images))          # (N, 4, H, W), labels = scores.argmax(1)
    """

    config_class = RCNNRegionsConfig
    output_stride = 1

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.box_pathway = RegionCNN(c.in_channels, c.widths)
        self.region_pathway = RegionCNN(c.in_channels, c.widths)
        features = 2 * c.widths[-1]
        self.classifier = nn.Linear(features, c.num_classes)   # softmax layer: trains the CNNs
        self.svm = nn.Linear(features, c.num_classes)          # one linear SVM per class
        self.proposals = ProposalCache(c.proposal_cache_size)

    # ------------------------------------------------------------------------ pieces
    def crop_regions(self, image, boxes, masks):
        """The two pathways' inputs: each region's box warped to ``S x S``, with and without
        the pixels outside its mask.

        Parameters
        ----------
        image : (C, H, W) float array
        boxes : (R, 4) float ``(x1, y1, x2, y2)``; masks : (R, H, W) bool

        Returns
        -------
        box_crops, region_crops : (R, C, S, S) float32
            RoIAlign of the mean-subtracted image in each box, and of the image times the
            region's mask: zero (the mean colour) wherever the warp reads only blanked pixels.
        """
        S, R = self.config.crop_size, len(boxes)
        centred = image - image.mean(axis=(1, 2), keepdims=True)          # (C, H, W)
        boxes = np.asarray(boxes, np.float32)
        on_image = np.concatenate([np.zeros((R, 1), np.float32), boxes], axis=1)  # (R, 5)
        box_crops = roi_align(centred[None], on_image, S, sampling_ratio=SAMPLING_RATIO,
                              aligned=True).data                          # (R, C, S, S)
        blanked = centred[None] * masks[:, None]                          # (R, C, H, W)
        own_image = np.concatenate([np.arange(R, dtype=np.float32)[:, None], boxes], axis=1)
        region_crops = roi_align(blanked, own_image, S, sampling_ratio=SAMPLING_RATIO,
                                 aligned=True).data                       # (R, C, S, S)
        return box_crops, region_crops

    def features(self, box_crops, region_crops):
        """Both pathways, concatenated: (R, C, S, S) twice -> (R, 2 * widths[-1])."""
        return cat([self.box_pathway(Tensor(box_crops)),
                    self.region_pathway(Tensor(region_crops))], axis=1)

    def score_regions(self, image, proposals):
        """The SVM scores of EVERY proposal of one image: (R, K) float32, no gradient.

        The regions go through the CNNs ``eval_chunk`` at a time; the chunks depend only on
        this image, so an image scores the same in any batch.
        """
        chunk, scores = self.config.eval_chunk, []
        with no_grad():
            for start in range(0, len(proposals), chunk):
                crops = self.crop_regions(image, proposals.boxes[start:start + chunk],
                                          proposals.masks[start:start + chunk])
                scores.append(self.svm(self.features(*crops)).data)       # (chunk, K)
        return np.concatenate(scores)                                     # (R, K)

    def sample_regions(self, masks, instance_masks, instance_labels, rng):
        """Training regions of one image and their labels (R-CNN's matching and sampling).

        Returns ``(chosen, labels)``: indices into ``masks`` (at most ``regions_per_image``,
        at most ``positive_fraction`` of them positive) and each one's class (0 background).
        """
        c = self.config
        overlap = _mask_iou(instance_masks, masks)                        # (G, R)
        matched = match_boxes(overlap, c.positive_iou, c.negative_iou)    # (R,) object or -1/-2
        positive, negative = sample_balanced(matched, c.regions_per_image,
                                             c.positive_fraction, rng)
        chosen = np.concatenate([positive, negative])
        labels = np.asarray(instance_labels, np.int64)[matched[positive]]
        return chosen, np.concatenate([labels, np.zeros(len(negative), np.int64)])

    # ------------------------------------------------------------------------ forward
    def forward(self, x):
        """Class scores ``(N, num_classes, H, W)`` from the SVM scores of every proposal.

        The same in training and eval mode (batch norm aside) and never differentiable: the
        painting is a choice of region per pixel. Training goes through :meth:`forward_train`.
        """
        self.check_input_size(x.shape)
        painted = []
        for image in x.data:                                              # (C, H, W)
            proposals = self.proposals(image)                             # R regions
            painted.append(paint_regions(proposals.masks, self.score_regions(image, proposals)))
        return Tensor(np.stack(painted))                                  # (N, K, H, W)

    def detect_objects(self, x):
        """Every proposal as a candidate OBJECT: R-CNN's detection rule, with SDS's masks.

        Each (region, foreground class) pair is a candidate scored by that class's SVM; per
        class, a region is suppressed when a better-scoring one overlaps its box by more than
        ``detection_nms_threshold`` (R-CNN's greedy NMS), and the best
        ``detections_per_image`` survive. An object's mask is its region's mask, so the
        masks follow proposal outlines exactly as the painted class map does. This is what
        lets the zoo score region classification by mask AP beside Mask R-CNN.

        Parameters
        ----------
        x : Tensor, shape (N, C, H, W)

        Returns
        -------
        list of N dicts
            ``boxes`` (D, 4) float32, ``labels`` (D,) int64 in [1, K), ``scores`` (D,)
            float32 (SVM scores, best first), ``masks`` (D, H, W) bool: the form
            :class:`~edu_seg.models.InstanceSegmentationModel` returns.
        """
        self.check_input_size(x.shape)
        c, found = self.config, []
        for image in x.data:                                              # (C, H, W)
            proposals = self.proposals(image)                             # R regions
            scores = self.score_regions(image, proposals)[:, 1:]          # (R, K-1)
            R, classes = scores.shape
            region = np.repeat(np.arange(R), classes)                     # (R·(K-1),)
            labels = np.tile(np.arange(1, classes + 1), R)                # (R·(K-1),)
            boxes = np.asarray(proposals.boxes, np.float32)[region]       # (R·(K-1), 4)
            keep = batched_nms(boxes, scores.ravel(), labels,
                               c.detection_nms_threshold)[:c.detections_per_image]
            found.append({"boxes": boxes[keep], "labels": labels[keep].astype(np.int64),
                          "scores": scores.ravel()[keep].astype(np.float32),
                          "masks": proposals.masks[region[keep]]})
        return found

    def forward_train(self, batch):
        """Sample regions of every image, score them, and return what :meth:`loss` needs.

        Parameters
        ----------
        batch : dict
            ``image`` (N, C, H, W), ``mask`` (N, H, W), and optionally ``instance_masks``
            and ``labels`` (lists of per-image (G, H, W) bool and (G,) int, as
            :class:`edu_seg.data.Shapes` gives); without them each connected component of
            a class in ``mask`` counts as one object.

        Returns
        -------
        dict
            ``logits`` (M, K) Tensor: the softmax layer's scores of the M sampled regions;
            ``svm`` (M, K) Tensor: the SVMs' scores on the same features, detached from the
            CNNs; ``labels`` (M,) int64 array: the regions' classes; ``out`` (N, K, H, W)
            Tensor: the sampled regions painted (:func:`paint_regions`; uncovered pixels
            background), what the Trainer's running pixel accuracy reads.
        """
        images = batch["image"]
        self.check_input_size(images.shape)
        rng = default_generator()
        box_crops, region_crops, labels, regions = [], [], [], []
        for i, image in enumerate(images):
            proposals = self.proposals(image)
            if "instance_masks" in batch:
                objects, classes = batch["instance_masks"][i], batch["labels"][i]
            else:
                objects, classes = _instances_from_mask(batch["mask"][i])
            chosen, chosen_labels = self.sample_regions(proposals.masks, objects, classes, rng)
            crops = self.crop_regions(image, proposals.boxes[chosen], proposals.masks[chosen])
            box_crops.append(crops[0])                                    # (M_i, C, S, S)
            region_crops.append(crops[1])                                 # (M_i, C, S, S)
            labels.append(chosen_labels)
            regions.append(proposals.masks[chosen])                       # (M_i, H, W)
        features = self.features(np.concatenate(box_crops),
                                 np.concatenate(region_crops))            # (M, 2·widths[-1])
        svm = self.svm(features.detach())                                 # (M, K)
        splits = np.cumsum([len(m) for m in regions])[:-1]
        painted = [paint_regions(m, s) for m, s in zip(regions, np.split(svm.data, splits))]
        return {"out": Tensor(np.stack(painted)), "logits": self.classifier(features),
                "svm": svm, "labels": np.concatenate(labels)}

    def loss(self, outputs, batch, ignore_index=-100):
        """The two R-CNN training objectives on the sampled regions.

        Returns
        -------
        total : Tensor, shape ()
            ``ce + hinge``.
        terms : dict
            ``ce``: softmax cross-entropy of ``logits`` (trains the CNNs and the softmax
            layer); ``hinge``: :func:`hinge_loss` of ``svm`` plus ``svm_l2 · ‖W_svm‖²``
            (trains the SVMs only, their features being detached). ``ignore_index`` plays
            no part: every sampled region has a class.
        """
        labels = outputs["labels"]
        terms = {"ce": cross_entropy(outputs["logits"], labels),
                 "hinge": hinge_loss(outputs["svm"], labels)
                 + self.config.svm_l2 * (self.svm.weight ** 2).sum()}
        return terms["ce"] + terms["hinge"], terms


def _instances_from_mask(mask):
    """Objects of a semantic mask: each 8-connected component of each class >= 1.

    Returns (G, H, W) bool masks and their (G,) int64 classes (ignored pixels, < 0, and the
    background are no object).
    """
    objects, classes = [], []
    for c in np.unique(mask):
        if c < 1:
            continue
        components, n = ndimage.label(mask == c, structure=np.ones((3, 3)))   # (H, W) 0..n
        objects += [components == k for k in range(1, n + 1)]
        classes += [int(c)] * n
    objects = np.stack(objects) if objects else np.zeros((0,) + mask.shape, bool)
    return objects, np.asarray(classes, np.int64)
