"""Segmentation models, one readable file per architecture, and a registry to build them by name.

>>> import edu_seg.models as models
>>> models.available()                                          # doctest: +SKIP
['unet']
>>> model = models.create("unet", num_classes=4, depth=3, base_width=16)
>>> print(models.summary(model, (1, 3, 64, 64)))                # doctest: +SKIP

Every registered model is a :class:`~edu_seg.models.backbones.SegmentationModel`: an
``nn.Module`` built from a config dataclass (``model.config``), with a registry ``name`` and an
``output_stride``; the pair (name, config) is what a checkpoint stores to rebuild it.
"""
import dataclasses

__all__ = ["register", "create", "presets", "available", "get_model_class", "summary",
           "SegmentationModel", "InstanceSegmentationModel"]

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
from . import unet  # noqa: E402,F401  (registers "unet")
