"""DeepLabV3+: DeepLabV3 as the encoder, plus a light decoder on stride-4 features.

Chen, Zhu, Papandreou, Schroff and Adam, "Encoder-Decoder with Atrous Separable Convolution
for Semantic Image Segmentation", ECCV 2018 (arXiv:1802.02611).

DeepLabV3 (:mod:`edu_seg.models.deeplabv3`) predicts on a map of stride 16 and up-samples
the scores x16 bilinearly: the classes are right, but every boundary is a blur 16 pixels
wide, and a thin gap between two objects disappears. DeepLabV3+ keeps DeepLabV3 as the
ENCODER and adds a simple DECODER that brings back detail from an early, stride-4 feature map
of the backbone, as U-Net's skips do, but only once::

    image ─ backbone ─┬─ (1/4) low-level ─ 1x1 conv (48) ─ BN ─ ReLU ────────┐
                      └─ (1/16) ─ ASPP ─ bilinear x4 ─────────────────────── concat
                                                        ─ 3x3 ─ 3x3 ─ 1x1 classifier
                                                        ─ bilinear x4 ─ scores

The low-level map has many channels (256 in ResNet's layer1) that know edges, not objects;
the 1x1 conv reduces them to 48 so that they refine ASPP's 256 semantic channels rather than
outweigh them (the paper's Table 1: 48 beats 32 and 64). Two 3x3 convs (Table 2: two 3x3 of
256 beat one or three) fuse the two, at stride 4.

Atrous SEPARABLE convolution (Section 3.1): every 3x3 conv of ASPP and the decoder is a
depthwise 3x3 (dilated in ASPP) followed by a pointwise 1x1, each with BN and ReLU
(:func:`~edu_seg.models.blocks.separable_conv_bn_relu`): ``1/out_channels + 1/9`` of the
multiply-adds of a full 3x3 conv (about 1/8 at 64 channels), with the same field of view.

What this small version keeps from the paper
    - the encoder: an atrous ResNet at output stride 8 (or 16), ASPP with image pooling and
      separable atrous branches (:class:`~edu_seg.models.blocks.ASPP`, ``separable=True``);
    - the decoder: ASPP's output up-sampled bilinearly to the stride-4 map (x2 at output
      stride 8, x4 at 16), concatenated with the 1x1-reduced stride-4 features (a ResNet's
      layer1, the paper's "Conv2"), two separable 3x3 convs, a 1x1 classifier, bilinear x4.

What it changes
    - output stride 8 by default, the stride of the paper's best results (it trains at 16
      and evaluates at 8 to save memory, which a 64x64 image does not need). At 64 px a
      stride-16 map is 4x4: measured on Shapes, the best a 4x4 map up-sampled bilinearly
      can score is 0.46 mIoU (0.81 for an 8x8 map, 0.95 for 16x16;
      :func:`edu_seg.bench.stride_bound.output_stride_bound`), and the decoder has too
      little to refine (0.69 mIoU at stride 16 against 0.87 at 8 with this backbone);
    - the backbone is ``resnet18`` from scratch (the paper: ResNet-101 or an aligned
      Xception, pretrained). The 8-channel ``resnet_tiny`` of :mod:`~edu_seg.models.deeplabv3`
      caps this model at 0.51 mIoU (0.54 at output stride 8) on Shapes ``default``: with 8
      channels at stride 4 and 64 at the end there is too little for the decoder to combine.
      ``preset="xception"`` uses ``xception_tiny``, the paper's design at toy widths. Every
      backbone family runs under the same decoder: the tiny and the ``*_small`` presets of
      VGG (with batch norm), ResNet, DenseNet, MobileNetV2 and Xception (the small ones
      matched at about 200K parameters, :mod:`edu_seg.models.backbones`), all of which
      dilate to output stride 8 or 16 and have a stride-4 stage for the decoder;
    - widths scaled to the toy network: ASPP and decoder of 64 channels (the paper: 256),
      low-level features reduced to 12 channels (the paper: 48, i.e. 48/256 = 3/16 of ASPP's
      width; 12/64 is the same 3/16: resnet18's layer1 has as many channels as ASPP, 64, and
      the 1x1 conv reduces them to 12 as the paper's reduces 256 to 48);
    - ASPP rates (1, 2, 3) at output stride 16 (doubled at 8: 2, 4, 6) instead of (6, 12,
      18): at a 64x64 input the stride-16 map is 4x4 and a rate-6 tap lies outside it
      everywhere (see :mod:`edu_seg.models.deeplabv3` for the arithmetic);
    - output stride 32 is allowed too (the paper stops at 16), to measure what running ASPP
      at 1/32, on a 2x2 map of a 64x64 image, costs: the backbone keeps all its strides,
      ASPP's rates are halved and never below 1 (:func:`~edu_seg.models.deeplabv3.rates_at`:
      (1, 2, 3) become (1, 1, 1); on a 2x2 map a rate-1 3x3 conv already reads every pixel
      and any larger rate reads only its centre), and the decoder up-samples ASPP's output
      x8 to the stride-4 map;
    - dropout 0.1 after ASPP (the authors' TensorFlow code), no dropout in the decoder.

``preset="no_decoder"`` drops the decoder (classifier on ASPP, bilinear up by the output
stride: DeepLabV3 with separable ASPP), the ablation that measures what the decoder adds;
``preset="resnet_tiny"`` is the cheap one, ``resnet_tiny`` at output stride 8: the
DeepLabV3+ whose accuracy is nearest ICNet's on Shapes, the one the real-time
:mod:`edu_seg.models.icnet` must beat on speed at the same accuracy;
``preset="paper"`` is ResNet-50 at output stride 16 with 256/48 channels and rates 6, 12, 18
(the paper reports ResNet-101 and Xception-65; neither is here at full size).

>>> import edu_seg.models as models
>>> model = models.create("deeplabv3plus", num_classes=4)
"""
import dataclasses
from typing import Literal

from .. import nn
from ..autograd import cat
from ..ops.resample import interpolate
from . import register
from .backbones import backbone_presets, create_backbone
from .base import SegmentationModel
from .blocks import ASPP, ConvBNReLU, separable_conv_bn_relu
from .deeplabv3 import rates_at

__all__ = ["DeepLabV3Plus", "DeepLabV3PlusConfig"]


@dataclasses.dataclass
class DeepLabV3PlusConfig:
    """Hyper-parameters of :class:`DeepLabV3Plus` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    backbone : str
        A backbone of :func:`edu_seg.models.create_backbone` that takes an output stride and
        has a stride-4 stage: the tiny and small (``*_small``, matched at ~200K parameters)
        presets of every family (VGG with batch norm, ResNet, DenseNet, MobileNetV2,
        Xception), and
        ``resnet18``, ``resnet50`` and ``mobilenet_v2`` at full size.
    output_stride : {8, 16, 32}
        Stride of the map ASPP reads. 32 dilates nothing (the heavy part works at 1/32,
        for studying low-resolution processing; the paper uses 16 and 8).
    atrous_rates : tuple of int
        ASPP's rates at output stride 16 (the paper: 6, 12, 18), doubled at 8 and halved at
        32, rounded down but never below 1 (:func:`~edu_seg.models.deeplabv3.rates_at`).
    aspp_channels : int
        Channels of ASPP's branches and output (the paper: 256).
    image_pooling : bool
        Keep ASPP's image-level branch.
    separable : bool
        Atrous separable 3x3 convs in ASPP and the decoder (False: full 3x3 convs).
    decoder : bool
        The decoder on stride-4 features; False predicts from ASPP and up-samples by the
        output stride.
    low_level_channels : int
        Channels the stride-4 features are reduced to (the paper: 48).
    decoder_channels : int
        Channels of the decoder's two 3x3 convs (the paper: 256).
    dropout : float
        Dropout after ASPP's projection.
    """

    num_classes: int
    in_channels: int = 3
    backbone: Literal["resnet_tiny", "resnet_bottleneck_tiny", "resnet_small", "resnet18",
                      "resnet50", "xception_tiny", "xception_small", "mobilenet_v2_tiny",
                      "mobilenet_v2_small", "mobilenet_v2", "vgg_bn_tiny", "vgg_bn_small",
                      "densenet_tiny", "densenet_small"] = "resnet18"
    output_stride: Literal[8, 16, 32] = 8
    atrous_rates: tuple[int, ...] = (1, 2, 3)
    aspp_channels: int = 64
    image_pooling: bool = True
    separable: bool = True
    decoder: bool = True
    low_level_channels: int = 12
    decoder_channels: int = 64
    dropout: float = dataclasses.field(default=0.1, metadata={"min": 0.0, "max": 1.0})


@register("deeplabv3plus")
class DeepLabV3Plus(SegmentationModel):
    """DeepLabV3+ (Chen et al. 2018): DeepLabV3 encoder, decoder on stride-4 features.

    Parameters
    ----------
    config : DeepLabV3PlusConfig

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``; H and W must be
    multiples of ``output_stride``.
    """

    config_class = DeepLabV3PlusConfig
    presets = {"paper": {"backbone": "resnet50", "output_stride": 16,
                         "atrous_rates": (6, 12, 18), "aspp_channels": 256,
                         "low_level_channels": 48,
                         "decoder_channels": 256},
               "no_decoder": {"decoder": False},
               "xception": {"backbone": "xception_tiny"},
               "resnet_tiny": {"backbone": "resnet_tiny"}}

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.output_stride = c.output_stride
        # A full-size preset carries an ImageNet classifier, which a segmentation head replaces.
        drop_classifier = {"num_classes": None} if "num_classes" in backbone_presets(
            c.backbone) else {}
        self.backbone = create_backbone(c.backbone, in_channels=c.in_channels,
                                        output_stride=c.output_stride, **drop_classifier)
        channels = self.backbone.channels                 # {stride: channels}
        self.aspp = ASPP(channels[c.output_stride], rates_at(c.atrous_rates, c.output_stride),
                         c.aspp_channels, image_pooling=c.image_pooling,
                         separable=c.separable, dropout=c.dropout)
        if c.decoder:
            self.reduce = ConvBNReLU(channels[4], c.low_level_channels, 1)
            conv = separable_conv_bn_relu if c.separable else ConvBNReLU
            self.fuse = nn.Sequential(
                conv(c.aspp_channels + c.low_level_channels, c.decoder_channels),
                conv(c.decoder_channels, c.decoder_channels))
        self.classifier = nn.Conv2d(c.decoder_channels if c.decoder else c.aspp_channels,
                                    c.num_classes, 1)

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W)."""
        self.check_input_size(x.shape)
        s = self.output_stride
        features = self.backbone.features(x)              # {stride: (N, C_s, H/s, W/s)}
        h = self.aspp(features[s])                        # (N, aspp_channels, H/s, W/s)
        if self.config.decoder:
            low = self.reduce(features[4])                # (N, low_level_channels, H/4, W/4)
            h = interpolate(h, size=low.shape[-2:], mode="bilinear",
                            align_corners=False)          # (N, aspp_channels, H/4, W/4)
            h = self.fuse(cat([h, low], axis=1))          # (N, decoder_channels, H/4, W/4)
        scores = self.classifier(h)                       # (N, K, H/4, W/4), or H/s
        return interpolate(scores, size=x.shape[-2:], mode="bilinear",
                           align_corners=False)           # (N, K, H, W)
