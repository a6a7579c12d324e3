"""FRRN: a full-resolution residual stream beside a pooling encoder-decoder stream.

Pohlen, Hermans, Mathias and Leibe, "Full-Resolution Residual Networks for Semantic
Segmentation in Street Scenes", CVPR 2017 (arXiv:1611.08323).

An encoder-decoder pools to see context and up-samples to label pixels, but what pooling threw
away (where exactly an edge was) must come back from somewhere: U-Net concatenates encoder maps,
SegNet remembers pool indices. FRRN keeps it instead in a second stream that is NEVER pooled:

- the **residual stream** ``z``: few channels (the paper: 32) at the input's full H x W, from
  the first layers to the last;
- the **pooling stream** ``y``: an ordinary encoder-decoder that goes down to 1/16 and back up.

The two meet in every **full-resolution residual unit** (FRRU) at stride ``s``::

      y (C_in, H/s) ─────────────┐
                                 concat ─ 3x3 conv-BN-ReLU ─ 3x3 conv-BN-ReLU ─┬─ y' (C_out, H/s)
      z (r, H) ──┬─ max-pool s ──┘                                             │
                 │                                                   1x1 conv to r channels
                 │                                                   up-sample x s (nearest)
                 └──────────────────────────── + ─────────────────────────────┘─ z' (r, H)

The pooling stream reads the residual stream (pooled to its own resolution), and writes back
to it a residual ``z' = z + up_s(conv1x1(y'))``. So the residual stream is a ResNet-style sum
that keeps precise, full-resolution localisation, while each FRRU adds what the coarse stream
recognised; the gradient reaches every FRRU through the identity path of ``z``. The network::

    image ─ 5x5 conv ─ RU x3 ─┬─ pool ─ FRRU (1/2) ─ pool ─ FRRU (1/4) ─ ... FRRU (1/16)
                              │           ↕                   ↕                  ↕
                              └─ 1x1 ─ z ══════ residual stream, full resolution ═══ ...
        ... ─ up ─ FRRU (1/8) ─ up ─ FRRU (1/4) ─ up ─ FRRU (1/2) ─ up ─┐
                      ↕                ↕                 ↕               concat ─ RU x3 ─ 1x1
        ... ══════════════════════════════════════════════════════ z ──┘

(RU: residual unit, conv-BN-ReLU, conv-BN, plus the input; the last 1x1 conv gives the class
scores.) The pooling stream has no skip connections of its own: the residual stream is the
ONLY path by which full-resolution detail reaches the classifier.
``preset="no_residual_stream"`` removes it, leaving a plain encoder-decoder with the same
pooling-stream convolutions; the Shapes ``boundary`` variant, where thin boundaries between
touching objects decide the score, shows what it carries.

Up-sampling: the residual update is up-sampled by NEAREST neighbour (pixel repeat), as in the
authors' code. It writes each coarse answer back onto exactly the ``s x s`` block that the max
pool read it from, so pooling and un-pooling share one grid and nothing leaks across blocks;
and it is a copy, not 4 multiply-adds per output, in the one place (full resolution, every
FRRU) where cost counts. Between the decoder's levels the pooling stream itself is up-sampled
bilinearly (also the authors' choice): that map is not a correction added to a finer one but
the whole input of the next level's 3x3 convs, and bilinear gives them a smooth map instead
of 2x2 blocks.

**Bootstrapped cross-entropy.** Most pixels of a street scene (road, sky) are soon easy and
their near-zero losses only dilute the gradient. The paper averages the loss over the K
hardest pixels of each image instead (``bootstrap_k``; see
:func:`edu_seg.ops.loss.bootstrapped_cross_entropy`); ``bootstrap_k = 0`` is plain
cross-entropy.

What this small version keeps from the paper (architecture FRRN A)
    - the two streams and the FRRU exactly as above: concat of the pooling stream with the
      max-pooled residual stream, two 3x3 conv-BN-ReLU, a 1x1 conv (with bias, no BN) back to
      the residual stream's channels, up-sampled and ADDED;
    - a 5x5 conv-BN-ReLU stem and 3 RUs at full resolution; the split into streams by a 1x1
      conv-BN; 2x2 max-pools going down, bilinear x2 going up; the merge by concatenating
      the streams, then 3 RUs and a 1x1 classifier;
    - four levels (strides 2, 4, 8, 16) down and three (8, 4, 2) up, the last two encoder
      levels of equal width (384-384 in the paper);
    - the bootstrapped loss, as an option.

What it changes
    - a third of the paper's widths (stem 16, pooling stream 32-64-128-128 down and 64-64-32
      up, against 48, 96-192-384-384 and 192-192-96), a residual stream of 16 channels
      instead of 32, and fewer FRRUs per level (1-2-1-1 down and 1-1-1 up, against 3-4-2-2
      and 2-2-2): 1.0 M parameters instead of 17.7 M, trained on Shapes 64x64 on CPU in
      minutes. ``preset="paper"`` has FRRN A's numbers (17.7 M parameters with Cityscapes'
      19 classes, as the paper reports);
    - plain cross-entropy by default (``bootstrap_k = 0``), the loss every model of the zoo
      trains with, so that its rows compare architectures; ``preset="bootstrap"`` trains on
      the hardest eighth of each image's pixels (512 of 4096), the share of the authors'
      training script (512·32 of 256x512 pixels);
    - no block-wise back-propagation (the authors' trick to fit full-resolution maps of
      1024x2048 images in GPU memory) and no data augmentation.

>>> import edu_seg.models as models
>>> model = models.create("frrn", num_classes=4)
>>> model.output_stride
16
"""
import dataclasses

from .. import nn
from ..autograd import cat
from ..ops.loss import bootstrapped_cross_entropy
from . import register
from .base import SegmentationModel
from .blocks import ConvBNReLU
from .config import validate_config

__all__ = ["FRRN", "FRRNConfig", "FRRU", "ResidualUnit"]


@dataclasses.dataclass
class FRRNConfig:
    """Hyper-parameters of :class:`FRRN` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    stem_width : int
        Channels of the 5x5 stem and of the full-resolution RUs before the split and after the
        merge (the paper: 48).
    residual_channels : int
        Channels of the residual stream (the paper: 32).
    residual_units : int
        RUs at full resolution before the split and again after the merge (the paper: 3).
    down_widths, down_units : tuple of int
        Pooling-stream channels and number of FRRUs of each encoder level; level ``i`` works
        at stride ``2 ** (i + 1)`` (the paper: 96, 192, 384, 384 and 3, 4, 2, 2).
    up_widths, up_units : tuple of int
        The same for the decoder levels, one fewer than the encoder's, at strides
        ``2 ** (L - 1), ..., 2`` (the paper: 192, 192, 96 and 2, 2, 2).
    residual_stream : bool
        False drops the residual stream (the ablation): every FRRU is then two 3x3
        conv-BN-ReLU on the pooling stream alone, and the merge takes only the pooling stream.
    bootstrap_k : int
        0: plain cross-entropy. K >= 1: the mean loss of the K hardest pixels of each image
        (the paper's bootstrapped cross-entropy).
    """

    num_classes: int
    in_channels: int = 3
    stem_width: int = 16
    residual_channels: int = 16
    residual_units: int = 3
    down_widths: tuple[int, ...] = (32, 64, 128, 128)
    down_units: tuple[int, ...] = (1, 2, 1, 1)
    up_widths: tuple[int, ...] = (64, 64, 32)
    up_units: tuple[int, ...] = (1, 1, 1)
    residual_stream: bool = True
    bootstrap_k: int = dataclasses.field(default=0, metadata={"min": 0})

    def __post_init__(self):
        validate_config(self)          # types first, so the rules below compare valid values
        if len(self.down_widths) != len(self.down_units) or not self.down_widths:
            raise ValueError(f"FRRNConfig: down_widths and down_units need one entry per "
                             f"encoder level, got down_widths={self.down_widths!r} and "
                             f"down_units={self.down_units!r}")
        levels = len(self.down_widths) - 1
        if len(self.up_widths) != levels or len(self.up_units) != levels:
            raise ValueError(f"FRRNConfig: the decoder has one level fewer than the encoder "
                             f"({levels}), so up_widths and up_units need {levels} entries, got "
                             f"up_widths={self.up_widths!r} and up_units={self.up_units!r}")


class ResidualUnit(nn.Module):
    """The paper's RU: ``conv-BN-ReLU -> conv-BN``, plus the input (no ReLU after the sum).

    When the channel count changes, the shortcut is a 1x1 projection (no BN, no bias).

    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, H, W)``.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = ConvBNReLU(in_channels, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding="same", bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.projection = (nn.Conv2d(in_channels, out_channels, 1, bias=False)
                           if in_channels != out_channels else None)

    def forward(self, x):
        """x: (N, in_channels, H, W) -> (N, out_channels, H, W)."""
        shortcut = x if self.projection is None else self.projection(x)  # (N, out, H, W)
        return self.bn2(self.conv2(self.conv1(x))) + shortcut


class FRRU(nn.Module):
    """Full-resolution residual unit at stride ``stride`` (see the module docstring).

    Parameters
    ----------
    in_channels, out_channels : int
        Pooling-stream channels in and out.
    stride : int
        How many full-resolution pixels one pooling-stream pixel spans (2, 4, 8, ...).
    residual_channels : int or None
        Channels of the residual stream; None: no residual stream, the unit is two 3x3
        conv-BN-ReLU on ``y`` alone.

    Shapes
    ------
    ``forward(y, z)``: ``y (N, in_channels, H/s, W/s)``, ``z (N, r, H, W)`` ->
    ``(y' (N, out_channels, H/s, W/s), z' (N, r, H, W))``; without a residual stream
    ``z`` is None in and out.
    """

    def __init__(self, in_channels, out_channels, stride, residual_channels=None):
        super().__init__()
        self.stride = stride
        r = residual_channels or 0
        self.conv1 = ConvBNReLU(in_channels + r, out_channels)
        self.conv2 = ConvBNReLU(out_channels, out_channels)
        if residual_channels is None:
            self.pool = self.to_residual = self.upsample = None
        else:
            self.pool = nn.MaxPool2d(stride)
            # The write-back to the residual stream: linear (no BN, no ReLU) so that it can
            # add or remove in both directions, with a bias as in the authors' code.
            self.to_residual = nn.Conv2d(out_channels, residual_channels, 1)
            self.upsample = nn.Upsample(scale_factor=stride, mode="nearest")

    def forward(self, y, z=None):
        """(y, z) -> (y', z'); see the class docstring for the shapes."""
        if self.to_residual is None:
            return self.conv2(self.conv1(y)), None       # (N, out, H/s, W/s), no stream
        y = cat([y, self.pool(z)], axis=1)               # (N, in + r, H/s, W/s)
        y = self.conv2(self.conv1(y))                    # (N, out, H/s, W/s)
        z = z + self.upsample(self.to_residual(y))       # (N, r, H, W)
        return y, z


@register("frrn")
class FRRN(SegmentationModel):
    """FRRN A (Pohlen et al. 2017): a pooling stream and a full-resolution residual stream.

    Parameters
    ----------
    config : FRRNConfig

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``; H and W must be
    multiples of ``2 ** len(down_widths)`` (16 by default).
    """

    config_class = FRRNConfig
    presets = {
        "paper": {"stem_width": 48, "residual_channels": 32, "residual_units": 3,
                  "down_widths": (96, 192, 384, 384), "down_units": (3, 4, 2, 2),
                  "up_widths": (192, 192, 96), "up_units": (2, 2, 2)},
        "no_residual_stream": {"residual_stream": False},
        "bootstrap": {"bootstrap_k": 512},     # the hardest 1/8 of a 64x64 image
    }

    def __init__(self, config):
        super().__init__(config)
        c = config
        L = len(c.down_widths)
        self.output_stride = 2 ** L
        r = c.residual_channels if c.residual_stream else None
        self.stem = ConvBNReLU(c.in_channels, c.stem_width, 5)
        self.units_in = nn.Sequential(*[ResidualUnit(c.stem_width, c.stem_width)
                                        for _ in range(c.residual_units)])
        # The split: a 1x1 conv-BN starts the residual stream from the full-resolution
        # features (no ReLU: the stream is a sum of signed residuals from here on).
        self.split = (nn.Sequential(nn.Conv2d(c.stem_width, r, 1, bias=False),
                                    nn.BatchNorm2d(r)) if r else None)
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        down_strides = [2 ** (i + 1) for i in range(L)]          # 2, 4, ..., 2**L
        up_strides = [2 ** (L - 1 - j) for j in range(L - 1)]    # 2**(L-1), ..., 2
        self.down = self._levels(c.stem_width, c.down_widths, c.down_units, down_strides, r)
        self.up = self._levels(c.down_widths[-1], c.up_widths, c.up_units, up_strides, r)
        merged = (c.down_widths + c.up_widths)[-1] + (r or 0)   # the merge: y and z
        self.units_out = nn.Sequential(*[ResidualUnit(merged if i == 0 else c.stem_width,
                                                      c.stem_width)
                                         for i in range(c.residual_units)])
        self.classifier = nn.Conv2d(c.stem_width, c.num_classes, 1)

    @staticmethod
    def _levels(in_channels, widths, units, strides, residual_channels):
        """One ``ModuleList`` of FRRUs per level; the first FRRU of a level changes width."""
        levels = nn.ModuleList()
        for width, n, stride in zip(widths, units, strides):
            levels.append(nn.ModuleList([FRRU(in_channels if i == 0 else width, width, stride,
                                              residual_channels) for i in range(n)]))
            in_channels = width
        return levels

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W)."""
        self.check_input_size(x.shape)
        h = self.units_in(self.stem(x))                  # (N, stem, H, W)
        z = self.split(h) if self.split is not None else None   # (N, r, H, W): never pooled
        y = h
        for level in self.down:                          # strides 2, 4, ..., 2**L
            y = self.pool(y)                             # (N, C, H/s, W/s)
            for frru in level:
                y, z = frru(y, z)                        # y (N, w, H/s, W/s), z (N, r, H, W)
        for level in self.up:                            # strides 2**(L-1), ..., 2
            y = self.upsample(y)                         # (N, C, H/s, W/s)
            for frru in level:
                y, z = frru(y, z)                        # y (N, w, H/s, W/s), z (N, r, H, W)
        y = self.upsample(y)                             # (N, C, H, W)
        h = y if z is None else cat([y, z], axis=1)      # (N, C + r, H, W): the merge
        return self.classifier(self.units_out(h))        # (N, K, H, W)

    def loss(self, outputs, batch, ignore_index=-100):
        """Plain cross-entropy (``{"ce": ...}``), or with ``bootstrap_k`` > 0 the mean loss of
        the ``bootstrap_k`` hardest pixels of each image (``{"bootstrapped_ce": ...}``)."""
        k = self.config.bootstrap_k
        if k == 0:
            return super().loss(outputs, batch, ignore_index=ignore_index)
        term = bootstrapped_cross_entropy(outputs, batch["mask"], k, ignore_index=ignore_index)
        return term, {"bootstrapped_ce": term}
