"""DenseASPP: atrous convolutions connected densely, so that their scales combine.

Yang, Yu, Zhang, Li and Yang, "DenseASPP for Semantic Segmentation in Street Scenes",
CVPR 2018.

A street scene holds a car two metres away and a car two hundred metres away: a segmenter
needs features at many scales. DeepLab's ASPP (:class:`~edu_seg.models.blocks.ASPP`) reads
the backbone map with a few atrous 3x3 convolutions IN PARALLEL, each at one rate; its
output holds a handful of scales, one per branch. DenseASPP arranges the same atrous layers
as a DenseNet block: layer ``i`` reads the concatenation of the backbone map and the outputs
of ALL the layers before it, and the module's output concatenates everything::

    x (backbone, stride 4) ──┬──────────┬──────────┬── ... ──┬──────────┐
                             │          │          │         │          │
                      [x] ─ layer 0     │          │         │          │
                       (rate r0) ─ y0 ──┤          │         │          │
                         [x, y0] ─ layer 1         │         │          │
                             (rate r1) ─ y1 ───────┤         │          │
                                [x, y0, y1] ─ layer 2 ─ y2 ──┤  ...     │
                                                                        │
    concat [x, y0, y1, y2, y3, y4] ─ dropout ─ 1x1 classifier ─ bilinear x4 ─ scores

    layer i:  BN ─ ReLU ─ 1x1 conv (reduce) ─ BN ─ ReLU ─ 3x3 conv, dilation r_i ─ dropout

Why dense? Through the connections a feature can pass through ANY subset of the layers, in
order, so the stack computes every combination of its rates: layers of rates 3 and 6 in a
row see a 19-pixel window, 3, 6 and 12 a 43-pixel one, and so on (the paper's "denser
feature pyramid"), while the deepest path through all five layers reaches the largest
window of all (:func:`receptive_field`: ``sum((k - 1) r) + 1``, 127 pixels for rates 3, 6,
12, 18, 24, against 49 for ASPP's largest branch). The 1x1 conv of each layer keeps the
growing concatenation cheap, as in DenseNet's bottleneck layers.

What dense connections do NOT change: which input pixels can be seen at all. A 3x3 tap of a
rate-``r`` layer moves by ``-r``, ``0`` or ``+r``, so any path moves by a sum of those, and
:func:`reachable_offsets` lists them: with rates 3, 6, 12, 18, 24 every reachable offset is a
multiple of 3. Inside the module, one output pixel reads a 1-in-3 grid of the backbone map
(the "gridding" of stacked atrous convolutions); the dense connections give many paths to
those pixels, not new pixels. (The backbone's own features are dense, so the model as a whole
still sees every pixel; the grid is a property of this module.)

Output stride and rates: the arithmetic behind the defaults
    The paper reads a stride-8 map of 512+ px images (64x64 or larger) with rates 3, 6, 12,
    18, 24. A model that predicts at stride ``s`` and up-samples its scores bilinearly cannot
    be sharper than its map: on Shapes 64x64, average-pooling the true one-hot masks to
    stride ``s``, up-sampling them bilinearly and taking the argmax gives 0.988 mIoU at
    stride 2, 0.947 at 4, 0.811 at 8 and 0.460 at 16. At stride 8 (an 8x8 map) even a
    perfect DenseASPP stays near 0.81, so the small version predicts at stride 4 (a 16x16
    map): its backbone dilates layer2 as well as layer3 and layer4 (stride 4 throughout,
    dilations 2, 4, 8). ``preset="paper"`` keeps stride 8.

    The rates scale with the map. The paper's 3, 6, 12, 18, 24 are ``3 x (1, 2, 4, 6, 8)``
    on a map of 64 or more pixels; the default keeps the ratios ``1 : 2 : 4 : 6 : 8`` with a
    base rate of 1 instead of 3 on the 16-pixel map, i.e. rates 1, 2, 4, 6, 8:

    =========================  ==========================  ==========================
    property                   paper (64 px map)           default (16 px map)
    =========================  ==========================  ==========================
    rates                      3, 6, 12, 18, 24            1, 2, 4, 6, 8
    largest rate / map side    24 / 64 = 0.38              8 / 16 = 0.5
    receptive field            127 px, 2.0 map sides       43 px, 2.7 map sides
    reachable offsets          multiples of 3 only         every integer in -21..21
    =========================  ==========================  ==========================

    What is kept is the property that every rate is a multiple of one base rate, in the
    paper's ratios; what changes is the base. The map is 4 times smaller, so the faithful
    base would be 3/4, and the nearest integer is 1 (a base of 3 would give rates up to 24
    on a 16-pixel map, whose largest taps would all fall in the padding). With a base of 1
    the rate-1 layer fills the gaps between the others' taps, so the small version has no
    gridding; the ``"paper"`` preset keeps the paper's rates, 1-in-3 grid included.

What this small version keeps from the paper
    - a dilated backbone (the paper's DenseNet at output stride 8) read at its last stage;
    - five atrous layers with rates in the paper's ratios, each ``BN-ReLU-1x1 conv`` (reduce)
      then ``BN-ReLU-3x3 atrous conv``, then channel dropout 0.1, as in the authors' code;
    - dense connectivity: layer ``i`` reads ``cat(x, y_0, ..., y_{i-1})``; the classifier
      reads ``cat(x, y_0, ..., y_4)`` through dropout 0.1 and a 1x1 conv; bilinear
      up-sampling of the scores (x4 here, x8 in the paper).

What it changes
    - backbone: a ResNet (``resnet_tiny``'s design, one basic block per stage) at widths
      32-32-64-128, trained from scratch, instead of an ImageNet-pretrained
      DenseNet-121/161/201: the DenseNets here cannot be dilated (their output stride is
      always 32). Why these widths: at output stride 4 the stem and layer1, which run at
      strides 2 and 4, decide how much detail the stride-4 map can hold. With
      :mod:`~edu_seg.models.pspnet`'s 16-32-64-128 (a 16-channel stem), trained with the
      zoo's recipe, DenseASPP reached 0.85 mIoU on Shapes and EncNet 0.84; a 32-channel
      stem and layer1 (32-32-64-128) gave 0.89 for both. :mod:`~edu_seg.models.encnet` uses
      the same backbone, so the two context modules are compared on equal features.
      ``preset="paper"`` uses torchvision's ResNet-50 at stride 8;
    - output stride 4 and rates 1, 2, 4, 6, 8 (above);
    - widths: each layer reduces to 64 channels and adds 32 (the authors' DenseNet-121
      setting: 128 and 64, kept by ``preset="paper"``);
    - the first layer starts with BN like the others: the authors' code skips it because
      their DenseNet ends with a batch norm, while a ResNet ends with ``ReLU(x + F(x))``,
      which is not normalised.

Ablation ``preset="no_dense"``: the same five layers in a plain CASCADE, layer ``i`` reading
only ``y_{i-1}`` (layer 0 reads ``x``), with the classifier still reading
``cat(x, y_0, ..., y_4)``. It is the fair comparison because it changes one thing, the input
of each atrous layer: the layers, rates, widths and classifier are the same (only the 1x1
convs shrink, reading ``growth`` channels instead of the concatenation), so the difference
measures what the dense inputs add. The cascade reaches the same offsets and has the same
receptive field (a layer's centre tap passes its input through, so :func:`reachable_offsets`
is the same set), so what it loses is the rest of the dense design: the later layers no
longer read the backbone's features themselves, and a feature can no longer combine only
some of the rates (the "denser scale sampling" the paper argues for). A parallel
(ASPP-like) ablation would instead change the field of view as well: every layer would see
the backbone map through one atrous conv only (at most 17 pixels here instead of 43), and
the difference would mix the loss of the dense connections with the loss of depth.
Measured with the zoo's recipe (300 steps) on the Shapes ``"scale"`` variant: DenseASPP
0.70 mIoU, the cascade 0.67.

>>> import edu_seg.models as models
>>> model = models.create("denseaspp", num_classes=4)
>>> [layer.conv.dilation[0] for layer in model.aspp.layers]
[1, 2, 4, 6, 8]
>>> receptive_field((3, 6, 12, 18, 24))
127
"""
import dataclasses
from typing import Literal, Optional

from .. import nn
from ..autograd import cat
from ..ops.resample import interpolate
from . import register
from .backbones import create_backbone
from .backbones.resnet import width_overrides
from .base import SegmentationModel

__all__ = ["DenseASPPConfig", "DenseASPPNet", "DenseASPP", "AtrousLayer", "receptive_field",
           "reachable_offsets"]

def reachable_offsets(rates, kernel_size=3):
    """The 1-D offsets (input minus output position) that a stack of atrous layers can read.

    A ``k``-tap atrous conv of rate ``r`` reads its input at offsets ``j r`` for
    ``j = -(k-1)/2 .. (k-1)/2`` (for ``k = 3``: ``-r``, ``0``, ``+r``). A path through the
    dense stack visits some of the layers in order and each moves by one of its taps; a layer
    off the path moves by 0, which is also its centre tap. So the reachable offsets are all
    the sums ``sum_i j_i r_i`` with every ``j_i`` in the tap range, the same set for a dense
    stack, a cascade or any subset of paths through it. In 2-D a tap moves rows and columns
    independently, so the reachable 2-D offsets are the pairs ``(a, b)`` of reachable 1-D
    offsets.

    Parameters
    ----------
    rates : sequence of int
        The dilation rates, one per layer.
    kernel_size : int
        Odd kernel size ``k`` of every layer.

    Returns
    -------
    list of int
        Sorted, without repeats.

    Examples
    --------
    >>> reachable_offsets((3, 6))
    [-9, -6, -3, 0, 3, 6, 9]
    >>> all(o % 3 == 0 for o in reachable_offsets((3, 6, 12, 18, 24)))   # the 1-in-3 grid
    True
    >>> reachable_offsets((1, 2, 4, 6, 8)) == list(range(-21, 22))        # no gaps
    True
    """
    half = (kernel_size - 1) // 2
    taps = range(-half, half + 1)
    offsets = {0}
    for r in rates:
        offsets = {o + j * r for o in offsets for j in taps}
    return sorted(offsets)


def receptive_field(rates, kernel_size=3):
    """The largest receptive field of a stack of atrous layers: its deepest path's window.

    One ``k x k`` conv of rate ``r`` spans ``(k - 1) r + 1`` pixels per side (the paper's
    ``R = (d - 1)(K - 1) + K``); stacking two windows ``R1`` and ``R2`` spans ``R1 + R2 - 1``.
    The deepest path through the dense stack passes every layer, so it spans
    ``sum((k - 1) r) + 1``: 127 pixels for the paper's rates 3, 6, 12, 18, 24. This is the
    width of the whole range of :func:`reachable_offsets`; only a subset of the pixels in it
    is actually read when the rates share a factor.

    Parameters
    ----------
    rates : sequence of int
    kernel_size : int

    Returns
    -------
    int

    Examples
    --------
    >>> receptive_field((3, 6, 12, 18, 24)), receptive_field((1, 2, 4, 6, 8))
    (127, 43)
    """
    return sum((kernel_size - 1) * r for r in rates) + 1


@dataclasses.dataclass
class DenseASPPConfig:
    """Hyper-parameters of :class:`DenseASPPNet` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    backbone : str
        A ResNet of :func:`edu_seg.models.create_backbone`, dilated to ``output_stride``.
    backbone_widths : 4 ints or None
        The ResNet's stage widths, replacing the preset's; None keeps them (ResNet-50's
        64-128-256-512 in ``"paper"``).
    output_stride : {4, 8}
        Stride of the map DenseASPP reads and the classifier predicts on (the paper: 8; the
        default 4, see the module docstring).
    rates : tuple of int
        One atrous layer per rate, in order (the paper: 3, 6, 12, 18, 24).
    reduce_channels : int
        Channels of each layer's 1x1 conv (the authors' DenseNet-121 setting: 128).
    growth : int
        Channels each layer adds to the concatenation (the authors' code: 64).
    dense : bool
        True: layer i reads the backbone map and every earlier layer's output (DenseASPP).
        False: a plain cascade, layer i reads only layer i-1's output (the ``"no_dense"``
        ablation); the classifier reads the same concatenation either way.
    dropout : float
        Channel dropout after each atrous layer and before the classifier (the authors'
        code: 0.1 and 0.1).
    """

    num_classes: int
    in_channels: int = 3
    backbone: Literal["resnet_tiny", "resnet_bottleneck_tiny", "resnet18",
                      "resnet50"] = "resnet_tiny"
    backbone_widths: Optional[tuple[int, int, int, int]] = (32, 32, 64, 128)
    output_stride: Literal[4, 8] = 4
    rates: tuple[int, ...] = (1, 2, 4, 6, 8)
    reduce_channels: int = 64
    growth: int = 32
    dense: bool = True
    dropout: float = dataclasses.field(default=0.1, metadata={"min": 0.0, "max": 1.0})

    def __post_init__(self):
        if not self.rates:
            raise ValueError("DenseASPPConfig: rates=() gives a module without atrous layers; "
                             "give at least one rate, e.g. rates=(1, 2, 4, 6, 8)")


class AtrousLayer(nn.Module):
    """One layer of DenseASPP: ``BN-ReLU-1x1 conv -> BN-ReLU-3x3 atrous conv -> dropout``.

    The pre-activation order of DenseNet: the layer normalises whatever it is given (the
    backbone map and the raw outputs of earlier layers, concatenated), so its own output is
    a raw conv output that later layers and the classifier normalise or weigh themselves.

    Parameters
    ----------
    in_channels : int
    reduce_channels : int
        Output of the 1x1 conv: keeps the 3x3 conv's cost fixed however long the
        concatenation it reads grows.
    growth : int
        Output channels.
    rate : int
        Dilation of the 3x3 conv (padding = rate keeps the map's size).
    dropout : float

    Shapes: ``(N, in_channels, h, w) -> (N, growth, h, w)``.
    """

    def __init__(self, in_channels, reduce_channels, growth, rate, dropout=0.0):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.reduce = nn.Conv2d(in_channels, reduce_channels, 1, bias=False)   # BN follows
        self.norm2 = nn.BatchNorm2d(reduce_channels)
        self.relu2 = nn.ReLU()
        self.conv = nn.Conv2d(reduce_channels, growth, 3, padding=rate, dilation=rate)
        self.dropout = nn.Dropout2d(dropout)
        # He init: each conv reads the output of a ReLU.
        nn.init.kaiming_normal_(self.reduce.weight, nonlinearity="relu")
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")

    def forward(self, x):
        """x: (N, in_channels, h, w) -> (N, growth, h, w)."""
        h = self.reduce(self.relu1(self.norm1(x)))       # (N, reduce_channels, h, w)
        h = self.conv(self.relu2(self.norm2(h)))         # (N, growth, h, w)
        return self.dropout(h)


class DenseASPP(nn.Module):
    """The densely connected stack of atrous layers (or, ``dense=False``, their cascade).

    Parameters
    ----------
    in_channels : int
    rates : sequence of int
        One :class:`AtrousLayer` per rate, in order.
    reduce_channels, growth : int
    dense : bool
        Layer i reads ``cat(x, y_0, ..., y_{i-1})`` (True) or ``y_{i-1}`` (False; layer 0
        reads ``x``).
    dropout : float

    Attributes
    ----------
    layers : nn.ModuleList
    out_channels : int
        ``in_channels + len(rates) * growth``.

    Shapes: ``x: (N, in_channels, h, w) -> cat(x, y_0, ..., y_L-1): (N, out_channels, h, w)``.
    """

    def __init__(self, in_channels, rates, reduce_channels, growth, dense=True, dropout=0.0):
        super().__init__()
        self.rates, self.dense = tuple(rates), dense
        widths = [in_channels + i * growth if dense else (growth if i else in_channels)
                  for i in range(len(self.rates))]
        self.layers = nn.ModuleList([AtrousLayer(c, reduce_channels, growth, r, dropout)
                                     for c, r in zip(widths, self.rates)])
        self.out_channels = in_channels + len(self.rates) * growth

    def forward(self, x):
        """x: (N, in_channels, h, w) -> (N, out_channels, h, w)."""
        features = [x]
        for layer in self.layers:
            if self.dense:                                # (N, in_channels + i growth, h, w)
                inputs = cat(features, axis=1) if len(features) > 1 else x
            else:                                         # the previous output only
                inputs = features[-1]
            features.append(layer(inputs))                # + (N, growth, h, w)
        return cat(features, axis=1)                      # (N, out_channels, h, w)


@register("denseaspp")
class DenseASPPNet(SegmentationModel):
    """DenseASPP (Yang et al. 2018): a dilated backbone, densely connected atrous layers,
    a 1x1 classifier on their concatenation.

    Parameters
    ----------
    config : DenseASPPConfig

    Attributes
    ----------
    backbone : ResNet
        Dilated to ``output_stride``.
    aspp : DenseASPP
    classifier : nn.Sequential
        ``Dropout2d -> 1x1 conv`` to the class scores.

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``; H and W must be
    multiples of ``output_stride``.
    """

    config_class = DenseASPPConfig
    presets = {"paper": {"backbone": "resnet50", "backbone_widths": None, "output_stride": 8,
                         "rates": (3, 6, 12, 18, 24), "reduce_channels": 128, "growth": 64},
               "no_dense": {"dense": False}}

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.output_stride = c.output_stride
        self.backbone = create_backbone(c.backbone, in_channels=c.in_channels, num_classes=None,
                                        output_stride=c.output_stride,
                                        **width_overrides(c.backbone_widths))
        self.aspp = DenseASPP(self.backbone.stage_channels[-1], c.rates, c.reduce_channels,
                              c.growth, dense=c.dense, dropout=c.dropout)
        self.classifier = nn.Sequential(nn.Dropout2d(c.dropout),
                                        nn.Conv2d(self.aspp.out_channels, c.num_classes, 1))

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W)."""
        self.check_input_size(x.shape)
        s = self.output_stride
        h = self.backbone.stage_features(x)[-1]           # (N, C, H/s, W/s)
        h = self.aspp(h)                                  # (N, C + 5 growth, H/s, W/s)
        scores = self.classifier(h)                       # (N, K, H/s, W/s)
        return interpolate(scores, scale_factor=s, mode="bilinear",
                           align_corners=False)           # (N, K, H, W)
