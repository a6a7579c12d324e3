"""MobileNetV2: inverted residual blocks of cheap depthwise convolutions.

Sandler, Howard, Zhu, Zhmoginov and Chen, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018 (arXiv:1801.04381).

A 3x3 convolution over C channels costs 9·C² multiply-adds per pixel. A DEPTHWISE 3x3 conv
(``groups = C``: each channel filtered on its own) costs 9·C, and a 1x1 conv then mixes the
channels for C²; MobileNets are built from this pair. MobileNetV2's block, the **inverted
residual**, runs the depthwise conv in a WIDE space and keeps the block's input and output
NARROW::

    x (C_in) ─ 1x1 expand (t·C_in) ─ BN ─ ReLU6 ─ 3x3 depthwise (stride s) ─ BN ─ ReLU6
             ─ 1x1 project (C_out) ─ BN ──(+ x if s = 1 and C_in = C_out)

The projection is LINEAR (no ReLU after it): the paper shows that a ReLU on a narrow
representation destroys information, so the narrow "bottleneck" tensors that the residuals
connect carry no activation. (A classic ResNet bottleneck is wide-narrow-wide; this one is
narrow-wide-narrow, hence "inverted".) ReLU6 = min(max(x, 0), 6) stays robust in low-precision
arithmetic. The network (t, c, n, s = expansion, channels, repeats, first stride)::

    conv 3x3 /2 (32) ─ (1, 16, 1, 1) ─ (6, 24, 2, 2) ─ (6, 32, 3, 2) ─ (6, 64, 4, 2)
      ─ (6, 96, 3, 1) ─ (6, 160, 3, 2) ─ (6, 320, 1, 1) ─ conv 1x1 (1280)

Stages end before each stride-2 block: strides 2 (features[1], 16 channels), 4
(features[3], 24), 8 (features[6], 32), 16 (features[13], 96), 32 (features[18], 1280).

The ``mobilenet_v2`` preset reproduces torchvision's ``mobilenet_v2()`` (the ``features``
Sequential with its indices, ``classifier``, ``width_mult`` with channels rounded to
multiples of 8, the initialisation); ``features(x)[32]`` equals ``model.features(x)``. Added:
``output_stride`` 16 or 8 replaces the last strides by dilated depthwise convs (DeepLabV3+
uses MobileNetV2 this way, Chen et al. 2018), and the shortcut rule reads the NOMINAL stride,
so dilation never adds a shortcut the undilated network lacks. The tiny preset: expansion 4,
widths 8 to 64, one or two blocks per setting, a 128-channel last conv. ``mobilenet_v2_small``
(one of the set matched at about 200K parameters for comparing families) is the tiny one at
``width_mult=1.7``, MobileNetV2's own knob for its size: widths 16 to 112 and a 216-channel
last conv after rounding to multiples of 8.
"""
import dataclasses
from typing import Literal, Optional

from ... import nn
from ...ops.pool import adaptive_avg_pool2d
from . import SequentialBackbone, StrideSchedule, register_backbone

__all__ = ["MobileNetV2", "MobileNetV2Config", "InvertedResidual", "make_divisible"]


def make_divisible(v, divisor=8):
    """``v`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), but never
    more than 10% below ``v`` (the TensorFlow rule torchvision uses for ``width_mult``)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn_relu6(in_channels, out_channels, kernel_size=3, stride=1, groups=1, dilation=1):
    """torchvision's Conv2dNormActivation: a Sequential (conv, BN, ReLU6), keys 0, 1, 2."""
    padding = (kernel_size - 1) // 2 * dilation         # keeps the size at stride 1
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                   padding=padding, dilation=dilation, groups=groups,
                                   bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU6())


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t = 1), 3x3 depthwise, 1x1 linear projection, shortcut.

    Parameters
    ----------
    in_channels, out_channels : int
    stride : int
        Stride of the depthwise conv.
    expand_ratio : int
        t: the hidden width is ``round(in_channels * t)``.
    dilation : int
        Dilation of the depthwise conv.
    residual : bool or None
        Add the input to the output. None: when ``stride == 1`` and the channels match
        (torchvision's rule).
    """

    def __init__(self, in_channels, out_channels, stride, expand_ratio, dilation=1,
                 residual=None):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = (stride == 1 and in_channels == out_channels) \
            if residual is None else residual
        layers = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(in_channels, hidden, kernel_size=1))
        layers += [_conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden,
                                  dilation=dilation),
                   nn.Conv2d(hidden, out_channels, 1, bias=False),
                   nn.BatchNorm2d(out_channels)]                # linear: no activation
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        """x: (N, in_channels, H, W) -> (N, out_channels, H/stride, W/stride)."""
        y = self.conv(x)                            # (N, out_channels, H', W')
        return x + y if self.use_res_connect else y


@dataclasses.dataclass
class MobileNetV2Config:
    """Hyper-parameters of :class:`MobileNetV2`; the defaults are ``mobilenet_v2_tiny``.

    Attributes
    ----------
    in_channels : int
    inverted_residual_setting : tuple of (t, c, n, s)
        Expansion, channels, repeats and first stride (1 or 2) of each group of blocks.
    first_width, last_width : int
        Channels of the stem conv (32) and of the last 1x1 conv (1280).
    width_mult : float
        Multiplies every width (the last one only if > 1), rounded to ``round_nearest``.
    round_nearest : int
        Widths become multiples of this (8; 1 turns rounding off).
    num_classes : int or None
        Outputs of the classifier (1000 for ImageNet); None builds no classifier.
    dropout : float
        Dropout before the classifier (0.2).
    output_stride : {8, 16, 32}
        32 is torchvision's network; 16 and 8 dilate the depthwise convs after the last
        strides instead.
    """

    in_channels: int = 3
    inverted_residual_setting: tuple[tuple[int, int, int, int], ...] = (
        (1, 8, 1, 1), (4, 16, 1, 2), (4, 24, 2, 2), (4, 32, 2, 2), (4, 48, 1, 1),
        (4, 64, 1, 2))
    first_width: int = 8
    last_width: int = 128
    width_mult: float = dataclasses.field(default=1.0, metadata={"min": 1e-3})
    round_nearest: int = 8
    num_classes: Optional[int] = None
    dropout: float = dataclasses.field(default=0.2, metadata={"min": 0.0, "max": 1.0})
    output_stride: Literal[8, 16, 32] = 32


class MobileNetV2(SequentialBackbone):
    """MobileNetV2 (Sandler et al. 2018) as a backbone: stages of strides 2 to 32.

    Parameters
    ----------
    config : MobileNetV2Config, optional
    """

    config_class = MobileNetV2Config
    torchvision_head = "classifier"

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        if any(s not in (1, 2) for *_, s in c.inverted_residual_setting):
            raise ValueError(f"MobileNetV2Config: the strides (last entry of each (t, c, n, s)) "
                             f"must be 1 or 2, got {c.inverted_residual_setting}")
        schedule = StrideSchedule(c.output_stride)
        width = make_divisible(c.first_width * c.width_mult, c.round_nearest)
        last_width = make_divisible(c.last_width * max(1.0, c.width_mult), c.round_nearest)
        layers = [_conv_bn_relu6(c.in_channels, width, stride=schedule.step(2)[0])]
        nominal_strides, real_strides, widths = [2], [schedule.stride], [width]
        for t, channels, n, s in c.inverted_residual_setting:
            out = make_divisible(channels * c.width_mult, c.round_nearest)
            for i in range(n):
                nominal = s if i == 0 else 1
                stride, dilation = schedule.step(nominal)
                layers.append(InvertedResidual(width, out, stride, t, dilation,
                                               residual=nominal == 1 and width == out))
                width = out
                nominal_strides.append(nominal)
                real_strides.append(schedule.stride)
                widths.append(width)
        layers.append(_conv_bn_relu6(width, last_width, kernel_size=1))
        nominal_strides.append(1)
        real_strides.append(schedule.stride)
        widths.append(last_width)
        self.features = nn.Sequential(*layers)                    # a child named "features"
        # A stage ends before each stride-2 layer, and at the last layer.
        for j in range(len(layers)):
            if j == len(layers) - 1 or nominal_strides[j + 1] > 1:
                self.stage_ends.append(str(j))
                self.stage_strides.append(real_strides[j])
                self.stage_channels.append(widths[j])
        if c.num_classes is not None:
            self.classifier = nn.Sequential(nn.Dropout(c.dropout),
                                            nn.Linear(last_width, c.num_classes))
        # torchvision's initialisation: He normal (fan_out) convs, N(0, 0.01) linear weights,
        # zero biases (BN already starts at weight 1, bias 0).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def _head(self, x):
        """torchvision's global average pool + classifier: (N, C, h, w) -> (N, K)."""
        return self.classifier(adaptive_avg_pool2d(x, 1).flatten(1))


register_backbone("mobilenet_v2_tiny", MobileNetV2)
# One of the set matched at ~200K parameters (one per family) for comparing the families at
# equal size; their FLOPs are NOT matched and differ, which is part of what the comparison shows.
register_backbone("mobilenet_v2_small", MobileNetV2, width_mult=1.7)
register_backbone("mobilenet_v2", MobileNetV2, inverted_residual_setting=(
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
    (6, 320, 1, 1)), first_width=32, last_width=1280, num_classes=1000)
