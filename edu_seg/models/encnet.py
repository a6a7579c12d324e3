"""EncNet: a learned summary of the whole scene rescales every feature channel.

Zhang, Dana, Shi, Zhang, Wang, Tyagi and Agrawal, "Context Encoding for Semantic
Segmentation", CVPR 2018 (arXiv:1803.08904).

A bedroom seldom holds a horse. Knowing WHICH classes a scene is likely to contain makes
labelling its pixels easier, and that knowledge is global: no pixel's receptive field needs
to cover the whole image if the image is summarised once and the summary is handed to every
pixel. EncNet's Context Encoding Module computes such a summary and uses it to rescale the
feature channels, switching up those of the classes the scene suggests::

    image ─ dilated ResNet (stride 4 here, 8 in the paper) ─ 3x3 conv-BN-ReLU ─ x (C, h, w)
      x ─┬─────────────────────────────────────────────────────────────── ⊗ ─ y = x ⊗ γ
         └─ 1x1 conv-BN-ReLU ─ Encoding (K codewords) ─ BN-ReLU ─ mean over k ─ e (C)  │
                                                           ├─ FC ─ sigmoid ─ γ (C) ─────┘
                                                           └─ FC ─ "se": which classes are
                                                                    present (training only)
      y ─ dropout ─ 1x1 classifier ─ bilinear x4 ─ scores

The Encoding Layer (Zhang, Xue and Dana, "Deep TEN: Texture Encoding Network", CVPR 2017)
treats the ``h x w`` map as a BAG of ``N = h w`` C-dimensional features ``x_i``, throws
their positions away, and describes the bag against ``K`` learned codewords ``d_k`` (C-dim)
with learned smoothing factors ``s_k``::

    r_ik = x_i - d_k                                  residual of feature i to codeword k
    a_ik = exp(-s_k |r_ik|²) / sum_j exp(-s_j |r_ij|²)   soft assignment of i to the codewords
    e_k  = sum_i a_ik r_ik                            (K encodings of C numbers each)

A dictionary-learning view of global pooling: with ``K = 1`` and ``d = 0`` it is sum pooling;
with several codewords the encoding says how the features are spread around each centre,
which is what distinguishes a bedroom's statistics from a stable's. Batch norm and ReLU
over the ``K`` encodings, then their mean over ``k``, give the C-vector ``e``; a fully
connected layer with a sigmoid turns it into channel weights ``γ = σ(W e)`` in (0, 1), and
the module's output is ``Y = X ⊗ γ``: every pixel's channel ``c`` multiplied by ``γ_c``
(an attention over channels, computed from the whole scene, as in Squeeze-and-Excitation).

The Semantic Encoding loss (SE-loss) makes ``e`` carry that meaning explicitly: another
fully connected layer predicts from ``e`` which classes are PRESENT in the image, trained
with a binary cross-entropy against the set of classes in its label map
(:func:`present_classes`), with weight 0.2. Unlike the per-pixel loss it weighs a small
object as much as a large one.

This file builds the Encoding Layer from differentiable tensor ops
(:func:`residual_encoding`); expanding ``|x_i - d_k|² = |x_i|² - 2 x_i·d_k + |d_k|²`` and
``e_k = sum_i a_ik x_i - (sum_i a_ik) d_k`` turns it into two matrix products, so the
``(N, K, C)`` array of residuals is never stored (the authors wrote CUDA kernels for the
same reason).

Output stride: why stride 4 here
    EncNet predicts at stride 8 and up-samples its scores x8 bilinearly. Such a model cannot
    be sharper than its map: on Shapes 64x64, average-pooling the true one-hot masks to
    stride ``s``, up-sampling them bilinearly and taking the argmax gives 0.988 mIoU at
    stride 2, 0.947 at 4, 0.811 at 8 and 0.460 at 16. The paper's stride 8 was chosen for
    480-576 px crops (a 60x60 or larger map); on a 64x64 image it is an 8x8 map, and the
    model would stay near 0.81 whatever the context module did. The small version therefore
    dilates layer2 too and predicts at stride 4 (a 16x16 map of 256 features for the
    Encoding Layer to pool); the module itself is unchanged, since it pools the whole map at
    any stride. ``preset="paper"`` keeps stride 8.

What this small version keeps from the paper
    - a dilated ResNet, a 3x3 conv-BN-ReLU on its last stage, dropout 0.1, a 1x1 classifier,
      bilinear up-sampling of the scores;
    - the Context Encoding Module as in the authors' code: a 1x1 conv-BN-ReLU, the Encoding
      Layer with ``K = 32`` codewords, batch norm over the ``K`` encodings (one mean and
      variance per codeword, over the batch and the C numbers: the code's ``BatchNorm1d(K)``),
      ReLU, the mean over ``k``; FC + sigmoid to ``γ``; ``Y = X ⊗ γ``;
    - the SE-loss: an FC from ``e`` to one logit per class, binary cross-entropy against the
      classes present in the image, weight 0.2; the SE head exists only in training.

What it changes
    - backbone: a ResNet with one basic block per stage at widths 32-32-64-128, from
      scratch, at output stride 4: the backbone of :mod:`~edu_seg.models.denseaspp` (whose
      docstring tells why these widths: with a 16-channel stem EncNet reached 0.84 mIoU on
      Shapes, with this one 0.89), so that the two differ only by their context module (the
      paper: ImageNet-pretrained ResNet-50 or 101 at stride 8; ``preset="paper"``:
      torchvision's ResNet-50, a 512-channel head);
    - widths: the head and the module have 64 channels (the paper: 512); ``K`` stays 32;
    - ``Y = X ⊗ γ`` as the paper writes it; the authors' code returns ``ReLU(X + X ⊗ γ)``,
      a residual form whose channels can only be amplified, never switched off;
    - the paper adds a second Context Encoding Module on stage 3, used only for another
      SE-loss, and the authors' code an auxiliary FCN head on stage 3: both are regularisers
      of a deep pretrained network and are left out, so the SE-loss here acts on the one
      module that also rescales the features.

Ablations (presets, run on the Shapes ``"context"`` variant)
    - ``"no_encoding"``: no Context Encoding Module and no SE-loss: the 3x3 head's features
      go straight to the classifier (the paper's dilated FCN baseline);
    - ``"no_se_loss"``: the module rescales the features, but nothing tells ``e`` which
      classes are present.

    Measured with the zoo's recipe (300 steps, 1 CPU thread): on ``"context"`` EncNet
    scored 0.61 mIoU, ``no_se_loss`` 0.65 and ``no_encoding`` 0.92; on ``"default"`` 0.89,
    0.90 and 0.91. The idea loses on Shapes, and the data say why. A scene-level prior
    pays when the classes CO-OCCUR (a bed predicts a pillow, a road a car, in the paper's
    PASCAL-Context and ADE20K); Shapes draws its objects independently, so knowing which
    classes an image holds tells nothing about a pixel that the pixel's own surroundings do
    not. On ``"context"`` it is worse: an image usually holds both backgrounds, so the
    summary of the whole image cannot say whether a circle lies on stripes or on dots;
    only the circle's surroundings can, and the stride-4 dilated backbone, whose receptive
    field is wider than the image, already sees them. The module then brings no
    information, only a gate that multiplies every channel of every pixel by a ``γ``
    computed from a bag of features. Training is slower (loss after 300 steps: 0.04
    without the module, 0.08 with it but no SE-loss, 0.16 with both, SE term included),
    and what the gated model learns transfers worse: ``no_se_loss`` confuses the two
    circle classes on held-out images (IoU 0.22 and 0.47) despite its low training loss.
    (The authors' residual form ``ReLU(X + X ⊗ γ)``, which cannot shut a channel, scored
    0.88 on ``"context"`` in the same recipe: closer to the baseline, still below it.)

>>> import edu_seg.models as models
>>> model = models.create("encnet", num_classes=4)
>>> model.context.encoding.codewords.shape
(32, 64)
"""
import dataclasses
import math
from typing import Literal, Optional

import numpy as np

from .. import nn
from ..backend import get_array_module, to_host
from ..ops.activations import softmax
from ..ops.loss import binary_cross_entropy_with_logits
from ..ops.resample import interpolate
from . import register
from .backbones import create_backbone
from .backbones.resnet import width_overrides
from .base import SegmentationModel
from .blocks import ConvBNReLU

__all__ = ["EncNetConfig", "EncNet", "Encoding", "ContextEncoding", "residual_encoding",
           "present_classes"]


def residual_encoding(x, codewords, smoothing):
    """The Encoding Layer's formula: soft-assigned residuals of a bag of features.

    ``e_k = sum_i a_ik (x_i - d_k)``, ``a_ik = softmax_k(-s_k |x_i - d_k|²)``, computed with
    ``|x_i - d_k|² = |x_i|² - 2 x_i·d_k + |d_k|²`` and
    ``e_k = sum_i a_ik x_i - (sum_i a_ik) d_k``: two matrix products instead of an
    ``(N, P, K, C)`` array of residuals. Every step is a differentiable tensor op.

    Parameters
    ----------
    x : Tensor, shape (N, C, H, W)
        Features; each image is a bag of ``P = H W`` C-dimensional vectors.
    codewords : Tensor, shape (K, C)
        The ``d_k``.
    smoothing : Tensor, shape (K,)
        The ``s_k`` (larger: a sharper assignment to codeword k).

    Returns
    -------
    Tensor, shape (N, K, C)
        The encodings ``e_k`` of each image.
    """
    N, C, H, W = x.shape
    feats = x.reshape(N, C, H * W).transpose(1, 2)                  # (N, P, C): the bag
    dist2 = ((feats * feats).sum(axis=2, keepdims=True)             # (N, P, 1): |x_i|²
             - 2 * (feats @ codewords.transpose(0, 1))               # (N, P, K): x_i·d_k
             + (codewords * codewords).sum(axis=1))                 # (K,): |d_k|²
    assign = softmax(-smoothing * dist2, axis=2)                    # (N, P, K): a_ik
    weighted = assign.transpose(1, 2) @ feats                       # (N, K, C): sum_i a_ik x_i
    mass = assign.sum(axis=1).reshape(N, -1, 1)                     # (N, K, 1): sum_i a_ik
    return weighted - mass * codewords                              # (N, K, C)


def present_classes(masks, num_classes, ignore_index=-100):
    """The SE-loss target: which classes occur in each image's label map.

    Parameters
    ----------
    masks : int array, shape (N, H, W)
    num_classes : int
    ignore_index : int
        A label that marks "no label" and counts as no class.

    Returns
    -------
    float32 array, shape (N, num_classes)
        ``1`` where class ``c`` labels at least one pixel of image ``n``, else ``0``.

    Raises
    ------
    ValueError
        A label outside ``0 .. num_classes - 1`` other than ``ignore_index``.

    Examples
    --------
    >>> present_classes(np.array([[[0, 2], [2, 2]]]), 4)
    array([[1., 0., 1., 0.]], dtype=float32)
    """
    xp = get_array_module(masks)
    masks = np.asarray(to_host(masks))    # which labels occur: a few numbers per image
    present = np.zeros((len(masks), num_classes), np.float32)
    for n, mask in enumerate(masks):
        labels = np.unique(mask)
        labels = labels[labels != ignore_index]
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if bad.size:
            raise ValueError(f"present_classes: image {n} has label {bad[0]}, outside 0 .. "
                             f"{num_classes - 1} and not ignore_index={ignore_index}")
        present[n, labels] = 1
    return xp.asarray(present)


class Encoding(nn.Module):
    """The Encoding Layer: K learned codewords and smoothing factors (:func:`residual_encoding`).

    Parameters
    ----------
    channels : int
        C, the dimension of the features and of each codeword.
    num_codes : int
        K.

    Attributes
    ----------
    codewords : Parameter, shape (K, C)
        Initialised uniform in ``±1/sqrt(K C)`` (the authors' code).
    smoothing : Parameter, shape (K,)
        Initialised uniform in (0, 1) (the authors' code stores ``-s``, uniform in (-1, 0)).

    Shapes: ``x: (N, C, H, W) -> (N, K, C)``.
    """

    def __init__(self, channels, num_codes):
        super().__init__()
        self.channels, self.num_codes = channels, num_codes
        self.codewords = nn.Parameter(np.empty((num_codes, channels), np.float32))
        self.smoothing = nn.Parameter(np.empty(num_codes, np.float32))
        bound = 1 / math.sqrt(num_codes * channels)
        nn.init.uniform_(self.codewords, -bound, bound)
        nn.init.uniform_(self.smoothing, 0.0, 1.0)

    def forward(self, x):
        """x: (N, C, H, W) -> (N, K, C)."""
        return residual_encoding(x, self.codewords, self.smoothing)

    def flops(self, x, y):
        """Two matrix products of ``P x C`` by ``C x K`` per image, 2 FLOPs per multiply-add."""
        N, C, H, W = x.shape
        return 4 * N * H * W * self.num_codes * C

    def extra_repr(self):
        return f"channels={self.channels}, num_codes={self.num_codes}"


class ContextEncoding(nn.Module):
    """The Context Encoding Module: encode the map, predict channel weights, rescale.

    Parameters
    ----------
    channels : int
        C, of the input and the output.
    num_codes : int
        K codewords of the Encoding Layer.

    Attributes
    ----------
    project : ConvBNReLU
        1x1 conv-BN-ReLU before the encoding (the authors' code).
    encoding : Encoding
    norm : nn.BatchNorm2d
        Batch norm over the K encodings (each encoding ``(N, k, C)`` viewed as
        ``(N, k, C, 1)``: one mean and variance per codeword, as ``BatchNorm1d(K)``).
    fc, gate : nn.Linear, nn.Sigmoid
        ``γ = σ(W e + b)``.

    Shapes
    ------
    ``x: (N, C, h, w) -> (y, e)``: ``y = x ⊗ γ`` (N, C, h, w) and the encoded context
    ``e`` (N, C).
    """

    def __init__(self, channels, num_codes):
        super().__init__()
        self.project = ConvBNReLU(channels, channels, 1)
        self.encoding = Encoding(channels, num_codes)
        self.norm = nn.BatchNorm2d(num_codes)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(channels, channels)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        """x: (N, C, h, w) -> (x ⊗ γ: (N, C, h, w), e: (N, C))."""
        N, C = x.shape[:2]
        codes = self.encoding(self.project(x))           # (N, K, C)
        codes = self.relu(self.norm(codes.reshape(N, -1, C, 1)))  # (N, K, C, 1)
        e = codes.reshape(N, -1, C).mean(axis=1)         # (N, C): mean over the codewords
        gamma = self.gate(self.fc(e))                    # (N, C), each in (0, 1)
        return x * gamma.reshape(N, C, 1, 1), e          # (N, C, h, w), (N, C)


@dataclasses.dataclass
class EncNetConfig:
    """Hyper-parameters of :class:`EncNet` (the defaults are the small CPU version).

    Attributes
    ----------
    num_classes : int
    in_channels : int
    backbone : str
        A ResNet of :func:`edu_seg.models.create_backbone`, dilated to ``output_stride``.
    backbone_widths : 4 ints or None
        The ResNet's stage widths, replacing the preset's; None keeps them.
    output_stride : {4, 8}
        Stride of the map the head reads and predicts on (the paper: 8; the default 4, see
        the module docstring).
    head_channels : int
        Channels of the 3x3 conv on the backbone and of the Context Encoding Module (the
        paper: 512).
    num_codes : int
        K, codewords of the Encoding Layer (the paper: 32).
    encoding : bool
        Keep the Context Encoding Module (False: the ``"no_encoding"`` ablation).
    se_loss : bool
        Predict the classes present from ``e`` and add the SE-loss (needs ``encoding``).
    se_weight : float
        Weight of the SE-loss in the total loss (the paper: 0.2).
    dropout : float
        Channel dropout before the classifier (the authors' code: 0.1).
    """

    num_classes: int
    in_channels: int = 3
    backbone: Literal["resnet_tiny", "resnet_bottleneck_tiny", "resnet18",
                      "resnet50"] = "resnet_tiny"
    backbone_widths: Optional[tuple[int, int, int, int]] = (32, 32, 64, 128)
    output_stride: Literal[4, 8] = 4
    head_channels: int = 64
    num_codes: int = 32
    encoding: bool = True
    se_loss: bool = True
    se_weight: float = dataclasses.field(default=0.2, metadata={"min": 0.0})
    dropout: float = dataclasses.field(default=0.1, metadata={"min": 0.0, "max": 1.0})

    def __post_init__(self):
        if self.se_loss and not self.encoding:
            raise ValueError("EncNetConfig: se_loss=True needs encoding=True (the SE-loss "
                             "predicts the classes present from the encoded context); give "
                             "se_loss=False, or preset='no_encoding'")


@register("encnet")
class EncNet(SegmentationModel):
    """EncNet (Zhang et al. 2018): dilated ResNet, Context Encoding Module, SE-loss.

    Parameters
    ----------
    config : EncNetConfig

    Attributes
    ----------
    backbone : ResNet
        Dilated to ``output_stride``.
    head : ConvBNReLU
        The 3x3 conv on the backbone's last stage.
    context : ContextEncoding or None
        None in the ``"no_encoding"`` ablation.
    se_head : nn.Linear or None
        ``e -> one logit per class``; None without the SE-loss.
    classifier : nn.Sequential
        ``Dropout2d -> 1x1 conv``.

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, num_classes, H, W)``; in training mode with
    the SE-loss ``{"out": scores, "se": (N, num_classes) presence logits}``. H and W must be
    multiples of ``output_stride``.
    """

    config_class = EncNetConfig
    presets = {"paper": {"backbone": "resnet50", "backbone_widths": None, "output_stride": 8,
                         "head_channels": 512, "num_codes": 32},
               "no_encoding": {"encoding": False, "se_loss": False},
               "no_se_loss": {"se_loss": False}}

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.output_stride = c.output_stride
        self.backbone = create_backbone(c.backbone, in_channels=c.in_channels, num_classes=None,
                                        output_stride=c.output_stride,
                                        **width_overrides(c.backbone_widths))
        self.head = ConvBNReLU(self.backbone.stage_channels[-1], c.head_channels, 3)
        self.context = ContextEncoding(c.head_channels, c.num_codes) if c.encoding else None
        self.se_head = nn.Linear(c.head_channels, c.num_classes) if c.se_loss else None
        self.classifier = nn.Sequential(nn.Dropout2d(c.dropout),
                                        nn.Conv2d(c.head_channels, c.num_classes, 1))

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, num_classes, H, W), or in training mode
        with the SE-loss ``{"out": scores, "se": (N, num_classes)}``."""
        self.check_input_size(x.shape)
        h = self.head(self.backbone.stage_features(x)[-1])  # (N, C, H/s, W/s)
        if self.context is not None:
            h, e = self.context(h)                        # (N, C, H/s, W/s), (N, C)
        scores = self.classifier(h)                       # (N, K, H/s, W/s)
        out = interpolate(scores, scale_factor=self.output_stride, mode="bilinear",
                          align_corners=False)            # (N, K, H, W)
        if not self.training or self.se_head is None:
            return out
        return {"out": out, "se": self.se_head(e)}        # se: (N, K) logits

    def loss(self, outputs, batch, ignore_index=-100):
        """Cross-entropy on the scores plus ``se_weight`` times the SE-loss.

        The SE-loss is the binary cross-entropy between the ``"se"`` logits and
        :func:`present_classes` of the batch's masks (mean over images and classes).

        Returns
        -------
        total : Tensor, shape ()
        terms : dict
            ``{"ce": ..., "se": ...}`` (``"se"`` only when the model has the SE head).
        """
        if not isinstance(outputs, dict):
            return super().loss(outputs, batch, ignore_index)
        total, terms = super().loss({"out": outputs["out"]}, batch, ignore_index)
        target = present_classes(batch["mask"], self.config.num_classes, ignore_index)
        terms["se"] = binary_cross_entropy_with_logits(outputs["se"], target)
        return total + self.config.se_weight * terms["se"], terms
