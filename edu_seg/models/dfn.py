"""DFN: Discriminative Feature Network, a Smooth network that picks features by channel
attention and a Border network that learns the semantic boundaries.

Yu, Wang, Peng, Gao, Yu and Sang, "Learning a Discriminative Feature Network for Semantic
Segmentation", CVPR 2018 (arXiv:1804.09337).

The paper names two ways a segmentation goes wrong. *Intra-class inconsistency*: one object
gets two labels, because the pixels that look alike locally (a cow's flank, a horse's flank)
are told apart only by context the network did not use. *Inter-class indistinction*: two
touching objects of different classes that look alike merge, because nothing pushed their
features apart at the boundary. DFN answers each with one sub-network on a shared ResNet:

Smooth network (top-down, against inconsistency)
    Each stage's features are refined by a Refinement Residual Block (RRB), then fused with
    the output of the stage above by a Channel Attention Block (CAB), then refined again by
    an RRB. Above the deepest stage sits the global average pool of that stage, spread over
    the map: the first CAB fuses res-5 with "what is in the whole image"::

        res-5 (1/32) ─ global avg pool ─ 1x1 ─ spread over the map ───┐ high
        res-5 (1/32) ─ RRB ─ low ─────────────────────────────────── CAB ─ RRB ─┬─ 1x1 ─ "stage5"
                                                                      ┌─ up x2 ─┘
        res-4 (1/16) ─ RRB ─ low ─────────────────────────────────── CAB ─ RRB ─┬─ 1x1 ─ "stage4"
                                                                      ┌─ up x2 ─┘
        res-3 (1/8)  ─ RRB ─ low ─────────────────────────────────── CAB ─ RRB ─┬─ 1x1 ─ "stage3"
                                                                      ┌─ up x2 ─┘
        res-2 (1/4)  ─ RRB ─ low ─────────────────────────────────── CAB ─ RRB ─── 1x1
                                                                  ─ bilinear x4 ─ scores

    (each CAB's second input, "high", comes from the line above it.)

    The CAB (the paper's Fig. 3b) uses the HIGH-level features to choose which LOW-level
    channels to keep::

        w   = sigmoid(conv1x1(ReLU(conv1x1(global_avg_pool(concat(low, high))))))
        out = low * w + high                        # w: (N, C, 1, 1), one per channel

    ``w`` is one weight per channel for the whole image: the deep stage, which knows WHAT is
    in the image, switches off the shallow channels that respond to things that are not
    there, so the shallow stage adds detail without adding wrong classes. Without the CAB
    (``preset="no_cab"``) the fusion is the plain sum ``low + high``, U-Net- or FPN-like.

    The RRB (Fig. 3a) is a 1x1 conv that sets the channel count, then a residual unit::

        x ─ 1x1 ─┬─ 3x3 ─ BN ─ ReLU ─ 3x3 ─┐
                 └──────────────────────── + ─ ReLU

    Every stage's output is supervised (deep supervision: a 1x1 classifier and a
    cross-entropy on each, weight 1, as the paper's loss ``sum of the Smooth network's
    softmax losses``), so that every CAB receives features that already mean classes.
    ``preset="no_deep_supervision"`` trains the same network on the final loss only, to
    measure what the per-stage losses add: the classifiers of res-5 .. res-3 are not built
    (res-2's makes the prediction and stays). They run only in training, so inference costs
    the same.

Border network (bottom-up, against indistinction; training only)
    RRBs on res-2 .. res-5 are merged from the finest stage upwards at 1/4 resolution
    (each deeper stage up-sampled to 1/4 and added, then an RRB), and a 1x1 conv predicts one
    logit per pixel: "is this a boundary between two classes?". Its target is computed from
    the label map (:func:`semantic_boundaries`): **a pixel is a border pixel when some pixel
    of its 3x3 neighbourhood (inside the image) has another label**, so a boundary is a band
    two pixels wide, one on each side. Border pixels are few (about a tenth here), so the
    loss is the focal loss (Lin et al. 2017; :func:`edu_seg.ops.loss.focal_loss`, binary,
    ``gamma = 2``), which down-weights the many easy non-border pixels. The Border network
    shares the backbone with the Smooth network and is not used for the prediction: its
    gradient is what makes the backbone's features differ on the two sides of a boundary.
    It does not exist at inference (eval mode does not compute it);
    ``preset="no_border"`` removes it.

    The loss: ``CE(out) + sum_s CE(stage s) + border_weight * focal(border)``, the paper's
    ``l = l_s + lambda * l_b`` with ``lambda = 0.1``.

What this small version keeps from the paper
    - the Smooth network: global average pool branch on res-5, RRB - CAB - RRB on each of
      res-5 .. res-2, top-down with x2 bilinear up-sampling, deep supervision on every
      stage, the prediction from res-2 (stride 4) up-sampled bilinearly x4;
    - the CAB exactly (concat, global pool, 1x1, ReLU, 1x1, sigmoid, ``low * w + high``);
    - the RRB exactly (1x1, then a residual 3x3 - BN - ReLU - 3x3, ReLU after the sum);
    - the bottom-up Border network of RRBs on res-2 .. res-5, trained on semantic
      boundaries derived from the labels, with the binary focal loss (gamma 2) and weight
      0.1.

What it changes
    - ResNet-18 trained from scratch instead of ImageNet-pretrained ResNet-101
      (``preset="paper"``: ResNet-50 with the paper's 512-channel Smooth network). Not the
      tiny ResNet: GCN, which also fuses the four stages top-down, reaches about 0.4-0.5 mIoU
      on it against 0.89 on ResNet-18, because its 8-channel stride-4 stem leaves the fine
      stages nothing to refine;
    - 64 channels in the Smooth network (the paper: 512, a quarter of ResNet-101's 2048; 64
      is an eighth of ResNet-18's 512) and 16 in the Border network;
    - each stage's classifier is one 1x1 conv (the authors' code puts another RRB before
      it); the boundary target is the 3x3-neighbourhood rule above (the paper does not
      spell out its own);
    - the output stride stays the paper's 4. A model that up-samples stride-4 scores
      bilinearly is bounded at 0.947 mIoU on 64x64 Shapes (one-hot labels pooled to stride
      4 and up-sampled back), far above what 300 steps reach, so there was no reason to
      change it.

>>> import edu_seg.models as models
>>> model = models.create("dfn", num_classes=4)
>>> sorted(model.cab)
['stage2', 'stage3', 'stage4', 'stage5']
"""
import dataclasses
from typing import Literal

import numpy as np

from .. import nn
from ..autograd import cat
from ..backend import get_array_module, to_host
from ..ops.loss import focal_loss
from ..ops.resample import interpolate
from . import register
from .backbones import create_backbone
from .base import SegmentationModel
from .blocks import ConvBNReLU, ImagePooling

__all__ = ["DFNConfig", "DFN", "RefinementResidualBlock", "ChannelAttentionBlock",
           "semantic_boundaries", "STAGES"]

#: The paper's names of the ResNet stages DFN reads (Stage k = res-k), and their strides.
STAGES = {"stage2": 4, "stage3": 8, "stage4": 16, "stage5": 32}


@dataclasses.dataclass
class DFNConfig:
    """Hyper-parameters of :class:`DFN` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    backbone : str
        A ResNet of :func:`edu_seg.models.create_backbone`, read at strides 4 .. 32.
    smooth_channels : int
        Channels of the Smooth network's RRBs and CABs (the paper: 512).
    border_channels : int
        Channels of the Border network's RRBs.
    channel_attention : bool
        Fuse the stages with the CAB (the paper); False sums them (``"no_cab"``).
    border_network : bool
        Train the Border network beside the Smooth network (the paper); False drops it
        (``"no_border"``).
    border_weight : float
        ``lambda``, the weight of the Border network's focal loss (the paper: 0.1).
    focal_gamma : float
        The focal loss's focusing parameter ``gamma`` (the paper: 2).
    deep_supervision : bool
        Classify and score every stage of the Smooth network in training (the paper); False
        builds only res-2's classifier, the prediction, and trains on the final loss
        (``"no_deep_supervision"``).
    """

    num_classes: int
    in_channels: int = 3
    backbone: Literal["resnet18", "resnet50", "resnet_tiny",
                      "resnet_bottleneck_tiny"] = "resnet18"
    smooth_channels: int = 64
    border_channels: int = 16
    channel_attention: bool = True
    border_network: bool = True
    border_weight: float = dataclasses.field(default=0.1, metadata={"min": 0.0})
    focal_gamma: float = dataclasses.field(default=2.0, metadata={"min": 0.0})
    deep_supervision: bool = True


class RefinementResidualBlock(nn.Module):
    """DFN's RRB: ``x = conv1x1(x); relu(x + conv3x3(relu(bn(conv3x3(x)))))``.

    The 1x1 conv brings every stage to the same channel count (so the stages can be added
    and compared channel by channel in the CAB); the residual unit refines the features
    while the identity path keeps them.

    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, H, W)``.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, out_channels, 1)
        self.conv_bn_relu = ConvBNReLU(out_channels, out_channels, 3)
        self.conv = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        """x: (N, in_channels, H, W) -> (N, out_channels, H, W)."""
        x = self.reduce(x)                                # (N, out_channels, H, W)
        return self.relu(x + self.conv(self.conv_bn_relu(x)))


class ChannelAttentionBlock(nn.Module):
    """DFN's CAB: reweight the low-level channels by a vector the two levels compute together,
    then add the high-level features: ``low * w + high``.

    ``w = sigmoid(conv1x1(ReLU(conv1x1(global_avg_pool(concat(low, high))))))``, one value
    in (0, 1) per channel and image. No batch norm: the vector is a gate, not a feature map.

    Shapes: ``low, high: (N, C, H, W) -> (N, C, H, W)``; ``w: (N, C, 1, 1)``.
    """

    def __init__(self, channels):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(2 * channels, channels, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(channels, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, low, high):
        """low, high: (N, C, H, W) -> (N, C, H, W)."""
        pooled = self.pool(cat([low, high], axis=1))      # (N, 2C, 1, 1)
        w = self.sigmoid(self.fc2(self.relu(self.fc1(pooled))))  # (N, C, 1, 1)
        return low * w + high                             # (N, C, H, W): w broadcast


def semantic_boundaries(mask, ignore_index=-100):
    """The Border network's target: 1 where a pixel's 3x3 neighbourhood holds another label.

    Parameters
    ----------
    mask : int array of shape (..., H, W)
        Class indices.
    ignore_index : int
        A pixel with this label is ignored in the target too, and as a neighbour it does not
        make its neighbours border pixels (nobody knows which class lies there).

    Returns
    -------
    int64 array of shape (..., H, W)
        1 on the boundaries between classes (a band two pixels wide, one on each side),
        0 elsewhere, ``ignore_index`` where ``mask`` is ignored. The image's own edge is not
        a boundary: only neighbours inside the image count.

    >>> semantic_boundaries(np.array([[0, 0, 1, 1]]))
    array([[0, 1, 1, 0]])
    """
    xp = get_array_module(mask)
    mask = np.asarray(to_host(mask))      # a label map's neighbours, computed on the host
    H, W = mask.shape[-2:]
    # Edge padding repeats the outermost row and column: an out-of-image neighbour then takes
    # the label of an in-image pixel of the same 3x3 window, so it can add no new label.
    padded = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    border = np.zeros(mask.shape, bool)
    for di in (0, 1, 2):
        for dj in (0, 1, 2):
            neighbour = padded[..., di:di + H, dj:dj + W]         # (..., H, W)
            border |= (neighbour != mask) & (neighbour != ignore_index)
    return xp.asarray(np.where(mask == ignore_index, ignore_index, border).astype(np.int64))


@register("dfn")
class DFN(SegmentationModel):
    """DFN (Yu et al. 2018): CAB-fused Smooth network, Border network trained on boundaries.

    Parameters
    ----------
    config : DFNConfig

    Attributes
    ----------
    global_pool : ImagePooling
        The global average pool of res-5, spread over res-5's map (the first CAB's "high").
    smooth_in, cab, smooth_out, classifier : ModuleDict
        Per stage (``"stage2"`` .. ``"stage5"``): the RRB on the backbone stage, the CAB
        (the plain sum in ``"no_cab"``), the RRB after it and the 1x1 classifier (only
        ``"stage2"``'s, the prediction, in ``"no_deep_supervision"``).
    border_in, border_out, border_classifier
        The Border network (absent with ``border_network=False``): an RRB per stage, an RRB
        after each merge (``"stage3"`` .. ``"stage5"``), the 1x1 conv to one logit.

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``. In training mode
    ``{"out": scores, "stage5": (N, K, H/32, W/32), "stage4": (N, K, H/16, W/16),
    "stage3": (N, K, H/8, W/8), "border": (N, 1, H, W)}`` (no ``"stage*"`` without deep
    supervision, no ``"border"`` without the Border network, the plain scores without
    both). H and W must be multiples of 32.
    """

    config_class = DFNConfig
    presets = {"paper": {"backbone": "resnet50", "smooth_channels": 512},
               "no_cab": {"channel_attention": False},
               "no_border": {"border_network": False},
               "no_deep_supervision": {"deep_supervision": False}}
    output_stride = 32
    # Deep supervision: every stage's prediction is a full term of the Smooth network's loss.
    aux_weights = {"stage5": 1.0, "stage4": 1.0, "stage3": 1.0}

    def __init__(self, config):
        super().__init__(config)
        c, C, B = config, config.smooth_channels, config.border_channels
        self.backbone = create_backbone(c.backbone, in_channels=c.in_channels,
                                        num_classes=None)
        channels = self.backbone.channels                  # {stride: channels}
        self.global_pool = ImagePooling(channels[32], C)
        self.smooth_in = nn.ModuleDict({n: RefinementResidualBlock(channels[s], C)
                                        for n, s in STAGES.items()})
        self.cab = nn.ModuleDict({n: ChannelAttentionBlock(C) for n in STAGES}) \
            if c.channel_attention else None
        self.smooth_out = nn.ModuleDict({n: RefinementResidualBlock(C, C) for n in STAGES})
        # res-2's classifier makes the prediction; the others exist for deep supervision.
        classified = STAGES if c.deep_supervision else ("stage2",)
        self.classifier = nn.ModuleDict({n: nn.Conv2d(C, c.num_classes, 1)
                                         for n in classified})
        if not c.deep_supervision:
            self.aux_weights = {}          # no stage outputs to weigh
        if c.border_network:
            self.border_in = nn.ModuleDict({n: RefinementResidualBlock(channels[s], B)
                                            for n, s in STAGES.items()})
            self.border_out = nn.ModuleDict({n: RefinementResidualBlock(B, B)
                                             for n in ("stage3", "stage4", "stage5")})
            self.border_classifier = nn.Conv2d(B, 1, 1)

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W), or in training mode
        the dict of named outputs (see the class docstring)."""
        self.check_input_size(x.shape)
        features = self.backbone.features(x)               # {stride: (N, C_s, H/s, W/s)}
        high = self.global_pool(features[32])              # (N, C, H/32, W/32), constant
        outputs = {}
        supervised = self.training and self.config.deep_supervision
        for name in ("stage5", "stage4", "stage3", "stage2"):   # top-down
            low = self.smooth_in[name](features[STAGES[name]])  # (N, C, H/s, W/s)
            high = interpolate(high, size=low.shape[-2:], mode="bilinear",
                               align_corners=False)        # (N, C, H/s, W/s): x2 (or x1)
            fused = self.cab[name](low, high) if self.cab is not None else low + high
            high = self.smooth_out[name](fused)            # (N, C, H/s, W/s)
            if supervised or name == "stage2":             # deep supervision: training only
                outputs[name] = self.classifier[name](high)  # (N, K, H/s, W/s)
        out = interpolate(outputs.pop("stage2"), size=x.shape[-2:], mode="bilinear",
                          align_corners=False)             # (N, K, H, W): x4
        if not self.training:
            return out
        if self.config.border_network:
            outputs["border"] = self._border(features, x.shape[-2:])   # (N, 1, H, W)
        return {"out": out, **outputs} if outputs else out   # no extra output: the scores

    def _border(self, features, size):
        """The Border network: bottom-up merge of res-2 .. res-5 at 1/4, one logit per pixel."""
        b = self.border_in["stage2"](features[4])          # (N, B, H/4, W/4)
        for name in ("stage3", "stage4", "stage5"):        # bottom-up
            deeper = self.border_in[name](features[STAGES[name]])  # (N, B, H/s, W/s)
            deeper = interpolate(deeper, size=b.shape[-2:], mode="bilinear",
                                 align_corners=False)      # (N, B, H/4, W/4)
            b = self.border_out[name](b + deeper)          # (N, B, H/4, W/4)
        logits = self.border_classifier(b)                 # (N, 1, H/4, W/4)
        return interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def loss(self, outputs, batch, ignore_index=-100):
        """Cross-entropy of the prediction and of every stage (deep supervision), plus
        ``border_weight`` times the focal loss of the border logits against
        :func:`semantic_boundaries` of the mask.

        Returns
        -------
        total : Tensor, shape ()
        terms : dict
            ``{"ce", "stage5", "stage4", "stage3", "border"}`` (unweighted), less the terms
            of the outputs the model does not have.
        """
        if not isinstance(outputs, dict) or "border" not in outputs:
            return super().loss(outputs, batch, ignore_index)
        semantic = {k: v for k, v in outputs.items() if k != "border"}
        total, terms = super().loss(semantic, batch, ignore_index)
        target = semantic_boundaries(batch["mask"], ignore_index)   # (N, H, W) of 0/1
        terms["border"] = focal_loss(outputs["border"], target, gamma=self.config.focal_gamma,
                                     ignore_index=ignore_index)
        return total + self.config.border_weight * terms["border"], terms
