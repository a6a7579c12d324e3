"""DenseNet: every layer of a block sees the feature maps of ALL the layers before it.

Huang, Liu, van der Maaten and Weinberger, "Densely Connected Convolutional Networks", CVPR
2017 (arXiv:1608.06993).

Where ResNet ADDS a block's output to its input, DenseNet CONCATENATES: layer ``i`` of a dense
block receives ``[x, f_1, ..., f_{i-1}]`` and contributes ``growth_rate`` (k) new channels, so
a block of L layers turns C channels into C + L·k. Features are reused instead of
re-learned, which makes the network narrow (k = 32) and parameter-efficient. DenseNet-BC
("bottleneck-compressed", the torchvision version) uses::

    dense layer:  BN ─ ReLU ─ 1x1 conv (bn_size·k) ─ BN ─ ReLU ─ 3x3 conv (k)    (pre-activation)
    transition:   BN ─ ReLU ─ 1x1 conv (halves the channels) ─ 2x2 avg-pool /2

    conv0 7x7 /2 ─ norm0 ─ relu0 (stride 2) ─ pool0 3x3 /2 ─ denseblock1 (4) ─ transition1 ─
    denseblock2 (8) ─ transition2 ─ denseblock3 (16) ─ transition3 ─ denseblock4 ─ norm5 (32)

The stages end at relu0 and at each dense block (the richest map at each resolution, just
before the transition compresses it); the last stage ends at norm5. Because the layers are
pre-activation (BN-ReLU-conv), the dense block outputs are raw, un-normalised concatenations
and ``norm5`` is a batch norm WITHOUT ReLU; torchvision's classifier applies the ReLU
itself, and so should a decoder (or its first BN-ReLU-conv does).

The ``densenet121`` preset reproduces torchvision's ``densenet121()``: the ``features``
Sequential with the same names (``features.denseblock1.denselayer1.norm1.weight``),
``classifier``, initialisation, and ``features(x)[32]`` equals ``model.features(x)``.
torchvision's ``drop_rate`` (dropout after each dense layer, 0 in every preset) and
``memory_efficient`` checkpointing are left out. The tiny preset: k = 8, bn_size 2, two or
four layers per block. The small preset (``densenet_small``, one of the set matched at about
200K parameters for comparing families): the paper's CIFAR growth rate k = 12, bn_size 4 and
a stem of 2k as in DenseNet-BC, and DenseNet-121's blocks (6, 12, 24, 16) at about a third,
(2, 4, 8, 6).

Output stride 16 or 8
    The down-sampling layers are conv0 (/2), pool0 (/2) and each transition's 2x2 avg-pool
    (/2). With ``output_stride=16`` the last transition's pool, with 8 the last two, lose
    their stride and become an ``nn.Identity`` (as VGG's max-pools do,
    :mod:`~edu_seg.models.backbones.vgg`); the 3x3 convs of every dense layer after such a
    pool are dilated by the stride it would have applied
    (:class:`~edu_seg.models.backbones.StrideSchedule`): 2 in denseblock4 at 16, 2 in
    denseblock3 and 4 in denseblock4 at 8, so the stage strides are 2, 4, 8, 8, 8. Pools have
    no parameters, so the state-dict keys and shapes are those of the stride-32 network and
    torchvision's weights still load. Unlike ResNet's strided convs, a 2x2 AVERAGE pool does
    not keep the pretrained function when it is removed: it averaged 4 pixels, the identity
    passes each one on, so with the same weights the dilated network computes a related but
    different function: a starting point to fine-tune, not the same network. The default
    ``output_stride=32`` builds torchvision's DenseNet unchanged.
"""
import dataclasses
from collections import OrderedDict
from typing import Literal, Optional

from ... import nn
from ...autograd import cat
from ...ops.activations import relu
from ...ops.pool import adaptive_avg_pool2d
from . import SequentialBackbone, StrideSchedule, register_backbone

__all__ = ["DenseNet", "DenseNetConfig"]


class _DenseLayer(nn.Module):
    """BN-ReLU-1x1 (bn_size·k) -BN-ReLU-3x3 (k): k new channels from all the block's maps.

    ``dilation`` is the 3x3 conv's (padding = dilation keeps the size): > 1 after a
    transition pool that lost its stride (module docstring).
    """

    def __init__(self, in_channels, growth_rate, bn_size, dilation=1):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        # The 1x1 "bottleneck" caps the 3x3 conv's input at bn_size·k channels, however many
        # the block has accumulated.
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=dilation,
                               dilation=dilation, bias=False)

    def forward(self, x):
        """x: (N, C, H, W) -> the new maps (N, k, H, W)."""
        x = self.conv1(self.relu1(self.norm1(x)))      # (N, bn_size k, H, W)
        return self.conv2(self.relu2(self.norm2(x)))   # (N, k, H, W)


class _DenseBlock(nn.Module):
    """``num_layers`` dense layers (children ``denselayer1``, ...); C -> C + num_layers·k.

    Every layer's 3x3 conv has the same ``dilation``: the whole block reads one grid.
    """

    def __init__(self, num_layers, in_channels, growth_rate, bn_size, dilation=1):
        super().__init__()
        for i in range(num_layers):
            setattr(self, f"denselayer{i + 1}",
                    _DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size, dilation))

    def forward(self, x):
        """x: (N, C, H, W) -> (N, C + L k, H, W).

        torchvision concatenates the list of all maps so far before each layer; appending
        each new map to one running concatenation gives the same tensors in the same order.
        """
        for layer in self.children():
            x = cat([x, layer(x)], axis=1)             # (N, C + i k, H, W) -> one k more
        return x


def _transition(in_channels, out_channels, stride=2):
    """BN-ReLU-1x1 conv-2x2 avg-pool: (N, C, H, W) -> (N, out_channels, H/2, W/2).

    ``stride=1`` (a transition past the output stride) makes the pool an identity, under the
    same name so the state-dict keys stay torchvision's: (N, C, H, W) -> (N, out, H, W).
    """
    return nn.Sequential(OrderedDict([
        ("norm", nn.BatchNorm2d(in_channels)),
        ("relu", nn.ReLU()),
        ("conv", nn.Conv2d(in_channels, out_channels, 1, bias=False)),
        ("pool", nn.AvgPool2d(kernel_size=2, stride=2) if stride == 2 else nn.Identity()),
    ]))


@dataclasses.dataclass
class DenseNetConfig:
    """Hyper-parameters of :class:`DenseNet`; the defaults are ``densenet_tiny``.

    Attributes
    ----------
    in_channels : int
    growth_rate : int
        k, the channels each dense layer adds (densenet121: 32).
    block_config : 4 ints
        Dense layers per block (densenet121: 6, 12, 24, 16).
    num_init_features : int
        Channels of the stem conv (densenet121: 64).
    bn_size : int
        The 1x1 bottleneck has ``bn_size * growth_rate`` channels (4).
    num_classes : int or None
        Outputs of the classifier (1000 for ImageNet); None builds no classifier.
    output_stride : {8, 16, 32}
        32 is torchvision's DenseNet; 16 removes the last transition's pool stride, 8 the last
        two, dilating the dense layers after them instead (module docstring).
    """

    in_channels: int = 3
    growth_rate: int = 8
    block_config: tuple[int, int, int, int] = (2, 2, 4, 4)
    num_init_features: int = 16
    bn_size: int = 2
    num_classes: Optional[int] = None
    output_stride: Literal[8, 16, 32] = 32


class DenseNet(SequentialBackbone):
    """DenseNet-BC (Huang et al. 2017) as a backbone: stages of strides 2 to 32.

    Stages: ``relu0`` (stride 2), ``denseblock1`` (4), ``denseblock2`` (8), ``denseblock3``
    (16), ``norm5`` (32); with ``output_stride=8`` the strides are 2, 4, 8, 8, 8 and
    ``features(x)[8]`` is the (dilated) ``norm5`` output.

    Parameters
    ----------
    config : DenseNetConfig, optional
    """

    config_class = DenseNetConfig
    torchvision_head = "classifier"

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        # conv0 and pool0 always keep their stride (output_stride >= 8); only the
        # transitions' pools can lose theirs.
        schedule = StrideSchedule(c.output_stride)
        layers = OrderedDict([
            ("conv0", nn.Conv2d(c.in_channels, c.num_init_features, 7,
                                stride=schedule.step(2)[0], padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(c.num_init_features)),
            ("relu0", nn.ReLU()),
        ])
        self._add_stage("relu0", schedule.stride, c.num_init_features)
        layers["pool0"] = nn.MaxPool2d(kernel_size=3, stride=schedule.step(2)[0], padding=1)
        channels = c.num_init_features
        for i, num_layers in enumerate(c.block_config):
            # schedule.dilation is > 1 after a transition pool that lost its stride
            layers[f"denseblock{i + 1}"] = _DenseBlock(num_layers, channels, c.growth_rate,
                                                       c.bn_size, schedule.dilation)
            channels += num_layers * c.growth_rate
            if i < len(c.block_config) - 1:
                self._add_stage(f"denseblock{i + 1}", schedule.stride, channels)
                # Compression 0.5 (the "C" of DenseNet-BC): the transition halves the channels.
                layers[f"transition{i + 1}"] = _transition(channels, channels // 2,
                                                           stride=schedule.step(2)[0])
                channels //= 2
        layers["norm5"] = nn.BatchNorm2d(channels)
        self._add_stage("norm5", schedule.stride, channels)
        self.features = nn.Sequential(layers)                     # a child named "features"
        if c.num_classes is not None:
            self.classifier = nn.Linear(channels, c.num_classes)
        # torchvision's initialisation: He normal (fan_in) convs, zero Linear bias (BN already
        # starts at weight 1, bias 0).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def _add_stage(self, end, stride, channels):
        self.stage_ends.append(end)
        self.stage_strides.append(stride)
        self.stage_channels.append(channels)

    def _head(self, x):
        """torchvision's ReLU + global average pool + classifier: (N, C, h, w) -> (N, K)."""
        return self.classifier(adaptive_avg_pool2d(relu(x), 1).flatten(1))


register_backbone("densenet_tiny", DenseNet)
# One of the set matched at ~200K parameters (one per family) for comparing the families at
# equal size; their FLOPs are NOT matched and differ, which is part of what the comparison shows.
register_backbone("densenet_small", DenseNet, growth_rate=12, block_config=(2, 4, 8, 6),
                  num_init_features=24, bn_size=4)
register_backbone("densenet121", DenseNet, growth_rate=32, block_config=(6, 12, 24, 16),
                  num_init_features=64, bn_size=4, num_classes=1000)
