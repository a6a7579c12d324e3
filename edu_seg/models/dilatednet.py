"""Dilated convolutions: a stride-8 front-end and a context module on its class scores.

Yu and Koltun, "Multi-Scale Context Aggregation by Dilated Convolutions", ICLR 2016
(arXiv:1511.07122).

Two ideas. The FRONT-END is VGG-16 with its last two poolings removed and the convs after
them dilated (2 after pool4, 4 after pool5, as in DeepLab), so the class scores have stride 8
instead of FCN's 32, and no skip or decoder is needed to draw the boundaries. The CONTEXT
MODULE is a plug-in stack of 3x3 convs on the ``K`` class-score maps whose dilations grow
exponentially (1, 1, 2, 4, 8, 16, 1): the receptive field grows exponentially with the number
of layers (``1 + Σ d·(k − 1)`` = 67 map pixels for the paper's list) while the resolution
and the parameter count (``K·K·9`` per layer) stay fixed::

    image ─ VGG at stride 8 ─ fc6 ─ fc7 ─ score (K maps, 1/8)
          ─ context: [3x3 d1, ReLU] [d1] [d2] [d4] [d8] [d16] [d1] ─ 1x1 ─ bilinear x8 ─ scores

The module is initialised to the IDENTITY (each 3x3 conv: centre tap 1 on its own channel,
0 elsewhere; the 1x1 likewise): the paper found random initialisation did not train it, while
starting from "pass the front-end's scores through unchanged" lets it learn only what context
adds. On non-negative scores the ReLUs let them through too, so the untrained module changes
nothing.

What this small version keeps from the paper
    - the front-end: VGG at output stride 8 (``VGGConfig(output_stride=8)``: pool4 and pool5
      removed, conv5 dilated by 2), fc6 dilated by 4, fc7 1x1, a 1x1 score layer;
    - the "basic" context module: ``K`` channels throughout, 3x3 convs with ReLU, a final 1x1
      conv without ReLU, identity initialisation, zero biases;
    - bilinear up-sampling x8 of the result (not learned).

What it changes
    - the dilations of the context module are 1, 1, 2, 4, 1 (then the 1x1), not 1, 1, 2, 4,
      8, 16, 1. At a 64x64 input the stride-8 map is 8x8, and a tap 8 or 16 map pixels from
      the centre lies outside the map for EVERY position: those layers would be 1x1 convs
      plus zero padding. The kept rates still double up to the map's half size, so the
      module's receptive field (19 map pixels = 152 input pixels) covers the whole image;
      ``preset="paper"`` keeps the full list (field 67) with VGG-16 and a 7x7, 4096-channel
      fc6;
    - fc6 is a 3x3 conv (dilation 4, 128 channels) instead of 7x7 with 4096 channels: at an
      8x8 map a 7x7 kernel of dilation 4 would read mostly padding;
    - a tiny VGG with batch norm trained from scratch, the front-end and the context module
      TOGETHER, where the paper pretrains on ImageNet and trains the front-end first, then the
      context module on its output; dropout 0.1 instead of 0.5;
    - zero padding in the context module (the paper pads the front-end's input by
      reflection instead).

>>> import edu_seg.models as models
>>> model = models.create("dilatednet", num_classes=4)
>>> context_receptive_field(model.config.context_rates)
19
"""
import dataclasses

import numpy as np

from .. import nn
from ..ops.resample import interpolate
from . import register
from .backbones import create_backbone
from .base import SegmentationModel
from .blocks import fc_as_conv

__all__ = ["DilatedNet", "DilatedNetConfig", "ContextModule", "context_receptive_field"]


@dataclasses.dataclass
class DilatedNetConfig:
    """Hyper-parameters of :class:`DilatedNet` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    backbone : str
        A VGG name of :func:`edu_seg.models.create_backbone`, built with ``output_stride=8``.
    head_width : int
        Channels of fc6 and fc7 (the paper: 4096).
    fc6_kernel : int
        Kernel size of fc6, an odd number (the paper: 7); its dilation is 4, the stride that
        pool4 and pool5 no longer apply.
    dropout : float
        Channel dropout after fc6 and fc7 (the paper: 0.5).
    context_rates : tuple of int
        Dilations of the context module's 3x3 convs (the paper: 1, 1, 2, 4, 8, 16, 1).
    """

    num_classes: int
    in_channels: int = 3
    backbone: str = "vgg_bn_tiny"
    head_width: int = 128
    fc6_kernel: int = 3
    dropout: float = dataclasses.field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    context_rates: tuple[int, ...] = (1, 1, 2, 4, 1)

    def __post_init__(self):
        if self.fc6_kernel % 2 == 0:
            raise ValueError(f"DilatedNetConfig: fc6_kernel must be odd (a centred window), "
                             f"got {self.fc6_kernel}")


def context_receptive_field(rates, kernel_size=3):
    """Receptive field, in map pixels, of a stack of stride-1 convs with dilations ``rates``.

    Each layer widens the field by ``d·(k − 1)``: ``1 + Σ d·(k − 1)``. The paper's list
    1, 1, 2, 4, 8, 16, 1 gives 67 (its Table 1).
    """
    return 1 + sum(d * (kernel_size - 1) for d in rates)


class ContextModule(nn.Module):
    """Yu & Koltun's basic context module: dilated 3x3 convs on ``channels`` maps, then a 1x1.

    Every 3x3 conv is followed by a ReLU, the final 1x1 is not; all start as the identity
    (:meth:`identity_init_`).

    Parameters
    ----------
    channels : int
        ``K``, the number of class-score maps (in and out of every layer).
    rates : tuple of int
        The 3x3 convs' dilations (padding = dilation keeps the size).

    Shapes
    ------
    ``x: (N, channels, h, w) -> (N, channels, h, w)``.
    """

    def __init__(self, channels, rates):
        super().__init__()
        layers = []
        for d in rates:
            layers += [nn.Conv2d(channels, channels, 3, padding=d, dilation=d), nn.ReLU()]
        layers.append(nn.Conv2d(channels, channels, 1))
        self.layers = nn.Sequential(*layers)
        self.identity_init_()

    def identity_init_(self):
        """Set every conv to the identity: weight[c, c, centre] = 1, all else and bias 0."""
        for m in self.layers:
            if isinstance(m, nn.Conv2d):
                out_c, in_c, kh, kw = m.weight.shape
                w = np.zeros((out_c, in_c, kh, kw), m.weight.data.dtype)
                w[np.arange(out_c), np.arange(out_c), kh // 2, kw // 2] = 1.0
                m.weight.copy_(w)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        """x: (N, channels, h, w) -> (N, channels, h, w)."""
        return self.layers(x)                            # (N, channels, h, w)


@register("dilatednet")
class DilatedNet(SegmentationModel):
    """Dilated convolutions (Yu & Koltun 2016): stride-8 front-end, context module on scores.

    The front-end is a VGG whose last two poolings became dilations; the context module is
    an identity-initialised stack of exponentially dilated convs on the class scores.

    Parameters
    ----------
    config : DilatedNetConfig

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``; H and W must be
    multiples of 8.
    """

    config_class = DilatedNetConfig
    presets = {"paper": {"backbone": "vgg16", "head_width": 4096, "fc6_kernel": 7,
                         "dropout": 0.5, "context_rates": (1, 1, 2, 4, 8, 16, 1)}}
    output_stride = 8

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.backbone = create_backbone(c.backbone, in_channels=c.in_channels,
                                        output_stride=8, num_classes=None)
        self.fc6 = fc_as_conv(self.backbone.channels[8], c.head_width, c.fc6_kernel,
                              dilation=4, dropout=c.dropout)
        self.fc7 = fc_as_conv(c.head_width, c.head_width, dropout=c.dropout)
        self.score = nn.Conv2d(c.head_width, c.num_classes, 1)
        self.context = ContextModule(c.num_classes, c.context_rates)

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W)."""
        self.check_input_size(x.shape)
        h = self.backbone.features(x)[8]                 # (N, C5, H/8, W/8): dilated conv5
        h = self.fc7(self.fc6(h))                        # (N, head_width, H/8, W/8)
        scores = self.context(self.score(h))             # (N, K, H/8, W/8)
        return interpolate(scores, scale_factor=8, mode="bilinear",
                           align_corners=False)          # (N, K, H, W)
