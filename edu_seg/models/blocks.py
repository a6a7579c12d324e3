"""Pieces several models share, each written once so every model that uses it reads the same code.

- :class:`ConvBNReLU`, :func:`fc_as_conv`, :func:`center_crop`: the basic unit, a classifier's
  fully connected layer as a convolution, and U-Net's cropping;
- :class:`PyramidPooling`: PSPNet's pyramid of pooled context (ICNet reuses it);
- :class:`ASPP` with :class:`ImagePooling`: DeepLabV3's atrous spatial pyramid pooling, in
  torchvision's layout, shared by DeepLabV3, DeepLabV3+ and the full-size
  ``deeplabv3_resnet50``; :func:`separable_conv_bn_relu`: DeepLabV3+'s separable unit.
"""
from .. import nn
from ..autograd import cat
from ..ops.resample import interpolate

__all__ = ["ConvBNReLU", "fc_as_conv", "center_crop", "PyramidPooling",
           "ASPP", "ImagePooling", "separable_conv_bn_relu"]


class ConvBNReLU(nn.Module):
    """``conv -> BatchNorm2d -> ReLU``, the basic unit of most encoders and decoders.

    The convolution has no bias: the batch norm right after it subtracts the per-channel mean,
    which would cancel any bias, and then adds its own learned shift ``beta``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
    padding : "same", "valid" or int
        "same" (stride 1) keeps H and W; "valid" pads nothing, so each 3x3 conv trims one
        pixel from every border; an int pads that many zeros on each side.
    stride, dilation, groups : int

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> (N, out_channels, OH, OW)``, with ``OH = H`` for "same"
    padding and ``OH = H - dilation * (kernel_size - 1)`` for "valid" (stride 1).
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, padding="same", stride=1,
                 dilation=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        # He et al. 2015: std sqrt(2 / fan_in) keeps the activation variance constant through
        # ReLU layers (the initialisation the U-Net paper also recommends).
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")

    def forward(self, x):
        """x: (N, in_channels, H, W) -> (N, out_channels, OH, OW)."""
        return self.relu(self.bn(self.conv(x)))          # (N, out_channels, OH, OW)


def fc_as_conv(in_channels, out_channels, kernel_size=1, dilation=1, dropout=0.0):
    """A classifier's fully connected layer as a convolution: ``conv -> ReLU -> Dropout2d``.

    FCN's, DeepLab's and Yu & Koltun's fc6/fc7. The conv pads to keep H and W ("same"), so
    it slides over a map of any size (see :func:`edu_seg.models.fcn.convolutionalize`).

    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, H, W)``.
    """
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding="same",
                                   dilation=dilation),
                         nn.ReLU(), nn.Dropout2d(dropout))


def center_crop(x, size):
    """The central ``size = (h, w)`` window of ``x: (N, C, H, W)`` (differentiable).

    U-Net's "valid" mode needs it: its encoder maps are larger than the decoder maps they are
    concatenated with, because every unpadded 3x3 convolution trims a border.
    """
    H, W = x.shape[-2:]
    h, w = size
    if h > H or w > W:
        raise ValueError(f"center_crop: cannot crop {H}x{W} to a larger {h}x{w}")
    if (h, w) == (H, W):
        return x
    top, left = (H - h) // 2, (W - w) // 2
    return x[:, :, top:top + h, left:left + w]          # (N, C, h, w)


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module: the map, plus its summaries over 1x1 ... 6x6 grids.

    Zhao, Shi, Qi, Wang and Jia, "Pyramid Scene Parsing Network", CVPR 2017
    (arXiv:1612.01105), Section 3.2. A pixel's own receptive field rarely covers the whole
    scene, so the module hands every pixel a summary of the scene at several scales::

        x (C, h, w) ─┬──────────────────────────────────────────────────┐
                     ├─ pool to 1x1 ─ 1x1 conv (C/4) ─ bilinear to h x w ─┤
                     ├─ pool to 2x2 ─ 1x1 conv (C/4) ─ bilinear to h x w ─┤ concat
                     ├─ pool to 3x3 ─ 1x1 conv (C/4) ─ bilinear to h x w ─┤ (C + 4 C/4 = 2C)
                     └─ pool to 6x6 ─ 1x1 conv (C/4) ─ bilinear to h x w ─┘

    Each branch pools the map into a fixed grid of ``b x b`` bins (adaptive pooling: the bin
    size follows the map size, so the 1x1 level is GLOBAL context for any input), reduces the
    channels with a 1x1 conv + BN + ReLU so that the context does not outweigh the local
    features (the paper: to 1/N of C for N levels), and is up-sampled back to the map's size,
    where it is concatenated with the map itself. The coarse levels say "what is in the
    image", the finer ones "what is in this part of it".

    Parameters
    ----------
    in_channels : int
    bins : tuple of int
        Grid size of each level (the paper: 1, 2, 3, 6).
    branch_channels : int, optional
        Channels of each level after its 1x1 conv; default ``in_channels // len(bins)``.
    pool : {"avg", "max"}
        Adaptive average pooling (the paper's choice: in its Table 1 average beats max at
        every setting) or adaptive max pooling.

    Attributes
    ----------
    branches : nn.ModuleList
        One ``Sequential(pool, ConvBNReLU)`` per bin size.
    out_channels : int
        ``in_channels + len(bins) * branch_channels``.

    Shapes
    ------
    ``x: (N, in_channels, h, w) -> (N, out_channels, h, w)``.
    """

    def __init__(self, in_channels, bins=(1, 2, 3, 6), branch_channels=None, pool="avg"):
        super().__init__()
        pools = {"avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}
        if pool not in pools:
            raise ValueError(f"PyramidPooling: pool={pool!r} is not a pooling kind; use "
                             f"'avg' or 'max'")
        if branch_channels is None:
            branch_channels = in_channels // len(bins)
        if branch_channels < 1:
            raise ValueError(f"PyramidPooling: {in_channels} input channels give "
                             f"{branch_channels} channels to each of {len(bins)} levels; "
                             f"give branch_channels >= 1 or more input channels")
        self.bins, self.pool = tuple(bins), pool
        self.branches = nn.ModuleList([
            nn.Sequential(pools[pool](b), ConvBNReLU(in_channels, branch_channels, 1))
            for b in self.bins])
        self.out_channels = in_channels + len(self.bins) * branch_channels

    def forward(self, x):
        """x: (N, C, h, w) -> (N, C + len(bins) * branch_channels, h, w)."""
        size = x.shape[-2:]
        levels = [x]
        for branch in self.branches:
            context = branch(x)                          # (N, branch_channels, b, b)
            levels.append(interpolate(context, size=size, mode="bilinear",
                                      align_corners=False))  # (N, branch_channels, h, w)
        return cat(levels, axis=1)                       # (N, out_channels, h, w)


def separable_conv_bn_relu(in_channels, out_channels, dilation=1):
    """DeepLabV3+'s atrous separable convolution: depthwise 3x3 (dilated) -> BN -> ReLU, then
    pointwise 1x1 -> BN -> ReLU.

    Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
    Segmentation", ECCV 2018 (arXiv:1802.02611), Section 3.1. The depthwise conv filters each
    channel on its own (``groups = in_channels``: 9 weights per channel), the pointwise conv
    mixes channels; together ``1/out_channels + 1/9`` of a full 3x3 conv's multiply-adds.
    Unlike the Xception backbone's :class:`~edu_seg.models.backbones.SeparableConv2d` (Chollet: no
    activation between the two), DeepLabV3+ puts BN and ReLU after EACH of them (Section 3.2,
    "similar to MobileNet design").

    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, H, W)``.
    """
    return nn.Sequential(ConvBNReLU(in_channels, in_channels, 3, padding=dilation,
                                    dilation=dilation, groups=in_channels),
                         ConvBNReLU(in_channels, out_channels, 1))


class ImagePooling(nn.Sequential):
    """ASPP's image-level branch: global average pool -> 1x1 conv -> BN -> ReLU, spread back
    over the map.

    The pooled vector is ONE value per channel for the whole image, so after the (bilinear,
    from 1x1) up-sampling every position receives the same "what is in this image" summary.
    A Sequential (children 0-3, as torchvision's ``ASPPPooling``) so the state-dict keys match.

    Shapes: ``(N, in_channels, h, w) -> (N, out_channels, h, w)``, constant over ``h, w``.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__(nn.AdaptiveAvgPool2d(1),
                         nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, x):
        """x: (N, in_channels, h, w) -> (N, out_channels, h, w)."""
        size = x.shape[-2:]
        pooled = super().forward(x)                       # (N, out_channels, 1, 1)
        return interpolate(pooled, size=size, mode="bilinear",
                           align_corners=False)           # (N, out_channels, h, w)


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling, as in DeepLabV3 (with image pooling and batch norm).

    Chen, Papandreou, Schroff and Adam, "Rethinking Atrous Convolution for Semantic Image
    Segmentation", arXiv:1706.05587, 2017, Section 3.3. Several parallel convolutions read
    the same map at different dilation rates, so each position sees its surroundings at
    several scales at once; an image-level branch adds the whole image::

        x ─┬─ 1x1 conv ─ BN ─ ReLU ─────────────────────────────┐
           ├─ 3x3 conv, dilation r1 ─ BN ─ ReLU ────────────────┤
           ├─ 3x3 conv, dilation r2 ─ BN ─ ReLU ────────────────┤ concat ─ 1x1 conv ─ BN
           ├─ 3x3 conv, dilation r3 ─ BN ─ ReLU ────────────────┤   ─ ReLU ─ dropout
           └─ global avg pool ─ 1x1 conv ─ BN ─ ReLU ─ up-sample ┘

    Why the image-level branch: a 3x3 kernel with a rate close to the map size has most taps
    in the padding, so it degenerates into a 1x1 conv of its centre tap (the paper's Fig. 4);
    the global pool is what actually brings the image-wide context.

    The layout is torchvision's ``deeplabv3.ASPP`` exactly (``convs`` = 1x1 branch, one branch
    per rate, pooling branch; ``project``), so a full-size model's state-dict keys match.

    Parameters
    ----------
    in_channels : int
    atrous_rates : tuple of int
        One 3x3 branch per rate (DeepLabV3 at output stride 16: 6, 12, 18).
    out_channels : int
        Channels of every branch and of the output (the paper: 256).
    image_pooling : bool
        Keep the image-level branch (DeepLabV3's Table 5 ablation drops it).
    separable : bool
        Each 3x3 branch is an atrous separable conv (:func:`separable_conv_bn_relu`), as in
        DeepLabV3+; the 1x1 and pooling branches are unchanged.
    dropout : float
        Element dropout after the projection (torchvision: 0.5; the authors' TensorFlow code:
        0.1).

    Attributes
    ----------
    convs : nn.ModuleList
        The branches, in the order above.
    project : nn.Sequential
        ``1x1 conv (branches * out_channels -> out_channels) -> BN -> ReLU -> Dropout``.

    Shapes
    ------
    ``x: (N, in_channels, h, w) -> (N, out_channels, h, w)``.
    """

    def __init__(self, in_channels, atrous_rates, out_channels=256, image_pooling=True,
                 separable=False, dropout=0.5):
        super().__init__()
        self.atrous_rates = tuple(atrous_rates)
        branches = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                  nn.BatchNorm2d(out_channels), nn.ReLU())]
        for rate in self.atrous_rates:
            if separable:
                branches.append(separable_conv_bn_relu(in_channels, out_channels, rate))
            else:                          # padding = rate keeps the size of a dilated 3x3
                branches.append(nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate,
                              bias=False),
                    nn.BatchNorm2d(out_channels), nn.ReLU()))
        if image_pooling:
            branches.append(ImagePooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Dropout(dropout))
        for m in self.modules():           # He init, as ConvBNReLU: every conv feeds a ReLU
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x):
        """x: (N, in_channels, h, w) -> (N, out_channels, h, w)."""
        branches = [branch(x) for branch in self.convs]   # each (N, out_channels, h, w)
        return self.project(cat(branches, axis=1))        # (N, out_channels, h, w)
