"""torchvision's full-size ``deeplabv3_resnet50`` and ``fcn_resnet50``, layer for layer.

torchvision (``torchvision.models.segmentation``) builds both models the same way: a ResNet-50
whose layer3 and layer4 are dilated instead of strided (``replace_stride_with_dilation=[False,
True, True]``: output stride 8), a head on layer4, and optionally an auxiliary FCN head on
layer3 that only training uses::

    image ─ ResNet-50 (output stride 8) ─ layer3 (1024 ch, 1/8) ─ layer4 (2048 ch, 1/8)
                                              │                       │
                                   aux_classifier: FCNHead      classifier: DeepLabHead
                                   (training only)              or FCNHead
                                              │                       │
                                        bilinear x8 ─ "aux"     bilinear x8 ─ "out"

    DeepLabHead = ASPP(2048, rates 12, 24, 36; 256 ch) ─ 3x3 conv 256 ─ BN ─ ReLU ─ 1x1 conv K
    FCNHead(C)  = 3x3 conv C/4 ─ BN ─ ReLU ─ Dropout(0.1) ─ 1x1 conv K

The modules here have torchvision's names, so ``state_dict()`` has exactly its keys and
shapes (``backbone.layer4.2.conv3.weight``, ``classifier.0.convs.1.0.weight``,
``aux_classifier.4.bias``...) and :func:`~edu_seg.models.load_torchvision_state_dict` loads
its (COCO-trained) weights as they are. Two differences from torchvision's models, both
about what ``forward`` returns, not what it computes:

- in eval mode ``forward`` returns the ``"out"`` scores as a plain Tensor (the contract of
  :mod:`edu_seg.models`), where torchvision returns ``{"out": ..., "aux": ...}`` always;
- in training with ``aux_loss=True`` it returns ``{"out", "aux"}``, and the default loss
  weights the auxiliary cross-entropy by 0.5, as torchvision's reference training script
  (``references/segmentation/train.py``) does.

These are the paper sizes of :mod:`~edu_seg.models.deeplabv3` and :mod:`~edu_seg.models.fcn`
in torchvision's variants, with no small version: ``create("deeplabv3_resnet50",
num_classes=21)`` has 39.6 M parameters. They differ from the papers' heads too: torchvision's
DeepLabV3 adds a 3x3 conv after ASPP, and its FCN is a dilated ResNet with one head instead
of FCN-8s's VGG with skips.

Segmenting a photo with torchvision's trained weights (downloaded once with torchvision on a
machine that has it, and saved as ``.npz`` so this code needs no torch)::

    import numpy as np
    from PIL import Image
    from edu_seg import models
    model = models.create("deeplabv3_resnet50", num_classes=21, aux_loss=True)
    models.load_torchvision_state_dict(model, np.load("deeplabv3_resnet50_coco.npz"))
    labels = segment_photo(model.eval(), np.asarray(Image.open("photo.jpg").convert("RGB")))
    # labels: (H, W) ints, Pascal VOC's classes (0 background, 15 person, ...)
"""
import dataclasses

import numpy as np

from .. import nn
from ..autograd import Tensor, no_grad
from ..ops.resample import interpolate
from . import register
from .backbones import create_backbone
from .base import SegmentationModel
from .blocks import ASPP

__all__ = ["TorchvisionSegmentationConfig", "DeepLabV3ResNet50", "FCNResNet50", "DeepLabHead",
           "FCNHead", "IMAGENET_MEAN", "IMAGENET_STD", "segment_photo"]

#: The per-channel mean and standard deviation of ImageNet's RGB pixels in [0, 1]: every
#: torchvision model was trained on images normalised with them.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclasses.dataclass
class TorchvisionSegmentationConfig:
    """Hyper-parameters of torchvision's segmentation models (the defaults are torchvision's).

    Attributes
    ----------
    num_classes : int
        torchvision's default is 21 (Pascal VOC's 20 classes and the background).
    in_channels : int
    aux_loss : bool
        Build the auxiliary FCN head on layer3 (torchvision's ``aux_loss``; its pretrained
        weights have it).
    """

    num_classes: int
    in_channels: int = 3
    aux_loss: bool = False


class FCNHead(nn.Sequential):
    """torchvision's ``FCNHead``: 3x3 conv (C -> C/4) -> BN -> ReLU -> Dropout(0.1) -> 1x1 conv.

    Shapes: ``(N, in_channels, h, w) -> (N, num_classes, h, w)``.
    """

    def __init__(self, in_channels, num_classes):
        inter = in_channels // 4
        super().__init__(nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
                         nn.BatchNorm2d(inter), nn.ReLU(), nn.Dropout(0.1),
                         nn.Conv2d(inter, num_classes, 1))


class DeepLabHead(nn.Sequential):
    """torchvision's ``DeepLabHead``: ASPP (rates 12, 24, 36 on the stride-8 map, i.e. the
    paper's 6, 12, 18 doubled; dropout 0.5) -> 3x3 conv 256 -> BN -> ReLU -> 1x1 conv.

    Shapes: ``(N, in_channels, h, w) -> (N, num_classes, h, w)``.
    """

    def __init__(self, in_channels, num_classes, atrous_rates=(12, 24, 36)):
        super().__init__(ASPP(in_channels, atrous_rates, 256, dropout=0.5),
                         nn.Conv2d(256, 256, 3, padding=1, bias=False),
                         nn.BatchNorm2d(256), nn.ReLU(),
                         nn.Conv2d(256, num_classes, 1))


class _TorchvisionSegmentation(SegmentationModel):
    """torchvision's ``_SimpleSegmentationModel`` on a ResNet-50 at output stride 8; a
    subclass names its ``head`` class (built as ``head(in_channels, num_classes)``)."""

    config_class = TorchvisionSegmentationConfig
    output_stride = 8
    aux_weights = {"aux": 0.5}
    small_version = False            # 40 M parameters and no small config: not a zoo row
    # load_torchvision_state_dict skips this child's keys when the model lacks it; a
    # segmentation model has no ImageNet classifier to skip.
    torchvision_head = None

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.backbone = create_backbone("resnet50", in_channels=c.in_channels,
                                        replace_stride_with_dilation=(False, True, True),
                                        num_classes=None)
        self.classifier = self.head(2048, c.num_classes)      # on layer4
        if c.aux_loss:
            self.aux_classifier = FCNHead(1024, c.num_classes)  # on layer3

    def forward(self, x):
        """x: (N, in_channels, H, W) -> scores (N, K, H, W); in training with ``aux_loss``,
        ``{"out": scores, "aux": layer3's scores (N, K, H, W)}``."""
        self.check_input_size(x.shape)
        size = x.shape[-2:]
        stages = self.backbone.stage_features(x)         # [stem, layer1, ..., layer4]
        scores = self.classifier(stages[-1])             # (N, K, H/8, W/8) from layer4
        out = interpolate(scores, size=size, mode="bilinear",
                          align_corners=False)           # (N, K, H, W)
        if not (self.training and self.config.aux_loss):
            return out
        aux = self.aux_classifier(stages[-2])            # (N, K, H/8, W/8) from layer3
        return {"out": out, "aux": interpolate(aux, size=size, mode="bilinear",
                                               align_corners=False)}  # (N, K, H, W)


@register("deeplabv3_resnet50")
class DeepLabV3ResNet50(_TorchvisionSegmentation):
    """torchvision's ``deeplabv3_resnet50``: dilated ResNet-50 and :class:`DeepLabHead`."""

    head = DeepLabHead


@register("fcn_resnet50")
class FCNResNet50(_TorchvisionSegmentation):
    """torchvision's ``fcn_resnet50``: dilated ResNet-50 and an :class:`FCNHead` on layer4."""

    head = FCNHead


@no_grad()
def segment_photo(model, image):
    """Label every pixel of an RGB photo with a model that holds torchvision's weights.

    The photo is prepared the way torchvision's weights expect: scaled to [0, 1], normalised
    with :data:`IMAGENET_MEAN` and :data:`IMAGENET_STD`, and padded at the bottom and right
    with the mean colour (zero after normalisation) to a multiple of the model's output
    stride; the padding is cropped off the labels again.

    Parameters
    ----------
    model : SegmentationModel
        In eval mode (``model.eval()``: batch norm must use its running statistics).
    image : ndarray of uint8, shape (H, W, 3)

    Returns
    -------
    ndarray of int64, shape (H, W)
        The class of every pixel (for the COCO-trained weights, Pascal VOC's 21 classes).

    Raises
    ------
    ValueError
        ``image`` not an (H, W, 3) uint8 array, or ``model`` in training mode.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"segment_photo: image must be an (H, W, 3) uint8 RGB array, got "
                         f"dtype {image.dtype} and shape {image.shape}; convert with "
                         f"np.asarray(PIL.Image.open(path).convert('RGB'))")
    if model.training:
        raise ValueError("segment_photo: the model is in training mode; call model.eval() "
                         "first (batch norm must use its running statistics)")
    H, W, _ = image.shape
    x = (image.astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD   # (H, W, 3)
    ph, pw = model.input_size_for(H), model.input_size_for(W)
    padded = np.zeros((1, 3, ph, pw), np.float32)                         # the mean colour
    padded[0, :, :H, :W] = x.transpose(2, 0, 1)
    scores = model(Tensor(padded)).data                                   # (1, K, ph, pw)
    return scores[0, :, :H, :W].argmax(axis=0)                            # (H, W)

