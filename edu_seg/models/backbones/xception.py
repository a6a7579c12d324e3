"""Xception: a residual network built entirely from depthwise separable convolutions.

Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions", CVPR 2017
(arXiv:1610.02357); the "aligned" variant of DeepLabV3+ (Chen, Zhu, Papandreou, Schroff and
Adam, "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation",
ECCV 2018, arXiv:1802.02611).

A 3x3 convolution learns spatial patterns and cross-channel mixing at once. Xception's
hypothesis is that the two can be fully decoupled: a **depthwise separable convolution** is a
3x3 depthwise conv (each channel filtered on its own, 9·C weights) followed by a 1x1
pointwise conv (channel mixing, C_in·C_out weights), about 8x cheaper than a full 3x3 conv
for the same widths. Xception stacks them in residual blocks::

    block:  x ─ ReLU ─ SepConv ─ ReLU ─ SepConv (stride s) ─(+)─
            └───────── 1x1 conv /s ─ BN (or identity) ─────┘

    stem: conv 3x3 /2 ─ conv 3x3 (stride 2)
    entry flow: 3 blocks /2 (4, 8, 16) ─ middle flow: blocks of 3 SepConvs (16)
    exit flow: block /2 (32) ─ SepConv ─ ReLU

What this small version keeps
    - depthwise separable convs everywhere after the stem, each depthwise and each
      pointwise conv followed by BN, and NO activation between them (Chollet, Section 4.7:
      an intermediate ReLU made the network train slower and end worse);
    - pre-activation ReLUs inside the blocks, residual shortcuts (a strided 1x1 conv + BN
      where the shape changes), the entry / middle / exit structure;
    - from DeepLabV3+'s aligned Xception: each block's down-sampling is its LAST separable
      conv with stride 2 (the original uses a 3x3 max-pool), so ``output_stride`` 16 or 8
      can replace it by dilated ("atrous") depthwise convs.

What it changes
    - widths 8-16 / 16-32-64 / 64 instead of 32-64 / 128-256-728 / 1024-1536-2048, one
      middle block instead of 8 (16 in aligned Xception), one SepConv after the exit block
      instead of two; all are config fields. There is no torchvision Xception, hence no
      full-size preset. ``xception_small`` (one of the set matched at about 200K parameters
      for comparing families) widens every width 1.5 times (12-24 / 24-48-96 / 96-96) and
      deepens the middle flow, where Xception keeps its depth, to 4 blocks.
"""
import dataclasses
from typing import Literal

from ... import nn
from ..blocks import ConvBNReLU
from . import Backbone, StrideSchedule, register_backbone

__all__ = ["Xception", "XceptionConfig", "SeparableConv2d"]


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 (stride, dilation) -> BN -> pointwise 1x1 -> BN, no activation between.

    Parameters
    ----------
    in_channels, out_channels : int
    stride, dilation : int
        Of the depthwise conv (padding = dilation keeps the size at stride 1).
    """

    def __init__(self, in_channels, out_channels, stride=1, dilation=1):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=dilation,
                                   dilation=dilation, groups=in_channels, bias=False)
        self.bn_depthwise = nn.BatchNorm2d(in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn_pointwise = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        """x: (N, in_channels, H, W) -> (N, out_channels, H/stride, W/stride)."""
        x = self.bn_depthwise(self.depthwise(x))      # (N, in_channels, H', W')
        return self.bn_pointwise(self.pointwise(x))   # (N, out_channels, H', W')


class _XceptionBlock(nn.Module):
    """``reps`` x (ReLU -> SeparableConv), the last one strided, plus a shortcut.

    The shortcut is a 1x1 conv + BN when the NOMINAL stride is 2 or the channels change, so
    the parameters are the same whatever ``output_stride`` turned the stride into.
    """

    def __init__(self, in_channels, out_channels, reps, nominal_stride, stride, dilation):
        super().__init__()
        layers = []
        for i in range(reps):
            layers += [nn.ReLU(),
                       SeparableConv2d(in_channels if i == 0 else out_channels, out_channels,
                                       stride=stride if i == reps - 1 else 1,
                                       dilation=dilation)]
        self.convs = nn.Sequential(*layers)
        self.shortcut = None
        if nominal_stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride,
                                                    bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x):
        """x: (N, in_channels, H, W) -> (N, out_channels, H/stride, W/stride)."""
        identity = x if self.shortcut is None else self.shortcut(x)   # (N, out, H', W')
        return self.convs(x) + identity


@dataclasses.dataclass
class XceptionConfig:
    """Hyper-parameters of :class:`Xception`; the defaults are ``xception_tiny``.

    Attributes
    ----------
    in_channels : int
    stem_widths : 2 ints
        The two 3x3 stem convs (Xception: 32, 64).
    entry_widths : 3 ints
        The three strided entry-flow blocks, strides 4, 8, 16 (Xception: 128, 256, 728).
    middle_blocks : int
        Middle-flow blocks of ``entry_widths[-1]`` channels (Xception: 8); 0 is allowed.
    exit_widths : 2 ints
        The strided exit block and the SepConv after it (Xception: 1024, then 1536 and 2048).
    output_stride : {8, 16, 32}
        16 and 8 replace the last strides by dilation.
    """

    in_channels: int = 3
    stem_widths: tuple[int, int] = (8, 16)
    entry_widths: tuple[int, int, int] = (16, 32, 64)
    middle_blocks: int = dataclasses.field(default=1, metadata={"min": 0})
    exit_widths: tuple[int, int] = (64, 64)
    output_stride: Literal[8, 16, 32] = 32


class Xception(Backbone):
    """Xception (Chollet 2017; aligned as in DeepLabV3+) as a backbone.

    Stages: ``stem`` (stride 2), ``entry1`` (4), ``entry2`` (8), ``entry3`` + ``middle``
    (16), ``exit`` (32), unless ``output_stride`` keeps the last ones at 8 or 16.

    Parameters
    ----------
    config : XceptionConfig, optional
    """

    config_class = XceptionConfig

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        schedule = StrideSchedule(c.output_stride)
        s0, s1 = c.stem_widths
        self.stem = nn.Sequential(ConvBNReLU(c.in_channels, s0, 3, padding=1,
                                             stride=schedule.step(2)[0]),
                                  ConvBNReLU(s0, s1, 3))
        self._add_stage(schedule, s1)
        width = s1
        for i, out in enumerate(c.entry_widths):
            stride, dilation = schedule.step(2)
            setattr(self, f"entry{i + 1}", _XceptionBlock(width, out, reps=2, nominal_stride=2,
                                                          stride=stride, dilation=dilation))
            width = out
            if i < 2:                        # entry3 shares its stage with the middle flow
                self._add_stage(schedule, width)
        self.middle = nn.Sequential(*[
            _XceptionBlock(width, width, reps=3, nominal_stride=1, stride=1,
                           dilation=schedule.dilation) for _ in range(c.middle_blocks)])
        self._add_stage(schedule, width)
        stride, dilation = schedule.step(2)
        self.exit = nn.Sequential(
            _XceptionBlock(width, c.exit_widths[0], reps=2, nominal_stride=2, stride=stride,
                           dilation=dilation),
            SeparableConv2d(c.exit_widths[0], c.exit_widths[1], dilation=schedule.dilation),
            nn.ReLU())
        self._add_stage(schedule, c.exit_widths[1])
        # He normal with fan_in (for a depthwise 3x3 conv, fan_in is its 9 taps).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def _add_stage(self, schedule, channels):
        self.stage_strides.append(schedule.stride)
        self.stage_channels.append(channels)

    def stage_features(self, x):
        """[stem (N, C, H/2, W/2), entry1 (H/4), entry2 (H/8), middle (H/16), exit (H/32)]."""
        x = self.stem(x)                          # (N, stem_widths[1], H/2, W/2)
        outputs = [x]
        x = self.entry1(x)                        # (N, entry_widths[0], H/4, W/4)
        outputs.append(x)
        x = self.entry2(x)                        # (N, entry_widths[1], H/8, W/8)
        outputs.append(x)
        x = self.middle(self.entry3(x))           # (N, entry_widths[2], H/16, W/16)
        outputs.append(x)
        outputs.append(self.exit(x))              # (N, exit_widths[1], H/32, W/32)
        return outputs


register_backbone("xception_tiny", Xception)
# One of the set matched at ~200K parameters (one per family) for comparing the families at
# equal size; their FLOPs are NOT matched and differ, which is part of what the comparison shows.
register_backbone("xception_small", Xception, stem_widths=(12, 24), entry_widths=(24, 48, 96),
                  middle_blocks=4, exit_widths=(96, 96))
