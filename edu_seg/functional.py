"""Differentiable operations, PyTorch-shaped: ``import edu_seg.functional as F``.

Each op validates its arguments (a clear ``ValueError``/``TypeError`` naming the argument, what
it got and what it needs), then runs the kernels of the current backend through a
:class:`~edu_seg.autograd.Function`. The ops live in ``edu_seg/ops/<family>.py``; this module
gathers them into one namespace.
"""
from .autograd import cat, pad, stack  # noqa: F401
from .ops.activations import log_softmax, relu, sigmoid, softmax, tanh  # noqa: F401
from .ops.conv import conv2d, conv_transpose2d  # noqa: F401
from .ops.loss import (binary_cross_entropy_with_logits, bootstrapped_cross_entropy,  # noqa: F401
                       cross_entropy, dice_loss, focal_loss, smooth_l1_loss)
from .ops.misc import dropout, dropout2d, leaky_relu  # noqa: F401
from .ops.norm import batch_norm, group_norm  # noqa: F401
from .ops.roi import roi_align, roi_pool  # noqa: F401
from .ops.pool import (adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d,  # noqa: F401
                       max_pool2d, max_unpool2d)
from .ops.resample import interpolate, pixel_shuffle, pixel_unshuffle  # noqa: F401
from .ops.tensor import (abs, chunk, clip, gather, maximum, minimum, split,  # noqa: F401
                         take_along_axis, var, where)
