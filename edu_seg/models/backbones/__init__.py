"""Backbones: the image classifiers that segmentation models are built on, read by stride.

A segmentation network is usually a classification network (the *backbone*, or *encoder*)
whose intermediate feature maps a decoder combines: the fine, early maps know WHERE the edges
are, the coarse, late maps know WHAT the object is. What a decoder needs from a backbone is
therefore not its class scores but its feature maps, and the natural way to name them is by
their **stride**: how many input pixels one feature pixel spans. A map of stride 8 of a
64x64 image is 8x8.

Every backbone here is a :class:`Backbone` with the same interface::

    backbone = create_backbone("resnet_tiny")
    feats = backbone.features(x)       # {2: (N, 8, H/2, W/2), 4: ..., 8: ..., 16: ..., 32: ...}
    backbone.channels                  # {2: 8, 4: 8, 8: 16, 16: 32, 32: 64}
    backbone.output_stride             # 32: the stride of the deepest stage

The stage rule
    A backbone is a sequence of **stages**; a stage ends where the resolution is about to
    drop (just before the next stride-2 layer), so each stage's output is the deepest,
    richest map at its resolution. :meth:`Backbone.stage_features` returns every stage's
    output, in order; :meth:`Backbone.features` returns one entry per stage keyed by that
    stage's REAL output stride, and when several stages share a stride the later (deeper)
    one wins. So a ResNet at output stride 8 (its last two stages dilated instead of
    strided, see below) has stages of strides 2, 4, 8, 8, 8 and ``features`` gives
    ``{2: stem, 4: layer1, 8: layer4}``; a decoder that wants layer2 and layer3 too reads
    ``stage_features``, with :attr:`Backbone.stage_strides` and
    :attr:`Backbone.stage_channels` beside it.

Dilation instead of stride (the "atrous" trick)
    Segmentation wants dense predictions, but every stride-2 layer halves the resolution. Yu &
    Koltun ("Multi-Scale Context Aggregation by Dilated Convolutions", ICLR 2016) and Chen et
    al. (DeepLab, TPAMI 2017; DeepLabV3, arXiv:1706.05587) remove the last strides and
    DILATE every later 3x3 convolution by the factor the stride would have applied: a 3x3
    kernel with dilation 2 reads pixels 2 apart, so on the un-subsampled map it sees exactly
    the pixels it saw on the subsampled one, and a pretrained network computes the same
    function, only at more positions. The layer that HAD the stride keeps the previous
    dilation: it still reads the fine input grid (a strided conv's taps are 1 pixel apart in
    its input; only its outputs were 2 apart), so only the layers AFTER it read a grid that
    used to be coarser. torchvision's ``replace_stride_with_dilation`` follows this rule (its
    first block of a dilated stage gets the previous dilation); :class:`StrideSchedule`
    applies it for every backbone here. Every family takes an ``output_stride`` of 8, 16 or
    32 (ResNet also 4). A VGG max-pool that loses its stride becomes an identity, as in
    DeepLab-LargeFOV, and so does a DenseNet transition's avg-pool; only where strided
    CONVOLUTIONS lose their stride (ResNet, MobileNetV2, Xception) is the dilated network
    exactly the strided one at more positions, since a removed pool no longer takes the max
    or the mean of its window.

Sizes
    Full-size presets reproduce torchvision's models layer for layer (same ``state_dict`` keys
    and shapes, so :func:`load_torchvision_state_dict` loads ImageNet weights into them);
    tiny presets (``*_tiny``) have a few thousand to a few hundred thousand parameters and
    train on a CPU in minutes. The small presets ``vgg_bn_small``, ``resnet_small``,
    ``densenet_small``, ``mobilenet_v2_small`` and ``xception_small`` are the set matched at
    about 200K parameters (within 5%), one per family, for comparing the families at equal
    size: each is its family's tiny preset widened, and deepened where the family grows that
    way (``vgg_bn_tiny``, already at 209K, is reshaped into VGG-16's layout instead); their
    FLOPs are not matched (on a 64x64 image at output stride 32, from 9 MFLOPs for
    ``resnet_small`` to 40 for ``vgg_bn_small``): what each family spends its parameters on
    is part of the comparison. Width and depth are config fields of every family.

>>> available_backbones()                                            # doctest: +SKIP
['densenet121', 'densenet_tiny', 'mobilenet_v2', ..., 'xception_tiny']
>>> create_backbone("resnet_tiny", output_stride=8).stage_strides
[2, 4, 8, 8, 8]
"""
import dataclasses

from ... import nn
from ..config import validate_config

__all__ = ["Backbone", "SequentialBackbone", "StrideSchedule", "register_backbone",
           "create_backbone", "available_backbones", "backbone_presets",
           "load_torchvision_state_dict", "TorchvisionWeightsError", "VGG", "VGGConfig",
           "ResNet", "ResNetConfig", "BasicBlock", "Bottleneck", "DenseNet", "DenseNetConfig", "MobileNetV2",
           "MobileNetV2Config", "InvertedResidual", "Xception", "XceptionConfig",
           "SeparableConv2d"]


class Backbone(nn.Module):
    """Base class of the backbones: stage outputs keyed by their stride.

    A subclass sets :attr:`config_class` (a dataclass whose defaults are its tiny version),
    builds its layers in ``__init__`` (after ``super().__init__(config)``), fills
    :attr:`stage_strides` and :attr:`stage_channels`, and defines :meth:`stage_features`.

    Parameters
    ----------
    config : dataclass instance, optional
        The family's config; None builds the defaults (the tiny version). Validated against
        its annotations (:func:`edu_seg.models.config.validate_config`).

    Attributes
    ----------
    config : dataclass instance
    name : str or None
        The preset name when built by :func:`create_backbone`.
    stage_strides : list of int
        The real output stride of each stage, in order (non-decreasing).
    stage_channels : list of int
        The channels of each stage's output.
    torchvision_head : str or None
        The name of torchvision's classifier module (``"fc"``, ``"classifier"``), which
        :func:`load_torchvision_state_dict` skips when this backbone was built without one.
    """

    config_class = None
    torchvision_head = None

    def __init__(self, config=None):
        super().__init__()
        config = self.config_class() if config is None else config
        validate_config(config)
        self.config = config
        self.name = None
        self.stage_strides, self.stage_channels = [], []

    @property
    def channels(self):
        """``{stride: channels}`` of :meth:`features` (a later stage wins a shared stride)."""
        return dict(zip(self.stage_strides, self.stage_channels))

    @property
    def output_stride(self):
        """The stride of the deepest stage: 32, or 16 or 8 with dilation."""
        return self.stage_strides[-1]

    def stage_features(self, x):
        """Every stage's output, in order: a list of (N, stage_channels[i], H/s_i, W/s_i)."""
        raise NotImplementedError(f"{type(self).__name__} must define stage_features()")

    def features(self, x):
        """``{stride: Tensor}``: each stage's output under its real stride, the deepest stage
        winning when several share one. x: (N, C, H, W) -> {s: (N, channels[s], H/s, W/s)}
        when H and W are multiples of 32 (other sizes round down or up, depending on the
        family's pooling)."""
        return dict(zip(self.stage_strides, self.stage_features(x)))

    def forward(self, x):
        """The same as :meth:`features`."""
        return self.features(x)

    def classify(self, x):
        """Class scores (N, num_classes), as torchvision's ``model(x)`` computes them.

        Only for a backbone built with ``num_classes`` (the full-size presets: 1000 ImageNet
        classes), e.g. to check that loaded ImageNet weights recognise an image.
        """
        if getattr(self.config, "num_classes", None) is None:
            raise ValueError(f"{self.name or type(self).__name__}: built without a classifier "
                             f"(num_classes=None), so it cannot classify; build it with "
                             f"num_classes=K")
        return self._head(self.stage_features(x)[-1])


class SequentialBackbone(Backbone):
    """A backbone whose layers form ONE Sequential registered as ``features``, as torchvision
    builds VGG, MobileNetV2 and DenseNet; its stages end at the children named in
    :attr:`stage_ends`.

    The child keeps torchvision's name so the state-dict keys are torchvision's
    (``features.0.weight``), but ``self.features`` is the :meth:`Backbone.features` method
    (a class attribute is found before a registered child); reach the Sequential as
    :attr:`layers`.

    Attributes
    ----------
    stage_ends : list of str
        Names of the children of ``layers`` whose outputs are the stage outputs.
    """

    def __init__(self, config=None):
        super().__init__(config)
        self.stage_ends = []

    @property
    def layers(self):
        """torchvision's ``model.features``: the Sequential of all feature layers."""
        return self._modules["features"]

    def stage_features(self, x):
        """Run :attr:`layers`, keeping the output of each child named in :attr:`stage_ends`."""
        outputs = []
        for name, layer in self.layers.named_children():
            x = layer(x)
            if name in self.stage_ends:
                outputs.append(x)
        return outputs


class StrideSchedule:
    """Walks a network's down-sampling layers and turns strides into dilation where asked.

    Each strided layer calls :meth:`step` with its nominal stride; past ``output_stride``
    (or wherever ``dilate=True`` says, torchvision's ``replace_stride_with_dilation``) the
    stride becomes 1 and the dilation of the layers AFTER it is multiplied by the stride
    instead (module docstring: the layer that had the stride keeps the previous dilation).

    Attributes
    ----------
    stride : int
        The real stride of the map after the layers stepped so far.
    dilation : int
        The dilation that layers after the last step use.

    Examples
    --------
    >>> s = StrideSchedule(output_stride=8)
    >>> [s.step(2) for _ in range(5)]          # (stride to use, dilation of that layer)
    [(2, 1), (2, 1), (2, 1), (1, 1), (1, 2)]
    >>> s.stride, s.dilation
    (8, 4)
    """

    def __init__(self, output_stride=32):
        self.output_stride = output_stride
        self.stride, self.dilation = 1, 1

    def step(self, stride, dilate=None):
        """A layer of nominal ``stride``: returns ``(stride, dilation)`` to build it with.

        ``dilate`` None decides by ``output_stride``; True/False forces the choice (a
        stride-1 layer is never dilated by its own step).
        """
        if dilate is None:
            dilate = self.stride * stride > self.output_stride
        previous = self.dilation
        if dilate and stride > 1:
            self.dilation *= stride
            stride = 1
        self.stride *= stride
        return stride, previous


# ----------------------------------------------------------------------------- the registry
_PRESETS = {}


def register_backbone(name, cls, **preset):
    """Make ``create_backbone(name)`` build ``cls`` with the config fields ``preset``."""
    if name in _PRESETS:
        raise ValueError(f"register_backbone: a backbone named {name!r} is already registered")
    _PRESETS[name] = (cls, preset)


def available_backbones():
    """Names of the registered backbones, sorted."""
    return sorted(_PRESETS)


def backbone_presets(name):
    """The config fields of preset ``name`` (on top of its family's defaults)."""
    return dict(_lookup(name)[1])


def _lookup(name):
    if name not in _PRESETS:
        raise ValueError(f"unknown backbone {name!r}; available backbones: "
                         f"{', '.join(available_backbones())}")
    return _PRESETS[name]


def create_backbone(name, **overrides):
    """Build the backbone registered as ``name``; keywords override its config fields.

    Parameters
    ----------
    name : str
        One of :func:`available_backbones`: full size ``vgg16``, ``vgg16_bn``, ``resnet18``,
        ``resnet50``, ``mobilenet_v2``, ``densenet121`` (torchvision's layers and names);
        tiny ``vgg_tiny``, ``vgg_bn_tiny``, ``resnet_tiny``, ``resnet_bottleneck_tiny``,
        ``densenet_tiny``, ``mobilenet_v2_tiny``, ``xception_tiny``; small, the set matched
        at ~200K parameters: ``vgg_bn_small``, ``resnet_small``, ``densenet_small``,
        ``mobilenet_v2_small``, ``xception_small``.
    **overrides
        Fields of the family's config, e.g. ``in_channels=1``, ``output_stride=16``,
        ``num_classes=None`` (drop a full-size model's classifier).

    Raises
    ------
    ValueError
        Unknown name, or an unknown or invalid field (the message lists the fields).

    Examples
    --------
    >>> create_backbone("resnet_tiny").channels
    {2: 8, 4: 8, 8: 16, 16: 32, 32: 64}
    >>> create_backbone("resnet50", replace_stride_with_dilation=(False, True, True),
    ...                 num_classes=None).channels                   # doctest: +SKIP
    {2: 64, 4: 256, 8: 2048}
    """
    cls, preset = _lookup(name)
    fields = [f.name for f in dataclasses.fields(cls.config_class)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"create_backbone({name!r}): unknown config field(s) "
                         f"{', '.join(unknown)}; {cls.config_class.__name__} has: "
                         f"{', '.join(fields)}")
    model = cls(cls.config_class(**{**preset, **overrides}))
    model.name = name
    return model


# Each family registers its presets when imported (after Backbone exists: they subclass it).
from .vgg import VGG, VGGConfig  # noqa: E402
from .resnet import BasicBlock, Bottleneck, ResNet, ResNetConfig  # noqa: E402
from .densenet import DenseNet, DenseNetConfig  # noqa: E402
from .mobilenetv2 import InvertedResidual, MobileNetV2, MobileNetV2Config  # noqa: E402
from .xception import SeparableConv2d, Xception, XceptionConfig  # noqa: E402
from .torchvision_weights import (TorchvisionWeightsError,  # noqa: E402
                                  load_torchvision_state_dict)
