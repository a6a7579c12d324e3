"""FCN-32s, FCN-16s and FCN-8s: a classification network made fully convolutional.

Long, Shelhamer and Darrell, "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015 (arXiv:1411.4038).

A classifier ends in fully connected layers, which need an input of one fixed size and give
one label per image. FCN's first idea: a fully connected layer over a ``C x k x k`` feature
map IS a ``k x k`` convolution with the same weights (:func:`convolutionalize`), so the whole
network slides over an image of any size and returns a coarse MAP of class scores, one per
32x32 block of pixels. Its second idea fixes the coarseness: score the finer feature maps of
earlier stages too and add them in, coarsest first::

    image ─ VGG ─ pool3 (1/8) ─ pool4 (1/16) ─ pool5 (1/32) ─ fc6 ─ fc7 ─ score_fr
                    │              │                                       │ x2 (learned)
                    │              └── score_pool4 (1x1) ───────────────── + ─┐  FCN-16s
                    │                                                       x2 (learned)
                    └── score_pool3 (1x1) ──────────────────────────────────── + ─ x8 ─ FCN-8s

FCN-32s up-samples ``score_fr`` x32 in one step; FCN-16s fuses pool4 first and up-samples
x16; FCN-8s also fuses pool3 and up-samples x8. Each fusion step adds detail the coarse map
lacks, so the boundaries sharpen from 32s to 16s to 8s.

What this small version keeps from the paper
    - a VGG-style backbone whose stages end in 2x2 max-pools (strides 8, 16, 32 are pool3,
      pool4, pool5);
    - fc6 and fc7 as convolutions followed by ReLU and dropout, then a 1x1 score layer;
    - 1x1 score layers on pool4 and pool3, initialised to ZERO (the paper's choice: the
      finer net starts as the coarser one and learns what the skip adds);
    - the x2 up-samplings between fusions are transposed convolutions initialised to
      bilinear interpolation and LEARNED; the final x32 / x16 / x8 up-sampling is a
      transposed convolution FIXED to bilinear interpolation (the reference implementation
      does not train it either);
    - fusion by SUMMING score maps.

What it changes
    - a tiny VGG with batch norm (widths 16-32-64-64-64 by default) trained from scratch,
      instead of ImageNet-pretrained VGG16: batch norm lets it train in CPU minutes without
      pretraining;
    - fc6 is a 3x3 convolution with padding 1 instead of 7x7: on a 64x64 image pool5 is 2x2,
      and a 7x7 kernel would see mostly padding. fc6/fc7 have ``head_width`` channels, not 4096;
    - padding instead of cropping: the paper pads the input by 100 pixels (so that fc6's 7x7
      window fits any image) and crops every fused map at offsets 5 and 9 and the output at
      19 to realign them. Here every convolution pads to keep sizes, and each up-sampling
      uses kernel 2s, stride s, padding s/2, which maps an n-pixel map exactly onto sn
      pixels, so the maps line up without crops; the price is that input sizes must be
      multiples of 32.

>>> import edu_seg.models as models
>>> model = models.create("fcn8s", num_classes=4)
"""
import dataclasses

from .. import nn
from . import register
from .backbones import create_backbone
from .base import SegmentationModel
from .blocks import fc_as_conv

__all__ = ["FCNConfig", "FCN32s", "FCN16s", "FCN8s", "convolutionalize", "bilinear_upsampling"]


@dataclasses.dataclass
class FCNConfig:
    """Hyper-parameters of the FCN models (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    backbone : str
        A VGG name of :func:`edu_seg.models.create_backbone` (``"vgg_bn_tiny"``,
        ``"vgg_tiny"``, ``"vgg16_bn"``, ``"vgg16"``).
    head_width : int
        Channels of fc6 and fc7 (the paper: 4096).
    dropout : float
        Channel dropout after fc6 and fc7 (the paper: 0.5).
    """

    num_classes: int
    in_channels: int = 3
    backbone: str = "vgg_bn_tiny"
    head_width: int = 128
    dropout: float = dataclasses.field(default=0.1, metadata={"min": 0.0, "max": 1.0})


def convolutionalize(linear, in_channels, kernel_size):
    """The convolution that computes what ``linear`` computes on a flattened feature map.

    A fully connected layer applied to a ``(C, k, k)`` map flattened to ``C·k·k`` numbers
    computes ``y[o] = b[o] + Σ_{c,i,j} W[o, (c·k + i)·k + j] · x[c, i, j]``; that is exactly a
    ``k x k`` convolution whose filter ``o`` is ``W[o]`` reshaped to ``(C, k, k)``. Slid over a
    larger map, the convolution gives the classifier's answer at every position: FCN's
    "convolutionalization" (a ``k = 1`` case turns fc7 into a 1x1 convolution).

    Parameters
    ----------
    linear : nn.Linear
        Weight ``(out_features, in_channels · kernel_size²)``.
    in_channels, kernel_size : int
        The shape ``(C, k, k)`` of the map the linear layer was applied to, flattened.

    Returns
    -------
    nn.Conv2d
        ``(out_features, in_channels, k, k)`` weights, same bias; no padding.

    Examples
    --------
    >>> fc6 = nn.Linear(8 * 3 * 3, 16)
    >>> conv6 = convolutionalize(fc6, in_channels=8, kernel_size=3)
    >>> conv6.weight.shape
    (16, 8, 3, 3)
    """
    k = kernel_size
    if linear.in_features != in_channels * k * k:
        raise ValueError(f"convolutionalize: the linear layer takes {linear.in_features} "
                         f"inputs, but a {in_channels}x{k}x{k} map has {in_channels * k * k}")
    conv = nn.Conv2d(in_channels, linear.out_features, k, bias=linear.bias is not None)
    conv.weight.copy_(linear.weight.data.reshape(linear.out_features, in_channels, k, k))
    if linear.bias is not None:
        conv.bias.copy_(linear.bias.data)
    return conv


def bilinear_upsampling(channels, factor, learnable):
    """A ``factor``x up-sampling of ``channels`` score maps, initialised to bilinear.

    Kernel ``2·factor``, stride ``factor``, padding ``factor/2``: an ``n``-pixel map becomes
    exactly ``factor·n`` pixels, and away from the border each output is the bilinear
    interpolation of its input neighbours (``F.interpolate(mode="bilinear",
    align_corners=False)``). ``learnable=False`` freezes it (its weight gets no gradient).
    """
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2,
                            bias=False)
    nn.init.bilinear_(up.weight)
    up.weight.requires_grad = learnable
    return up


#: The paper's names of the VGG stages whose pooled outputs have strides 8 and 16.
POOL_NAMES = {8: "pool3", 16: "pool4"}


class _FCN(SegmentationModel):
    """The shared body of FCN-32s/16s/8s; ``finest`` is the stride of the finest fused map."""

    config_class = FCNConfig
    output_stride = 32
    finest = 32

    def __init__(self, config):
        super().__init__(config)
        c, K = config, config.num_classes
        self.backbone = create_backbone(c.backbone, in_channels=c.in_channels)
        channels = self.backbone.channels                    # {stride: channels}
        # fc6, fc7: the classifier's fully connected layers, as convolutions.
        self.fc6 = fc_as_conv(channels[32], c.head_width, 3, dropout=c.dropout)
        self.fc7 = fc_as_conv(c.head_width, c.head_width, dropout=c.dropout)
        self.score_fr = nn.Conv2d(c.head_width, K, 1)
        # One score layer and one learned x2 up-sampling per fused finer stage (16, then 8).
        self.fused_strides = [s for s in (16, 8) if s >= self.finest]
        self.score_pool = nn.ModuleDict()
        self.upscore2 = nn.ModuleDict()
        for s in self.fused_strides:
            score = nn.Conv2d(channels[s], K, 1)
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
            self.score_pool[POOL_NAMES[s]] = score
            self.upscore2[POOL_NAMES[s]] = bilinear_upsampling(K, 2, learnable=True)
        self.upscore = bilinear_upsampling(K, self.finest, learnable=False)

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W)."""
        self.check_input_size(x.shape)
        features = self.backbone.features(x)                 # {stride: (N, C_s, H/s, W/s)}
        h = self.fc7(self.fc6(features[32]))                 # (N, head_width, H/32, W/32)
        scores = self.score_fr(h)                            # (N, K, H/32, W/32)
        for s in self.fused_strides:                         # pool4 (16), then pool3 (8)
            name = POOL_NAMES[s]
            scores = self.upscore2[name](scores)             # (N, K, H/s, W/s)
            scores = scores + self.score_pool[name](features[s])  # (N, K, H/s, W/s)
        return self.upscore(scores)                          # (N, K, H, W)


@register("fcn32s")
class FCN32s(_FCN):
    """FCN-32s (Long et al. 2015): VGG made fully convolutional, scores up-sampled x32."""

    finest = 32


@register("fcn16s")
class FCN16s(_FCN):
    """FCN-16s (Long et al. 2015): FCN-32s plus the pool4 scores, up-sampled x16."""

    finest = 16


@register("fcn8s")
class FCN8s(_FCN):
    """FCN-8s (Long et al. 2015): FCN-16s plus the pool3 scores, up-sampled x8."""

    finest = 8
