"""Pieces every segmentation model of :mod:`edu_seg.models` shares.

- :class:`SegmentationModel`: the base class of the registry's models. It stores the model's
  config, knows its output stride and checks that an input fits it, with an error that names
  the size to pad to.
- :class:`ConvBNReLU`: the 3x3 convolution -> batch norm -> ReLU unit that most encoders and
  decoders are built from.
"""
import math

from .. import nn

__all__ = ["SegmentationModel", "ConvBNReLU", "center_crop"]


class SegmentationModel(nn.Module):
    """Base class of the registry's models: an ``nn.Module`` with a config and an output stride.

    A model maps images ``x: (N, in_channels, H, W)`` to class scores
    ``(N, num_classes, OH, OW)``. Subclasses set :attr:`config_class` (a dataclass) and
    :attr:`output_stride`, and call :meth:`check_input_size` first thing in ``forward``.

    Attributes
    ----------
    name : str
        The registry name (set by :func:`edu_seg.models.register`); saved in checkpoints.
    config_class : type
        The dataclass of the model's hyper-parameters.
    config : dataclass instance
        The hyper-parameters this model was built with; saved in checkpoints.
    output_stride : int
        How many input pixels one step of the coarsest feature map spans (``2**depth`` for a
        U-Net). ``H`` and ``W`` must be multiples of it, or the down- and up-sampling paths
        would produce maps of different sizes where they meet.
    """

    name = None
    config_class = None
    output_stride = 1

    def __init__(self, config):
        super().__init__()
        self.config = config

    def check_input_size(self, shape):
        """Raise a ``ValueError`` unless ``shape = (N, C, H, W)`` fits the model.

        The message names the size to pad to, e.g. ``unet: input 64x60 is not divisible by
        the model's output stride 8: pad to 64x64``.
        """
        if len(shape) != 4:
            raise ValueError(f"{self.name}: expected an input of shape (N, C, H, W), "
                             f"got shape {tuple(shape)}")
        H, W = shape[-2:]
        s = self.output_stride
        if H % s or W % s:
            raise ValueError(f"{self.name}: input {H}x{W} is not divisible by the model's "
                             f"output stride {s}: pad to {self.input_size_for(H)}x"
                             f"{self.input_size_for(W)}")

    def output_size(self, size):
        """Height (or width) of the score map for an input of height (or width) ``size``."""
        return size

    def input_size_for(self, size):
        """The smallest input size the model accepts whose score map covers ``size`` pixels."""
        return math.ceil(size / self.output_stride) * self.output_stride


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
    stride, dilation : int

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> (N, out_channels, OH, OW)``, with ``OH = H`` for "same"
    padding and ``OH = H - dilation * (kernel_size - 1)`` for "valid" (stride 1).
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, padding="same", stride=1,
                 dilation=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        # He et al. 2015: std sqrt(2 / fan_in) keeps the activation variance constant through
        # ReLU layers (the initialisation the U-Net paper also recommends).
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")

    def forward(self, x):
        """x: (N, in_channels, H, W) -> (N, out_channels, OH, OW)."""
        return self.relu(self.bn(self.conv(x)))          # (N, out_channels, OH, OW)


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
