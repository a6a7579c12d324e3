"""GCN: Global Convolutional Network, large separable kernels for classification, a residual
Boundary Refinement block for localisation.

Peng, Zhang, Yu, Luo and Sun, "Large Kernel Matters -- Improve Semantic Segmentation by Global
Convolutional Network", CVPR 2017 (arXiv:1703.02719).

Segmentation asks two things of every pixel: WHAT it is (classification, which wants a view
of the whole object and its surroundings) and WHERE the class boundary runs (localisation,
which wants full resolution). A stack of 3x3 convolutions is good at the second and poor at
the first: its theoretical receptive field may be large, but the part of the image that really
moves an output is a small blob around the pixel. GCN's answer is to classify with a kernel
as large as the feature map itself: a ``k x k`` convolution straight from features to class
scores, so that every score sees the whole (or nearly the whole) map.

A dense ``k x k`` kernel costs ``k²`` weights per channel pair. The Global Convolution module
approximates it by two separable branches, summed, with NO nonlinearity anywhere::

          ┌─ conv k x 1 ── conv 1 x k ─┐
    x ────┤                            + ──── scores (K channels, K = number of classes)
          └─ conv 1 x k ── conv k x 1 ─┘

A ``k x 1`` conv followed by a ``1 x k`` conv is ONE linear map whose window is the full
``k x k`` square (every output pixel still depends on a ``k x k`` patch of the input), for
``2k`` weights per channel pair instead of ``k²``; the second branch is the same product in
the other order, and their sum is a richer ``k x k`` kernel than either alone. A ReLU
between the two convs would make the module something else: a small two-layer network whose
output is no longer one large-kernel convolution of its input.

Because the scores come out of large, smooth kernels, their boundaries are blurry. The
Boundary Refinement block (BR) sharpens them with a residual correction on the score maps::

    S' = S + conv3x3(ReLU(conv3x3(S)))

The network is a ResNet with one GCN + BR on each of its four stages, fused top-down like
FCN: the coarser score map is up-sampled x2 by a LEARNED transposed convolution ("Deconv",
initialised to bilinear), added to the finer one, and refined by another BR::

    image ─ ResNet ┬─ res-5 (1/32) ─ GCN ─ BR ─ Deconv ─┐
                   ├─ res-4 (1/16) ─ GCN ─ BR ──────────+ ─ BR ─ Deconv ─┐
                   ├─ res-3 (1/8)  ─ GCN ─ BR ───────────────────────────+ ─ BR ─ Deconv ─┐
                   └─ res-2 (1/4)  ─ GCN ─ BR ────────────────────────────────────────────+ ─ BR ─┐
                                                                                                  │
    scores (N, K, H, W) ─ BR ─ Deconv ─ BR ─ Deconv ──────────────────────────────────────────────┘
                                         (1/2)

Read it from the top right: each ``Deconv`` doubles the resolution of the map above it and
``+`` adds it to the next finer stage's scores; after res-2 (1/4) two more ``Deconv`` + BR
steps return to the input's size.

How large is "large" here? (the arithmetic behind the default ``kernel_size``)
    A ``k x k`` window with "same" padding ``(k - 1)/2`` centred on a pixel of an
    ``n``-pixel map covers the WHOLE map from every pixel when ``(k - 1)/2 >= n - 1``, i.e.
    ``k >= 2n - 1``. The paper's ``k = 15`` on res-5 of a 512x512 input, a map 512/32 = 16
    pixels wide, is a window as large as the map: every score of the deepest, most semantic
    features sees (nearly) the whole image. The same 15 on the finer maps of that input (32,
    64, 128 pixels on res-4, res-3, res-2) spans half, a quarter, an eighth of them. A 64x64
    input gives maps of 4 and 2 pixels on res-4 and res-5, and 16 and 8 on res-2 and res-3;
    the default makes the two deep stages global and keeps the shallow ones local:

    ======  ======  ====  ==  ===========================  =============================
    stage   stride  map   k   one score sees               k = 15 at 512x512 sees
    ======  ======  ====  ==  ===========================  =============================
    res-2   4       16    3   3/16 of a row                15/128 of a row
    res-3   8       8     3   3/8 of a row                 15/64
    res-4   16      4     7   the whole map (7 = 2·4 - 1)  15/32, about half
    res-5   32      2     3   the whole map (3 = 2·2 - 1)  15/16, about all of it
    ======  ======  ====  ==  ===========================  =============================

    So on every stage a score sees at least the share of its map that the paper's kernel
    sees, and the whole map on the two stages whose features say WHAT is there. Why not a
    map-sized kernel on res-2 and res-3 as well? A GCN is LINEAR: a window as large as the
    map on shallow features (edges and textures after a few convs) adds the features of
    every object in the image into every pixel's score, and nothing can gate them. Trained
    with the zoo's recipe, ``kernel_size=(15, 15, 7, 3)`` (map-sized on every stage) scored
    0.42 mIoU on the Shapes "context" variant against 0.67 for the default.

    The ablation ``preset="k3"`` uses ``k = 3`` everywhere (what many re-implementations
    ship). It differs from the default on res-4 only: there a score sees 3x3 of the 4x4 map
    instead of all of it (on res-5, 3 already spans the 2x2 map). Weights of res-4's GCN
    with ResNet-18 (C_in = 256 channels in, K = 4 classes out, ``k = 7``):
    ``2 · (7·256·4 + 7·4·4) = 14560``, where a dense 7x7 kernel needs ``7·7·256·4 = 50176``.

What this small version keeps from the paper
    - the Global Convolution module exactly: two branches ``(k x 1 then 1 x k) + (1 x k then
      k x 1)``, summed, no nonlinearity and no normalisation, ``K`` channels out (and in
      the middle of each branch);
    - a ResNet backbone read at res-2 .. res-5, with one GCN + BR per stage;
    - kernels as large as the map where the features are semantic (the table above);
    - the Boundary Refinement block ``S + conv(ReLU(conv(S)))`` on every score map: after
      each GCN, after each fusion, and after each of the last two up-samplings;
    - top-down fusion by SUMMING score maps, up-sampled by learned transposed convolutions
      (kernel 4, stride 2, padding 1, initialised to bilinear interpolation, as FCN's
      :func:`~edu_seg.models.fcn.bilinear_upsampling`), the last two of them bringing the
      stride-4 map back to the input resolution (no fixed bilinear resize anywhere).

What it changes
    - ResNet-18 (torchvision's layout) trained from scratch, instead of ImageNet-pretrained
      ResNet-152 (``preset="paper"`` builds a ResNet-50 with ``k = 15`` on every stage).
      Not the tiny ResNet: its stem reaches stride 4 through one 7x7 conv of 8 channels and
      a max-pool, and a decoder that works on ``K`` score maps cannot add back what the
      backbone lost (about 0.4-0.5 mIoU on Shapes in 300 steps, against 0.89 for ResNet-18);
    - one ``k`` per stage (above) instead of one ``k`` for the whole network: the maps here
      are 16 down to 2 pixels wide. The table holds for 64x64 inputs; on larger inputs the
      same kernels are relatively smaller;
    - no "ResNet-GCN" backbone (the paper also replaces the ResNet blocks by GCN-like ones
      for ImageNet pre-training);
    - ``boundary_refinement=False`` (``preset="no_br"``) removes every BR block, the
      paper's ablation without boundary refinement.

>>> import edu_seg.models as models
>>> model = models.create("gcn", num_classes=4)
>>> [model.gcn[name].kernel_size for name in ("res2", "res3", "res4", "res5")]
[3, 3, 7, 3]
"""
import dataclasses
from typing import Literal

from .. import nn
from . import register
from .backbones import create_backbone
from .base import SegmentationModel
from .config import validate_config
from .fcn import bilinear_upsampling

__all__ = ["GCNConfig", "GCN", "GlobalConvolution", "BoundaryRefinement", "STAGES"]

#: The paper's names of the ResNet stages the score maps are read from, and their strides.
STAGES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


@dataclasses.dataclass
class GCNConfig:
    """Hyper-parameters of :class:`GCN` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    backbone : str
        A ResNet of :func:`edu_seg.models.create_backbone` (the paper's family), read at
        strides 4, 8, 16 and 32 (res-2 .. res-5).
    kernel_size : int or 4 odd ints
        ``k`` of the Global Convolution on res-2, res-3, res-4, res-5 (an int means the same
        ``k`` on all four). Odd, so that "same" padding ``(k - 1)/2`` keeps the map's size.
        The default ``(3, 3, 7, 3)`` makes every score of res-4 and res-5 see the whole map
        of a 64x64 input (``k = 2n - 1`` for their 4 and 2 pixel maps) and keeps res-2 and
        res-3 local (see the module docstring); the paper: 15.
    boundary_refinement : bool
        Put a Boundary Refinement block after every GCN, fusion and up-sampling (the paper);
        False is the paper's ablation without it.
    """

    num_classes: int
    in_channels: int = 3
    backbone: Literal["resnet18", "resnet50", "resnet_tiny",
                      "resnet_bottleneck_tiny"] = "resnet18"
    kernel_size: tuple[int, ...] = (3, 3, 7, 3)
    boundary_refinement: bool = True

    def __post_init__(self):
        k = self.kernel_size
        if isinstance(k, int) and not isinstance(k, bool):
            self.kernel_size = (k,) * len(STAGES)          # one k for every stage
        validate_config(self)          # types first, so the rules below compare valid values
        if len(self.kernel_size) != len(STAGES) or any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"GCNConfig: kernel_size must be one odd int or {len(STAGES)} "
                             f"odd ints (res2, res3, res4, res5), got {self.kernel_size!r}; "
                             f"an odd k lets 'same' padding (k - 1)/2 keep the map's size")


class GlobalConvolution(nn.Module):
    """The Global Convolution module: a large ``k x k`` kernel as two separable branches.

    ``y = conv_1xk(conv_kx1(x)) + conv_kx1'(conv_1xk'(x))``, with no nonlinearity, so ``y``
    is one linear map of ``x`` (plus a constant) in which every output pixel depends on a
    ``k x k`` window of the input: a dense ``k x k`` convolution's window for ``2k`` instead
    of ``k²`` weights per channel pair and branch.

    Parameters
    ----------
    in_channels, out_channels : int
        ``out_channels`` is the number of classes in GCN (the branches' middle too).
    kernel_size : int
        ``k``, odd ("same" padding keeps H and W).

    Shapes: ``x: (N, in_channels, H, W) -> (N, out_channels, H, W)``.
    """

    def __init__(self, in_channels, out_channels, kernel_size):
        super().__init__()
        k, p = kernel_size, kernel_size // 2
        self.kernel_size = k
        # No bias in the first conv of a branch: with nothing nonlinear after it, its bias
        # would only pass through the second (linear) conv and add to that one's bias.
        self.left_kx1 = nn.Conv2d(in_channels, out_channels, (k, 1), padding=(p, 0),
                                  bias=False)
        self.left_1xk = nn.Conv2d(out_channels, out_channels, (1, k), padding=(0, p))
        self.right_1xk = nn.Conv2d(in_channels, out_channels, (1, k), padding=(0, p),
                                   bias=False)
        self.right_kx1 = nn.Conv2d(out_channels, out_channels, (k, 1), padding=(p, 0))

    def forward(self, x):
        """x: (N, in_channels, H, W) -> (N, out_channels, H, W)."""
        left = self.left_1xk(self.left_kx1(x))           # (N, K, H, W): columns, then rows
        right = self.right_kx1(self.right_1xk(x))        # (N, K, H, W): rows, then columns
        return left + right


class BoundaryRefinement(nn.Module):
    """The Boundary Refinement block: ``S' = S + conv3x3(ReLU(conv3x3(S)))``.

    A residual block on score maps: the identity path keeps the (blurry) scores of the
    large kernels, the two 3x3 convs learn a local correction near class boundaries.

    Shapes: ``S: (N, channels, H, W) -> (N, channels, H, W)``.
    """

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, s):
        """s: (N, channels, H, W) -> (N, channels, H, W)."""
        return s + self.conv2(self.relu(self.conv1(s)))   # (N, channels, H, W)


@register("gcn")
class GCN(SegmentationModel):
    """GCN (Peng et al. 2017): large-kernel score maps on four ResNet stages, refined and fused.

    Parameters
    ----------
    config : GCNConfig

    Attributes
    ----------
    gcn : ModuleDict
        ``{"res2": GlobalConvolution, ..., "res5": ...}``, one per stage.
    br : ModuleDict
        The BR after each stage's GCN.
    up : ModuleDict
        ``up[stage]``: the learned x2 up-sampling of that stage's (fused) score map.
    fuse_br : ModuleDict
        The BR after each sum (res4, res3, res2).
    half_br, full_up, full_br : Module
        BR at stride 2, the last x2 up-sampling, BR at full resolution.

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``; H and W must be
    multiples of 32.
    """

    config_class = GCNConfig
    presets = {"paper": {"backbone": "resnet50", "kernel_size": 15},
               "k3": {"kernel_size": 3},
               "no_br": {"boundary_refinement": False}}
    output_stride = 32

    def __init__(self, config):
        super().__init__(config)
        c, K = config, config.num_classes
        self.backbone = create_backbone(c.backbone, in_channels=c.in_channels,
                                        num_classes=None)
        channels = self.backbone.channels                    # {stride: channels}

        def refine():
            return BoundaryRefinement(K) if c.boundary_refinement else nn.Identity()

        self.gcn = nn.ModuleDict({name: GlobalConvolution(channels[s], K, k)
                                  for (name, s), k in zip(STAGES.items(), c.kernel_size)})
        self.br = nn.ModuleDict({name: refine() for name in STAGES})
        self.up = nn.ModuleDict({name: bilinear_upsampling(K, 2, learnable=True)
                                 for name in STAGES})
        self.fuse_br = nn.ModuleDict({name: refine() for name in ("res4", "res3", "res2")})
        self.half_br = refine()
        self.full_up = bilinear_upsampling(K, 2, learnable=True)
        self.full_br = refine()

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W)."""
        self.check_input_size(x.shape)
        features = self.backbone.features(x)             # {stride: (N, C_s, H/s, W/s)}
        up = None
        for name in ("res5", "res4", "res3", "res2"):    # coarsest first
            s = STAGES[name]
            scores = self.br[name](self.gcn[name](features[s]))  # (N, K, H/s, W/s)
            if up is not None:                           # add the coarser stage's scores
                scores = self.fuse_br[name](scores + up)  # (N, K, H/s, W/s)
            up = self.up[name](scores)                   # (N, K, 2H/s, 2W/s)
        scores = self.full_up(self.half_br(up))          # (N, K, H, W): from H/2
        return self.full_br(scores)                      # (N, K, H, W)
