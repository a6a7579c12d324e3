"""DDSC: Dense Decoder Shortcut Connections, every decoder level reads ALL the coarser ones.

Bilinski and Prisacariu, "Dense Decoder Shortcut Connections for Single-Pass Semantic
Segmentation", CVPR 2018, pp. 6596-6605 (no arXiv version; DOI 10.1109/CVPR.2018.00690).

RefineNet (:mod:`edu_seg.models.refinenet`) climbs back from the coarsest encoder map to the
stride-4 map through a CASCADE: the decoder level at stride 4 sees the stride-4 encoder map
and the output of the level at stride 8 only. Whatever the stride-32 level knew reaches the
stride-4 level through the two levels in between, each of which may keep or lose it.
DDSC's point is the one DenseNet (Huang et al., CVPR 2017) made for the layers of a
classifier: hand every decoder level the outputs of ALL the levels before it, so that the
most semantic features (which object is this?) reach the finest level directly, and every
level fuses several resolutions at once. The paper calls these links *dense decoder shortcut connections* and
credits them with its single-pass results (no multi-scale test-time averaging).

The network (four levels; level ``j`` works at stride ``32 / 2^j``)::

    image ─ ResNet ┬─ layer4 (1/32) ─ adapt ─ level 0 ─ S0 ──┬──────────┬──────────┐
                   ├─ layer3 (1/16) ─ adapt ─ level 1 ◄──────┘ ─ S1 ─┬──┼───────┬──┤
                   ├─ layer2 (1/8)  ─ adapt ─ level 2 ◄──────────────┴──┘ ─ S2 ─┼──┤
                   └─ layer1 (1/4)  ─ adapt ─ level 3 ◄─────────────────────────┴──┘
                                                 │ S3 (1/4)
                             scores ─ bilinear x4 ─ 1x1 classifier

    one level j:   [A_j, up(S_0), ..., up(S_{j-1})] ─ concat ─ fuse ─ context ─ semantic ─ S_j

Every arrow into a level is up-sampled bilinearly to that level's resolution (``up``). The
inputs each level concatenates:

    =====  ======  ========  =========================================  ========================
    level  stride  encoder   dense shortcuts (the paper)                ``no_dense_shortcuts``
    =====  ======  ========  =========================================  ========================
    0      1/32    layer4    A0                                         A0
    1      1/16    layer3    A1, up(S0)                                 A1, up(S0)
    2      1/8     layer2    A2, up(S0), up(S1)                         A2, up(S1)
    3      1/4     layer1    A3, up(S0), up(S1), up(S2)                 A3, up(S2)
    =====  ======  ========  =========================================  ========================

The blocks of one level, as this file builds them
    1. **Encoder adaptation** ``A_j``: a 3x3 conv + BN + ReLU from the encoder stage's
       channels (64 ... 512 in ResNet-18) to the decoder's width. The encoder's features were
       shaped by its own stage; the adaptation unit maps them into the decoder's space, and
       makes every input of a fusion the same width, so no stage outweighs another by
       having more channels.
    2. **Fusion** (the dense decoder shortcuts): ``A_j`` and the outputs ``S_0 .. S_{j-1}``
       of ALL coarser levels, each up-sampled bilinearly to this level's size, are
       CONCATENATED along the channels, DenseNet's way of joining features, and a 3x3
       conv + BN + ReLU mixes them back to the decoder's width. Concatenate-then-convolve
       contains RefineNet's fusion (a conv per path, then a sum): a conv of a concatenation
       ``conv([a, b]) = conv_a(a) + conv_b(b)`` IS a sum of one conv per input, each with
       its own weights. Only a plain sum without per-input weights would be less general.
    3. **Context capture**: the level's map ``x`` is read twice, locally by a 3x3 conv + BN
       + ReLU, and globally by image pooling (global average pool -> 1x1 conv -> BN ->
       ReLU, spread over the map: :class:`~edu_seg.models.blocks.ImagePooling`); the two
       are concatenated and a 1x1 conv + BN + ReLU projects them back. The global branch is
       what gives every pixel of the FINE levels (a 16x16 map at stride 4) a summary of the
       whole image: their 3x3 convs see only a few pixels around themselves.
    4. **Semantic features**: two 3x3 conv + BN + ReLU turn the fused, context-aware map
       into the level's output ``S_j``, the map the finer levels will receive.

The finest level (stride 4) feeds a 1x1 classifier, and its scores are up-sampled x4
bilinearly to the input size, as in RefineNet. That stride is why the decoder stops at
layer1: a model whose last scores are at stride ``s`` and up-sampled bilinearly cannot be
sharper than that map. Measured on the Shapes default variant (average-pool the one-hot
ground truth to stride ``s``, bilinear up, argmax; :mod:`edu_seg.bench.stride_bound`), the
best possible mIoU is 0.988 at stride 2, 0.947 at 4, 0.811 at 8 and 0.460 at 16. Stride 4
leaves room above 0.9, so the four-level decoder needs no change of stride for 64x64 inputs.

What this small version keeps from the paper
    - an encoder read at four stages (strides 4, 8, 16, 32), an encoder adaptation unit per
      stage, and a decoder of four levels from coarse to fine;
    - the dense decoder shortcuts: level ``j`` concatenates the up-sampled outputs of all
      coarser levels ``0 .. j-1`` with its adapted encoder map;
    - a context-capture block and a semantic-feature block at every level (here after the
      fusion);
    - single-pass inference: one forward pass at one scale.

What it changes
    - the encoder is ResNet-18 trained from scratch, not an ImageNet-pretrained ResNeXt-101:
      the backbones here have no grouped-convolution (ResNeXt) block, and a ResNeXt differs
      from a ResNet inside its residual blocks only, not in the strides and stages that the
      decoder reads. Not ``resnet_tiny``: its stem reaches stride 4 through one 7x7 conv of
      8 channels and a max-pool, and layer1 (the map the finest level adapts) has 8
      channels; ResNet-18's has 64. With the zoo's recipe this decoder (32 channels) on
      ``resnet_tiny`` reached 0.65 mIoU on Shapes, on ResNet-18 0.80 (and GCN on ResNet-18
      0.89, DeepLabV3+ on ``resnet_tiny`` 0.51). ``preset="paper"`` uses ResNet-50, the
      nearest bottleneck ResNet to the paper's encoder here;
    - one decoder width for every level, 64 channels (``preset="paper"``: 256): a 64x64 input
      gives maps of 16x16 down to 2x2, and with dense shortcuts level 3's fusion already
      reads 4 x 64 = 256 channels. Trained with the zoo's recipe, 32 channels reached only
      0.80 mIoU on Shapes (circles and squares 0.69 each), 64 channels 0.87-0.88;
    - the blocks are made of the zoo's conv + BN + ReLU units, and the context block is
      image-level pooling beside a 3x3 conv (described above); the paper's adaptation,
      context, semantic and fusion blocks have layer lists of their own, which this file
      does not reproduce layer for layer;
    - every up-sampling is bilinear, the shortcuts' and the final x4 one (no learned
      up-sampling).

The ablation ``preset="no_dense_shortcuts"`` (``dense_shortcuts=False``) keeps every block
and width and removes the long links: level ``j`` receives only ``S_{j-1}``, a plain
U-Net / RefineNet-style cascade. Only the fusion convs of levels 2 and 3 change (they read
2 x 64 channels instead of 3 x 64 and 4 x 64).

>>> import edu_seg.models as models
>>> model = models.create("ddsc", num_classes=4)
>>> [level.fuse.conv.in_channels for level in model.levels]          # 64 (1 + j) channels in
[64, 128, 192, 256]
>>> [level.fuse.conv.in_channels for level in models.create(
...     "ddsc", num_classes=4, preset="no_dense_shortcuts").levels]
[64, 128, 128, 128]
"""
import dataclasses
from typing import Literal

from .. import nn
from ..autograd import cat
from ..ops.resample import interpolate
from . import register
from .backbones import create_backbone
from .base import SegmentationModel
from .blocks import ConvBNReLU, ImagePooling

__all__ = ["DDSC", "DDSCConfig", "DecoderLevel", "ContextBlock", "STRIDES"]

#: Strides of the encoder maps the decoder levels read, coarsest (level 0) first.
STRIDES = (32, 16, 8, 4)


@dataclasses.dataclass
class DDSCConfig:
    """Hyper-parameters of :class:`DDSC` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    backbone : str
        A ResNet of :func:`edu_seg.models.create_backbone`, built at output stride 32 and
        read at strides 32, 16, 8, 4 (layer4 .. layer1).
    width : int
        Channels of every decoder level: of the adaptation units, the fusion output, the
        context and semantic blocks (the paper's preset: 256).
    dense_shortcuts : bool
        True: level ``j`` concatenates the outputs of ALL coarser levels (the paper).
        False: only the level directly above it (the ``no_dense_shortcuts`` ablation).
    """

    num_classes: int
    in_channels: int = 3
    backbone: Literal["resnet18", "resnet50", "resnet_tiny",
                      "resnet_bottleneck_tiny"] = "resnet18"
    width: int = 64
    dense_shortcuts: bool = True


class ContextBlock(nn.Module):
    """Local and global context of a map: ``project([conv3x3(x), image_pool(x)])``.

    ``image_pool`` averages the whole map into one vector per image (global average pool ->
    1x1 conv -> BN -> ReLU) and spreads it back over every position, so each output pixel
    depends on every input pixel; the 3x3 branch keeps the local detail.

    Parameters
    ----------
    channels : int

    Shapes: ``x: (N, channels, h, w) -> (N, channels, h, w)``.
    """

    def __init__(self, channels):
        super().__init__()
        self.local = ConvBNReLU(channels, channels, 3)
        self.image_pool = ImagePooling(channels, channels)
        self.project = ConvBNReLU(2 * channels, channels, 1)

    def forward(self, x):
        """x: (N, channels, h, w) -> (N, channels, h, w)."""
        local = self.local(x)                            # (N, channels, h, w)
        whole = self.image_pool(x)                       # (N, channels, h, w), constant in h, w
        return self.project(cat([local, whole], axis=1))  # (N, 2 channels) -> (N, channels)


class DecoderLevel(nn.Module):
    """One decoder level: encoder adaptation, fusion of its inputs, context, semantic features.

    Parameters
    ----------
    encoder_channels : int
        Channels of the encoder stage this level adapts.
    width : int
        Channels of everything the level computes.
    num_shortcuts : int
        How many coarser levels' outputs it receives (``j`` with dense shortcuts at level
        ``j``, else ``min(j, 1)``).

    Attributes
    ----------
    adapt : ConvBNReLU
        The encoder adaptation unit ``A_j`` (3x3).
    fuse : ConvBNReLU
        3x3 conv over the concatenation ``[A_j, up(S_i) for each shortcut]``.
    context : ContextBlock
    semantic : Sequential
        Two 3x3 conv + BN + ReLU; its output is the level's output ``S_j``.

    Shapes
    ------
    ``forward(feature, coarser)``: ``feature: (N, encoder_channels, h, w)`` and
    ``coarser``: a list of ``num_shortcuts`` maps ``(N, width, h_i, w_i)`` with ``h_i <= h``
    -> ``(N, width, h, w)``.
    """

    def __init__(self, encoder_channels, width, num_shortcuts):
        super().__init__()
        self.num_shortcuts = num_shortcuts
        self.adapt = ConvBNReLU(encoder_channels, width, 3)
        self.fuse = ConvBNReLU((1 + num_shortcuts) * width, width, 3)
        self.context = ContextBlock(width)
        self.semantic = nn.Sequential(ConvBNReLU(width, width, 3),
                                      ConvBNReLU(width, width, 3))

    def forward(self, feature, coarser):
        """feature: (N, C_enc, h, w), coarser: list of (N, width, h_i, w_i) -> (N, width, h, w)."""
        if len(coarser) != self.num_shortcuts:
            raise ValueError(f"DecoderLevel: built for {self.num_shortcuts} coarser input(s), "
                             f"got {len(coarser)}")
        adapted = self.adapt(feature)                    # (N, width, h, w)
        size = adapted.shape[-2:]
        ups = [interpolate(s, size=size, mode="bilinear", align_corners=False)
               for s in coarser]                         # each (N, width, h, w)
        fused = self.fuse(cat([adapted, *ups], axis=1))  # (N, (1 + k) width) -> (N, width, h, w)
        return self.semantic(self.context(fused))        # (N, width, h, w)


@register("ddsc")
class DDSC(SegmentationModel):
    """DDSC (Bilinski & Prisacariu 2018): decoder levels with dense shortcuts to all coarser ones.

    Parameters
    ----------
    config : DDSCConfig

    Attributes
    ----------
    backbone : Backbone
        A ResNet at output stride 32.
    levels : ModuleList
        Four :class:`DecoderLevel`, ``levels[j]`` at stride ``STRIDES[j]`` (32, 16, 8, 4).
    classifier : Conv2d
        1x1 conv from the finest level's output to class scores.

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``; H and W must be
    multiples of 32.
    """

    config_class = DDSCConfig
    presets = {"paper": {"backbone": "resnet50", "width": 256},
               "no_dense_shortcuts": {"dense_shortcuts": False}}
    output_stride = 32

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.backbone = create_backbone(c.backbone, in_channels=c.in_channels,
                                        num_classes=None)
        channels = self.backbone.channels                 # {stride: channels}
        self.levels = nn.ModuleList([
            DecoderLevel(channels[s], c.width, j if c.dense_shortcuts else min(j, 1))
            for j, s in enumerate(STRIDES)])
        self.classifier = nn.Conv2d(c.width, c.num_classes, 1)

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W)."""
        self.check_input_size(x.shape)
        features = self.backbone.features(x)             # {stride: (N, C_s, H/s, W/s)}
        outputs = []                                     # S_0, S_1, ...: coarsest first
        for level, s in zip(self.levels, STRIDES):
            # Dense: every coarser output. Cascade: only the one directly above (none at 0).
            coarser = outputs if self.config.dense_shortcuts else outputs[-1:]
            outputs.append(level(features[s], coarser))  # (N, width, H/s, W/s)
        scores = self.classifier(outputs[-1])            # (N, K, H/4, W/4)
        return interpolate(scores, size=x.shape[-2:], mode="bilinear",
                           align_corners=False)          # (N, K, H, W)
