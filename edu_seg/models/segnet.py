"""SegNet: an encoder-decoder whose decoder up-samples with the encoder's max-pool INDICES.

Badrinarayanan, Kendall and Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", TPAMI 2017 (arXiv:1511.00561).

A decoder must bring back the detail that pooling threw away. U-Net sends the encoder's whole
feature maps across (skip features); SegNet sends only WHERE each 2x2 max-pool found its
maximum. The decoder's up-sampling (``max_unpool2d``) puts each value back at that position
and zeros in the three others, so the sparse map it makes has its non-zeros exactly on the
encoder's strongest responses, and trainable convolutions then densify it::

    x ─[conv×2]─ pool ─[conv×2]─ pool ─[conv×2]─ pool ─[conv×2]─ pool ──┐  (stride 16)
                  │i0            │i1             │i2             │i3    │
                  │              │               │               └─ unpool ─[conv×2]
                  │              │               └────────────────── unpool ─[conv×2]
                  │              └────────────────────────────────── unpool ─[conv×2]
                  └───────────────────────────────────────────────── unpool ─[conv×2]─ 1x1 ─ scores

The price of a skip is memory: the decoder keeps what it reads from the encoder until it is
used. The indices are one number per POOLED pixel (a quarter of the pre-pool pixels), and the
paper stores them in 2 bits each (which of the four window positions won); this library keeps
int64 flat positions as PyTorch does. :func:`decoder_memory` measures both models' bytes.

What this small version keeps from the paper
    - a VGG-style encoder of conv-BN-ReLU stages, each ending in a 2x2 max-pool that keeps
      its argmax indices;
    - a decoder that mirrors it: at each stage, ``max_unpool2d`` with that stage's indices
      (no encoder FEATURES pass to the decoder, only indices), then trainable conv-BN-ReLU
      layers, the last of which maps the stage's width to the width of the stage above;
    - no bias before batch norm, no fully connected layers, a per-pixel classifier at the end.

What it changes
    - four stages of widths 16-32-64-64 with two convs each (output stride 16), instead of
      VGG-16's five stages of 64 to 512 channels with 2, 2, 3, 3, 3 convs (``preset="paper"``);
    - trained from scratch with He initialisation instead of from ImageNet weights;
    - the classifier is a 1x1 convolution (the paper's is 3x3) and the loss is plain
      cross-entropy (the paper's median-frequency class balancing is left out).

>>> import edu_seg.models as models
>>> model = models.create("segnet", num_classes=4)
"""
import dataclasses

import numpy as np

from .. import nn
from ..autograd import Tensor, no_grad
from . import register
from .base import SegmentationModel
from .blocks import ConvBNReLU

__all__ = ["SegNet", "SegNetConfig", "decoder_memory"]


@dataclasses.dataclass
class SegNetConfig:
    """Hyper-parameters of :class:`SegNet` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    widths : tuple of int
        Channels of each encoder stage; one 2x2 max-pool per stage, so the output stride is
        ``2 ** len(widths)`` (the paper: 64, 128, 256, 512, 512).
    depths : tuple of int
        Conv-BN-ReLU units per stage, the same in the encoder and the decoder (the paper:
        2, 2, 3, 3, 3).
    """

    num_classes: int
    in_channels: int = 3
    widths: tuple[int, ...] = (16, 32, 64, 64)
    depths: tuple[int, ...] = (2, 2, 2, 2)

    def __post_init__(self):
        if len(self.widths) != len(self.depths) or not self.widths:
            raise ValueError(f"SegNetConfig: widths and depths need one entry per stage, got "
                             f"widths={self.widths!r} and depths={self.depths!r}")


@register("segnet")
class SegNet(SegmentationModel):
    """SegNet (Badrinarayanan et al. 2017): decoder up-sampling by the encoder's pool indices.

    Parameters
    ----------
    config : SegNetConfig

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``; H and W must be
    multiples of ``2 ** len(widths)``.
    """

    config_class = SegNetConfig
    presets = {"paper": {"widths": (64, 128, 256, 512, 512), "depths": (2, 2, 3, 3, 3)}}

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.output_stride = 2 ** len(c.widths)
        inputs = (c.in_channels,) + c.widths[:-1]          # what each encoder stage reads
        self.encoder = nn.ModuleList(
            [nn.Sequential(*[ConvBNReLU(cin if i == 0 else w, w) for i in range(d)])
             for cin, w, d in zip(inputs, c.widths, c.depths)])
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2)
        # Decoder stage s mirrors encoder stage s: it reads widths[s] channels (the indices
        # of pool s have as many) and its last unit hands the width of stage s - 1 on, so
        # the next unpooling gets as many channels as its indices have; stage 0 keeps its own.
        outputs = (c.widths[0],) + c.widths[:-1]
        self.decoder = nn.ModuleList(
            [nn.Sequential(*[ConvBNReLU(w, w if i < d - 1 else out) for i in range(d)])
             for w, out, d in zip(c.widths, outputs, c.depths)])
        self.classifier = nn.Conv2d(c.widths[0], c.num_classes, 1)

    def encode(self, x):
        """The encoder: x (N, C, H, W) -> (h, indices).

        Returns
        -------
        h : Tensor, shape (N, widths[-1], H / 2**S, W / 2**S)
            The last pooled map (S = number of stages).
        indices : list of Tensor of int64
            ``indices[s]``: (N, widths[s], H / 2**(s+1), W / 2**(s+1)), the flat argmax
            position of each pooled value within its pre-pool plane. All the decoder reads
            from the encoder besides ``h``.
        """
        indices = []
        for stage in self.encoder:
            x = stage(x)                                  # (N, w_s, H_s, W_s)
            x, where = self.pool(x)                       # (N, w_s, H_s / 2, W_s / 2) twice
            indices.append(where)
        return x, indices

    def decode(self, h, indices):
        """The decoder: (h, indices) from :meth:`encode` -> (N, widths[0], H, W) features."""
        for stage, where in zip(reversed(self.decoder), reversed(indices)):
            h = self.unpool(h, where)                     # (N, w_s, 2 h, 2 w), sparse
            h = stage(h)                                  # (N, w_{s-1}, 2 h, 2 w), dense
        return h

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W)."""
        self.check_input_size(x.shape)
        h, indices = self.encode(x)                       # (N, w_last, H / 2**S, W / 2**S)
        return self.classifier(self.decode(h, indices))   # (N, num_classes, H, W)


@no_grad()
def decoder_memory(model, x):
    """Bytes the decoder of ``model`` reads from its encoder, measured on a forward pass.

    What a decoder reads from the encoder must be kept in memory from the moment the encoder
    makes it until the decoder uses it (and, in training, until backward). SegNet keeps one
    int64 index tensor per pool; a U-Net keeps each level's feature map before its pool.

    Parameters
    ----------
    model : SegNet or UNet
        Run in its current mode on ``x``.
    x : ndarray or Tensor, shape (N, C, H, W)

    Returns
    -------
    dict
        ``bytes``: the total; ``per_level``: a list of ``(shape, dtype name, bytes)``, finest
        level first; ``two_bit_bytes`` (SegNet only): the same indices stored as the paper
        suggests, 2 bits per pooled value (which of the 4 window positions won).

    Examples
    --------
    >>> import edu_seg.models as models
    >>> x = np.zeros((1, 3, 64, 64), np.float32)
    >>> decoder_memory(models.create("segnet", num_classes=4), x)["bytes"]
    237568
    """
    from .unet import UNet

    x = x if isinstance(x, Tensor) else Tensor(x)
    if isinstance(model, SegNet):
        _, read = model.encode(x)
    elif isinstance(model, UNet):
        # The skips are the outputs of the encoder blocks (before their pools), which
        # forward keeps in a local list; hooks see exactly those arrays.
        read = []
        handles = [block.register_forward_hook(lambda m, args, y: read.append(y))
                   for block in model.encoder]
        try:
            model(x)
        finally:
            for handle in handles:
                handle.remove()
    else:
        raise TypeError(f"decoder_memory: expected a SegNet or a UNet, got "
                        f"{type(model).__name__}")
    levels = [(t.shape, t.data.dtype.name, int(t.data.nbytes)) for t in read]
    result = {"bytes": sum(b for *_, b in levels), "per_level": levels}
    if isinstance(model, SegNet):
        result["two_bit_bytes"] = sum(int(np.prod(t.shape)) for t in read) // 4
    return result
