"""U-Net: a symmetric encoder-decoder whose decoder concatenates the encoder's maps.

Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015 (arXiv:1505.04597).

The idea in one picture (depth 2, widths w, 2w, 4w)::

    x ──[conv×2]── e0 (w, H) ─────────────────────concat──[conv×2]── d0 (w, H) ──[1x1]── scores
                    │ pool 2x2                       ↑ up-conv 2x2
                    └─[conv×2]── e1 (2w, H/2) ──concat──[conv×2]── d1 (2w, H/2)
                                 │ pool 2x2           ↑ up-conv 2x2
                                 └─[conv×2]── bottleneck (4w, H/4)

The contracting path (left) gathers context while halving the resolution; the expanding path
(right) restores the resolution, and at every level the encoder map of the same size is
concatenated in, so the fine detail that pooling threw away comes back for the final per-pixel
decision. That skip-by-concatenation is the defining idea, and it is kept exactly.

What this small version keeps from the paper
    - two 3x3 convolutions + ReLU per level, 2x2 max-pool down (stride 2), channels doubled
      at each level down and halved by each 2x2 up-convolution (transposed conv, stride 2);
    - concatenation of the (cropped) encoder map with the up-sampled decoder map;
    - a 1x1 convolution head to ``num_classes`` scores;
    - the paper's unpadded ("valid") convolutions with centre-cropped skips, as an option
      (``padding="valid"``), so the 572 -> 388 arithmetic of its Figure 1 can be reproduced
      with :func:`unet_valid_output_size`;
    - He-normal initialisation (the paper's "Gaussian with standard deviation sqrt(2/N)").

What it changes or drops
    - ``padding="same"`` is the default: the output has the input's size, which is what the
      rest of this library (losses, metrics, data) expects;
    - batch normalisation after every convolution (the paper predates BN; with it the model
      trains in a few CPU minutes with Adam);
    - depth and base width are configurable (the paper: depth 4, width 64, 31 M parameters;
      our demo: depth 3, width 16, about 0.5 M);
    - no dropout at the end of the contracting path, no elastic-deformation augmentation and
      no pixel-weight map for separating touching objects (those serve the paper's small
      biomedical data sets, not the ideas taught here).

>>> import edu_seg.models as models
>>> model = models.create("unet", num_classes=4, depth=3, base_width=16)
>>> unet_valid_output_size(572, depth=4)
388
"""
import dataclasses
from typing import Literal

from .. import nn
from ..autograd import cat
from . import register
from .base import SegmentationModel
from .blocks import ConvBNReLU, center_crop

__all__ = ["UNet", "UNetConfig", "unet_valid_output_size"]


@dataclasses.dataclass
class UNetConfig:
    """Hyper-parameters of :class:`UNet`. The defaults are the small CPU version (about 0.5 M
    parameters); ``preset="paper"`` is the paper's depth 4, width 64 (31 M parameters).

    Attributes
    ----------
    num_classes : int
        Number of output score maps (classes).
    in_channels : int
        Channels of the input image (3 for RGB).
    depth : int
        Number of 2x2 max-pools (= number of up-convolutions); the output stride is
        ``2**depth``. The paper uses 4.
    base_width : int
        Channels of the first level; level ``l`` has ``base_width * 2**l``. The paper uses 64.
    padding : {"same", "valid"}
        "same" pads every 3x3 conv so the output has the input's size; "valid" is the paper's
        unpadded version, whose output is smaller (see :func:`unet_valid_output_size`).
    """

    num_classes: int
    in_channels: int = 3
    depth: int = 3
    base_width: int = 16
    padding: Literal["same", "valid"] = "same"


def unet_valid_output_size(input_size, depth):
    """Output size of a U-Net with unpadded ("valid") 3x3 convolutions.

    Each 3x3 conv without padding trims one pixel per border (size - 2); each level has two of
    them (- 4). Going down, a 2x2 max-pool halves the size, which must therefore be even;
    going up, a 2x2 up-convolution doubles it. For the paper's depth 4 and a 572x572 tile::

        down: 572 -4-> 568 /2-> 284 -4-> 280 /2-> 140 -4-> 136 /2-> 68 -4-> 64 /2-> 32
        bottom:  32 -4-> 28
        up:   28 x2-> 56 -4-> 52 x2-> 104 -4-> 100 x2-> 200 -4-> 196 x2-> 392 -4-> 388

    so a 388x388 map is predicted for the centre of the 572x572 input: the missing border is
    the context the valid convolutions consumed (the paper's "overlap-tile" strategy
    mirror-pads the image to provide it).

    Parameters
    ----------
    input_size : int
        Height (or width) of the input.
    depth : int
        Number of 2x2 max-pools.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        If a map reaching a max-pool has an odd size (the pool would drop a row and the skip
        could not be aligned) or a map shrinks to nothing; the message names the level.
    """
    size = input_size
    for level in range(depth):
        size -= 4                                   # two unpadded 3x3 convs
        if size < 2 or size % 2:
            raise ValueError(f"unet_valid_output_size: input {input_size} gives a map of "
                             f"size {size} before the max-pool of level {level}; it must be "
                             f"even and at least 2")
        size //= 2                                  # 2x2 max-pool
    size -= 4                                       # the bottleneck's two convs
    if size < 1:
        raise ValueError(f"unet_valid_output_size: input {input_size} leaves nothing at the "
                         f"bottom of a depth-{depth} U-Net (size {size})")
    for level in reversed(range(depth)):
        size = 2 * size - 4                         # 2x2 up-conv, then two convs
        if size < 1:
            raise ValueError(f"unet_valid_output_size: input {input_size} leaves nothing "
                             f"after the up-convolution to level {level} (size {size})")
    return size


@register("unet")
class UNet(SegmentationModel):
    """U-Net (Ronneberger et al. 2015): encoder-decoder with concatenated skips.

    Parameters
    ----------
    config : UNetConfig

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, OH, OW)``; with "same" padding
    ``OH, OW = H, W`` and H, W must be multiples of ``2**depth``; with "valid" padding
    ``OH = unet_valid_output_size(H, depth)``, the centre of the input.

    Examples
    --------
    >>> import numpy as np
    >>> from edu_seg import Tensor
    >>> model = UNet(UNetConfig(num_classes=4, depth=2, base_width=8))
    >>> model(Tensor(np.zeros((1, 3, 32, 32), np.float32))).shape
    (1, 4, 32, 32)
    """

    config_class = UNetConfig
    presets = {"paper": {"depth": 4, "base_width": 64}}

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.output_stride = 2 ** c.depth
        widths = [c.base_width * 2 ** level for level in range(c.depth + 1)]

        # Contracting path: level l turns its input into widths[l] channels at H / 2**l.
        self.encoder = nn.ModuleList(
            [_double_conv(c.in_channels if level == 0 else widths[level - 1], widths[level],
                          c.padding) for level in range(c.depth)])
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _double_conv(widths[c.depth - 1], widths[c.depth], c.padding)

        # Expanding path, coarsest level first: the up-conv halves the channels and doubles
        # H, W; after the concat with the skip the level has 2 * widths[l] channels again.
        levels = list(reversed(range(c.depth)))
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2)
             for level in levels])
        self.decoder = nn.ModuleList(
            [_double_conv(2 * widths[level], widths[level], c.padding) for level in levels])
        self.head = nn.Conv2d(widths[0], c.num_classes, 1)

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, OH, OW)."""
        self.check_input_size(x.shape)
        skips = []
        for block in self.encoder:
            x = block(x)                          # (N, w_l, H_l, W_l)
            skips.append(x)
            x = self.pool(x)                      # (N, w_l, H_l / 2, W_l / 2)
        x = self.bottleneck(x)                    # (N, w_depth, H / 2**depth, W / 2**depth)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips)):
            x = up(x)                             # (N, w_l, 2 h, 2 w)
            skip = center_crop(skip, x.shape[-2:])  # valid mode: (N, w_l, 2 h, 2 w)
            x = cat([skip, x], axis=1)            # (N, 2 w_l, 2 h, 2 w)
            x = block(x)                          # (N, w_l, 2 h, 2 w) ("valid": 2 h - 4)
        return self.head(x)                       # (N, num_classes, OH, OW)

    # --- input sizes: "same" padding needs multiples of 2**depth; "valid" its own sizes ----
    def check_input_size(self, shape):
        if self.config.padding == "same":
            return super().check_input_size(shape)
        if len(shape) != 4:
            raise ValueError(f"unet: expected an input of shape (N, C, H, W), got shape "
                             f"{tuple(shape)}")
        H, W = shape[-2:]
        for size in (H, W):
            try:
                unet_valid_output_size(size, self.config.depth)
            except ValueError:
                raise ValueError(
                    f"unet: input {H}x{W} does not fit the padding='valid' U-Net of depth "
                    f"{self.config.depth} (every map reaching a 2x2 max-pool must have an "
                    f"even size): pad to {self._next_valid(H)}x{self._next_valid(W)}") from None

    def output_size(self, size):
        if self.config.padding == "same":
            return size
        return unet_valid_output_size(size, self.config.depth)

    def input_size_for(self, size):
        if self.config.padding == "same":
            return super().input_size_for(size)
        # Valid inputs recur every 2**depth pixels, so this search takes few steps.
        n = self._next_valid(size)
        while unet_valid_output_size(n, self.config.depth) < size:
            n = self._next_valid(n + 1)
        return n

    def _next_valid(self, size):
        """The smallest input size >= ``size`` that a valid-mode U-Net accepts."""
        n = max(size, 1)
        while True:
            try:
                unet_valid_output_size(n, self.config.depth)
                return n
            except ValueError:
                n += 1


def _double_conv(in_channels, out_channels, padding):
    """The two conv-BN-ReLU units of one U-Net level: (N, in, H, W) -> (N, out, H', W')."""
    return nn.Sequential(ConvBNReLU(in_channels, out_channels, padding=padding),
                         ConvBNReLU(out_channels, out_channels, padding=padding))
