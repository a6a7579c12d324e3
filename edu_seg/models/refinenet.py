"""RefineNet: a cascade of refinement blocks that climbs a ResNet from 1/32 back to 1/4.

Lin, Milan, Shen and Reid, "RefineNet: Multi-Path Refinement Networks for High-Resolution
Semantic Segmentation", CVPR 2017 (arXiv:1611.06612).

DeepLab keeps a fine map by dilating the backbone, which costs memory and compute at every
late layer. RefineNet leaves the ResNet as it is (four stages at strides 4, 8, 16, 32) and
climbs back up with a CASCADE of *RefineNet blocks*, starting from the coarsest map: the
coarse map knows what the objects are, each finer map adds where their edges are::

    image ─ ResNet ─┬─ layer4 (1/32) ─ RefineNet-4 ─┐
                    ├─ layer3 (1/16) ───────────── RefineNet-3 ─┐
                    ├─ layer2 (1/8) ────────────────────────── RefineNet-2 ─┐
                    └─ layer1 (1/4) ───────────────────────────────────── RefineNet-1
                                                                            │ (1/4)
                                         scores ─ bilinear x4 ─ 1x1 ─ RCU ─ RCU

One RefineNet block (here RefineNet-3: a fine backbone path and the coarser block's output)::

    layer3 ────── 3x3 ─ RCU ─ RCU ─ 3x3 ─────────┐
    RefineNet-4 ─ 3x3 ─ RCU ─ RCU ─ 3x3 ─ up x2 ─(+)─ CRP ─ RCU ─ out
    └─────── adaptation ────────┘ └─── fusion ────┘

    CRP:  fused ─ ReLU ─┬───────────────────────────────(+)─(+)─
                        └─ pool 5x5 ─ 3x3 ─┬─────────────┘   │
                                           └─ pool 5x5 ─ 3x3 ┘

    RCU(x) = x + conv3x3(relu(conv3x3(relu(x))))        (Residual Conv Unit)

1. **Adaptation.** Each path gets a 3x3 conv to the block's width, then two Residual Conv
   Units in series (the paper's RCU is a ResNet block without batch norm), which adapt the
   backbone's features (learned for classification) to segmentation.
2. **Multi-resolution fusion.** A 3x3 conv per path (it also rescales the paths against each
   other), every path up-sampled bilinearly to the FINEST path's resolution, and SUMMED. A
   block with one path (RefineNet-4) has nothing to fuse, and the paper passes that path
   through unchanged.
3. **Chained residual pooling (CRP).** ``x = relu(fused)``, then a CHAIN of pooling blocks,
   each a 5x5 max-pool of stride 1 followed by a 3x3 conv, each taking the PREVIOUS block's
   output; every block's output is added onto ``x``. Block ``k`` has pooled ``k`` times, so
   the sum mixes windows of 5, 9, ... pixels (wider still with the 3x3 convs between): large
   regions of background context, weighted by learned convs, at the full resolution of the
   block (stride 1 keeps it).
4. **Output RCU.** One more RCU. RefineNet-1's output gets two more before the classifier,
   so that every stage of the cascade ends in the same three RCUs.

Every connection is a sum with an identity path (inside the RCUs and CRP, and from the
backbone through each block), so the gradient reaches the backbone directly: the paper's
short- and long-range residual connections.

What this small version keeps from the paper
    - the cascade from the coarsest map, RefineNet-4 fed by layer4 ALONE and RefineNet-k by
      layer-k and RefineNet-(k+1); blocks of one width per block (the paper: 512 for
      RefineNet-4, 256 for the others; ``preset="paper"``);
    - two RCUs in series per path; fusion by 3x3 convs, bilinear up-sampling to the finest
      path and summation; a single path passes the fusion as it is;
    - CRP with a ReLU first and two chained blocks of 5x5/stride-1 max-pool + 3x3 conv
      (Figure 2(d) of the paper; later releases of the code chain four, ``pool_blocks=4``);
    - one output RCU per block, two extra RCUs on the stride-4 map, a 1x1 classifier and
      bilinear up-sampling x4 to the input size.

What it changes
    - ``resnet_tiny`` (widths 8-16-32-64) trained from scratch instead of an ImageNet-
      pretrained ResNet-101/152, and block widths 64 (RefineNet-4) and 32 instead of 512 and
      256; ``preset="paper"`` builds ResNet-50 with the paper's widths;
    - the 3x3 dimension-reduction conv that adapts each backbone map to the block's width is
      applied to the incoming coarser block's output too, so all paths of a block (and their
      RCUs) share one width; the paper's fusion conv then only maps width to width;
    - the pooling stays 5x5 at the toy size. On a 64x64 image RefineNet-1's map is 16x16, and
      two chained blocks (pool 5, conv 3, pool 5, conv 3) reach 13x13 of it, 52 input pixels:
      most of the image, which is what CRP is for. Unchained, every block would reach 7x7;
    - batch norm after every conv of the refinement blocks (``batch_norm=True``), where the
      paper removes it from the RCU (it fine-tunes an ImageNet-pretrained ResNet). Trained
      from scratch with Adam at lr 3e-3, the same blocks without batch norm reach about
      0.76 mIoU on Shapes in 300 steps, with it about 0.85 (``preset="paper"`` has none);
    - optional channel dropout before the classifier (``dropout``, off by default; the
      paper states no rate).

The ablation ``preset="unchained"`` (``chained=False``) feeds every pooling block the same
input ``x``, so all blocks see one 5x5 window and no larger context is gathered. It is one
variable away from the real thing (the loop pools ``x`` instead of ``p``), an easy mistake.

>>> import edu_seg.models as models
>>> model = models.create("refinenet", num_classes=4)
>>> model.refinenet1.crp.chained, len(model.refinenet1.crp.blocks)
(True, 2)
"""
import dataclasses

from .. import nn
from ..ops.resample import interpolate
from . import register
from .backbones import create_backbone
from .base import SegmentationModel

__all__ = ["RefineNet", "RefineNetConfig", "RefineNetBlock", "ResidualConvUnit",
           "MultiResolutionFusion", "ChainedResidualPooling", "PoolBlock", "conv3x3"]


@dataclasses.dataclass
class RefineNetConfig:
    """Hyper-parameters of :class:`RefineNet` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    backbone : str
        A name of :func:`edu_seg.models.create_backbone`, built at output stride 32; its
        maps at strides 4, 8, 16, 32 feed the cascade (a ResNet's layer1..layer4, as in the
        paper: ``"resnet_tiny"``, ``"resnet18"``, ``"resnet50"``).
    widths : 4 ints
        Channels of RefineNet-4, -3, -2, -1, in cascade order (the paper: 512, 256, 256, 256).
    pool_blocks : int
        Pooling blocks in each chained residual pooling (the paper's Figure 2: 2).
    chained : bool
        True: each pooling block pools the previous block's output (the paper). False: each
        pools the block's input (the ``"unchained"`` ablation).
    batch_norm : bool
        Batch norm after every conv of the refinement blocks (conv -> BN; see the module
        docstring). The paper has none (``preset="paper"``).
    dropout : float
        Channel dropout before the 1x1 classifier (0: none).
    """

    num_classes: int
    in_channels: int = 3
    backbone: str = "resnet_tiny"
    widths: tuple[int, int, int, int] = (64, 32, 32, 32)
    pool_blocks: int = 2
    chained: bool = True
    batch_norm: bool = True
    dropout: float = dataclasses.field(default=0.0, metadata={"min": 0.0, "max": 1.0})


def conv3x3(in_channels, out_channels, batch_norm):
    """A 3x3 conv that keeps H and W, followed by batch norm if ``batch_norm``.

    The conv has a bias only without batch norm (the norm's shift would cancel it).
    """
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels)) if batch_norm else conv


class ResidualConvUnit(nn.Module):
    """RCU: ``x + conv2(relu(conv1(relu(x))))``, a ResNet block with its batch norm removed
    (``batch_norm=True`` puts it back after each conv).

    Shapes: ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, channels, batch_norm=False):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = conv3x3(channels, channels, batch_norm)
        self.conv2 = conv3x3(channels, channels, batch_norm)

    def forward(self, x):
        """x: (N, C, H, W) -> (N, C, H, W)."""
        return x + self.conv2(self.relu(self.conv1(self.relu(x))))


class MultiResolutionFusion(nn.Module):
    """A 3x3 conv per path, every path up-sampled to the finest one's size, then summed.

    Shapes: ``paths[i]: (N, C, H_i, W_i) -> (N, C, max H_i, max W_i)``.
    """

    def __init__(self, channels, num_paths, batch_norm=False):
        super().__init__()
        self.convs = nn.ModuleList([conv3x3(channels, channels, batch_norm)
                                    for _ in range(num_paths)])

    def forward(self, paths):
        """paths: a list of (N, C, H_i, W_i) -> (N, C, H, W) at the finest H_i, W_i."""
        size = (max(p.shape[-2] for p in paths), max(p.shape[-1] for p in paths))
        fused = None
        for conv, path in zip(self.convs, paths):
            y = conv(path)                                   # (N, C, H_i, W_i)
            if y.shape[-2:] != size:
                y = interpolate(y, size=size, mode="bilinear",
                                align_corners=False)         # (N, C, H, W)
            fused = y if fused is None else fused + y
        return fused


class PoolBlock(nn.Module):
    """One block of the chained residual pooling: 5x5 max-pool (stride 1) then a 3x3 conv.

    Stride 1 and padding 2 keep H and W, so the block can be chained and summed.
    """

    def __init__(self, channels, batch_norm=False):
        super().__init__()
        self.pool = nn.MaxPool2d(5, stride=1, padding=2)
        self.conv = conv3x3(channels, channels, batch_norm)

    def forward(self, x):
        """x: (N, C, H, W) -> (N, C, H, W)."""
        return self.conv(self.pool(x))


class ChainedResidualPooling(nn.Module):
    """CRP: ``x = relu(x)``; each pooling block pools the previous one's output; all summed.

    ::

        out = x;  p = x
        for block in blocks:  p = block(p);  out = out + p      (chained, the paper)
        for block in blocks:  out = out + block(x)              (chained=False, the ablation)

    The ReLU first makes the pooled maxima non-negative responses (the paper finds it
    important for the pooling, and it makes training less sensitive to the learning rate).

    Shapes: ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, channels, num_blocks, chained=True, batch_norm=False):
        super().__init__()
        self.relu = nn.ReLU()
        self.blocks = nn.ModuleList([PoolBlock(channels, batch_norm)
                                     for _ in range(num_blocks)])
        self.chained = chained

    def forward(self, x):
        """x: (N, C, H, W) -> (N, C, H, W)."""
        x = self.relu(x)
        out, p = x, x
        for block in self.blocks:
            # Chained: block k pools what block k-1 produced, a window k times larger.
            p = block(p if self.chained else x)
            out = out + p
        return out


class RefineNetBlock(nn.Module):
    """One RefineNet block: adapt each path, fuse them at the finest resolution, pool, RCU.

    Parameters
    ----------
    in_channels : list of int
        Channels of each input path: the backbone map first, then the coarser block's output
        (RefineNet-4 has only the backbone map).
    width : int
        Channels of every path after its first conv, and of the output.
    pool_blocks : int
    chained : bool
    batch_norm : bool
        Batch norm after every conv of the block (the paper: False).

    Shapes
    ------
    ``paths[i]: (N, in_channels[i], H_i, W_i) -> (N, width, H, W)``, H and W the largest of
    the H_i and W_i (the backbone map's).
    """

    def __init__(self, in_channels, width, pool_blocks, chained, batch_norm=False):
        super().__init__()
        bn = batch_norm
        self.reduce = nn.ModuleList([conv3x3(c, width, bn) for c in in_channels])
        self.rcus = nn.ModuleList([nn.Sequential(ResidualConvUnit(width, bn),
                                                 ResidualConvUnit(width, bn))
                                   for _ in in_channels])
        # A single path has nothing to fuse: the paper passes it through unchanged.
        self.fusion = MultiResolutionFusion(width, len(in_channels), bn) \
            if len(in_channels) > 1 else None
        self.crp = ChainedResidualPooling(width, pool_blocks, chained, bn)
        self.out_rcu = ResidualConvUnit(width, bn)

    def forward(self, *paths):
        """paths: (N, in_channels[i], H_i, W_i) each -> (N, width, H, W)."""
        paths = [rcus(reduce(p)) for reduce, rcus, p in
                 zip(self.reduce, self.rcus, paths)]        # (N, width, H_i, W_i) each
        h = paths[0] if self.fusion is None else self.fusion(paths)  # (N, width, H, W)
        return self.out_rcu(self.crp(h))                     # (N, width, H, W)


@register("refinenet")
class RefineNet(SegmentationModel):
    """RefineNet (Lin et al. 2017): a cascade of RefineNet blocks from layer4 down to layer1.

    Parameters
    ----------
    config : RefineNetConfig

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``; H and W must be
    multiples of 32.
    """

    config_class = RefineNetConfig
    presets = {"paper": {"backbone": "resnet50", "widths": (512, 256, 256, 256),
                         "pool_blocks": 2, "batch_norm": False},
               "unchained": {"chained": False}}
    output_stride = 32

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.backbone = create_backbone(c.backbone, in_channels=c.in_channels,
                                        num_classes=None)
        ch = self.backbone.channels                          # {stride: channels}
        w4, w3, w2, w1 = c.widths
        block = dict(pool_blocks=c.pool_blocks, chained=c.chained, batch_norm=c.batch_norm)
        self.refinenet4 = RefineNetBlock([ch[32]], w4, **block)
        self.refinenet3 = RefineNetBlock([ch[16], w4], w3, **block)
        self.refinenet2 = RefineNetBlock([ch[8], w3], w2, **block)
        self.refinenet1 = RefineNetBlock([ch[4], w2], w1, **block)
        self.final_rcus = nn.Sequential(ResidualConvUnit(w1, c.batch_norm),
                                        ResidualConvUnit(w1, c.batch_norm))
        self.dropout = nn.Dropout2d(c.dropout)
        self.classifier = nn.Conv2d(w1, c.num_classes, 1)

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W)."""
        self.check_input_size(x.shape)
        f = self.backbone.features(x)                        # {s: (N, C_s, H/s, W/s)}
        h = self.refinenet4(f[32])                           # (N, w4, H/32, W/32)
        h = self.refinenet3(f[16], h)                        # (N, w3, H/16, W/16)
        h = self.refinenet2(f[8], h)                         # (N, w2, H/8, W/8)
        h = self.refinenet1(f[4], h)                         # (N, w1, H/4, W/4)
        scores = self.classifier(self.dropout(self.final_rcus(h)))  # (N, K, H/4, W/4)
        return interpolate(scores, scale_factor=4, mode="bilinear",
                           align_corners=False)              # (N, K, H, W)
