"""ExFuse: GCN's top-down fusion, with more semantics put into the low-level features and
more resolution put into the high-level ones before they are fused.

Zhang, Zhang, Peng, Xue and Sun, "ExFuse: Enhancing Feature Fusion for Semantic
Segmentation", ECCV 2018 (arXiv:1804.03821).

A U-Net-like decoder adds fine, low-level features to coarse, high-level ones. The paper's
observation: the sum helps less than it could, because the two are too different. The
low-level features know edges and textures but not classes, so what they add is largely
noise; the high-level features know classes but carry no detail, so the finer map has
nothing precise to agree with. ExFuse keeps the GCN framework (:mod:`edu_seg.models.gcn`:
a Global Convolution + Boundary Refinement per ResNet stage, score maps fused top-down) and
narrows the gap from both sides::

    image ─ ResNet ┬─ res-5 (1/32) ─────────────── GCN ─ BR ─┬─ up ─┐
                   │              "ecre_res5" (1/16) ─ ECRE ─┘      │
                   ├─ res-4 (1/16) ─ SEB(res-5) ── GCN ─ BR ────────+ ─ BR ─┬─ up ─┐
                   │                              "ecre_res4" (1/8) ─ ECRE ─┘      │
                   ├─ res-3 (1/8)  ─ SEB(res-4) ── GCN ─ BR ───────────────────────+ ─ BR ─ up ─┐
                   └─ res-2 (1/4)  ─ SEB(res-3) ── GCN ─ BR ────────────────────────────────────+ ─ BR ─ up ─┐
                   (each stage ─ classifier ─ "ss_res<k>", training only)                                    │
    scores (N, K, H, W) ─ BR ─ DAP ─ up (K·k² channels) ─ BR ────────────────────────────────────────────────┘
                                                        (1/2)

"up" is GCN's learned x2 up-sampling, a transposed convolution initialised to bilinear
(GCN's "Deconv"); "ECRE" is a side branch that exists in training only, with its own loss.
Read it as GCN's picture with four additions:

More semantics in the low-level features
    - **Semantic supervision (SS).** A classifier on EVERY backbone stage, trained with its
      own loss: the early stages are then pushed to compute features that already say
      "which class", not only "which edge". Here each classifier is a 3x3 conv-BN-ReLU of
      ``supervision_width`` channels and a 1x1 conv to ``K`` scores, scored by cross-entropy
      against the mask (the scores up-sampled bilinearly to its size) with weight
      ``supervision_weight``; they exist in training only (``"ss_res2"`` .. ``"ss_res5"``).
    - **Semantic embedding branch (SEB).** Before its GCN, a stage's features are MULTIPLIED
      element-wise by a higher stage's features, passed through a 3x3 conv (to the lower
      stage's channel count) and up-sampled bilinearly to its resolution::

          y_l = x_l * up(conv3x3(x_{l+1}))                      (the default here)
          y_l = x_l * up(conv3x3(x_{l+1})) * ... * up(conv3x3(x_5))   (the paper, Fig. 4)

      The product is a gate: where the deep features say "nothing of interest here", the
      shallow edge responses are scaled towards zero instead of being added to the scores.

More resolution in the high-level features
    - **Explicit channel resolution embedding (ECRE).** Sub-pixel convolution (Shi et al.
      2016) up-samples by ``r`` with a conv to ``r²·C`` channels then ``PixelShuffle(r)``,
      which moves channel ``c·r² + i·r + j`` to the sub-pixel ``(i, j)`` of channel ``c``:
      the ``r²`` output pixels that a low-resolution position covers are ``r²`` different
      CHANNELS of that position. The paper's point is that it does not help to use this as
      the decoder's up-sampling (replacing the deconvolutions by it made results worse, in
      the paper and here: see the measurements below). What helps is to ask the HIGH-LEVEL
      channels to contain the detail: in training, a sub-pixel branch up-samples a high-level
      map to a finer stride and is scored against the ground truth by its own
      cross-entropy, so the channels it reads must encode where, inside each coarse
      position, the boundary runs. At inference the branch is dropped; the main path's
      deconvolutions are GCN's, unchanged.

      Here the branch reads the (fused, refined) score maps of res-5 and res-4
      (:data:`ECRE_STAGES`), the same maps that the main path's "up" up-samples, with
      ``r = 2`` as that "up": a 3x3 conv to ``4·K`` channels, ``PixelShuffle(2)``,
      giving ``"ecre_res5"`` at 1/16 and ``"ecre_res4"`` at 1/8. Why these maps and not the
      backbone's res-5 features: in GCN's framework the decoder carries ``K`` score maps,
      so they are the "high-level features" whose channels are up-sampled and fused; the
      branch's gradient reaches the GCN, the BR, the SEB gates and the backbone through
      them; and the backbone's stages already have a head of their own (semantic
      supervision). Why the two highest: their maps (2x2 and 4x4 pixels for a 64x64 input)
      are where resolution is scarcest; res-3's and res-2's are fused with finer stages.
      The loss is the one every extra head of the course gets (the scores up-sampled
      bilinearly to the mask's size, :meth:`~edu_seg.models.base.SegmentationModel.loss`),
      weighted by ``ecre_weight = 0.4``, the stage classifiers' weight (our choice, not a
      figure from the paper). The branch's conv starts as nearest-neighbour up-sampling (the
      same weights for the four sub-pixels, Aitken et al.'s "ICNR" init), so its first loss
      is that of the stage's own scores.
    - **Densely adjacent prediction (DAP).** The last up-sampling produces ``K·k·k``
      channels, ``k·k`` groups of ``K`` class scores, and the score of pixel ``(i, j)`` is
      the AVERAGE over the groups, group ``(l, m)`` (channels ``(l·k + m)·K`` ..
      ``(l·k + m + 1)·K - 1``) read at the neighbour ``(i + l - k//2, j + m - k//2)``::

          r[c, i, j] = 1/k² · sum_{0<=l,m<k} x[(l·k + m)·K + c, i + l - k//2, j + m - k//2]

      (zero outside the map). Each position thus predicts its whole ``k x k``
      neighbourhood, one group per neighbour, and every output averages ``k²`` predictions
      made from ``k²`` different positions. ``k = 3`` (the paper's choice). A note for the
      curious: DAP right after a linear layer is a re-parameterisation (the composition is
      one linear map with a ``k - 1`` larger window); what changes is what the ``K·k²``
      channels are asked to mean.

Making the SEB train from scratch (measured with the zoo's recipe, Shapes default, 300 steps)
    The gates here are ``conv3x3`` followed by a batch norm whose scale starts at 0 and
    shift at 1, so every gate starts at exactly 1, and by default each stage is gated by the
    next stage only (``seb_stages=1``). The paper's bare 3x3 convs are unbounded factors:
    Adam moves each of a conv's ``9·C_in`` weights by up to the learning rate per step, so a
    gate's value can change by ``9·C_in·lr·|x|`` (more than 10 for res-5's 512 channels) in
    one step, and the product of several such gates is what the GCN, a LINEAR map, sees.
    Trained from scratch, the variants scored (mIoU; measured with an earlier decoder
    whose five up-samplings were all sub-pixel convs, so read the rows against each
    other; the current figures are in the next table):

    ============================================  =======
    gates multiplied in, gate layer               mIoU
    ============================================  =======
    all higher stages, bare conv (the paper)      0.39
    all higher stages, bare conv, starting at 1   0.41
    all higher stages, conv + BN, starting at 1   0.77
    next stage only, bare conv                    0.67
    next stage only, conv + BN, starting at 1     0.87  (the default then)
    no SEB                                        0.90
    ============================================  =======

    With the current decoder the SEB still does not pay for itself on the default variant
    (table below), but removing it costs 0.06 mIoU on "boundary". Our best explanation of
    the weak gates: with a pretrained backbone (the paper's setting) the gates multiply
    features that already mean something from the first step; from scratch, both factors
    of each product are still noise while they are being learned.
    ``preset="seb_all_stages"`` is the paper's all-stage product (with the batch norm).

What each part is worth here (the zoo's recipe: Shapes, ResNet-18 from scratch, 300 steps)
    Each row removes one part from the default (all four parts); mIoU and boundary IoU on
    the "default" and "boundary" variants, and ms per training step (default / boundary;
    the first row was re-measured with faster kernels a day after the others, so compare
    the times of the ablation rows with each other):

    ===================================  ============  ============  =========
    model                                default       boundary      ms/step
    ===================================  ============  ============  =========
    exfuse (SS + SEB + ECRE + DAP)       0.864 0.788   0.655 0.587   212 / 204
    ``no_ecre`` (no ECRE branch)         0.882 0.812   0.691 0.620   258 / 256
    ``no_seb``                           0.883 0.811   0.594 0.542   242 / 239
    ``no_dap``                           0.864 0.788   0.682 0.615   234 / 237
    ``no_semantic_supervision``          0.838 0.763   0.606 0.539   240 / 234
    ECRE replacing every up-sampling     0.868         0.653
    ===================================  ============  ============  =========

    (The last row is the earlier design, every deconvolution replaced by a sub-pixel conv,
    measured with the same recipe; its boundary IoU was not recorded.) So the training-only
    branch does NOT help here either: it costs 0.02 mIoU on "default" and 0.04 on
    "boundary", about as much as the replacement did. The paper's gain was measured with an
    ImageNet-pretrained ResNeXt-101 on 512x512 images, where res-5's map is 16 pixels wide;
    here it is 2, and the branch asks a 2x2 map of scores to draw a 4x4 segmentation on its
    own while the main path needs it only as a coarse term of a sum: our guess at why the
    extra term competes with the main loss instead of helping it. Semantic supervision is
    the one part that pays on both variants; the SEB pays on "boundary" only; DAP on
    neither. ``preset="no_ecre"`` (GCN with SS, SEB and DAP) scores best on "boundary" and
    ties ``no_seb`` on "default".

What this small version keeps from the paper
    - the GCN framework exactly as :class:`~edu_seg.models.gcn.GCN` builds it (its
      :class:`~edu_seg.models.gcn.GlobalConvolution` and
      :class:`~edu_seg.models.gcn.BoundaryRefinement` are imported, not copied): a GCN + BR
      per stage, BR after each fusion, two more up-samplings from 1/4 to full resolution;
    - SEB on res-4, res-3, res-2, before the GCN, gating by element-wise product with
      up-sampled 3x3 convs of the higher stages;
    - ECRE as a training-only side branch with its own loss (sub-pixel up-sampling: conv
      to ``r²·K``, pixel shuffle) beside the deconvolutions of the high-level stages, which
      stay GCN's; DAP with ``k = 3`` on the last up-sampling, at full resolution.

What it changes
    - ResNet-18 from scratch (``preset="paper"``: ResNet-50 with ``k = 15``; the paper uses
      ImageNet-pretrained ResNeXt-101), for GCN's reason: GCN's decoder works on ``K``
      score maps and cannot add back what a tiny backbone loses (GCN: about 0.4-0.5 mIoU on
      ``resnet_tiny``, 0.89 on ResNet-18). GCN kernels ``(3, 3, 7, 3)`` for 64x64 inputs, as
      in :class:`~edu_seg.models.gcn.GCNConfig`;
    - semantic supervision during segmentation training. The paper attaches its stage
      classifiers during ImageNet PRE-training (image labels; removed for fine-tuning);
      there is no pre-training here, so the classifiers predict the segmentation mask
      instead, during training, and are dropped at inference, as in the paper;
    - the SEB's gates: batch norm, starting at 1, the next stage only (above);
    - the paper's "layer rearrangement" (moving ResNeXt blocks into the early stages) is
      left out: it changes the backbone, not the fusion;
    - ECRE on the score maps of res-5 and res-4 with ``r = 2`` and weight 0.4 (above);
    - DAP before the last BR (whose residual correction then refines the averaged scores):
      the last deconvolution produces the ``k²·K`` channels, starting as ``k²`` copies of the
      bilinearly up-sampled scores.

Ablations (presets): ``"no_semantic_supervision"``, ``"no_seb"`` (``seb_stages=0``),
``"no_ecre"`` (``ecre=False``: no side branch, no loss term), ``"no_dap"``
(``dap_kernel=1``: one group, no neighbours); ``"seb_all_stages"`` (the paper's SEB);
``"paper"``: ResNet-50, ``k = 15``, the paper's SEB.

>>> import edu_seg.models as models
>>> model = models.create("exfuse", num_classes=4)
>>> model.full_up.weight.shape                   # GCN's deconv: K = 4 in, 9 groups x K out
(4, 36, 4, 4)
>>> model.ecre["res5"].conv.weight.shape          # ECRE (training only): 2² sub-pixels x K
(16, 4, 3, 3)
"""
import dataclasses

import numpy as np

from .. import nn
from ..autograd import pad
from ..ops.resample import interpolate
from . import register
from .backbones import create_backbone
from .base import SegmentationModel
from .blocks import ConvBNReLU
from .fcn import bilinear_upsampling
from .gcn import STAGES, BoundaryRefinement, GCNConfig, GlobalConvolution

__all__ = ["ExFuseConfig", "ExFuse", "SemanticEmbeddingBranch", "SubPixelUpsampling",
           "DenselyAdjacentPrediction", "grouped_bilinear_upsampling", "ECRE_STAGES"]

#: The decoder stages whose score maps get an ECRE branch in training (the two highest).
ECRE_STAGES = ("res5", "res4")


@dataclasses.dataclass
class ExFuseConfig(GCNConfig):
    """Hyper-parameters of :class:`ExFuse`: GCN's (:class:`~edu_seg.models.gcn.GCNConfig`:
    ``num_classes``, ``in_channels``, ``backbone``, ``kernel_size``,
    ``boundary_refinement``, with its rules) and these.

    Attributes
    ----------
    semantic_supervision : bool
        A classifier with its own loss on every backbone stage, in training.
    supervision_weight : float
        Loss weight of each stage classifier.
    supervision_width : int
        Channels of the stage classifiers' 3x3 conv.
    seb_stages : int
        How many higher stages' gates the SEB multiplies into each stage: 1, the next one
        (the default, see the module docstring), up to 3, all of them (the paper); 0 is no
        SEB.
    ecre : bool
        In training, a sub-pixel up-sampling branch with its own loss on the score maps of
        res-5 and res-4 (:data:`ECRE_STAGES`); False (``preset="no_ecre"``) is no branch.
        The main path up-samples by GCN's transposed convolutions either way.
    ecre_weight : float
        Loss weight of each ECRE branch.
    dap_kernel : int
        ``k`` of the densely adjacent prediction, odd (the window is centred on the pixel);
        1 is no DAP.
    """

    semantic_supervision: bool = True
    supervision_weight: float = dataclasses.field(default=0.4, metadata={"min": 0.0})
    supervision_width: int = 32
    seb_stages: int = dataclasses.field(default=1, metadata={"min": 0})
    ecre: bool = True
    ecre_weight: float = dataclasses.field(default=0.4, metadata={"min": 0.0})
    dap_kernel: int = 3

    def __post_init__(self):
        super().__post_init__()                  # GCN's fields and rules
        if self.seb_stages > len(STAGES) - 1:
            raise ValueError(f"ExFuseConfig: seb_stages must be at most {len(STAGES) - 1} "
                             f"(a stage has at most that many higher stages), got "
                             f"{self.seb_stages}; use 0 for no SEB")
        if self.dap_kernel % 2 == 0:
            raise ValueError(f"ExFuseConfig: dap_kernel must be odd (the k x k window is "
                             f"centred on the pixel it predicts), got {self.dap_kernel}; "
                             f"use 3 (the paper) or 1 (no DAP)")


class SemanticEmbeddingBranch(nn.Module):
    """ExFuse's SEB: ``low * up(gate_1(high_1)) * up(gate_2(high_2)) * ...``.

    Each gate is a 3x3 conv (to the low stage's channel count) followed by a batch norm whose
    scale starts at 0 and shift at 1, so that every gate starts at exactly 1: the branch
    starts as the identity (the network as GCN) and learns where to gate, as GCN's
    up-samplings start as bilinear interpolation. The module docstring gives the
    measurements behind the batch norm.

    Parameters
    ----------
    low_channels : int
        Channels of the stage being gated (and of every factor).
    high_channels : sequence of int
        Channels of each higher stage, in the order they are passed to ``forward``.

    Shapes: ``low: (N, C, h, w)``, ``highs[i]: (N, C_i, h_i, w_i)`` -> ``(N, C, h, w)``.
    """

    def __init__(self, low_channels, high_channels):
        super().__init__()
        self.gates = nn.ModuleList([
            nn.Sequential(nn.Conv2d(c, low_channels, 3, padding=1, bias=False),
                          nn.BatchNorm2d(low_channels))
            for c in high_channels])
        for _, bn in self.gates:
            nn.init.zeros_(bn.weight)                     # gate = 0 * normalised + 1
            nn.init.ones_(bn.bias)

    def forward(self, low, highs):
        """low: (N, C, h, w), highs: list of (N, C_i, h_i, w_i) -> (N, C, h, w)."""
        y = low
        for gate, high in zip(self.gates, highs):
            g = interpolate(gate(high), size=low.shape[-2:], mode="bilinear",
                            align_corners=False)          # (N, C, h, w)
            y = y * g                                     # element-wise
        return y


class SubPixelUpsampling(nn.Module):
    """ECRE's branch: 3x3 conv to ``out_channels · r²`` channels, then ``PixelShuffle(r)``.

    Output channel ``o``'s sub-pixel ``(i, j)`` is conv channel ``o·r² + i·r + j``: the ``r²``
    output pixels that one input position covers are ``r²`` different channels of that
    position. Initialised to nearest-neighbour up-sampling of input channel ``o mod
    in_channels`` (the centre tap 1 in the ``r²`` sub-pixel filters of ``o``, everything else
    0; Aitken et al.'s "ICNR" init), so that the branch's first loss is the loss of the
    stage's own scores, up-sampled.

    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, rH, rW)``.
    """

    def __init__(self, in_channels, out_channels, factor=2):
        super().__init__()
        r2 = factor * factor
        self.conv = nn.Conv2d(in_channels, out_channels * r2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(factor)
        weight = np.zeros(self.conv.weight.shape)
        for o in range(out_channels):
            weight[o * r2:(o + 1) * r2, o % in_channels, 1, 1] = 1.0
        self.conv.weight.data[...] = weight
        self.conv.bias.data[...] = 0.0

    def forward(self, x):
        """x: (N, in_channels, H, W) -> (N, out_channels, rH, rW)."""
        return self.shuffle(self.conv(x))                # (N, out·r², H, W) -> (N, out, rH, rW)


def grouped_bilinear_upsampling(in_channels, out_channels):
    """A learned x2 up-sampling of ``in_channels`` score maps into ``out_channels`` (a multiple):
    a transposed conv built as :func:`~edu_seg.models.fcn.bilinear_upsampling` builds GCN's
    (kernel 4, stride 2, padding 1, no bias), initialised to bilinear up-sampling of input
    channel ``o mod in_channels`` into output channel ``o``. With ``out_channels = k²·K`` it
    starts as ``k²`` copies of the ``K`` up-sampled scores, the groups that DAP averages.
    (``bilinear_upsampling`` itself maps ``C`` channels to the same ``C``.)

    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, 2H, 2W)``.
    """
    up = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)
    weight = np.zeros(up.weight.shape)                    # (in, out, 4, 4)
    for o in range(out_channels):
        weight[o % in_channels, o] = nn.init.bilinear_kernel(4, 4)
    up.weight.data[...] = weight
    return up


class DenselyAdjacentPrediction(nn.Module):
    """ExFuse's DAP: the score at ``(i, j)`` is the mean of ``k²`` groups read at its neighbours.

    ``r[c, i, j] = 1/k² · sum_{l, m < k} x[(l·k + m)·K + c, i + l - k//2, j + m - k//2]``,
    zero outside the map. No parameters.

    Shapes: ``(N, k²·K, H, W) -> (N, K, H, W)``.
    """

    def __init__(self, kernel_size):
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x):
        """x: (N, k²·K, H, W) -> (N, K, H, W)."""
        k = self.kernel_size
        N, C, H, W = x.shape
        if C % (k * k):
            raise ValueError(f"DenselyAdjacentPrediction: {C} channels are not k² = {k * k} "
                             f"groups of class scores")
        K, p = C // (k * k), k // 2
        padded = pad(x, (p, p, p, p))                     # (N, k²K, H + 2p, W + 2p)
        total = None
        for l in range(k):
            for m in range(k):
                g = l * k + m
                # group g taken at (i + l - p, j + m - p), i.e. padded[i + l, j + m]
                shifted = padded[:, g * K:(g + 1) * K, l:l + H, m:m + W]   # (N, K, H, W)
                total = shifted if total is None else total + shifted
        return total * (1.0 / (k * k))                   # (N, K, H, W)

    def flops(self, x, y):
        return y.size * self.kernel_size ** 2              # k² adds (and one scale) per output

    def window(self):
        k = self.kernel_size
        return (k, k), (1, 1), (k // 2, k // 2), (1, 1)


@register("exfuse")
class ExFuse(SegmentationModel):
    """ExFuse (Zhang et al. 2018): GCN framework + SS + SEB + ECRE + DAP.

    Parameters
    ----------
    config : ExFuseConfig

    Attributes
    ----------
    gcn, br, up, fuse_br, half_br, full_br
        GCN's modules (see :class:`~edu_seg.models.gcn.GCN`); ``up[stage]`` is GCN's
        transposed conv, initialised to bilinear.
    full_up : ConvTranspose2d
        The last x2 up-sampling, to ``dap_kernel² · K`` channels.
    dap : DenselyAdjacentPrediction or Identity
    seb : ModuleDict or None
        ``{"res4", "res3", "res2"}``: the SEB of each stage below res-5.
    ecre : ModuleDict or None
        ``{"res5", "res4"}``: the ECRE branch (:class:`SubPixelUpsampling`) on that stage's
        (fused) score map, run in training only.
    supervision : ModuleDict or None
        The stage classifiers (training only).

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``; in training mode
    ``{"out": scores, "ecre_res5": (N, K, H/16, W/16), "ecre_res4": (N, K, H/8, W/8),
    "ss_res2": (N, K, H/4, W/4), ..., "ss_res5": (N, K, H/32, W/32)}`` (no ``ecre_*`` or
    ``ss_*`` without them). H and W must be multiples of 32.
    """

    config_class = ExFuseConfig
    presets = {"paper": {"backbone": "resnet50", "kernel_size": 15, "seb_stages": 3},
               "no_semantic_supervision": {"semantic_supervision": False},
               "no_seb": {"seb_stages": 0},
               "seb_all_stages": {"seb_stages": 3},
               "no_ecre": {"ecre": False},
               "no_dap": {"dap_kernel": 1}}
    output_stride = 32

    def __init__(self, config):
        super().__init__(config)
        c, K = config, config.num_classes
        self.backbone = create_backbone(c.backbone, in_channels=c.in_channels,
                                        num_classes=None)
        channels = self.backbone.channels                    # {stride: channels}
        names = list(STAGES)                                 # res2 (finest) .. res5

        def refine(width=K):
            return BoundaryRefinement(width) if c.boundary_refinement else nn.Identity()

        self.seb = nn.ModuleDict({
            name: SemanticEmbeddingBranch(channels[STAGES[name]],
                                          [channels[STAGES[h]] for h in self._higher(i)])
            for i, name in enumerate(names[:-1])}) if c.seb_stages else None
        self.gcn = nn.ModuleDict({name: GlobalConvolution(channels[s], K, k)
                                  for (name, s), k in zip(STAGES.items(), c.kernel_size)})
        self.br = nn.ModuleDict({name: refine() for name in STAGES})
        self.up = nn.ModuleDict({name: bilinear_upsampling(K, 2, learnable=True)
                                 for name in STAGES})        # GCN's, as GCN builds them
        self.fuse_br = nn.ModuleDict({name: refine() for name in ("res4", "res3", "res2")})
        self.half_br = refine()
        k = c.dap_kernel
        self.full_up = grouped_bilinear_upsampling(K, k * k * K)
        self.dap = DenselyAdjacentPrediction(k) if k > 1 else nn.Identity()
        self.full_br = refine()
        self.aux_weights = {}
        if c.ecre:
            self.ecre = nn.ModuleDict({name: SubPixelUpsampling(K, K, 2)
                                       for name in ECRE_STAGES})
            self.aux_weights.update({f"ecre_{name}": c.ecre_weight for name in ECRE_STAGES})
        else:
            self.ecre = None
        if c.semantic_supervision:
            self.supervision = nn.ModuleDict({
                name: nn.Sequential(ConvBNReLU(channels[s], c.supervision_width, 3),
                                    nn.Conv2d(c.supervision_width, K, 1))
                for name, s in STAGES.items()})
            self.aux_weights.update({f"ss_{name}": c.supervision_weight for name in STAGES})
        else:
            self.supervision = None

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W), or in training mode
        ``{"out": scores, "ecre_res5": ..., "ss_res2": ..., ...}``."""
        self.check_input_size(x.shape)
        features = self.backbone.features(x)             # {stride: (N, C_s, H/s, W/s)}
        names = list(STAGES)                             # res2 .. res5
        outputs = {}
        up = None
        for i in reversed(range(len(names))):            # res5 first
            name, s = names[i], STAGES[names[i]]
            f = features[s]                              # (N, C_s, H/s, W/s)
            if self.seb is not None and name in self.seb:
                f = self.seb[name](f, [features[STAGES[h]] for h in self._higher(i)])
            scores = self.br[name](self.gcn[name](f))    # (N, K, H/s, W/s)
            if up is not None:                           # add the coarser stage's scores
                scores = self.fuse_br[name](scores + up)  # (N, K, H/s, W/s)
            if self.training and self.ecre is not None and name in self.ecre:
                # the side branch: same input as the main path's deconv, its own loss
                outputs[f"ecre_{name}"] = self.ecre[name](scores)   # (N, K, 2H/s, 2W/s)
            up = self.up[name](scores)                   # (N, K, 2H/s, 2W/s)
        groups = self.full_up(self.half_br(up))          # (N, k²K, H, W): from H/2
        scores = self.full_br(self.dap(groups))          # (N, K, H, W)
        if not self.training:
            return scores
        outputs = {"out": scores, **outputs}
        if self.supervision is not None:
            for name, s in STAGES.items():
                outputs[f"ss_{name}"] = self.supervision[name](features[s])  # (N, K, H/s, W/s)
        return outputs

    def _higher(self, i):
        """Names of the stages whose gates the SEB multiplies into stage ``i`` (0 = res2)."""
        return list(STAGES)[i + 1:i + 1 + self.config.seb_stages]
