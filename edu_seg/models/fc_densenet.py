"""FC-DenseNet ("the one hundred layers Tiramisu"): DenseNet's dense blocks in an encoder-decoder.

Jégou, Drozdzal, Vazquez, Romero and Bengio, "The One Hundred Layers Tiramisu: Fully
Convolutional DenseNets for Semantic Segmentation", CVPR Workshops 2017 (arXiv:1611.09326).

A dense block (Huang et al., DenseNet) grows its input: each layer reads ALL the maps so far
and adds ``growth_rate`` (k) new ones, so a block of L layers turns C channels into C + L·k.
FC-DenseNet builds a U-Net-like network of such blocks. Going down, each block's whole output
(its input and its new maps, the "stack") is both the skip connection and what the
transition down pools. Going up, growing the stack at every level would be ruinous: the
channels, and with them the weights of every later layer and the full-resolution memory,
would pile up. The paper's fix is the network's defining idea: an up-path block passes on
ONLY ITS NEW MAPS (L·k channels), and only those are up-sampled; the detail comes back
through the skip concatenated after the up-sampling::

    x ─ conv 3x3 ─ DB ─┬─ TD ─ DB ─┬─ TD ─ DB ─┬─ TD ─ DB (bottleneck)
                       │           │           │        │ its L·k new maps only
                       │           │           └─ cat ─ TU
                       │           │               DB
                       │           │               │ its L·k new maps only
                       │           └───────── cat ─ TU
                       │                       DB
                       │                       │ its L·k new maps only
                       └───────────────── cat ─ TU
                                           DB
                                           │ its whole stack (input + new maps)
                                           1x1 conv ─ scores

    dense layer:      BN ─ ReLU ─ 3x3 conv (k maps) ─ dropout     (pre-activation)
    dense block (DB): x ─ layer ─ cat ─ layer ─ cat ...           C -> C + L·k, all concatenated
    transition down:  BN ─ ReLU ─ 1x1 conv (C -> C) ─ dropout ─ 2x2 max-pool     H, W halve
    transition up:    3x3 transposed conv, stride 2 (C -> C)                     H, W double

Channels of FC-DenseNet103 (m0 = 48, k = 16, layers 4, 5, 7, 10, 12 | 15 | 12, 10, 7, 5, 4):
down the stacks are 112, 192, 304, 464, 656; the bottleneck passes on 15·16 = 240 maps; up,
the blocks see 240 + 656 = 896, 192 + 464 = 656, 464, 304, 192 channels and end with stacks
of 1088, 816, 576, 384, 256 (the paper's Table 2); the classifier reads 256. Up-sampling the
whole stack instead (``preset="upsample_all"``, what many re-implementations do) would carry
3232 channels into the full-resolution classifier (:func:`transition_up_memory` and
:func:`peak_training_memory` measure what that costs).

What this small version keeps from the paper
    - the first 3x3 convolution, dense layers BN-ReLU-3x3 conv-dropout, each adding k maps
      concatenated onto its input (no 1x1 "bottleneck" inside the layer: that is
      DenseNet-BC's, :mod:`edu_seg.models.backbones.densenet`, whose layers this file
      therefore does not reuse);
    - transitions down BN-ReLU-1x1 conv-dropout-2x2 max-pool that keep the channel count;
    - a bottleneck dense block, and transitions up that are 3x3 transposed convolutions of
      stride 2 applied to the NEW maps of the block below only, then concatenated with the
      down path's stack of the same resolution; the classifier is a 1x1 convolution on the
      last block's stack;
    - He-uniform initialisation of every convolution, zero biases.

What it changes
    - three levels (output stride 8, the 8x8 bottleneck of a 64x64 image), 3 layers per
      block, k = 8 and a 16-channel first convolution, instead of five levels with m0 = 48;
      the presets ``fc_densenet56``, ``fc_densenet67`` and ``fc_densenet103`` (also
      ``"paper"``) are the paper's three networks;
    - no dropout by default: a 300-step run on synthetic shapes has nothing to overfit (the
      presets keep the paper's 0.2, elementwise dropout as in the reference code);
    - the transposed convolution pads by 1 with an output padding of 1, which maps h pixels to
      exactly 2h; the reference code pads nothing (2h + 1 pixels) and crops;
    - trained from scratch with Adam and plain cross-entropy (the paper: RMSprop, class
      weighting on CamVid, fine-tuning on full-size images).

>>> import edu_seg.models as models
>>> model = models.create("fc_densenet", num_classes=4)
"""
import dataclasses
import tracemalloc
from collections import OrderedDict
from typing import Literal

from .. import nn
from ..autograd import Tensor, cat, no_grad
from . import register
from .base import SegmentationModel

__all__ = ["FCDenseNet", "FCDenseNetConfig", "DenseBlock", "dense_layer", "transition_down",
           "transition_up_memory", "peak_training_memory"]


@dataclasses.dataclass
class FCDenseNetConfig:
    """Hyper-parameters of :class:`FCDenseNet` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    growth_rate : int
        k, the maps each dense layer adds (the paper: 12 for FC-DenseNet56, 16 otherwise).
    layers_per_block : tuple of int
        Dense layers of each down-path block, then of the bottleneck block; the up path
        mirrors the down path. One pool per down block, so the output stride is
        ``2 ** (len(layers_per_block) - 1)`` (FC-DenseNet103: 4, 5, 7, 10, 12, 15).
    first_channels : int
        Maps of the first 3x3 convolution (the paper: 48).
    dropout : float
        Dropout after every dense layer's and transition down's convolution (the paper: 0.2).
    upsample : "new" or "all"
        What a transition up reads from the block below: ``"new"``, only the maps that block
        added (the paper), or ``"all"``, its whole stack, input included (the ablation).
    """

    num_classes: int
    in_channels: int = 3
    growth_rate: int = 8
    layers_per_block: tuple[int, ...] = (3, 3, 3, 3)
    first_channels: int = 16
    dropout: float = dataclasses.field(default=0.0, metadata={"min": 0.0, "max": 1.0})
    upsample: Literal["new", "all"] = "new"

    def __post_init__(self):
        if len(self.layers_per_block) < 2:
            raise ValueError(f"FCDenseNetConfig: layers_per_block needs at least 2 entries "
                             f"(one or more down blocks, then the bottleneck), got "
                             f"{self.layers_per_block!r}; e.g. (4, 4, 4, 4)")


def _he_uniform(conv):
    """The paper's He-uniform weights (gain √2 for the ReLU before each conv), zero bias."""
    nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    return conv


def dense_layer(in_channels, growth_rate, dropout):
    """BN-ReLU-3x3 conv-dropout: (N, in_channels, H, W) -> its k new maps (N, k, H, W)."""
    return nn.Sequential(OrderedDict([
        ("norm", nn.BatchNorm2d(in_channels)),
        ("relu", nn.ReLU()),
        ("conv", _he_uniform(nn.Conv2d(in_channels, growth_rate, 3, padding=1))),
        ("drop", nn.Dropout(dropout)),
    ]))


class DenseBlock(nn.Module):
    """``num_layers`` dense layers; each one's k new maps are concatenated onto its input.

    Layer ``i`` (from 0) reads ``in_channels + i·k`` channels: the block's input and every
    earlier layer's maps. The block returns the whole stack; its last ``new_channels`` maps
    are the ones it made, which is all an up-path block passes on.

    Parameters
    ----------
    num_layers, in_channels, growth_rate : int
    dropout : float

    Attributes
    ----------
    layers : ModuleList of the dense layers
    new_channels : int
        ``num_layers * growth_rate``.
    out_channels : int
        ``in_channels + new_channels``.
    """

    def __init__(self, num_layers, in_channels, growth_rate, dropout):
        super().__init__()
        self.layers = nn.ModuleList([dense_layer(in_channels + i * growth_rate, growth_rate,
                                                 dropout) for i in range(num_layers)])
        self.new_channels = num_layers * growth_rate
        self.out_channels = in_channels + self.new_channels

    def forward(self, x):
        """x: (N, C, H, W) -> the stack (N, C + L·k, H, W): x, then each layer's maps."""
        for layer in self.layers:
            x = cat([x, layer(x)], axis=1)             # (N, C + i k, H, W) -> one k more
        return x


def transition_down(channels, dropout):
    """BN-ReLU-1x1 conv-dropout-2x2 max-pool: (N, C, H, W) -> (N, C, H/2, W/2)."""
    return nn.Sequential(OrderedDict([
        ("norm", nn.BatchNorm2d(channels)),
        ("relu", nn.ReLU()),
        ("conv", _he_uniform(nn.Conv2d(channels, channels, 1))),
        ("drop", nn.Dropout(dropout)),
        ("pool", nn.MaxPool2d(2)),
    ]))


#: The paper's largest network, 103 convolutional layers (also the ``"paper"`` preset).
_FC_DENSENET103 = {"growth_rate": 16, "layers_per_block": (4, 5, 7, 10, 12, 15),
                   "first_channels": 48, "dropout": 0.2}


@register("fc_densenet")
class FCDenseNet(SegmentationModel):
    """FC-DenseNet (Jégou et al. 2017): dense blocks down and up, new maps only up-sampled.

    Parameters
    ----------
    config : FCDenseNetConfig

    Attributes
    ----------
    first_conv : Conv2d
    down_blocks, transitions_down : ModuleList
        One dense block and one transition down per level, finest first.
    bottleneck : DenseBlock
    transitions_up, up_blocks : ModuleList
        One 3x3 stride-2 transposed convolution and one dense block per level, coarsest first.
    classifier : Conv2d
        1x1, on the last up block's stack.

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``; H and W must be
    multiples of ``2 ** (len(layers_per_block) - 1)``.
    """

    config_class = FCDenseNetConfig
    presets = {
        "fc_densenet56": {"growth_rate": 12, "layers_per_block": (4,) * 6,
                          "first_channels": 48, "dropout": 0.2},
        "fc_densenet67": {"growth_rate": 16, "layers_per_block": (5,) * 6,
                          "first_channels": 48, "dropout": 0.2},
        "fc_densenet103": _FC_DENSENET103,
        "paper": _FC_DENSENET103,
        "upsample_all": {"upsample": "all"},
    }

    def __init__(self, config):
        super().__init__(config)
        c = config
        *down, middle = c.layers_per_block
        self.output_stride = 2 ** len(down)
        self.first_conv = _he_uniform(nn.Conv2d(c.in_channels, c.first_channels, 3,
                                                padding=1))
        channels, skips = c.first_channels, []
        self.down_blocks, self.transitions_down = nn.ModuleList(), nn.ModuleList()
        for num_layers in down:
            block = DenseBlock(num_layers, channels, c.growth_rate, c.dropout)
            channels = block.out_channels
            skips.append(channels)
            self.down_blocks.append(block)
            self.transitions_down.append(transition_down(channels, c.dropout))
        self.bottleneck = DenseBlock(middle, channels, c.growth_rate, c.dropout)
        below = self.bottleneck
        self.transitions_up, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for num_layers, skip in zip(reversed(down), reversed(skips)):
            # The transition up keeps its input's channel count; what it reads is the idea.
            up = below.new_channels if c.upsample == "new" else below.out_channels
            self.transitions_up.append(_he_uniform(nn.ConvTranspose2d(
                up, up, 3, stride=2, padding=1, output_padding=1)))
            below = DenseBlock(num_layers, up + skip, c.growth_rate, c.dropout)
            self.up_blocks.append(below)
        self.classifier = _he_uniform(nn.Conv2d(below.out_channels, c.num_classes, 1))

    def _passed_up(self, block, stack):
        """What a transition up reads from the block below: its new maps, or all of them."""
        if self.config.upsample == "all":
            return stack                                 # (N, C + L k, h, w)
        return stack[:, -block.new_channels:]            # (N, L k, h, w)

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W)."""
        self.check_input_size(x.shape)
        h = self.first_conv(x)                           # (N, m0, H, W)
        skips = []
        for block, down in zip(self.down_blocks, self.transitions_down):
            h = block(h)                                 # (N, m_i, H_i, W_i): the whole stack
            skips.append(h)
            h = down(h)                                  # (N, m_i, H_i / 2, W_i / 2)
        below = self.bottleneck
        h = below(h)                                     # (N, m + L k, H / s, W / s)
        for up, block, skip in zip(self.transitions_up, self.up_blocks, reversed(skips)):
            h = up(self._passed_up(below, h))            # (N, L k, 2 h, 2 w) (or all maps)
            h = block(cat([h, skip], axis=1))            # (N, L k + m_i + L' k, 2 h, 2 w)
            below = block
        return self.classifier(h)                        # (N, num_classes, H, W)


@no_grad()
def transition_up_memory(model, x):
    """Bytes the transitions up of ``model`` read and write on a forward pass on ``x``.

    The transitions up are where the two choices of ``upsample`` differ first: reading the
    block's new maps or its whole stack, and writing as many maps at twice the resolution.
    Training keeps both until backward.

    Parameters
    ----------
    model : FCDenseNet
        Run in its current mode.
    x : ndarray or Tensor, shape (N, C, H, W)

    Returns
    -------
    dict
        ``bytes``: the total of inputs and outputs; ``per_level``: a list of ``(input shape,
        output shape, bytes)``, coarsest level first.

    Examples
    --------
    >>> import numpy as np
    >>> import edu_seg.models as models
    >>> x = np.zeros((1, 3, 64, 64), np.float32)
    >>> transition_up_memory(models.create("fc_densenet", num_classes=4), x)["bytes"]
    645120
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    seen = []
    handles = [up.register_forward_hook(lambda m, args, y: seen.append((args[0].data, y.data)))
               for up in model.transitions_up]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    levels = [(a.shape, b.shape, int(a.nbytes + b.nbytes)) for a, b in seen]
    return {"bytes": sum(n for *_, n in levels), "per_level": levels}


def peak_training_memory(model, batch):
    """Peak bytes allocated during one training step's forward, loss and backward.

    Measured with :mod:`tracemalloc`, which sees every NumPy array the step allocates: the
    activations the graph keeps for backward, the temporaries, the gradients. The parameters
    and the batch exist before the step starts and are not counted. Any model works.

    Parameters
    ----------
    model : SegmentationModel
        Put in training mode (batch norm statistics move, as in a real step).
    batch : dict
        ``image``: (N, C, H, W) float32, ``mask``: (N, H, W) int.

    Returns
    -------
    int
    """
    model.train()
    model.zero_grad()
    running = tracemalloc.is_tracing()
    if not running:
        tracemalloc.start()
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    try:
        total, _ = model.loss(model.forward_train(batch), batch)
        total.backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not running:
            tracemalloc.stop()
    model.zero_grad()
    return peak - start
