"""PSPNet: a dilated ResNet at output stride 8 and a pyramid of pooled scene summaries.

Zhao, Shi, Qi, Wang and Jia, "Pyramid Scene Parsing Network", CVPR 2017 (arXiv:1612.01105).

A pixel's class often depends on what surrounds it: a boat-shaped object on water is a boat,
the same shape on a road is a car. A deep network's THEORETICAL receptive field covers the
whole image, but the paper observes that its EFFECTIVE one is much smaller, so the features
of a pixel rarely know the scene. PSPNet adds the scene explicitly. Its backbone is a ResNet
whose last two stages use dilation instead of stride (output stride 8: a dense map that
still sees far, as in DeepLab); the pyramid pooling module
(:class:`~edu_seg.models.blocks.PyramidPooling`) average-pools that map into 1x1, 2x2, 3x3
and 6x6 grids of bins, reduces each to C/4 channels, up-samples them back and concatenates
them with the map, so every pixel reads the global summary and the summary of its own
region beside its local features::

    image ─ ResNet (layer3, layer4 dilated 2 and 4; output stride 8) ─ layer4 (C, H/8)
          ─ pyramid pooling: [map, up(pool1), up(pool2), up(pool3), up(pool6)] (2C, H/8)
          ─ 3x3 conv-BN-ReLU ─ dropout ─ 1x1 classifier ─ bilinear x8 ─ scores (K, H)
            layer3 ─ 3x3 conv-BN-ReLU ─ dropout ─ 1x1 ─ "aux" scores (training only)

The auxiliary head (Section 3.3, "deep supervision") classifies layer3's map and adds 0.4
times its cross-entropy to the loss, which eases the optimisation of a deep ResNet; it is
dropped at test time.

What this small version keeps from the paper
    - the dilated ResNet at output stride 8 (the stride of layer3 and layer4 replaced by
      dilation; :func:`~edu_seg.models.create_backbone` with ``output_stride=8``);
    - the pyramid pooling module with bins 1, 2, 3, 6, adaptive AVERAGE pooling, a 1x1
      conv-BN-ReLU per level down to C/4 channels, bilinear up-sampling, concatenation with
      the map;
    - the head: 3x3 conv-BN-ReLU, dropout 0.1, 1x1 classifier, bilinear up-sampling x8;
    - the auxiliary head on layer3 with loss weight 0.4, present only in training.

What it changes
    - a small ResNet (one basic block per stage, widths 16-32-64-128: ``resnet_tiny`` at
      twice its width, about as many parameters as the zoo's U-Net) trained from scratch
      instead of an ImageNet-pretrained ResNet-50/101 with a deep 3x3 stem;
      ``preset="paper"`` uses torchvision's ResNet-50 (7x7 stem) with a 512-channel head and
      a 256-channel auxiliary head;
    - the bins stay 1, 2, 3, 6 although a 64x64 input gives an 8x8 map, not the paper's
      60x60: the 6x6 level is then almost the map's own resolution and adaptive bins of 8
      pixels in 6 overlap by a pixel, but the 1x1 and 2x2 levels, which carry the scene
      context, mean the same as in the paper;
    - bilinear up-sampling with ``align_corners=False`` everywhere. The authors' code aligns
      corners, which is exact for their input sizes 8k + 1 (473 = 8 * 59 + 1); for sizes that
      are multiples of 8, as here, ``False`` is the exact x8;
    - the auxiliary scores are returned at 1/8 resolution; the default loss resizes them
      bilinearly to the mask, which is what the authors' up-sampling before the loss does.

Ablations (presets; the paper's Table 1 compares the first two choices)
    - ``"no_pyramid"``: no pyramid pooling, the backbone map goes straight to the 3x3 conv
      (the paper's dilated-ResNet baseline);
    - ``"max_pool"``: adaptive MAX pooling in the bins instead of average;
    - ``"no_deep_supervision"``: the same network trained with the final loss only (no
      auxiliary head): what the 0.4 auxiliary loss adds to the accuracy and to the stability
      of training. The head exists only in training, so inference costs the same.

>>> import edu_seg.models as models
>>> model = models.create("pspnet", num_classes=4)
"""
import dataclasses
from typing import Literal, Optional

from .. import nn
from ..ops.resample import interpolate
from . import register
from .backbones import create_backbone
from .backbones.resnet import width_overrides
from .base import SegmentationModel
from .blocks import ConvBNReLU, PyramidPooling

__all__ = ["PSPNet", "PSPNetConfig", "segmentation_head"]


@dataclasses.dataclass
class PSPNetConfig:
    """Hyper-parameters of :class:`PSPNet` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    backbone : str
        A name of :func:`edu_seg.models.create_backbone` that can run at ``output_stride=8``
        (a ResNet in the paper; ``"resnet_tiny"``, ``"resnet18"``, ``"resnet50"``, ...). The
        main head reads its last stage, the auxiliary head the stage before.
    backbone_widths : 4 ints or None
        The ResNet's stage widths (``planes``), replacing those of the ``backbone`` preset;
        the stem gets the first. None keeps the preset's (``"paper"``: ResNet-50's
        64-128-256-512); give None with a backbone of another family.
    bins : tuple of int
        Grid sizes of the pyramid levels (the paper: 1, 2, 3, 6).
    pyramid : bool
        False removes the pyramid pooling module (the ``"no_pyramid"`` ablation).
    pool : {"avg", "max"}
        Pooling in the pyramid's bins (the paper: "avg"; ``"max_pool"`` ablation: "max").
    head_width : int
        Channels of the 3x3 conv after the pyramid (the paper: 512).
    aux_width : int
        Channels of the auxiliary head's 3x3 conv (the authors' code: 256).
    dropout : float
        Channel dropout before both classifiers (the paper: 0.1).
    deep_supervision : bool
        Train the auxiliary head on layer3 beside the main head (the paper); False builds no
        auxiliary head and trains on the final loss only (``"no_deep_supervision"``).
    """

    num_classes: int
    in_channels: int = 3
    backbone: str = "resnet_tiny"
    backbone_widths: Optional[tuple[int, int, int, int]] = (16, 32, 64, 128)
    bins: tuple[int, ...] = (1, 2, 3, 6)
    pyramid: bool = True
    pool: Literal["avg", "max"] = "avg"
    head_width: int = 64
    aux_width: int = 32
    dropout: float = dataclasses.field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    deep_supervision: bool = True

    def __post_init__(self):
        if not self.bins:
            raise ValueError("PSPNetConfig: bins=() gives a pyramid without levels; give at "
                             "least one bin size, e.g. bins=(1, 2, 3, 6)")


def segmentation_head(in_channels, width, num_classes, dropout):
    """PSPNet's classifier: ``3x3 conv-BN-ReLU -> Dropout2d -> 1x1 conv`` (scores, no resize).

    Shapes: ``(N, in_channels, h, w) -> (N, num_classes, h, w)``.
    """
    return nn.Sequential(ConvBNReLU(in_channels, width, 3), nn.Dropout2d(dropout),
                         nn.Conv2d(width, num_classes, 1))


@register("pspnet")
class PSPNet(SegmentationModel):
    """PSPNet (Zhao et al. 2017): dilated ResNet at stride 8 + pyramid pooling + aux loss.

    Parameters
    ----------
    config : PSPNetConfig

    Attributes
    ----------
    backbone : Backbone
        At output stride 8.
    pyramid : PyramidPooling or nn.Identity
        The identity in the ``"no_pyramid"`` ablation.
    head, aux_head : nn.Sequential
        :func:`segmentation_head` on the pyramid's output and on the stage before last
        (``aux_head`` absent in ``"no_deep_supervision"``).
    aux_weights : dict of str to float
        ``{"aux": 0.4}``; empty without deep supervision.

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``; in training mode with
    deep supervision ``{"out": scores, "aux": (N, num_classes, H/8, W/8)}``. H and W must be
    multiples of 8.
    """

    config_class = PSPNetConfig
    presets = {"paper": {"backbone": "resnet50", "backbone_widths": None, "bins": (1, 2, 3, 6),
                         "head_width": 512, "aux_width": 256, "dropout": 0.1},
               "no_pyramid": {"pyramid": False},
               "max_pool": {"pool": "max"},
               "no_deep_supervision": {"deep_supervision": False}}
    output_stride = 8
    aux_weights = {"aux": 0.4}

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.backbone = create_backbone(c.backbone, in_channels=c.in_channels,
                                        output_stride=8, num_classes=None,
                                        **width_overrides(c.backbone_widths))
        aux_channels, channels = self.backbone.stage_channels[-2:]   # layer3, layer4
        if c.pyramid:
            self.pyramid = PyramidPooling(channels, c.bins, pool=c.pool)
            channels = self.pyramid.out_channels
        else:
            self.pyramid = nn.Identity()
        self.head = segmentation_head(channels, c.head_width, c.num_classes, c.dropout)
        if c.deep_supervision:
            self.aux_head = segmentation_head(aux_channels, c.aux_width, c.num_classes,
                                              c.dropout)
        else:
            self.aux_weights = {}          # no extra output: the loss is the final CE alone

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W), or in training mode
        with deep supervision ``{"out": scores, "aux": (N, num_classes, H/8, W/8)}``."""
        self.check_input_size(x.shape)
        stages = self.backbone.stage_features(x)         # [..., layer3, layer4], both H/8
        h = self.pyramid(stages[-1])                     # (N, 2C, H/8, W/8); no_pyramid: C
        scores = self.head(h)                            # (N, K, H/8, W/8)
        out = interpolate(scores, scale_factor=8, mode="bilinear",
                          align_corners=False)           # (N, K, H, W)
        if not (self.training and self.config.deep_supervision):
            return out
        return {"out": out, "aux": self.aux_head(stages[-2])}  # aux: (N, K, H/8, W/8)
