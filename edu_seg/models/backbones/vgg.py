"""VGG: stacks of 3x3 convolutions, each stack ending in a 2x2 max-pool.

Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015 (arXiv:1409.1556).

VGG's lesson is that depth built from ONE small kernel beats large kernels: two stacked 3x3
convolutions see a 5x5 window and three see 7x7, with fewer weights (3·9·C² against 49·C²)
and a ReLU between each. VGG-16 ("configuration D")::

    [conv3x3 64]x2 ─ pool ─ [128]x2 ─ pool ─ [256]x3 ─ pool ─ [512]x3 ─ pool ─ [512]x3 ─ pool
               (stride 2)          (4)              (8)              (16)             (32)
    ─ avgpool to 7x7 ─ fc 4096 ─ ReLU ─ dropout ─ fc 4096 ─ ReLU ─ dropout ─ fc 1000

Each stage here is one conv stack and its pool, so the stage outputs are FCN's pool1..pool5
(strides 2 to 32). The batch-norm variant (``vgg16_bn``; BN came later, Ioffe & Szegedy
2015) puts a BatchNorm2d between each conv and its ReLU and keeps the conv biases, as
torchvision does.

The full-size presets reproduce torchvision's ``vgg16()`` and ``vgg16_bn()``: the same
``features`` Sequential (same indices, so ``features.0.weight`` ... ``features.40.bias``),
``avgpool`` and ``classifier``, the same initialisation, and ``features(x)[32]`` equals
torchvision's ``model.features(x)``. The tiny presets keep five stages of 3x3 convs with
widths 16-32-64-64-64 and one or two convs per stage. ``vgg_bn_small`` (one of the set
matched at about 200K parameters for comparing families) has VGG-16's 13 convs (2, 2, 3, 3,
3) at an eighth of its widths, 8-16-32-64-64, with the last two stages trimmed to 60 to stay
at 200K (64 would give 232K).

Output stride 8 or 16 (``output_stride=8``: DeepLab v1/v2's and Yu & Koltun's front-end)
    The last one or two max-pools lose their stride and every conv after them is dilated by
    the stride they would have applied (:class:`~edu_seg.models.backbones.StrideSchedule`),
    so conv5 reads the un-subsampled map with dilation 2 (one pool removed) or 4 (two). A pool
    whose stride is removed becomes an ``nn.Identity`` at the same index of ``features``, so
    the state-dict keys stay torchvision's and ImageNet weights still load: Yu & Koltun
    remove these pools outright; DeepLab keeps a 3x3 stride-1 max-pool there, which this
    version does not. The default ``output_stride=32`` builds torchvision's VGG unchanged.
"""
import dataclasses
from typing import Literal, Optional

from ... import nn
from . import SequentialBackbone, StrideSchedule, register_backbone

__all__ = ["VGG", "VGGConfig"]


@dataclasses.dataclass
class VGGConfig:
    """Hyper-parameters of :class:`VGG`; the defaults are ``vgg_bn_tiny``.

    Attributes
    ----------
    in_channels : int
    widths : 5 ints
        Channels of the convs of each stage (VGG-16: 64, 128, 256, 512, 512).
    depths : 5 ints
        Convs per stage (VGG-16: 2, 2, 3, 3, 3).
    batch_norm : bool
        BatchNorm2d after every conv (``vgg16_bn``).
    num_classes : int or None
        Outputs of the classifier (1000 for ImageNet); None builds no classifier.
    classifier_width : int
        Width of the two hidden fully connected layers (4096).
    dropout : float
        Dropout of the classifier (0.5).
    output_stride : {8, 16, 32}
        32 is torchvision's VGG; 16 removes pool5's stride, 8 pool4's and pool5's, dilating
        the convs after them instead (module docstring).
    """

    in_channels: int = 3
    widths: tuple[int, int, int, int, int] = (16, 32, 64, 64, 64)
    depths: tuple[int, int, int, int, int] = (1, 1, 2, 2, 2)
    batch_norm: bool = True
    num_classes: Optional[int] = None
    classifier_width: int = 4096
    dropout: float = dataclasses.field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    output_stride: Literal[8, 16, 32] = 32


class VGG(SequentialBackbone):
    """VGG (Simonyan & Zisserman 2015) as a backbone: five stages of strides 2 to 32.

    Each stage is ``depths[i]`` x (conv 3x3 [-> BN] -> ReLU) and a 2x2 max-pool; its output
    is the pooled map (FCN's pool3, pool4, pool5 are ``features(x)[8]``, ``[16]``, ``[32]``).
    With ``output_stride=8`` the stage strides are 2, 4, 8, 8, 8, and ``features(x)[8]`` is
    the (dilated) conv5 output.

    Parameters
    ----------
    config : VGGConfig, optional
    """

    config_class = VGGConfig
    torchvision_head = "classifier"

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        layers, in_channels = [], c.in_channels
        schedule = StrideSchedule(c.output_stride)
        for width, depth in zip(c.widths, c.depths):
            d = schedule.dilation                  # > 1 after a pool that lost its stride
            for _ in range(depth):
                layers.append(nn.Conv2d(in_channels, width, 3, padding=d, dilation=d))
                if c.batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU())
                in_channels = width
            stride, _ = schedule.step(2)
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2) if stride == 2
                          else nn.Identity())          # same index: torchvision's keys
            self.stage_ends.append(str(len(layers) - 1))          # the pool's index
            self.stage_strides.append(schedule.stride)
            self.stage_channels.append(width)
        self.features = nn.Sequential(*layers)                    # a child named "features"
        if c.num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(in_channels * 7 * 7, c.classifier_width), nn.ReLU(),
                nn.Dropout(c.dropout),
                nn.Linear(c.classifier_width, c.classifier_width), nn.ReLU(),
                nn.Dropout(c.dropout),
                nn.Linear(c.classifier_width, c.num_classes))
        # torchvision's initialisation: He normal (fan_out) convs with zero bias, N(0, 0.01)
        # linear layers with zero bias (BN already starts at weight 1, bias 0).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def _head(self, x):
        """torchvision's avgpool (7x7) + flatten + classifier: (N, C, h, w) -> (N, K)."""
        return self.classifier(self.avgpool(x).flatten(1))


register_backbone("vgg_bn_tiny", VGG)
register_backbone("vgg_tiny", VGG, batch_norm=False)
# One of the set matched at ~200K parameters (one per family) for comparing the families at
# equal size; their FLOPs are NOT matched and differ, which is part of what the comparison shows.
register_backbone("vgg_bn_small", VGG, widths=(8, 16, 32, 60, 60), depths=(2, 2, 3, 3, 3))
register_backbone("vgg16_bn", VGG, widths=(64, 128, 256, 512, 512), depths=(2, 2, 3, 3, 3),
                  batch_norm=True, num_classes=1000)
register_backbone("vgg16", VGG, widths=(64, 128, 256, 512, 512), depths=(2, 2, 3, 3, 3),
                  batch_norm=False, num_classes=1000)
