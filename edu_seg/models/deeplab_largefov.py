"""DeepLab-LargeFOV: VGG at output stride 8 with atrous (dilated) convolutions.

Chen, Papandreou, Kokkinos, Murphy and Yuille, "Semantic Image Segmentation with Deep
Convolutional Nets and Fully Connected CRFs", ICLR 2015 (arXiv:1412.7062, DeepLab v1), and
"DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous Convolution, and
Fully Connected CRFs", TPAMI 2017 (arXiv:1606.00915, v2).

FCN's coarse stride-32 scores come from five poolings. DeepLab keeps the first three and
removes the STRIDE of pool4 and pool5, so the score map has stride 8; to keep what each
later filter sees, the convs after pool4 read pixels 2 apart and those after pool5 pixels 4
apart ("atrous" = with holes, i.e. dilated convolution). The fully connected fc6 becomes a
3x3 conv with dilation 12: a LARGE Field Of View from a small kernel and few weights::

    image ─ VGG (pool1-3 stride 2; pool4, pool5 stride 1, conv5 dilation 2) ─ (1/8)
          ─ fc6 3x3, dilation 12 ─ fc7 1x1 ─ score 1x1 ─ bilinear x8 ─ scores

What this small version keeps from the paper
    - the VGG backbone with the strides of pool4 and pool5 removed and the convs after them
      dilated (``VGGConfig(output_stride=8)``): output stride 8;
    - fc6 as a dilated 3x3 conv, fc7 as a 1x1 conv, each with ReLU and dropout, then a 1x1
      score layer; no decoder and no skips;
    - bilinear up-sampling x8 of the scores (not learned).

What it changes
    - fc6's dilation is 4, not 12. At a 64x64 input the stride-8 map is 8x8, and a dilation-12
      tap is 12 map pixels from the centre: outside the map for EVERY position, so fc6 would
      be a 1x1 conv plus padding. Dilation 4 keeps the idea (one 3x3 filter that spans the
      whole 8x8 map: a 9x9 window of stride-8 pixels, 72 input pixels) at the toy size;
      ``preset="paper"`` keeps 12, with VGG-16 and 1024-channel fc6/fc7;
    - a tiny VGG with batch norm (widths 16-32-64-64-64), fc6/fc7 of 128 channels, trained
      from scratch, instead of ImageNet-pretrained VGG-16;
    - the removed pools are dropped (``nn.Identity``), as Yu & Koltun do, where DeepLab keeps
      a 3x3 stride-1 max-pool;
    - no fully connected CRF after the network (DeepLab's post-processing, a separate step)
      and no multi-scale inputs.

>>> import edu_seg.models as models
>>> model = models.create("deeplab_largefov", num_classes=4)
"""
import dataclasses

from .. import nn
from ..ops.resample import interpolate
from . import register
from .backbones import create_backbone
from .base import SegmentationModel
from .blocks import fc_as_conv

__all__ = ["DeepLabLargeFOV", "DeepLabLargeFOVConfig"]


@dataclasses.dataclass
class DeepLabLargeFOVConfig:
    """Hyper-parameters of :class:`DeepLabLargeFOV` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    backbone : str
        A VGG name of :func:`edu_seg.models.create_backbone`, built with ``output_stride=8``.
    head_width : int
        Channels of fc6 and fc7 (the paper: 1024).
    fc6_dilation : int
        Dilation of fc6's 3x3 kernel on the stride-8 map (the paper: 12; see the module
        docstring for why the small version uses 4).
    dropout : float
        Channel dropout after fc6 and fc7 (the paper: 0.5).
    """

    num_classes: int
    in_channels: int = 3
    backbone: str = "vgg_bn_tiny"
    head_width: int = 128
    fc6_dilation: int = 4
    dropout: float = dataclasses.field(default=0.1, metadata={"min": 0.0, "max": 1.0})


@register("deeplab_largefov")
class DeepLabLargeFOV(SegmentationModel):
    """DeepLab-LargeFOV (Chen et al. 2015/2017): dilated VGG at stride 8, large-field fc6.

    Parameters
    ----------
    config : DeepLabLargeFOVConfig

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``; H and W must be
    multiples of 8.
    """

    config_class = DeepLabLargeFOVConfig
    presets = {"paper": {"backbone": "vgg16", "head_width": 1024, "fc6_dilation": 12,
                         "dropout": 0.5}}
    output_stride = 8

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.backbone = create_backbone(c.backbone, in_channels=c.in_channels,
                                        output_stride=8, num_classes=None)
        self.fc6 = fc_as_conv(self.backbone.channels[8], c.head_width, 3,
                              dilation=c.fc6_dilation, dropout=c.dropout)
        self.fc7 = fc_as_conv(c.head_width, c.head_width, dropout=c.dropout)
        self.score = nn.Conv2d(c.head_width, c.num_classes, 1)

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W)."""
        self.check_input_size(x.shape)
        h = self.backbone.features(x)[8]                 # (N, C5, H/8, W/8): dilated conv5
        h = self.fc7(self.fc6(h))                        # (N, head_width, H/8, W/8)
        scores = self.score(h)                           # (N, K, H/8, W/8)
        return interpolate(scores, scale_factor=8, mode="bilinear",
                           align_corners=False)          # (N, K, H, W)
