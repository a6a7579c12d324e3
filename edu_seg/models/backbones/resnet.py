"""ResNet: stages of residual blocks, each learning a correction ``F(x)`` added to its input.

He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(arXiv:1512.03385).

A plain deep network gets WORSE when layers are added, even on its training set: the extra
layers cannot easily learn to leave the signal alone. A residual block computes
``relu(x + F(x))``, so "do nothing" is ``F = 0``, the easiest thing to learn, and the
gradient reaches early layers through the identity path unchanged. Two kinds of block::

    BasicBlock (ResNet-18/34):  x ─ 3x3 ─ BN ─ ReLU ─ 3x3 ─ BN ─(+)─ ReLU
                                └──────────── shortcut ───────┘
    Bottleneck (ResNet-50+):    x ─ 1x1 ─ BN ─ ReLU ─ 3x3 ─ BN ─ ReLU ─ 1x1 (x4) ─ BN ─(+)─ ReLU
                                └──────────────────── shortcut ───────────────────────┘

(the bottleneck's first 1x1 reduces the channels so the 3x3 is cheap; the last expands
them 4x.)
The shortcut is the identity, or a strided 1x1 conv + BN ("downsample") where the block
changes the resolution or the channels. The network::

    conv 7x7 /2 ─ BN ─ ReLU (stride 2) ─ maxpool 3x3 /2 ─ layer1 (4) ─ layer2 /2 (8)
      ─ layer3 /2 (16) ─ layer4 /2 (32)

This file reproduces torchvision's ``resnet18()`` and ``resnet50()`` exactly (module names,
state-dict keys and shapes, initialisation, the classifier ``fc``), including
``replace_stride_with_dilation``: the first block of a dilated stage keeps the previous
dilation in its 3x3 conv (the conv that had the stride still reads the fine grid; see
:mod:`edu_seg.models.backbones`) and the later blocks get the new one. Two additions:

- BasicBlock accepts dilation (torchvision raises NotImplementedError): its first conv gets
  the previous dilation and its second conv the new one, the exact rule for a block with two
  3x3 convs (timm does the same), so ``resnet18`` and ``resnet_tiny`` can run at output
  stride 8 or 16 too;
- ``multi_grid`` (DeepLabV3, Chen et al. 2017, Section 3.2): the blocks of the LAST stage get
  dilations ``stage_dilation * multi_grid[i]``, e.g. (2, 4, 8) at output stride 16 with
  (1, 2, 4); the grid of rates replaces the first-block rule in that stage, as in the paper.

The tiny presets keep the design (stem, max-pool, four stages, shortcuts) with widths
8-16-32-64 and one block per stage. ``resnet_small`` (one of the set matched at about 200K
parameters for comparing families) is ``resnet_tiny`` widened 13/8 times, 13-26-52-104: the
width at which one basic block per stage reaches 200K parameters.
"""
import dataclasses
from typing import Literal, Optional

from ... import nn
from ...ops.pool import adaptive_avg_pool2d
from ..config import validate_config
from . import Backbone, StrideSchedule, register_backbone

__all__ = ["ResNet", "ResNetConfig", "BasicBlock", "Bottleneck", "width_overrides"]


def width_overrides(widths):
    """:class:`ResNetConfig` fields that give the four stages ``widths`` planes and the stem
    ``widths[0]`` channels (how the small models widen a preset); ``{}`` for None."""
    return {} if widths is None else {"widths": tuple(widths), "stem_width": widths[0]}


def _conv3x3(in_channels, out_channels, stride=1, dilation=1):
    """torchvision's conv3x3: padding = dilation keeps the size (at stride 1), no bias (BN)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation,
                     dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs and a shortcut: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    Parameters
    ----------
    in_channels, planes : int
        Output channels = ``planes * expansion`` (expansion 1).
    stride : int
        The first conv's stride (2 where the stage halves the resolution).
    downsample : nn.Module or None
        The shortcut when the shape changes (1x1 conv + BN), else the identity.
    first_dilation, dilation : int
        Dilation of conv1 (the one that had the stride) and of conv2.
    """

    expansion = 1

    def __init__(self, in_channels, planes, stride=1, downsample=None, first_dilation=1,
                 dilation=1):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, planes, stride, first_dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        """x: (N, in_channels, H, W) -> (N, planes, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)  # (N, planes, H', W')
        out = self.relu(self.bn1(self.conv1(x)))      # (N, planes, H', W')
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) and a shortcut (torchvision's "ResNet V1.5": the
    stride is in the 3x3 conv, not in the first 1x1 as in the paper, which is more accurate).

    Parameters
    ----------
    in_channels, planes : int
        The 3x3 conv has ``planes`` channels; the output has ``planes * 4``.
    stride : int
    downsample : nn.Module or None
    first_dilation, dilation : int
        Dilation of the 3x3 conv, which is both the one that had the stride and the only
        spatial conv, so only ``first_dilation`` is used; ``dilation`` is accepted so that
        both block kinds are built the same way.
    """

    expansion = 4

    def __init__(self, in_channels, planes, stride=1, downsample=None, first_dilation=1,
                 dilation=1):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, first_dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        """x: (N, in_channels, H, W) -> (N, 4 planes, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)  # (N, 4 planes, H', W')
        out = self.relu(self.bn1(self.conv1(x)))      # (N, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))    # (N, planes, H', W')
        out = self.bn3(self.conv3(out))               # (N, 4 planes, H', W')
        return self.relu(out + identity)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


@dataclasses.dataclass
class ResNetConfig:
    """Hyper-parameters of :class:`ResNet`; the defaults are ``resnet_tiny``.

    Attributes
    ----------
    in_channels : int
    block : {"basic", "bottleneck"}
    layers : 4 ints
        Blocks per stage: resnet18 (2, 2, 2, 2), resnet50 (3, 4, 6, 3).
    widths : 4 ints
        ``planes`` of each stage (torchvision: 64, 128, 256, 512); a bottleneck stage
        outputs 4x as many channels.
    stem_width : int
        Channels of the 7x7 stem conv (torchvision: 64).
    num_classes : int or None
        Size of the classifier ``fc`` (1000 for ImageNet); None builds no classifier.
    replace_stride_with_dilation : 3 bools or None
        torchvision's option for layer2, layer3, layer4: True replaces the stage's stride 2
        by dilation. (False, False, True) gives output stride 16, (False, True, True) 8.
    output_stride : {4, 8, 16, 32} or None
        The same choice by the resulting stride (8 = (False, True, True), 4 = all three
        dilated: on a 64-pixel image a stride-8 map is only 8x8); give at most one of the two.
    multi_grid : tuple of ints or None
        DeepLabV3's rates for the blocks of layer4 (one per block), multiplying the stage's
        dilation.
    """

    in_channels: int = 3
    block: Literal["basic", "bottleneck"] = "basic"
    layers: tuple[int, int, int, int] = (1, 1, 1, 1)
    widths: tuple[int, int, int, int] = (8, 16, 32, 64)
    stem_width: int = 8
    num_classes: Optional[int] = None
    replace_stride_with_dilation: Optional[tuple[bool, bool, bool]] = None
    output_stride: Optional[Literal[4, 8, 16, 32]] = None
    multi_grid: Optional[tuple[int, ...]] = None

    def __post_init__(self):
        validate_config(self)          # types first, so the rules below compare valid values
        if self.replace_stride_with_dilation is not None and self.output_stride is not None:
            raise ValueError("ResNetConfig: give replace_stride_with_dilation or output_stride, "
                             "not both")
        if self.multi_grid is not None and len(self.multi_grid) != self.layers[3]:
            raise ValueError(f"ResNetConfig: multi_grid {self.multi_grid} needs one rate per "
                             f"block of layer4, which has {self.layers[3]} block(s)")


class ResNet(Backbone):
    """ResNet (He et al. 2016) as a backbone: stages of strides 2 (stem), 4, 8, 16, 32.

    Stages: the stem ``relu(bn1(conv1(x)))`` (stride 2; torchvision's ``relu`` output),
    then ``maxpool + layer1`` (4), ``layer2`` (8), ``layer3`` (16), ``layer4`` (32), unless
    dilation keeps the later strides at 8 or 16. ``features(x)[32]`` is torchvision's
    ``layer4`` output.

    Parameters
    ----------
    config : ResNetConfig, optional

    Examples
    --------
    >>> import numpy as np
    >>> from edu_seg import Tensor
    >>> from edu_seg.models.backbones import create_backbone
    >>> net = create_backbone("resnet_tiny")
    >>> {s: f.shape for s, f in net.features(Tensor(np.zeros((1, 3, 64, 64), np.float32))).items()}
    {2: (1, 8, 32, 32), 4: (1, 8, 16, 16), 8: (1, 16, 8, 8), 16: (1, 32, 4, 4), 32: (1, 64, 2, 2)}
    """

    config_class = ResNetConfig
    torchvision_head = "fc"

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        block = _BLOCKS[c.block]
        if c.replace_stride_with_dilation is not None:
            dilate = (False,) + c.replace_stride_with_dilation     # layer1 never: stride 1
            schedule = StrideSchedule()
        else:
            dilate = (None,) * 4                                   # decided by output_stride
            schedule = StrideSchedule(c.output_stride or 32)
        self.conv1 = nn.Conv2d(c.in_channels, c.stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c.stem_width)
        self.relu = nn.ReLU()
        schedule.step(2)                                           # conv1
        self.stage_strides.append(schedule.stride)
        self.stage_channels.append(c.stem_width)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        schedule.step(2)                                           # maxpool
        in_channels = c.stem_width
        for i in range(4):
            grid = c.multi_grid if i == 3 else None
            layer = self._make_layer(block, in_channels, c.widths[i], c.layers[i],
                                     1 if i == 0 else 2, dilate[i], schedule, grid)
            setattr(self, f"layer{i + 1}", layer)
            in_channels = c.widths[i] * block.expansion
            self.stage_strides.append(schedule.stride)
            self.stage_channels.append(in_channels)
        if c.num_classes is not None:
            self.fc = nn.Linear(in_channels, c.num_classes)
        # torchvision's initialisation: He normal with fan_out for every conv (BN already
        # starts at weight 1, bias 0; fc keeps Linear's default).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _make_layer(block, in_channels, planes, blocks, stride, dilate, schedule, multi_grid):
        """One stage (torchvision's ``_make_layer``): a Sequential of ``blocks`` blocks."""
        nominal_stride = stride
        stride, previous_dilation = schedule.step(nominal_stride, dilate)
        dilation = schedule.dilation
        out_channels = planes * block.expansion
        downsample = None
        # torchvision tests the stride AFTER dilation; testing the nominal one gives the same
        # parameters at every output stride (DeepLab trains at 16 and evaluates at 8 with the
        # same weights). The two agree whenever a strided stage changes the channels, as in
        # every torchvision ResNet.
        if nominal_stride != 1 or in_channels != out_channels:
            downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride,
                                                 bias=False),
                                       nn.BatchNorm2d(out_channels))
        if multi_grid is not None:
            rates = [dilation * m for m in multi_grid]
            firsts = rates
        else:
            # The first block keeps the previous dilation where the stride was (see the
            # module docstring); later blocks read the coarser grid: the new dilation.
            rates = [dilation] * blocks
            firsts = [previous_dilation] + rates[1:]
        layers = [block(in_channels, planes, stride, downsample, firsts[0], rates[0])]
        for i in range(1, blocks):
            layers.append(block(out_channels, planes, first_dilation=firsts[i],
                                dilation=rates[i]))
        return nn.Sequential(*layers)

    def stage_features(self, x):
        """[stem (N, stem_width, H/2, W/2), layer1, layer2, layer3, layer4]."""
        x = self.relu(self.bn1(self.conv1(x)))     # (N, stem_width, H/2, W/2)
        outputs = [x]
        x = self.maxpool(x)                        # (N, stem_width, H/4, W/4)
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)  # (N, stage_channels[i+1], H/s, W/s)
            outputs.append(x)
        return outputs

    def _head(self, x):
        """torchvision's avgpool + flatten + fc: (N, C, h, w) -> (N, num_classes)."""
        return self.fc(adaptive_avg_pool2d(x, 1).flatten(1))


register_backbone("resnet_tiny", ResNet)
register_backbone("resnet_bottleneck_tiny", ResNet, block="bottleneck", widths=(4, 8, 16, 16))
# One of the set matched at ~200K parameters (one per family) for comparing the families at
# equal size; their FLOPs are NOT matched and differ, which is part of what the comparison shows.
register_backbone("resnet_small", ResNet, widths=(13, 26, 52, 104), stem_width=13)
register_backbone("resnet18", ResNet, block="basic", layers=(2, 2, 2, 2),
                  widths=(64, 128, 256, 512), stem_width=64, num_classes=1000)
register_backbone("resnet50", ResNet, block="bottleneck", layers=(3, 4, 6, 3),
                  widths=(64, 128, 256, 512), stem_width=64, num_classes=1000)
