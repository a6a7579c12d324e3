"""Config validation for every model, in one place, driven by the config dataclass itself.

A model's config is a dataclass whose annotations say what each field may hold::

    @dataclasses.dataclass
    class UNetConfig:
        num_classes: int                        # an int >= 1 (the default rule for ints)
        padding: Literal["same", "valid"] = "same"
        dropout: float = dataclasses.field(default=0.0, metadata={"min": 0.0, "max": 1.0})
        rates: tuple[int, ...] = (6, 12, 18)    # a tuple of ints >= 1

:func:`validate_config` checks every field against its annotation and raises a ``ValueError``
that names the config, the field, the value and what it needs, so no model repeats these
checks. A model adds a ``__post_init__`` only for rules that tie fields together.

Rules per annotation: ``int`` is an int (not a bool) >= 1 unless ``metadata={"min": m}``
says otherwise; ``float`` is a finite number within ``metadata`` ``min``/``max``; ``bool`` is
a bool; ``str`` is a str; ``Literal[...]`` is one of its values; ``tuple[X, ...]`` is a tuple
(a list is accepted and converted, since JSON has no tuples) whose items follow X's rule;
``Optional[X]`` is None or follows X's rule.
"""
import dataclasses
import math
import typing

__all__ = ["validate_config"]


def _fail(config, field, value, need):
    raise ValueError(f"{type(config).__name__}: {field} must be {need}, got {value!r}")


def _check(config, field, annotation, value, meta):
    """Check one value against one annotation; returns the (possibly converted) value."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union and type(None) in args:
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check(config, field, inner, value, meta)
    if origin is typing.Literal:
        if value not in args:
            _fail(config, field, value, "one of " + ", ".join(map(repr, args)))
        return value
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            _fail(config, field, value, f"a tuple ({annotation})")
        item = args[0]
        if len(args) != 2 or args[1] is not Ellipsis:   # fixed length, e.g. tuple[int, int]
            if len(value) != len(args):
                _fail(config, field, value, f"a tuple of {len(args)} items")
            return tuple(_check(config, field, a, v, meta) for a, v in zip(args, value))
        return tuple(_check(config, field, item, v, meta) for v in value)
    if annotation is bool:
        if not isinstance(value, bool):
            _fail(config, field, value, "True or False")
        return value
    if annotation is int:
        low = meta.get("min", 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            _fail(config, field, value, f"an int >= {low}")
        return value
    if annotation is float:
        low, high = meta.get("min", -math.inf), meta.get("max", math.inf)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or not low <= value <= high:
            _fail(config, field, value, f"a finite number in [{low}, {high}]")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            _fail(config, field, value, "a string")
        return value
    raise TypeError(f"{type(config).__name__}: field {field} has annotation {annotation!r}, "
                    f"which validate_config does not know; use int, float, bool, str, "
                    f"Literal, tuple or Optional")


def validate_config(config):
    """Check every field of the dataclass ``config`` against its annotation, in place.

    Lists given for tuple fields become tuples (a config read back from JSON compares equal
    to the one that was saved).

    Raises
    ------
    TypeError
        If ``config`` is not a dataclass instance.
    ValueError
        Naming the config class, the field, the value and what it needs.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"validate_config: expected a dataclass instance, got "
                        f"{type(config).__name__}")
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = _check(config, f.name, hints[f.name], getattr(config, f.name), f.metadata)
        object.__setattr__(config, f.name, value)
