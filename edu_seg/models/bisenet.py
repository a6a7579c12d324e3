"""BiSeNet: a shallow, wide spatial path for detail beside a deep, narrow context path.

Yu, Wang, Peng, Gao, Yu and Sang, "BiSeNet: Bilateral Segmentation Network for Real-time
Semantic Segmentation", ECCV 2018 (arXiv:1808.00897).

Segmentation needs two things that pull a network in opposite directions: a large receptive
field (to know WHAT a region is) and a high resolution (to know WHERE its edges run). A
dilated network (PSPNet, DeepLab) gets both by keeping deep layers on a large map, which is
slow; an encoder-decoder (U-Net) recovers resolution step by step, which costs a decoder. Fast
networks of the time shrank the input or pruned channels and lost one of the two. BiSeNet
gives each need its own path, and each path is cheap because it serves only one need::

    image ─ spatial path: 3 x (conv stride 2 ─ BN ─ ReLU), wide ──────────── (1/8) ─┐
                                                                                   FFM ─ head ─ x8
    image ─ context path: light backbone, down-sampled fast                         │
              ├─ (1/16) ─ ARM ─────────────────────────(+) ─ up ─ 3x3 conv ─ (1/8) ─┘
              └─ (1/32) ─ ARM ─(+) ─ up ─ 3x3 conv ─ (1/16) ─┘
                    GAP ─ 1x1 ─┘   └─ aux32 (1/32)     └─ aux16 (1/16)   (training only)

The SPATIAL PATH is three strided conv-BN-ReLU layers: its map is 1/8 of the input and has
many channels, so it keeps fine detail, but it is shallow, so it costs little even on the full
image. The CONTEXT PATH is a light classification network (Xception39 or ResNet-18 in the
paper) that reaches 1/32 quickly, so its deep layers run on tiny maps; a global average pool
at its tail adds the largest receptive field there is, the whole image. Neither path alone is
enough: the spatial one sees a few pixels, the context one sees in blocks of 16 and 32.

The ATTENTION REFINEMENT MODULE (ARM, Section 3.2, Fig. 2(b)) reweights the channels of a
context-path map by what the whole map contains::

    x ─┬──────────────────────────────────────────────── x ─ y = x * a
       └─ global avg pool ─ 1x1 conv ─ BN ─ sigmoid ─ a ─┘      (a: one weight per channel)

(a pooled vector and one 1x1 conv: it refines the backbone's features almost for free). ARMs
sit on the 1/16 and 1/32 maps; the pooled 1/32 map (the global context, through a 1x1
conv-BN-ReLU) is added to the 1/32 ARM's output; each sum is up-sampled, refined by a 3x3
conv-BN-ReLU and added to the next finer ARM's output, as in the authors' code.

The FEATURE FUSION MODULE (FFM, Fig. 2(c)) combines the two paths. They are "features of
different levels": the spatial path's are low-level detail, the context path's encode
classes, so a plain sum would add two different things. The FFM concatenates them, mixes
them with a conv-BN-ReLU into ``u``, and reweights ``u``'s channels, SE-style::

    [spatial, context] ─ concat ─ conv-BN-ReLU ─ u ─┬─────────────────────────────(+)─ u + u * a
                                                    └─ GAP ─ 1x1 ─ ReLU ─ 1x1 ─ sigmoid ─ a ─ x ┘

Two auxiliary losses (Section 3.3) supervise the context path's 1/16 and 1/32 outputs
through their own small heads, weighted alpha = 1 each; they exist only in training.

Why the toy spatial path ends at 1/4 (the output-stride bound)
    BiSeNet predicts at the spatial path's stride, 8, and up-samples the scores x8
    bilinearly. A score map of stride s cannot be sharper than its map: on the Shapes default
    validation set (the one-hot ground truth average-pooled to stride s, bilinear up, argmax)
    the best possible mIoU is 0.988 at stride 2, 0.947 at 4, 0.811 at 8 and 0.460 at 16. The
    paper chose 1/8 for 640x360 to 2048x1024 images, where a stride-8 map has 45 to 256
    pixels a side; on our 64x64 images it has 8, and a 1/8 spatial path would cap the model
    near 0.81 by construction. So the default spatial path has TWO strided convs (1/4,
    bound 0.947), and the context is up-sampled to 1/4 instead of 1/8. The idea is
    unchanged: a shallow wide path at the prediction's resolution beside a deep narrow one
    that reaches 1/32. ``preset="paper"`` keeps three strided convs (1/8).

What this small version keeps from the paper
    - the spatial path: strided conv-BN-ReLU layers only, wide from the first layer on,
      ending at the stride the model predicts at;
    - the context path: a backbone read at 1/16 and 1/32, global average pooling at its tail
      (a 1x1 conv-BN-ReLU on the pooled vector, added to the 1/32 ARM's output), ARMs on
      both maps with exactly Fig. 2(b)'s attention (pool, 1x1 conv, BN, sigmoid, multiply),
      each sum up-sampled and refined by a 3x3 conv-BN-ReLU (the authors' code);
    - the FFM exactly: concatenation, conv-BN-ReLU, and ``u + u * sigmoid(1x1(ReLU(1x1(
      GAP(u)))))``;
    - the head (3x3 conv-BN-ReLU, 1x1 classifier) and the x(stride) bilinear up-sampling;
    - two auxiliary heads on the context path's 1/16 and 1/32 sums, loss weight 1 each, only
      in training.

What it changes
    - the spatial path ends at 1/4 by default (the section above);
    - the context path is ``resnet_tiny`` at widths 16-32-64-128 (one basic block per stage,
      from scratch) instead of an ImageNet-pretrained Xception39 or ResNet-18
      (``preset="paper"`` builds ResNet-18);
    - every ARM first maps its backbone map to the context path's width with a 3x3
      conv-BN-ReLU (the authors' code does the same; the figure leaves the widths out), so
      that the two ARM outputs can be summed;
    - widths: spatial path 64-128 (the authors' code: 64-64-64), context path 32 (128),
      FFM 128 (256), head 64 (64), auxiliary heads 16 (256); the FFM's attention squeezes to
      a quarter of its channels.

What the width of the spatial path is worth (the zoo's recipe: 300 steps, Shapes default)
    The spatial path mattered more than the backbone. With spatial widths 16-32, a head of
    32 and an FFM of 64 the model scored 0.60 mIoU, and as much with ResNet-18 (11 M
    parameters) as its context path; with 64-128, a head of 64 and an FFM of 128 (the
    default) it scores 0.86. A plausible reading: the classes of Shapes differ by their
    corners, and only the spatial path still sees corners at 1/4; a narrow path cannot carry
    them to the head. (Reading the context at 1/8 and 1/16 instead, with the backbone's last
    stage dilated, added 0.01.)

Ablations (presets)
    - ``"no_spatial_path"``: the context path alone, up-sampled, into the head;
    - ``"no_attention"``: no attention anywhere: each ARM is its 3x3 conv-BN-ReLU alone and
      the FFM is concat + conv-BN-ReLU (the sums and the global context stay);
    - ``"no_deep_supervision"``: the same network trained with the final loss only (no
      ``aux16``, ``aux32``): what the two auxiliary losses add to the accuracy and to the
      stability of training. The heads exist only in training, so inference costs the same.

>>> import edu_seg.models as models
>>> model = models.create("bisenet", num_classes=4)
>>> model.spatial_stride
4
"""
import dataclasses
from typing import Literal, Optional

from .. import nn
from ..autograd import cat
from ..ops.resample import interpolate
from . import register
from .backbones import backbone_presets, create_backbone
from .backbones.resnet import width_overrides
from .base import SegmentationModel
from .blocks import ConvBNReLU
from .config import validate_config

__all__ = ["BiSeNet", "BiSeNetConfig", "AttentionRefinement", "FeatureFusion"]


@dataclasses.dataclass
class BiSeNetConfig:
    """Hyper-parameters of :class:`BiSeNet` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    spatial_widths : tuple of int
        Channels of the spatial path's strided 3x3 conv-BN-ReLU layers, one per layer: the
        path ends at stride ``2 ** len(spatial_widths)``, where the model predicts (the
        paper: three layers, 1/8; the authors' code: 64, 64, 64). 1 to 4 layers.
    spatial_path : bool
        False removes the spatial path and the FFM (the ``"no_spatial_path"`` ablation).
    backbone : str
        The context path: a backbone of :func:`edu_seg.models.create_backbone` with stages
        at strides 16 and 32 (the paper: Xception39 or ResNet-18).
    backbone_widths : 4 ints or None
        A ResNet's stage widths, replacing those of the ``backbone`` preset (the stem gets the
        first); None keeps the preset's (give None with a backbone of another family).
    context_channels : int
        Width of the context path after the ARMs (the authors' code: 128).
    fusion_channels : int
        Width of the FFM's output (the authors' code: 256).
    ffm_reduction : int
        The FFM's attention squeezes ``fusion_channels`` to ``fusion_channels //
        ffm_reduction`` between its two 1x1 convs.
    head_channels : int
        Width of the head's 3x3 conv (the authors' code: 64).
    aux_channels : int
        Width of the auxiliary heads' 3x3 conv (the authors' code: 256).
    attention : bool
        False removes the ARMs' and the FFM's attention (the ``"no_attention"`` ablation).
    deep_supervision : bool
        Train the two auxiliary heads on the context path (the paper); False builds neither
        and trains on the final loss only (``"no_deep_supervision"``).
    """

    num_classes: int
    in_channels: int = 3
    spatial_widths: tuple[int, ...] = (64, 128)
    spatial_path: bool = True
    backbone: Literal["resnet_tiny", "resnet_bottleneck_tiny", "resnet18", "resnet50",
                      "xception_tiny", "mobilenet_v2_tiny", "mobilenet_v2"] = "resnet_tiny"
    backbone_widths: Optional[tuple[int, int, int, int]] = (16, 32, 64, 128)
    context_channels: int = 32
    fusion_channels: int = 128
    ffm_reduction: int = 4
    head_channels: int = 64
    aux_channels: int = 16
    attention: bool = True
    deep_supervision: bool = True

    def __post_init__(self):
        validate_config(self)          # types first, so the rules below compare valid values
        if not 1 <= len(self.spatial_widths) <= 4:
            raise ValueError(f"BiSeNetConfig: spatial_widths={tuple(self.spatial_widths)} "
                             f"gives a spatial path of {len(self.spatial_widths)} strided "
                             f"convs; give 1 to 4 widths (stride 2 to 16; the paper: 3)")
        if self.backbone_widths is not None and not self.backbone.startswith("resnet"):
            raise ValueError(f"BiSeNetConfig: backbone_widths sets a ResNet's stage widths, "
                             f"but backbone={self.backbone!r} is not a ResNet; give "
                             f"backbone_widths=None with it")
        if self.fusion_channels < self.ffm_reduction:
            raise ValueError(f"BiSeNetConfig: fusion_channels={self.fusion_channels} with "
                             f"ffm_reduction={self.ffm_reduction} squeezes the FFM's "
                             f"attention to 0 channels; give fusion_channels >= "
                             f"{self.ffm_reduction} or a smaller ffm_reduction")


class AttentionRefinement(nn.Module):
    """BiSeNet's ARM: a 3x3 conv-BN-ReLU to the context width, then channel attention
    ``y = x * sigmoid(BN(conv1x1(GAP(x))))`` (Fig. 2(b)).

    The sigmoid gives one weight in (0, 1) per channel, computed from the whole map, so the
    module turns up the channels that matter for THIS image and turns down the others.

    Parameters
    ----------
    in_channels, out_channels : int
    attention : bool
        False leaves only the 3x3 conv-BN-ReLU (the ``"no_attention"`` ablation).

    Shapes: ``(N, in_channels, h, w) -> (N, out_channels, h, w)``.
    """

    def __init__(self, in_channels, out_channels, attention=True):
        super().__init__()
        self.attention = attention
        self.project = ConvBNReLU(in_channels, out_channels, 3)
        if attention:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.conv = nn.Conv2d(out_channels, out_channels, 1, bias=False)  # BN follows
            self.bn = nn.BatchNorm2d(out_channels)
            self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        """x: (N, in_channels, h, w) -> (N, out_channels, h, w)."""
        x = self.project(x)                                    # (N, out_channels, h, w)
        if not self.attention:
            return x
        weights = self.sigmoid(self.bn(self.conv(self.pool(x))))   # (N, out_channels, 1, 1)
        return x * weights                                     # broadcast over h, w


class FeatureFusion(nn.Module):
    """BiSeNet's FFM: ``u = conv-BN-ReLU(concat(spatial, context))``, then
    ``u + u * sigmoid(conv1x1(ReLU(conv1x1(GAP(u)))))`` (Fig. 2(c)).

    Parameters
    ----------
    spatial_channels, context_channels, out_channels : int
    reduction : int
        The attention's middle width is ``out_channels // reduction``.
    attention : bool
        False returns ``u`` (the ``"no_attention"`` ablation).

    Shapes: ``spatial: (N, C_s, h, w), context: (N, C_c, h, w) -> (N, out_channels, h, w)``.
    """

    def __init__(self, spatial_channels, context_channels, out_channels, reduction=4,
                 attention=True):
        super().__init__()
        self.attention = attention
        self.fuse = ConvBNReLU(spatial_channels + context_channels, out_channels, 1)
        if attention:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.squeeze = nn.Conv2d(out_channels, out_channels // reduction, 1)
            self.relu = nn.ReLU()
            self.excite = nn.Conv2d(out_channels // reduction, out_channels, 1)
            self.sigmoid = nn.Sigmoid()

    def forward(self, spatial, context):
        """spatial: (N, C_s, h, w), context: (N, C_c, h, w) -> (N, out_channels, h, w)."""
        u = self.fuse(cat([spatial, context], axis=1))         # (N, out_channels, h, w)
        if not self.attention:
            return u
        weights = self.sigmoid(self.excite(self.relu(self.squeeze(self.pool(u)))))  # (N, C, 1, 1)
        return u + u * weights                                 # (N, out_channels, h, w)


def _head(in_channels, width, num_classes):
    """``3x3 conv-BN-ReLU -> 1x1 classifier``: (N, in_channels, h, w) -> (N, K, h, w)."""
    return nn.Sequential(ConvBNReLU(in_channels, width, 3), nn.Conv2d(width, num_classes, 1))


@register("bisenet")
class BiSeNet(SegmentationModel):
    """BiSeNet (Yu et al. 2018): a spatial path and a context path, fused by the FFM.

    Parameters
    ----------
    config : BiSeNetConfig

    Attributes
    ----------
    spatial : nn.Sequential
        The spatial path's strided conv-BN-ReLU layers (absent in ``"no_spatial_path"``).
    spatial_stride : int
        ``2 ** len(spatial_widths)``: where the context is up-sampled to and the model
        predicts.
    backbone : Backbone
        The context path's backbone, read at strides 16 and 32.
    global_context : nn.Sequential
        Global average pool, 1x1 conv-BN-ReLU: the vector added to ``arm32``'s output.
    arm16, arm32 : AttentionRefinement
        On the backbone's maps of stride 16 and 32.
    refine32, refine16 : ConvBNReLU
        3x3, after each up-sampling of the context path (1/32 to 1/16, 1/16 to
        ``spatial_stride``).
    ffm : FeatureFusion
        Absent in ``"no_spatial_path"``.
    head, aux16, aux32 : nn.Sequential
        The classifier heads; ``aux16`` and ``aux32`` read the context path's two sums and
        are used only in training (both absent in ``"no_deep_supervision"``).
    aux_weights : dict of str to float
        ``{"aux16": 1.0, "aux32": 1.0}``; empty without deep supervision.

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``; in training mode with
    deep supervision ``{"out": scores, "aux16": (N, K, H/16, W/16), "aux32": (N, K, H/32,
    W/32)}``. H and W must be multiples of 32.
    """

    config_class = BiSeNetConfig
    presets = {"paper": {"spatial_widths": (64, 64, 64), "backbone": "resnet18",
                         "backbone_widths": None, "context_channels": 128,
                         "fusion_channels": 256, "head_channels": 64, "aux_channels": 256},
               "no_spatial_path": {"spatial_path": False},
               "no_attention": {"attention": False},
               "no_deep_supervision": {"deep_supervision": False}}
    output_stride = 32
    aux_weights = {"aux16": 1.0, "aux32": 1.0}      # the paper's alpha = 1

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.spatial_stride = 2 ** len(c.spatial_widths)
        if c.spatial_path:
            layers, in_channels = [], c.in_channels
            for width in c.spatial_widths:
                layers.append(ConvBNReLU(in_channels, width, 3, padding=1, stride=2))
                in_channels = width
            self.spatial = nn.Sequential(*layers)
        # A full-size preset carries an ImageNet classifier, which the model does not use.
        drop_classifier = {"num_classes": None} if "num_classes" in backbone_presets(
            c.backbone) else {}
        self.backbone = create_backbone(c.backbone, in_channels=c.in_channels,
                                        **drop_classifier, **width_overrides(c.backbone_widths))
        channels, ctx = self.backbone.channels, c.context_channels   # {stride: channels}
        self.global_context = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                            ConvBNReLU(channels[32], ctx, 1))
        self.arm32 = AttentionRefinement(channels[32], ctx, c.attention)
        self.arm16 = AttentionRefinement(channels[16], ctx, c.attention)
        self.refine32 = ConvBNReLU(ctx, ctx, 3)                  # after the x2 to 1/16
        self.refine16 = ConvBNReLU(ctx, ctx, 3)                  # after the up to 1/s
        if c.spatial_path:
            self.ffm = FeatureFusion(c.spatial_widths[-1], ctx, c.fusion_channels,
                                     c.ffm_reduction, c.attention)
        self.head = _head(c.fusion_channels if c.spatial_path else ctx, c.head_channels,
                          c.num_classes)
        if c.deep_supervision:
            self.aux16 = _head(ctx, c.aux_channels, c.num_classes)
            self.aux32 = _head(ctx, c.aux_channels, c.num_classes)
        else:
            self.aux_weights = {}          # no extra output: the loss is the final CE alone

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W), or in training mode
        with deep supervision ``{"out": scores, "aux16": (N, K, H/16, W/16), "aux32": (N, K,
        H/32, W/32)}``."""
        self.check_input_size(x.shape)
        H, W = x.shape[-2:]
        s = self.spatial_stride
        features = self.backbone.features(x)                   # {stride: (N, C_s, H/s, W/s)}
        f16, f32 = features[16], features[32]
        context32 = self.arm32(f32) + self.global_context(f32)  # (N, ctx, H/32, W/32)
        up = interpolate(context32, size=f16.shape[-2:], mode="bilinear",
                         align_corners=False)                  # (N, ctx, H/16, W/16)
        context16 = self.arm16(f16) + self.refine32(up)        # (N, ctx, H/16, W/16)
        up = interpolate(context16, size=(H // s, W // s), mode="bilinear",
                         align_corners=False)                  # (N, ctx, H/s, W/s)
        context = self.refine16(up)                            # (N, ctx, H/s, W/s)
        if self.config.spatial_path:
            fused = self.ffm(self.spatial(x), context)         # (N, fusion_channels, H/s, W/s)
        else:
            fused = context
        scores = self.head(fused)                              # (N, K, H/s, W/s)
        out = interpolate(scores, size=(H, W), mode="bilinear",
                          align_corners=False)                 # (N, K, H, W)
        if not (self.training and self.config.deep_supervision):
            return out
        return {"out": out, "aux16": self.aux16(context16),    # (N, K, H/16, W/16)
                "aux32": self.aux32(context32)}                # (N, K, H/32, W/32)
