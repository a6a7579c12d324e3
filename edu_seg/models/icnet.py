"""ICNet: an image cascade, the heavy network on a small image and light ones on larger images.

Zhao, Qi, Shen, Shi and Jia, "ICNet for Real-Time Semantic Segmentation on High-Resolution
Images", ECCV 2018 (arXiv:1704.08545).

A dilated network such as PSPNet (:mod:`edu_seg.models.pspnet`) is accurate but slow: its deep
stages run on a map of stride 8, and the cost of a convolution grows with the number of
pixels it slides over. ICNet's observation (its Fig. 3): the cost is in the DEEP layers on the
LARGE map, and the details they are asked to recover are what the large image holds anyway.
So it runs the deep network on the image shrunk to 1/4 (1/16 of the pixels), and lets the
larger images bring back the detail through CHEAP layers only, the IMAGE CASCADE::

    image ──────────────────── 3 strided conv-BN-ReLU ─────────────────── F3 (1/8) ───┐
    image /2 ─ first stages of the backbone (SHARED weights) ─────────── F2 (1/16) ─┐  │
    image /4 ─ first stages ─ dilated deep stages ─ pyramid pooling ──── F1 (1/32)  │  │
                (same modules)                                              │       │  │
                                                           CFF(F1, F2) ─────┴───────┘  │
                                                  aux16 ◄─ │ (1/16)                    │
                                                           CFF( . , F3) ───────────────┘
                                                  aux8 ◄── │ (1/8)
                                                           1x1 classifier ─ bilinear ─ scores

The three branches see the image at 1/4, 1/2 and full resolution and end at 1/32, 1/16 and
1/8 of the input: each coarser branch sees the image smaller AND ends one stride coarser, so
the three maps are 2x apart and can be fused pairwise. The medium branch is the FIRST stages
of the heavy branch's backbone, the same modules with the same weights, applied to the larger
image: it costs no parameters, and on the 1/2 image those shallow stages (edges, corners,
small textures) are exactly what the detail needs. The high branch is three strided
conv-BN-ReLU layers: it sees little, but at stride 8 of the full image.

The cascade feature fusion (CFF) unit (Section 3.3, Fig. 4) fuses a low-resolution map F_low
with the one twice as fine, F_high::

    F_low  ─ bilinear x2 ─ 3x3 conv, dilation 2 ─ BN ──┐
               │                                      + ─ ReLU ─ F_fused (at F_high's size)
               │            F_high ─ 1x1 conv ─ BN ───┘
               └─ 1x1 classifier ─ auxiliary scores (training only)

The dilated 3x3 conv after the x2 up-sampling reads taps 2 pixels apart, i.e. one pixel apart
on the map F_low came from: it refines the blocky up-sampled map with F_low's own field of view
(the paper: "a dilated convolution layer ... to refine the upsampled features"), while F_high
only needs a 1x1 conv to match the channels. The sum lets the fine branch correct the coarse one
where it knows better (edges), the ReLU makes the fusion non-linear.

Cascade label guidance (Section 3.3): each CFF's up-sampled low-resolution map also gets a 1x1
classifier whose scores are compared with the labels SHRUNK to that map's size, so every
branch learns to predict at its own scale: the loss is ``L = 0.4 L_16 + 0.4 L_8 + 1 L_final``
(the paper's lambda_1 = lambda_2 = 0.4, lambda_3 = 1). The labels are shrunk by NEAREST
sampling (:func:`shrink_labels`: one pixel per cell, the one nearest the cell's centre), never
by averaging: a label is a class index, and the average of classes 1 and 3 is not class 2.
The auxiliary classifiers exist only in training; the test-time network is the cascade alone.

Why a toy cascade one stride finer (the output-stride bound)
    The paper's finest map is at 1/8 (the high branch), and its final 1/4 prediction is that
    map's classifier up-sampled x2 (a 1x1 classifier and a bilinear up-sampling commute, so
    the 1/4 map holds nothing the 1/8 one does not): ICNet predicts at stride 8. A score map
    of stride s up-sampled bilinearly cannot be sharper than the map; measured on the Shapes
    default validation set (the one-hot ground truth average-pooled to stride s, bilinear up,
    argmax), the best possible mIoU is 0.988 at stride 2, 0.947 at 4, 0.811 at 8 and 0.460 at
    16. The paper's strides were chosen for 1024x2048 Cityscapes images, where a stride-8 map
    is 128x256 pixels; ours are 64x64, where it is 8x8. So the default ``cascade_stride=4``
    moves the whole cascade one stride finer: the high branch has TWO strided convs (1/4),
    the medium branch ends at 1/8 and the heavy one at 1/16, the CFFs fuse at 1/8 and 1/4,
    the auxiliary losses are at 1/8 and 1/4 ("aux8", "aux4") and the prediction is made at
    1/4 (bound 0.947). Every idea stays: three images, shared stages, two CFFs, label
    guidance with 0.4, 0.4, 1. ``preset="paper"`` keeps ``cascade_stride=8`` (losses "aux16",
    "aux8").

What 64-pixel images do to the cascade (measured with the zoo's recipe: 300 steps, Shapes)
    This toy ICNet scores about 0.55 mIoU on the default variant, far below PSPNet's 0.80
    with the same backbone. The cascade itself is the reason: the classes of Shapes differ by
    their corners, and the heavy branch's image is 16x16 pixels, where a shape 13 to 28
    pixels wide shrinks to 3 to 7. With everything else equal, feeding the heavy branch the
    1/2 image instead of the 1/4 one scored 0.57, feeding it the full image 0.82. Capacity
    does not replace resolution: a ResNet-18 heavy branch scored 0.68, a high branch of
    64-64 channels with CFFs of 128 0.65. ICNet's bet, that a network can recognise the
    scene on a 1/4 image and only needs cheap layers for the detail, holds on 1024x2048
    Cityscapes images with an ImageNet-pretrained backbone (the 1/4 image is 256x512); it
    does not on 64 px images from scratch.

What this small version keeps from the paper
    - the image cascade: the heavy branch on the input shrunk to 1/4, the medium branch on
      the input shrunk to 1/2, the high branch on the input itself (bilinear shrinking, as the
      authors' ``Interp`` layer);
    - the medium branch as the first stages of the heavy branch's backbone (the stem, layer1
      and layer2; the paper: conv1 to conv3_1), the same module objects (so the same
      weights) applied to the larger image;
    - a dilated ResNet ending with pyramid pooling as the heavy branch, and a 1x1
      conv-BN-ReLU after the pyramid (the authors' ``conv5_4_k1``);
    - the CFF unit exactly (bilinear x2, 3x3 conv of dilation 2 + BN; 1x1 conv + BN; sum;
      ReLU) and the auxiliary 1x1 classifier on its up-sampled low-resolution input;
    - cascade label guidance with weights 0.4, 0.4 and 1, the labels shrunk by nearest
      sampling to each auxiliary map's size;
    - the auxiliary classifiers only in training.

What it changes
    - the cascade is one stride finer by default (the section above);
    - the backbone is ``resnet_tiny`` at the widths PSPNet uses here (16-32-64-128, one basic
      block per stage, from scratch), so that ICNet and PSPNet differ by the cascade; the
      paper's heavy branch is an ImageNet-pretrained PSPNet50 (ResNet-50) with its kernels
      halved ("model compression"); ``preset="paper"`` builds ResNet-50 at full width;
    - the pyramid is :class:`~edu_seg.models.blocks.PyramidPooling` (PSPNet's: each pooled
      level reduced by a 1x1 conv-BN-ReLU, concatenated with the map); the authors' ICNet
      SUMS the up-sampled pooled maps with the map, without the 1x1 convs;
    - the medium branch runs the shared stages on the 1/2 image and the heavy branch runs
      them again on the 1/4 image, as the paper's Fig. 2 draws it. The authors' code saves
      that second pass: it shrinks the medium branch's stride-8 features x2 and continues
      from there. Both compute the heavy branch from shared weights; the shared batch norms
      here collect their statistics over both images;
    - the final loss is the cross-entropy of the full-resolution scores against the full mask
      (the output every model of this zoo is trained on); the paper scores its 1/4
      prediction against labels shrunk to 1/4. The two AUXILIARY terms are on shrunk labels,
      as in the paper: that is the label guidance;
    - widths scaled to the toy network: high branch 16-32 (paper 32-32-64), 64 channels after
      the pyramid (paper 256), 32 channels out of each CFF (paper 128).

Ablations (presets)
    - ``"no_cascade"``: the heavy branch alone on the 1/4 image, its classifier up-sampled to
      the input (x16 here, x32 in the paper): what the medium and high branches add;
    - ``"no_label_guidance"``: the same network, trained with the final loss only.

>>> import edu_seg.models as models
>>> model = models.create("icnet", num_classes=4)
>>> model.aux_weights
{'aux8': 0.4, 'aux4': 0.4}
"""
import dataclasses
from collections import OrderedDict
from typing import Literal, Optional

from .. import nn
from ..backend import contiguous
from ..ops.loss import cross_entropy
from ..ops.resample import interpolate
from . import register
from .backbones import create_backbone
from .backbones.resnet import width_overrides
from .base import SegmentationModel
from .blocks import ConvBNReLU, PyramidPooling
from .config import validate_config

__all__ = ["ICNet", "ICNetConfig", "CascadeFeatureFusion", "shrink_labels"]

#: Weights of the two auxiliary losses, coarser first (the paper's lambda_1, lambda_2; the
#: final loss has weight 1).
GUIDANCE_WEIGHTS = (0.4, 0.4)


def shrink_labels(masks, size):
    """Labels ``(N, H, W)`` shrunk to ``size = (h, w)`` by nearest sampling (``H = s h``).

    Each output pixel stands for an ``s x s`` cell of the input and takes the label of the
    pixel nearest the cell's centre, ``masks[:, s//2::s, s//2::s]``. Class indices cannot be
    averaged, so nearest it is; the centre rather than the cell's top-left pixel (what
    ``interpolate(mode="nearest")`` would pick) because a bilinearly up-sampled score map puts
    each of its values at the cell's centre, and the label should sit at the same place.

    Examples
    --------
    >>> m = np.arange(16).reshape(1, 4, 4)
    >>> shrink_labels(m, (2, 2))[0]
    array([[ 5,  7],
           [13, 15]])
    """
    H, W = masks.shape[-2:]
    h, w = size
    if H % h or W % w:
        raise ValueError(f"shrink_labels: a {H}x{W} mask cannot be shrunk to {h}x{w}; the "
                         f"sizes must divide")
    sh, sw = H // h, W // w
    return contiguous(masks[..., sh // 2::sh, sw // 2::sw])


@dataclasses.dataclass
class ICNetConfig:
    """Hyper-parameters of :class:`ICNet` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    cascade_stride : {4, 8}
        Stride of the high branch, the cascade's finest map (the paper: 8). The medium branch
        ends at twice it, the heavy one at four times it, and the high branch has
        ``log2(cascade_stride)`` strided convs. 4 by default (module docstring: the bound).
    backbone : str
        A ResNet of :func:`edu_seg.models.create_backbone` (the paper: PSPNet50's ResNet-50),
        run at output stride ``cascade_stride`` on the 1/4 image; its stages up to that
        stride are the medium branch.
    backbone_widths : 4 ints or None
        The ResNet's stage widths, replacing those of the ``backbone`` preset (the stem gets
        the first); None keeps the preset's.
    bins : tuple of int
        Grid sizes of the pyramid pooling levels (the paper: 1, 2, 3, 6).
    low_channels : int
        Channels of the 1x1 conv-BN-ReLU after the pyramid (the paper: 256).
    high_widths : tuple of int
        Channels of the high branch's strided convs, one per conv, so
        ``log2(cascade_stride)`` of them (the paper: 32, 32, 64).
    fusion_channels : int
        Channels out of each CFF unit (the paper: 128).
    cascade : bool
        False keeps the heavy branch alone (the ``"no_cascade"`` ablation).
    label_guidance : bool
        False trains with the final loss only (the ``"no_label_guidance"`` ablation).
    """

    num_classes: int
    in_channels: int = 3
    cascade_stride: Literal[4, 8] = 4
    backbone: Literal["resnet_tiny", "resnet_bottleneck_tiny", "resnet18",
                      "resnet50"] = "resnet_tiny"
    backbone_widths: Optional[tuple[int, int, int, int]] = (16, 32, 64, 128)
    bins: tuple[int, ...] = (1, 2, 3, 6)
    low_channels: int = 64
    high_widths: tuple[int, ...] = (16, 32)
    fusion_channels: int = 32
    cascade: bool = True
    label_guidance: bool = True

    def __post_init__(self):
        validate_config(self)          # types first, so the rules below compare valid values
        convs = {4: 2, 8: 3}[self.cascade_stride]              # one per halving
        if len(self.high_widths) != convs:
            raise ValueError(f"ICNetConfig: high_widths={tuple(self.high_widths)} gives "
                             f"{len(self.high_widths)} strided convs, but cascade_stride="
                             f"{self.cascade_stride} needs {convs} (one per halving); e.g. "
                             f"high_widths={(16, 32) if convs == 2 else (32, 32, 64)}")
        if not self.bins:
            raise ValueError("ICNetConfig: bins=() gives a pyramid without levels; give at "
                             "least one bin size, e.g. bins=(1, 2, 3, 6)")


class CascadeFeatureFusion(nn.Module):
    """ICNet's CFF unit: a low-resolution map, up-sampled and refined, plus a finer map.

    ``fused = ReLU(BN(conv3x3_dilation2(up2(low))) + BN(conv1x1(high)))``, and, for the
    cascade label guidance, ``classifier(up2(low))``: auxiliary scores at ``high``'s size.

    Parameters
    ----------
    low_channels, high_channels, out_channels : int
    num_classes : int
        Outputs of the auxiliary classifier.

    Shapes
    ------
    ``low: (N, low_channels, h, w), high: (N, high_channels, 2h, 2w) ->
    fused: (N, out_channels, 2h, 2w), up: (N, low_channels, 2h, 2w)`` (``up`` is what the
    auxiliary :attr:`classifier` reads).
    """

    def __init__(self, low_channels, high_channels, out_channels, num_classes):
        super().__init__()
        # padding 2 = dilation keeps the size; no conv bias: the BN right after cancels it.
        self.low_conv = nn.Conv2d(low_channels, out_channels, 3, padding=2, dilation=2,
                                  bias=False)
        self.low_bn = nn.BatchNorm2d(out_channels)
        self.high_conv = nn.Conv2d(high_channels, out_channels, 1, bias=False)
        self.high_bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.classifier = nn.Conv2d(low_channels, num_classes, 1)

    def forward(self, low, high):
        """low: (N, C_low, h, w), high: (N, C_high, 2h, 2w) -> (fused, up), both (.., 2h, 2w)."""
        up = interpolate(low, size=high.shape[-2:], mode="bilinear",
                         align_corners=False)                 # (N, C_low, 2h, 2w)
        fused = self.low_bn(self.low_conv(up)) + self.high_bn(self.high_conv(high))
        return self.relu(fused), up                           # (N, out_channels, 2h, 2w)


@register("icnet")
class ICNet(SegmentationModel):
    """ICNet (Zhao et al. 2018): heavy branch on the 1/4 image, shared light stages on the
    1/2 image, three strided convs on the full image, fused by two CFF units.

    Parameters
    ----------
    config : ICNetConfig

    Attributes
    ----------
    low : nn.Sequential
        The heavy branch: ``shared`` (the backbone's stages up to stride
        ``cascade_stride``), the dilated deeper stages, pyramid pooling, 1x1 conv-BN-ReLU.
    medium : nn.Sequential
        The medium branch: the SAME module objects as ``low.shared`` (absent in
        ``"no_cascade"``).
    high : nn.Sequential
        The high branch: strided 3x3 conv-BN-ReLU layers (absent in ``"no_cascade"``).
    cff_medium, cff_high : CascadeFeatureFusion
        Fuse (low, medium), then (that, high) (absent in ``"no_cascade"``).
    classifier : nn.Conv2d
        1x1, on the last fused map (on the heavy branch in ``"no_cascade"``).
    aux_weights : dict of str to float
        ``{"aux<2 cascade_stride>": 0.4, "aux<cascade_stride>": 0.4}``, named by the stride
        of the auxiliary scores; empty without label guidance or cascade.

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``; in training mode with
    label guidance ``{"out": scores, "aux8": (N, K, H/8, W/8), "aux4": (N, K, H/4, W/4)}``
    (``"aux16"``, ``"aux8"`` at ``cascade_stride=8``). H and W must be multiples of
    ``4 * cascade_stride`` (the heavy branch's stride on the full image).
    """

    config_class = ICNetConfig
    presets = {"paper": {"cascade_stride": 8, "backbone": "resnet50", "backbone_widths": None,
                         "bins": (1, 2, 3, 6), "low_channels": 256, "high_widths": (32, 32, 64),
                         "fusion_channels": 128},
               "no_cascade": {"cascade": False},
               "no_label_guidance": {"label_guidance": False}}

    def __init__(self, config):
        super().__init__(config)
        c, f = config, config.cascade_stride
        self.output_stride = 4 * f                  # the heavy branch: 1/4 image, stride f
        # A ResNet at output stride f: the strides after f become dilations (f = 4: layer2
        # to layer4; f = 8: layer3 and layer4, PSPNet's setting).
        backbone = create_backbone(c.backbone, in_channels=c.in_channels, num_classes=None,
                                   output_stride=f, **width_overrides(c.backbone_widths))
        # The stem, layer1 and layer2 (the paper shares conv1 to conv3_1) run on both the
        # 1/2 and the 1/4 image: one list of modules in two Sequentials. layer2 is strided
        # at f = 8 and dilated at f = 4, so they end at stride f either way.
        shared = [backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool,
                  backbone.layer1, backbone.layer2]
        deep = [backbone.layer3, backbone.layer4]
        medium_channels = backbone.stage_channels[2]              # layer2's output
        pyramid = PyramidPooling(backbone.stage_channels[-1], c.bins)
        self.low = nn.Sequential(OrderedDict(
            shared=nn.Sequential(*shared),                       # (N, C_medium, h/f, w/f)
            deep=nn.Sequential(*deep),                           # dilated: still h/f
            pyramid=pyramid,                                     # (N, 2 C_layer4, h/f, w/f)
            reduce=ConvBNReLU(pyramid.out_channels, c.low_channels, 1)))
        if c.cascade:
            self.medium = nn.Sequential(*shared)          # the same modules, not copies
            high, in_channels = [], c.in_channels
            for width in c.high_widths:
                high.append(ConvBNReLU(in_channels, width, 3, padding=1, stride=2))
                in_channels = width
            self.high = nn.Sequential(*high)
            self.cff_medium = CascadeFeatureFusion(c.low_channels, medium_channels,
                                                   c.fusion_channels, c.num_classes)
            self.cff_high = CascadeFeatureFusion(c.fusion_channels, c.high_widths[-1],
                                                 c.fusion_channels, c.num_classes)
            self.classifier = nn.Conv2d(c.fusion_channels, c.num_classes, 1)
        else:
            self.classifier = nn.Conv2d(c.low_channels, c.num_classes, 1)
        guided = c.cascade and c.label_guidance
        self.aux_weights = dict(zip((f"aux{2 * f}", f"aux{f}"), GUIDANCE_WEIGHTS)) if guided \
            else {}

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W), or in training mode
        with label guidance ``{"out": scores, "aux<2f>": (N, K, H/2f, W/2f), "aux<f>": (N, K,
        H/f, W/f)}`` where f is ``cascade_stride``."""
        self.check_input_size(x.shape)
        c, f = self.config, self.config.cascade_stride
        quarter = interpolate(x, scale_factor=0.25, mode="bilinear",
                              align_corners=False)            # (N, C, H/4, W/4)
        low = self.low(quarter)                               # (N, low_channels, H/4f, W/4f)
        if not c.cascade:
            scores = self.classifier(low)                     # (N, K, H/4f, W/4f)
            return interpolate(scores, size=x.shape[-2:], mode="bilinear",
                               align_corners=False)           # (N, K, H, W)
        half = interpolate(x, scale_factor=0.5, mode="bilinear",
                           align_corners=False)               # (N, C, H/2, W/2)
        medium = self.medium(half)                            # (N, C_medium, H/2f, W/2f)
        high = self.high(x)                                   # (N, C_high, H/f, W/f)
        fused, up_low = self.cff_medium(low, medium)          # both at H/2f
        fused, up_fused = self.cff_high(fused, high)          # both at H/f
        scores = self.classifier(fused)                       # (N, K, H/f, W/f)
        out = interpolate(scores, size=x.shape[-2:], mode="bilinear",
                          align_corners=False)                # (N, K, H, W)
        if not (self.training and c.label_guidance):
            return out
        return {"out": out,
                f"aux{2 * f}": self.cff_medium.classifier(up_low),   # (N, K, H/2f, W/2f)
                f"aux{f}": self.cff_high.classifier(up_fused)}       # (N, K, H/f, W/f)

    def loss(self, outputs, batch, ignore_index=-100):
        """Cascade label guidance: ``ce + 0.4 aux<2f> + 0.4 aux<f>``, each auxiliary score
        map against the labels shrunk to ITS size (:func:`shrink_labels`).

        Returns
        -------
        total : Tensor, shape ()
        terms : dict of str to Tensor
            ``{"ce": ..., "aux<2f>": ..., "aux<f>": ...}``, unweighted (only ``"ce"`` when
            the model has no auxiliary outputs).
        """
        outputs = outputs if isinstance(outputs, dict) else {"out": outputs}
        masks = batch["mask"]
        terms = {"ce": cross_entropy(outputs["out"], masks, ignore_index=ignore_index)}
        total = terms["ce"]
        for key, weight in self.aux_weights.items():
            target = shrink_labels(masks, outputs[key].shape[-2:])   # (N, H/s, W/s)
            terms[key] = cross_entropy(outputs[key], target, ignore_index=ignore_index)
            total = total + weight * terms[key]
        return total, terms
