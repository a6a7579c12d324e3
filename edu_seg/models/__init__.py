"""Segmentation models, one readable file per architecture, and a registry to build them by name.

>>> import edu_seg.models as models
>>> models.available()                                          # doctest: +SKIP
['deeplab_largefov', 'dilatednet', 'fcn16s', 'fcn32s', 'fcn8s', 'segnet', 'unet']
>>> model = models.create("unet", num_classes=4)                # the small CPU version
>>> print(models.summary(model, (1, 3, 64, 64)))                # doctest: +SKIP

The model contract (every registered model keeps it; :mod:`edu_seg.models.base` has the code)
------------------------------------------------------------------------------------------------
- **Building.** ``create(name, num_classes=K)`` with nothing else gives the small version that
  trains on 2 CPU cores in minutes; paper sizes are named presets (``preset="paper"``). A
  model is a class with a config dataclass (``model.config``; its annotations are validated in
  one place, :mod:`edu_seg.models.config`), registered by one decorator in its own file
  (``@register("unet")``). The pair (name, config) is what a checkpoint stores to rebuild it.
- **Semantic models** (:class:`SegmentationModel`): ``forward(x)`` maps ``x: (N, C, H, W)``
  to class scores ``(N, num_classes, H, W)`` at the input's resolution (a U-Net of valid
  convolutions predicts the centre: ``output_size(H)``). Extra heads (auxiliary classifiers,
  a boundary branch) appear only in training mode, as named outputs ``{"out": scores,
  "aux": ...}``; eval mode always returns the plain score Tensor. ``H`` and ``W`` must be
  multiples of ``output_stride``; other inputs get a ``ValueError`` that names the size to
  pad to.
- **The model owns its loss.** The Trainer calls ``outputs = model.forward_train(batch)``
  and ``total, terms = model.loss(outputs, batch)``, backpropagates ``total`` and logs every
  named term; it never looks inside ``outputs``. The default loss is cross-entropy on
  ``"out"`` plus ``aux_weights[name]`` times the cross-entropy of each extra output; a model
  with other needs (label guidance at several scales, a boundary loss, an SE-loss) overrides
  ``loss`` in its own file.
- **Instance models** (:class:`InstanceSegmentationModel`, e.g. Mask R-CNN): in training
  ``forward(x, targets)`` returns a dict of named losses (``loss`` sums them with
  ``loss_weights``); in eval ``forward(x)`` returns one dict per image ``{boxes, labels,
  scores, masks}``.
- **Backbones** (:func:`create_backbone`) expose ``features(x) -> {stride: Tensor}`` and
  ``channels -> {stride: int}``, so a decoder picks its skips by stride;
  :func:`load_torchvision_state_dict` loads torchvision's weights into the full-size ones.
"""
import dataclasses

__all__ = ["register", "create", "presets", "available", "get_model_class", "summary",
           "SegmentationModel", "InstanceSegmentationModel", "create_backbone",
           "available_backbones", "load_torchvision_state_dict"]

_REGISTRY = {}


def register(name):
    """Class decorator: make a :class:`SegmentationModel` subclass buildable by ``create(name)``.

    The class must set ``config_class`` to a dataclass of its hyper-parameters.
    """
    def decorate(cls):
        if name in _REGISTRY:
            raise ValueError(f"register: a model named {name!r} is already registered")
        if not dataclasses.is_dataclass(getattr(cls, "config_class", None)):
            raise TypeError(f"register: {cls.__name__}.config_class must be a dataclass")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return decorate


def available():
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


def get_model_class(name):
    """The class registered as ``name``; a ``ValueError`` listing the choices otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(available())}")
    return _REGISTRY[name]


def create(name, preset=None, **config):
    """Build the model registered as ``name``; with no config it is the small CPU version.

    Parameters
    ----------
    name : str
        One of :func:`available`.
    preset : str, optional
        A named config of the model (``presets(name)`` lists them, e.g. ``"paper"``); the
        keyword fields below override it.
    **config
        Fields of the model's config dataclass (e.g. ``num_classes=4, depth=3`` for U-Net).

    Raises
    ------
    ValueError
        Unknown model name or preset, or an unknown, missing or invalid config field (the
        message lists the accepted fields).

    Examples
    --------
    >>> create("unet", num_classes=4).config.base_width          # the small default
    16
    >>> create("unet", num_classes=4, preset="paper").config.base_width
    64
    """
    cls = get_model_class(name)
    if preset is not None:
        if preset not in cls.presets:
            raise ValueError(f"create({name!r}): unknown preset {preset!r}; {name} has "
                             f"{', '.join(map(repr, cls.presets)) or 'no presets'}")
        config = {**cls.presets[preset], **config}
    fields = {f.name: f for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ValueError(f"create({name!r}): unknown config field(s) {', '.join(unknown)}; "
                         f"{cls.config_class.__name__} has: {', '.join(fields)}")
    missing = [n for n, f in fields.items() if n not in config
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"create({name!r}): missing required config field(s) "
                         f"{', '.join(missing)}")
    return cls(cls.config_class(**config))


def presets(name):
    """The named presets of model ``name``: a dict of preset name -> config fields."""
    return dict(get_model_class(name).presets)


from .base import InstanceSegmentationModel, SegmentationModel  # noqa: E402
from .summary import summary  # noqa: E402
from .backbones import (available_backbones, create_backbone,  # noqa: E402
                        load_torchvision_state_dict)
from . import deeplab_largefov, dilatednet, fcn, segnet, unet  # noqa: E402,F401  (each registers its models)
from . import pspnet  # noqa: E402,F401
from . import refinenet  # noqa: E402,F401
from . import gcn  # noqa: E402,F401
from . import fc_densenet  # noqa: E402,F401
from . import deeplabv3  # noqa: E402,F401
from . import frrn  # noqa: E402,F401
from . import torchvision_segmentation  # noqa: E402,F401
from . import deeplabv3plus  # noqa: E402,F401
from . import denseaspp  # noqa: E402,F401
from . import encnet  # noqa: E402,F401
from . import ddsc  # noqa: E402,F401
from . import icnet  # noqa: E402,F401
from . import bisenet  # noqa: E402,F401
from . import dfn  # noqa: E402,F401
from . import exfuse  # noqa: E402,F401
from . import mask_rcnn  # noqa: E402,F401
from . import rcnn_regions  # noqa: E402,F401
