"""Pieces several models share: the conv-BN-ReLU unit and centre cropping.

Later models add their shared blocks here (pyramid pooling, ASPP, attention blocks), so each
is written once and every model that uses it reads the same code.
"""
from .. import nn

__all__ = ["ConvBNReLU", "fc_as_conv", "center_crop"]


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
