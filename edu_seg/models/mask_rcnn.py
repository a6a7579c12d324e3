"""Mask R-CNN, small: a two-stage detector that also predicts a mask for every object it finds.

He, Gkioxari, Dollár and Girshick, "Mask R-CNN", ICCV 2017 (arXiv:1703.06870), built on Ren,
He, Girshick and Sun, "Faster R-CNN: Towards Real-Time Object Detection with Region Proposal
Networks", NeurIPS 2015 (arXiv:1506.01497).

Semantic segmentation gives every pixel a class, so two touching circles become one blob of
"circle". Instance segmentation wants one mask PER OBJECT. Mask R-CNN's answer is to find
the objects first (as boxes, with a detector) and then segment inside each box::

    image ─ backbone ─ features (one map, stride 4)
                          │
                          ├─ RPN: for each of A anchors per cell, "object?" + box deltas
                          │        → decode, NMS → proposals (boxes that may hold an object)
                          │
                          ├─ RoIAlign 7x7 per proposal ── box head (2 FC) ─ class scores
                          │                                               └ per-class box deltas
                          │        → decode, per-class NMS → detections (box, class, score)
                          │
                          └─ RoIAlign 14x14 per detection ── mask head: 4 conv3x3
                                   → transposed conv x2 → 28x28 mask per class
                                   → the detected class's mask, pasted into its box

Stage one, the **region proposal network** (RPN), slides a small conv over the features and,
at every cell, scores ``A`` reference boxes of several sizes and shapes (the *anchors*) for
"is there an object here?" and regresses how to move each onto the object. Stage two crops
every proposal out of the SAME feature map with a fixed-size RoI op and classifies it (the
box head, Fast R-CNN); Mask R-CNN adds a parallel **mask head**, a small FCN that predicts a
28x28 mask per class inside the box. Only the mask of the class the box head predicts is
used, and in training only the ground-truth class's mask gets a loss (a per-pixel binary
cross-entropy): classes do not compete for pixels, which the paper found works much better
than a per-pixel softmax over classes.

RoIAlign instead of RoIPool
    Fast R-CNN's RoIPool rounds every box to whole feature cells and every bin to whole cells
    again; at stride 4, a box can land 2 image pixels away from where it is. For a class
    score that does not matter; for a mask that must follow an object's edge to the pixel, it
    does. RoIAlign never rounds: it samples the features bilinearly at exact positions. The
    config switch ``roi_op="pool"`` swaps in RoIPool for both heads and changes nothing else,
    so the difference can be measured (chapter 05).

What this small version keeps from the paper
    The two stages and their training: anchors of 3 sizes x 3 aspect ratios, RPN matching
    (IoU >= 0.7 positive, < 0.3 negative, plus each object's best anchor) and balanced
    sampling (up to half positive), proposals by NMS at 0.7, the ground-truth boxes added
    to the proposals, RoI matching at IoU 0.5 with a quarter positives, a box head with class
    scores and class-specific box regression (deltas weighted 10, 10, 5, 5), the mask head
    exactly as in the paper (4 conv3x3, a 2x2 transposed conv, 28x28 per class, sigmoid,
    BCE on the ground-truth class only, targets = the object's mask cut out of the PROPOSAL
    box), mask pasting at inference, and the RoIAlign/RoIPool switch.

What it changes, and why
    - Scale: images of 64x64 with objects 10-25 pixels across instead of 800-pixel photos,
      so the anchors are 8, 16 and 32 pixels, the head widths are 256 (box) and 64 (mask)
      instead of 1024 and 256, and a few hundred anchors and 64 RoIs are sampled per image
      instead of 256 and 512 (an image here holds 1-4 objects).
    - One feature level at stride 4, made by FPN's top-down pathway (Lin et al., "Feature
      Pyramid Networks for Object Detection", CVPR 2017): the stride-32 map is up-sampled
      and added to the lateral 1x1 projections of the stride-16, 8 and 4 maps, so the one
      level is both fine (a 14x14 RoI of a 20-pixel object reads 5x5 real cells) and deep.
      The full FPN predicts from every level and routes each box to one by its size
      (:func:`edu_seg.boxes.fpn_level`); with objects of one octave of sizes one level is
      enough.
    - RoIAlign with ``aligned=True`` (the half-pixel correction that Detectron2 later made
      the default) and 2x2 samples per bin.
    - The backbone is a narrow ResNet-18 trained from scratch with batch norm in training
      mode (no ImageNet weights here; the paper fine-tunes a pretrained ResNet with frozen
      batch-norm statistics).

Shapes: ``x: (N, 3, H, W)`` with ``H, W`` multiples of 32. Training: ``forward(x, targets)``
with one dict per image (``boxes`` (G, 4) ``(x1, y1, x2, y2)``, ``labels`` (G,) in 1..K-1,
``masks`` (G, H, W) bool) returns the five losses; eval: ``forward(x)`` returns one dict per
image (``boxes`` (D, 4), ``labels`` (D,), ``scores`` (D,), ``masks`` (D, H, W) in [0, 1]).
"""
from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np

from .. import nn
from ..autograd import Tensor
from ..boxes import batched_nms, box_iou, clip_boxes, decode_boxes, encode_boxes, \
    make_anchors, nms, paste_masks
from ..ops.activations import relu, softmax
from ..ops.loss import binary_cross_entropy_with_logits, cross_entropy, smooth_l1_loss
from ..ops.resample import interpolate
from ..ops.roi import roi_align, roi_pool
from ..ops.misc import default_generator
from . import register
from .backbones import create_backbone
from .backbones.resnet import width_overrides
from .base import InstanceSegmentationModel
from .detection import match_boxes, mask_targets, sample_balanced

__all__ = ["MaskRCNN", "MaskRCNNConfig"]

#: Faster R-CNN's weights of the second stage's box deltas (dx, dy, dw, dh): the deltas of
#: proposals that are already close to their object are small; scaling them up gives the
#: regression loss a useful size.
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)

#: Where smooth L1 turns from quadratic to linear (torchvision's 1/9 for both stages).
SMOOTH_L1_BETA = 1.0 / 9


@dataclass
class MaskRCNNConfig:
    """Hyper-parameters of :class:`MaskRCNN`; the defaults are the small 64x64 version.

    Attributes
    ----------
    num_classes : int
        Classes including the background (class 0), e.g. 4 for circle/square/triangle.
    in_channels : int
    backbone : str
        A ResNet of :func:`edu_seg.models.create_backbone`, read at strides 4, 8, 16, 32.
    backbone_widths : 4 ints or None
        Planes of its four stages (None: the preset's own).
    feature_channels : int
        Channels of the single feature level both heads read (FPN's 256 in the paper).
    anchor_sizes, aspect_ratios : tuples of floats
        Anchors per cell = len(sizes) x len(ratios); a size-s anchor has area s², a ratio is
        height / width.
    rpn_batch_size, rpn_positive_fraction
        Anchors sampled per image for the RPN loss, and the most of them that may be positive.
    rpn_pre_nms, rpn_post_nms : (train, test) ints
        Proposals kept per image by objectness before NMS, and after it.
    rpn_nms_threshold : float
    roi_batch_size, roi_positive_fraction
        RoIs sampled per image for the box and mask losses.
    roi_op : {"align", "pool"}
        RoIAlign (Mask R-CNN) or RoIPool (Fast R-CNN) for both heads; nothing else changes.
    box_head_width, mask_head_width : int
        Width of the box head's two FC layers and of the mask head's convs.
    mask_size : int
        Side of the predicted masks (28; the mask head's RoI features are half of it).
    score_threshold, detection_nms_threshold, detections_per_image
        Inference: drop class scores below the threshold, per-class NMS, keep the best.
    """

    num_classes: int = 4
    in_channels: int = 3
    backbone: str = "resnet18"
    backbone_widths: Optional[tuple[int, int, int, int]] = (32, 64, 128, 256)
    feature_channels: int = 64
    anchor_sizes: tuple[float, ...] = field(default=(8.0, 16.0, 32.0),
                                             metadata={"min": 1.0, "max": 4096.0})
    aspect_ratios: tuple[float, ...] = field(default=(0.5, 1.0, 2.0),
                                              metadata={"min": 0.05, "max": 20.0})
    rpn_batch_size: int = 128
    rpn_positive_fraction: float = field(default=0.5, metadata={"min": 0.01, "max": 1.0})
    rpn_pre_nms: tuple[int, int] = (1000, 500)
    rpn_post_nms: tuple[int, int] = (200, 100)
    rpn_nms_threshold: float = field(default=0.7, metadata={"min": 0.0, "max": 1.0})
    roi_batch_size: int = 64
    roi_positive_fraction: float = field(default=0.25, metadata={"min": 0.01, "max": 1.0})
    roi_op: Literal["align", "pool"] = "align"
    box_head_width: int = 256
    mask_head_width: int = 64
    mask_size: int = 28
    score_threshold: float = field(default=0.05, metadata={"min": 0.0, "max": 1.0})
    detection_nms_threshold: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    detections_per_image: int = 20

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"MaskRCNNConfig: num_classes counts the background, so it must be "
                             f">= 2, got {self.num_classes}")
        if self.mask_size % 2:
            raise ValueError(f"MaskRCNNConfig: mask_size must be even (the mask head doubles its "
                             f"RoI features of side mask_size / 2), got {self.mask_size}")


class TopDownMerge(nn.Module):
    """FPN's top-down pathway, read at one level: deep context added into a fine map.

    ``p32 = lateral(c32)``, then ``p_s = lateral(c_s) + up2(p_2s)`` down to the finest
    stride, and a 3x3 conv smooths the sum (the nearest-neighbour up-sampling leaves 2x2
    blocks). features: {s: (N, C_s, H/s, W/s)} -> (N, D, H/4, W/4).
    """

    def __init__(self, channels, strides, out_channels):
        super().__init__()
        self.strides = sorted(strides)                       # finest first: 4, 8, 16, 32
        self.lateral = nn.ModuleDict({str(s): nn.Conv2d(channels[s], out_channels, 1)
                                      for s in self.strides})
        self.smooth = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, features):
        p = self.lateral[str(self.strides[-1])](features[self.strides[-1]])  # (N, D, H/32, W/32)
        for s in reversed(self.strides[:-1]):
            up = interpolate(p, size=features[s].shape[-2:], mode="nearest")  # (N, D, H/s, W/s)
            p = self.lateral[str(s)](features[s]) + up                        # (N, D, H/s, W/s)
        return self.smooth(p)                                # (N, D, H/4, W/4)


class RPNHead(nn.Module):
    """A 3x3 conv, then per anchor one objectness logit and four box deltas.

    features (N, D, FH, FW) -> objectness (N, FH·FW·A), deltas (N, FH·FW·A, 4), ordered by
    cell row, cell column, anchor: the order of :func:`edu_seg.boxes.make_anchors`.
    """

    def __init__(self, channels, num_anchors):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, num_anchors, 1)
        self.deltas = nn.Conv2d(channels, 4 * num_anchors, 1)
        for conv in (self.conv, self.objectness, self.deltas):   # Faster R-CNN's init
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features):
        N, _, FH, FW = features.shape
        t = relu(self.conv(features))                         # (N, D, FH, FW)
        A = self.objectness.out_channels
        logits = self.objectness(t).permute(0, 2, 3, 1)       # (N, FH, FW, A)
        deltas = self.deltas(t).reshape(N, A, 4, FH, FW)      # (N, A, 4, FH, FW)
        deltas = deltas.permute(0, 3, 4, 1, 2)                # (N, FH, FW, A, 4)
        return logits.reshape(N, FH * FW * A), deltas.reshape(N, FH * FW * A, 4)


class BoxHead(nn.Module):
    """Fast R-CNN's head: two FC layers on the 7x7 RoI features, then class scores and
    class-specific box deltas. (R, D, 7, 7) -> scores (R, K), deltas (R, K, 4)."""

    def __init__(self, in_features, width, num_classes):
        super().__init__()
        self.fc1 = nn.Linear(in_features, width)
        self.fc2 = nn.Linear(width, width)
        self.scores = nn.Linear(width, num_classes)
        self.deltas = nn.Linear(width, 4 * num_classes)
        nn.init.normal_(self.scores.weight, std=0.01)        # start undecided: all classes alike
        nn.init.normal_(self.deltas.weight, std=0.001)       # and every box where it was proposed
        nn.init.zeros_(self.scores.bias)
        nn.init.zeros_(self.deltas.bias)

    def forward(self, rois):
        R = rois.shape[0]
        h = relu(self.fc1(rois.reshape(R, -1)))              # (R, width)
        h = relu(self.fc2(h))                                # (R, width)
        return self.scores(h), self.deltas(h).reshape(R, -1, 4)   # (R, K), (R, K, 4)


class MaskHead(nn.Module):
    """Mask R-CNN's mask FCN: 4 conv3x3 + ReLU, a 2x2 stride-2 transposed conv + ReLU, and a
    1x1 conv to one mask logit map per class. (R, D, M/2, M/2) -> (R, K, M, M)."""

    def __init__(self, in_channels, width, num_classes):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(in_channels if i == 0 else width, width, 3,
                                              padding=1) for i in range(4)])
        self.up = nn.ConvTranspose2d(width, width, 2, stride=2)
        self.logits = nn.Conv2d(width, num_classes, 1)

    def forward(self, rois):
        h = rois
        for conv in self.convs:
            h = relu(conv(h))                                # (R, width, M/2, M/2)
        h = relu(self.up(h))                                 # (R, width, M, M)
        return self.logits(h)                                # (R, K, M, M)


@register("mask_rcnn")
class MaskRCNN(InstanceSegmentationModel):
    """Mask R-CNN (He et al., ICCV 2017), small: see the module docstring.

    Examples
    --------
    >>> from edu_seg import models
    >>> model = models.create("mask_rcnn", num_classes=4)
    >>> model.eval()                                                  # doctest: +SKIP
    >>> detections = model(Tensor(images))       # one dict per image  # doctest: +SKIP
    """

    config_class = MaskRCNNConfig
    output_stride = 32
    presets = {"roi_pool": {"roi_op": "pool"}}
    #: Feature stride of the one level both heads read.
    feature_stride = 4

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.backbone = create_backbone(c.backbone, in_channels=c.in_channels, num_classes=None,
                                        **width_overrides(c.backbone_widths))
        strides = [s for s in (4, 8, 16, 32) if s in self.backbone.channels]
        self.neck = TopDownMerge(self.backbone.channels, strides, c.feature_channels)
        self.num_anchors = len(c.anchor_sizes) * len(c.aspect_ratios)
        self.rpn = RPNHead(c.feature_channels, self.num_anchors)
        self.box_head = BoxHead(c.feature_channels * 7 * 7, c.box_head_width, c.num_classes)
        self.mask_head = MaskHead(c.feature_channels, c.mask_head_width, c.num_classes)
        self._anchors = {}                                   # (FH, FW) -> (FH·FW·A, 4)

    # ------------------------------------------------------------------------ pieces
    def anchors(self, feature_size):
        """The anchors of a feature map of ``feature_size = (FH, FW)``: (FH·FW·A, 4)."""
        key = tuple(feature_size)
        if key not in self._anchors:
            self._anchors[key] = make_anchors(key, self.feature_stride, self.config.anchor_sizes,
                                              self.config.aspect_ratios)
        return self._anchors[key]

    def roi_features(self, features, rois, size, op=None):
        """``size x size`` features of each RoI: (R, D, size, size).

        rois: (R, 5) ``(batch_index, x1, y1, x2, y2)`` in image pixels. ``op`` ("align" or
        "pool") overrides the configured ``roi_op`` (to compare the two on one model).
        """
        scale = 1.0 / self.feature_stride
        if (op or self.config.roi_op) == "align":
            return roi_align(features, rois, size, spatial_scale=scale, sampling_ratio=2,
                             aligned=True)
        return roi_pool(features, rois, size, spatial_scale=scale)

    def propose(self, objectness, deltas, anchors, image_size):
        """The RPN's proposals for each image (no gradient: stage two treats them as input).

        objectness: (N, M) logits; deltas: (N, M, 4); anchors: (M, 4).
        Returns a list of N arrays (P_i, 4): the top ``rpn_pre_nms`` anchors by objectness,
        moved by their deltas, clipped to the image, NMS at ``rpn_nms_threshold``, the best
        ``rpn_post_nms`` kept.
        """
        c, stage = self.config, 0 if self.training else 1
        proposals = []
        for logits, d in zip(objectness, deltas):
            boxes, scores = self.top_anchor_boxes(logits, d, anchors, image_size)
            keep = nms(boxes, scores, c.rpn_nms_threshold)[:c.rpn_post_nms[stage]]
            proposals.append(boxes[keep])
        return proposals

    def top_anchor_boxes(self, logits, deltas, anchors, image_size):
        """One image's proposals BEFORE NMS: the ``rpn_pre_nms`` anchors of highest
        objectness, moved by their deltas and clipped; boxes of no width or height dropped.

        logits: (M,); deltas: (M, 4); anchors: (M, 4). Returns boxes (P, 4) and their
        logits (P,), best first.
        """
        top = np.argsort(-logits, kind="stable")[:self.config.rpn_pre_nms[0 if self.training
                                                                          else 1]]
        boxes = clip_boxes(decode_boxes(deltas[top], anchors[top]), image_size)
        wide = (boxes[:, 2] - boxes[:, 0] > 1e-3) & (boxes[:, 3] - boxes[:, 1] > 1e-3)
        return boxes[wide], logits[top][wide]

    # ------------------------------------------------------------------------ forward
    def forward(self, x, targets=None):
        """Training (with ``targets``): the loss dict; eval: one detection dict per image."""
        self.check_input_size(x.shape)
        if self.training and targets is None:
            raise ValueError("mask_rcnn: in training mode forward needs targets (one dict of "
                             "boxes, labels, masks per image); call model.eval() to detect")
        image_size = x.shape[-2:]
        features, objectness, deltas, anchors = self.first_stage(x)
        proposals = self.propose(objectness.data, deltas.data, anchors, image_size)
        if not self.training:
            return self.detect(features, proposals, image_size)
        losses = self.rpn_losses(objectness, deltas, anchors, targets)
        losses.update(self.head_losses(features, proposals, targets))
        return losses

    def first_stage(self, x):
        """The shared features and the RPN's outputs for images x: (N, C, H, W).

        Returns features (N, D, H/4, W/4), objectness logits (N, M), deltas (N, M, 4) and
        the anchors (M, 4) they refer to (M = H/4 · W/4 · A).
        """
        features = self.neck(self.backbone.features(x))     # (N, D, H/4, W/4)
        objectness, deltas = self.rpn(features)              # (N, M), (N, M, 4)
        return features, objectness, deltas, self.anchors(features.shape[-2:])

    # ------------------------------------------------------------------------ training
    def rpn_losses(self, objectness, deltas, anchors, targets):
        """Objectness BCE over the sampled anchors, smooth L1 on the positives' deltas."""
        c, rng = self.config, default_generator()
        M = len(anchors)
        picked, labels, pos_rows, pos_deltas = [], [], [], []
        for i, t in enumerate(targets):
            gt = np.asarray(t["boxes"], np.float64).reshape(-1, 4)
            matched = match_boxes(box_iou(gt, anchors), 0.7, 0.3, allow_low_quality=True)
            pos, neg = sample_balanced(matched, c.rpn_batch_size, c.rpn_positive_fraction, rng)
            picked += [i * M + pos, i * M + neg]
            labels += [np.ones(len(pos), np.float32), np.zeros(len(neg), np.float32)]
            pos_rows.append(i * M + pos)
            if len(pos):
                pos_deltas.append(encode_boxes(gt[matched[pos]], anchors[pos]))
        picked, pos_rows = np.concatenate(picked), np.concatenate(pos_rows)
        sampled = objectness.reshape(-1)[picked]             # (S,)
        losses = {"rpn_objectness": binary_cross_entropy_with_logits(
            sampled, np.concatenate(labels))}
        losses["rpn_box"] = self._box_loss(deltas.reshape(-1, 4), pos_rows, pos_deltas,
                                           len(picked))
        return losses

    def head_losses(self, features, proposals, targets):
        """Box classification and regression on sampled RoIs, and the mask loss on the
        positive ones."""
        c, rng = self.config, default_generator()
        rois, labels, reg_targets, mask_rois, mask_gts = [], [], [], [], []
        for i, (props, t) in enumerate(zip(proposals, targets)):
            gt = np.asarray(t["boxes"], np.float64).reshape(-1, 4)
            # The ground-truth boxes join the proposals: early in training, when the RPN still
            # proposes nothing useful, they are the head's only positives.
            candidates = np.concatenate([props, gt])
            matched = match_boxes(box_iou(gt, candidates), 0.5, 0.5)
            pos, neg = sample_balanced(matched, c.roi_batch_size, c.roi_positive_fraction, rng)
            chosen = np.concatenate([pos, neg])
            rois.append(np.concatenate([np.full((len(chosen), 1), i), candidates[chosen]], 1))
            gt_labels = np.asarray(t["labels"], np.int64)
            labels.append(np.concatenate([gt_labels[matched[pos]],
                                          np.zeros(len(neg), np.int64)]))
            if len(pos):
                reg_targets.append(encode_boxes(gt[matched[pos]], candidates[pos], BOX_WEIGHTS))
                mask_rois.append(np.concatenate([np.full((len(pos), 1), i), candidates[pos]], 1))
                # The target is the object's mask seen through the PROPOSAL box.
                mask_gts.append(mask_targets(t["masks"], np.concatenate(
                    [matched[pos][:, None], candidates[pos]], 1), c.mask_size))
        rois, labels = np.concatenate(rois), np.concatenate(labels)
        scores, deltas = self.box_head(self.roi_features(features, rois, 7))  # (R, K), (R, K, 4)
        positive = np.flatnonzero(labels > 0)
        losses = {"classifier": cross_entropy(scores, labels)}
        # Only the deltas of the TRUE class are trained: each class regresses its own boxes.
        class_deltas = deltas[positive, labels[positive]] if len(positive) else None  # (P, 4)
        losses["box_reg"] = self._box_loss(class_deltas, None, reg_targets, len(rois))
        if len(positive):
            mask_rois = np.concatenate(mask_rois)
            logits = self.mask_head(self.roi_features(features, mask_rois,
                                                      c.mask_size // 2))   # (P, K, M, M)
            own = logits[np.arange(len(positive)), labels[positive]]         # (P, M, M)
            losses["mask"] = binary_cross_entropy_with_logits(own, np.concatenate(mask_gts))
        else:
            losses["mask"] = Tensor(np.float32(0.0))
        return losses

    @staticmethod
    def _box_loss(deltas, rows, targets, count):
        """Smooth L1 of the positives' deltas, summed and divided by all sampled examples
        (so a batch with few positives does not weigh each of them more); 0 without any."""
        if not targets:
            return Tensor(np.float32(0.0))
        chosen = deltas if rows is None else deltas[rows]   # (P, 4)
        target = np.concatenate(targets).astype(np.float32)
        return smooth_l1_loss(chosen, target, beta=SMOOTH_L1_BETA, reduction="sum") / count

    # ------------------------------------------------------------------------ inference
    def detect(self, features, proposals, image_size):
        """Classify and refine the proposals, keep the best per class, predict their masks."""
        c = self.config
        H, W = image_size
        rois = np.concatenate([np.concatenate([np.full((len(p), 1), i), p], 1)
                               for i, p in enumerate(proposals)])              # (R, 5)
        scores, deltas = self.box_head(self.roi_features(features, rois, 7))    # (R, K), (R, K, 4)
        probs = softmax(scores, axis=1).data                                     # (R, K)
        results = []
        for i in range(len(proposals)):
            rows = np.flatnonzero(rois[:, 0] == i)
            boxes, labels, conf = self._class_boxes(rois[rows, 1:], deltas.data[rows],
                                                    probs[rows], (H, W))
            results.append({"boxes": boxes.astype(np.float32), "labels": labels,
                            "scores": conf.astype(np.float32)})
        # The mask head runs on the FINAL boxes (not on the proposals), once for the batch.
        det_rois = np.concatenate([np.concatenate([np.full((len(r["boxes"]), 1), i),
                                                   r["boxes"]], 1)
                                   for i, r in enumerate(results)])
        if len(det_rois):
            logits = self.mask_head(self.roi_features(features, det_rois,
                                                      c.mask_size // 2)).data    # (D, K, M, M)
        start = 0
        for r in results:
            n = len(r["boxes"])
            own = logits[start:start + n][np.arange(n), r["labels"]] if n else \
                np.zeros((0, c.mask_size, c.mask_size), np.float32)               # (n, M, M)
            probs_m = 1.0 / (1.0 + np.exp(-own))
            r["masks"] = paste_masks(probs_m.astype(np.float32), r["boxes"], (H, W))
            start += n
        return results

    def _class_boxes(self, proposals, deltas, probs, image_size):
        """One image's detections: every (proposal, class) pair above the score threshold,
        its class's box, per-class NMS, the best ``detections_per_image``."""
        c = self.config
        K = probs.shape[1]
        boxes = np.stack([clip_boxes(decode_boxes(deltas[:, k], proposals, BOX_WEIGHTS),
                                     image_size) for k in range(1, K)], axis=1)  # (R, K-1, 4)
        labels = np.broadcast_to(np.arange(1, K), probs[:, 1:].shape)           # (R, K-1)
        boxes, scores, labels = boxes.reshape(-1, 4), probs[:, 1:].ravel(), labels.ravel()
        keep = (scores > c.score_threshold) & (boxes[:, 2] - boxes[:, 0] > 1e-2) \
            & (boxes[:, 3] - boxes[:, 1] > 1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, c.detection_nms_threshold)
        keep = keep[:c.detections_per_image]
        return boxes[keep], labels[keep].astype(np.int64), scores[keep]
