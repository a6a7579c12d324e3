"""DeepLabV3: an atrous ResNet and Atrous Spatial Pyramid Pooling with image-level features.

Chen, Papandreou, Schroff and Adam, "Rethinking Atrous Convolution for Semantic Image
Segmentation", arXiv:1706.05587, 2017.

DeepLab v1/v2 (:mod:`edu_seg.models.deeplab_largefov`) showed that a classifier with its last
strides replaced by dilation ("atrous" convolution) gives dense features without losing the
filters' field of view. DeepLabV3 keeps that backbone and rethinks the head. Objects come at
many sizes, so one field of view cannot fit all of them: ASPP (:class:`~edu_seg.models.blocks.
ASPP`) reads the backbone's map with parallel 3x3 convolutions at several rates, plus a 1x1
conv and an image-level branch (global average pooling: the whole image as context), each
with batch norm, concatenates them and projects back with a 1x1 conv::

    image ─ ResNet (layer3 strided, layer4 dilated x2: output stride 16) ─ (1/16)
          ─ ASPP [1x1 | 3x3 rate 6 | 3x3 rate 12 | 3x3 rate 18 | image pool] ─ concat ─ 1x1
          ─ 1x1 classifier ─ bilinear x16 ─ scores

Output stride 16 or 8. The backbone stops down-sampling at 1/16 (layer4 dilated by 2) or 1/8
(layer3 by 2, layer4 by 4); the paper trains at 16 (about 4x cheaper) and evaluates at 8
(a finer map, +1.3 mIoU in its Table 6). A rate is measured in pixels of the map it reads,
so at output stride 8 the rates are doubled (12, 24, 36) to cover the same image area.

Why image pooling (Section 3.3). At rate 18 on the paper's 33x33 map (513 / 16 + 1) most of a
3x3 kernel's taps fall in the padding for most positions, and in the limit the kernel reads
only its centre: a 1x1 conv. No rate gives image-wide context, so a global average pool,
up-sampled back to the map, supplies it (its Table 5: +0.6 mIoU).

What this small version keeps from the paper
    - a ResNet backbone with ``replace_stride_with_dilation`` at output stride 16 (default)
      or 8 (``preset="os8"``), optionally with a Multi-Grid of rates in layer4;
    - ASPP with a 1x1 branch, three 3x3 atrous branches, the image-pooling branch (dropped
      by ``preset="no_image_pool"``), batch norm in every branch, concatenation and a 1x1
      projection; rates doubled at output stride 8;
    - a 1x1 classifier and bilinear up-sampling of the scores to the input size (no decoder).

What it changes
    - the rates are (1, 2, 3) instead of (6, 12, 18) at output stride 16. At a 64x64 input
      the stride-16 map is 4x4 (positions 0..3): a rate-6 tap is 6 map pixels from its
      centre, outside the map for EVERY position, so rates 6, 12 and 18 would all be 1x1
      convs of the centre tap. The paper's rates span about 6/33, 12/33 and 18/33 of its
      33-pixel map; 1, 2 and 3 span 1/4, 2/4 and 3/4 of the 4-pixel one: the same
      small-middle-large mix. Doubled at output stride 8 (2, 4, 6 on the 8x8 map), as in the
      paper. ``preset="paper"`` keeps 6, 12, 18;
    - ``resnet_tiny`` (widths 8-64, one block per stage) trained from scratch, ASPP of 64
      channels (the paper: 256) and dropout 0.1 after the projection (the authors'
      TensorFlow code; the paper does not mention it); ``preset="paper"`` is ResNet-50 with
      Multi-Grid (1, 2, 4) and 256 channels (ResNet-101 in the paper; torchvision has no
      ResNet-101 here);
    - no multi-scale or flipped inputs at test time, no fine-tuning of batch norm at output
      stride 8 (the paper's training schedule).

:mod:`edu_seg.models.torchvision_segmentation` has torchvision's full-size
``deeplabv3_resnet50``, whose head adds a 3x3 conv after ASPP.

>>> import edu_seg.models as models
>>> models.create("deeplabv3", num_classes=4).aspp.atrous_rates
(1, 2, 3)
>>> models.create("deeplabv3", num_classes=4, preset="os8").aspp.atrous_rates
(2, 4, 6)
"""
import dataclasses
from typing import Literal, Optional

from .. import nn
from ..ops.resample import interpolate
from . import register
from .backbones import create_backbone
from .base import SegmentationModel
from .blocks import ASPP

__all__ = ["DeepLabV3", "DeepLabV3Config", "rates_at"]


@dataclasses.dataclass
class DeepLabV3Config:
    """Hyper-parameters of :class:`DeepLabV3` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    backbone : str
        A ResNet of :func:`edu_seg.models.create_backbone`, built with ``output_stride``.
    output_stride : {16, 8}
        Stride of the map ASPP reads (the paper trains at 16, evaluates at 8).
    multi_grid : tuple of int or None
        Rates of layer4's blocks, multiplying its dilation (the paper: (1, 2, 4)); one per
        block of layer4.
    atrous_rates : tuple of int
        Rates of ASPP's 3x3 branches AT OUTPUT STRIDE 16 (the paper: 6, 12, 18); doubled at
        output stride 8. The module docstring says why the small version uses (1, 2, 3).
    aspp_channels : int
        Channels of every ASPP branch and of its output (the paper: 256).
    image_pooling : bool
        Keep ASPP's image-level branch.
    dropout : float
        Dropout after ASPP's projection.
    """

    num_classes: int
    in_channels: int = 3
    backbone: Literal["resnet_tiny", "resnet_bottleneck_tiny", "resnet18",
                      "resnet50"] = "resnet_tiny"
    output_stride: Literal[8, 16] = 16
    multi_grid: Optional[tuple[int, ...]] = None
    atrous_rates: tuple[int, ...] = (1, 2, 3)
    aspp_channels: int = 64
    image_pooling: bool = True
    dropout: float = dataclasses.field(default=0.1, metadata={"min": 0.0, "max": 1.0})


def rates_at(atrous_rates, output_stride):
    """ASPP rates given at output stride 16, on a map of ``output_stride``: doubled at 8,
    halved at 32.

    A rate is in pixels of the map it reads, so the same image area needs twice the rate on a
    map of half the stride. Halving at 32 rounds down and never goes below 1 (a rate-0 3x3
    conv does not exist): DeepLabV3+ at output stride 32 turns the small version's (1, 2, 3)
    into (1, 1, 1), which on the 2x2 map of a 64x64 image loses nothing, since a rate-1 3x3
    conv already reads the whole map and a larger rate would read only its centre tap. Rates
    are ints >= 1 (the configs check it), so the floor of 1 changes nothing at 16 and 8.

    >>> rates_at((6, 12, 18), 8)
    (12, 24, 36)
    >>> rates_at((1, 2, 3), 32)
    (1, 1, 1)
    """
    return tuple(max(1, r * 16 // output_stride) for r in atrous_rates)


@register("deeplabv3")
class DeepLabV3(SegmentationModel):
    """DeepLabV3 (Chen et al. 2017): atrous ResNet, ASPP with image pooling, bilinear x16.

    Parameters
    ----------
    config : DeepLabV3Config

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``; H and W must be
    multiples of ``output_stride``.
    """

    config_class = DeepLabV3Config
    presets = {"paper": {"backbone": "resnet50", "multi_grid": (1, 2, 4),
                         "atrous_rates": (6, 12, 18), "aspp_channels": 256},
               "os8": {"output_stride": 8},
               "no_image_pool": {"image_pooling": False}}

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.output_stride = c.output_stride
        self.backbone = create_backbone(c.backbone, in_channels=c.in_channels,
                                        output_stride=c.output_stride,
                                        multi_grid=c.multi_grid, num_classes=None)
        self.aspp = ASPP(self.backbone.channels[c.output_stride],
                         rates_at(c.atrous_rates, c.output_stride), c.aspp_channels,
                         image_pooling=c.image_pooling, dropout=c.dropout)
        self.classifier = nn.Conv2d(c.aspp_channels, c.num_classes, 1)

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W)."""
        self.check_input_size(x.shape)
        s = self.output_stride
        h = self.backbone.features(x)[s]                 # (N, C4, H/s, W/s): dilated layer4
        h = self.aspp(h)                                 # (N, aspp_channels, H/s, W/s)
        scores = self.classifier(h)                      # (N, K, H/s, W/s)
        return interpolate(scores, size=x.shape[-2:], mode="bilinear",
                           align_corners=False)          # (N, K, H, W)
