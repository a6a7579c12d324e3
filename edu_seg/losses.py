"""Segmentation losses: the functions (``losses.cross_entropy(logits, target)``) and the same as
configurable Modules (``loss_fn = losses.CrossEntropyLoss(ignore_index=255)``;
``loss_fn(logits, target)``), like ``torch.nn``'s loss classes.

The functions live in :mod:`edu_seg.ops.loss` (each one fused Function with a hand-written
backward); see there for the formulas.
"""
from .nn.module import Module
from .ops.loss import (binary_cross_entropy_with_logits, bootstrapped_cross_entropy,
                       cross_entropy, dice_loss, focal_loss)

__all__ = ["cross_entropy", "binary_cross_entropy_with_logits", "dice_loss", "focal_loss",
           "bootstrapped_cross_entropy", "CrossEntropyLoss", "BCEWithLogitsLoss", "DiceLoss",
           "FocalLoss", "BootstrappedCrossEntropyLoss"]


class _Loss(Module):
    """A loss function with its options fixed at construction; ``loss(logits, target)``."""

    function = None   # set by each subclass

    def __init__(self, **options):
        super().__init__()
        self.options = options

    def forward(self, logits, target):
        return self.function(logits, target, **self.options)

    def extra_repr(self):
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class CrossEntropyLoss(_Loss):
    """:func:`cross_entropy` as a Module."""

    function = staticmethod(cross_entropy)

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(weight=weight, ignore_index=ignore_index, reduction=reduction,
                         label_smoothing=label_smoothing)


class BCEWithLogitsLoss(_Loss):
    """:func:`binary_cross_entropy_with_logits` as a Module."""

    function = staticmethod(binary_cross_entropy_with_logits)

    def __init__(self, weight=None, pos_weight=None, reduction="mean"):
        super().__init__(weight=weight, pos_weight=pos_weight, reduction=reduction)


class DiceLoss(_Loss):
    """:func:`dice_loss` as a Module."""

    function = staticmethod(dice_loss)

    def __init__(self, num_classes=None, smooth=1.0, ignore_index=None):
        super().__init__(num_classes=num_classes, smooth=smooth, ignore_index=ignore_index)


class FocalLoss(_Loss):
    """:func:`focal_loss` as a Module."""

    function = staticmethod(focal_loss)

    def __init__(self, gamma=2.0, alpha=None, ignore_index=-100, reduction="mean"):
        super().__init__(gamma=gamma, alpha=alpha, ignore_index=ignore_index,
                         reduction=reduction)


class BootstrappedCrossEntropyLoss(_Loss):
    """:func:`bootstrapped_cross_entropy` as a Module."""

    function = staticmethod(bootstrapped_cross_entropy)

    def __init__(self, top_k, ignore_index=-100):
        super().__init__(top_k=top_k, ignore_index=ignore_index)
