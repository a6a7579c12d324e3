"""The layers of a segmentation network as Modules: each holds its weights and options and calls
one differentiable op of :mod:`edu_seg.functional` in ``forward``.

Constructor arguments, defaults, weight shapes, initialisation and ``repr`` follow PyTorch's
``torch.nn``, so a model written for one reads the same in the other (and the state-dict keys
match). All layers work on (N, C, H, W) float32 (default) or float64 tensors.

Each layer also declares two facts about itself, so that tools need no table of layer types
(a new layer is counted as soon as it declares them): ``flops(x, y)``, the floating-point
operations of one call (one multiply-add = 2 FLOPs), used by :func:`edu_seg.models.summary`;
and ``window()``, the sliding window it applies (kernel, stride, padding, dilation), used by
the receptive-field arithmetic of :mod:`edu_seg.viz.receptive_field`.
"""
import math

import numpy as np

from ..ops.activations import relu, relu6, sigmoid
from ..ops.conv import conv2d, conv_transpose2d
from ..ops.misc import dropout, dropout2d, leaky_relu
from ..ops.pool import (adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, check_bool,
                        max_pool2d, max_unpool2d)
from ..ops.resample import interpolate, pixel_shuffle
from . import init
from .module import Module, Parameter

__all__ = ["Conv2d", "ConvTranspose2d", "Linear", "ReLU", "ReLU6", "LeakyReLU", "Sigmoid", "Dropout", "Dropout2d",
           "MaxPool2d", "MaxUnpool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
           "Upsample", "PixelShuffle", "Identity"]


def _pair(name, value):
    """An int or a pair of ints as an (int, int) tuple (rows, columns)."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    is_int = (lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool))
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(map(is_int, pair)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_channels(layer, in_channels, out_channels, groups):
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                    ("groups", groups)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{layer}: {name} must be a positive integer, got {v!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"{layer}: groups={groups} must divide in_channels={in_channels} and "
                         f"out_channels={out_channels}")


def _check_window(layer, kernel_size, stride, padding, dilation):
    """kernel_size, stride and dilation >= 1 and padding >= 0 on both axes (already pairs)."""
    for name, v, low in (("kernel_size", kernel_size, 1), ("stride", stride, 1),
                         ("dilation", dilation, 1), ("padding", padding, 0)):
        if min(v) < low:
            what = "positive" if low else "non-negative"
            raise ValueError(f"{layer}: {name} must be {what} (>= {low}) on both axes, "
                             f"got {v}")


#: ``window()`` of a layer that acts on each pixel on its own (activations, dropout).
POINTWISE_WINDOW = ((1, 1), (1, 1), (0, 0), (1, 1))


def _bias_flops(layer, y):
    """One add per output element if the layer has a bias."""
    return y.size if getattr(layer, "bias", None) is not None else 0


def _conv_repr(layer, extra_defaults):
    """PyTorch's Conv repr: channels, kernel and stride always, other options when not default."""
    s = (f"{layer.in_channels}, {layer.out_channels}, kernel_size={layer.kernel_size}, "
         f"stride={layer.stride}")
    for name, default in extra_defaults:
        value = getattr(layer, name)
        if value != default:
            s += f", {name}={value}"
    if layer.bias is None:
        s += ", bias=False"
    return s


def _reset_conv(layer, fan_in):
    """PyTorch's default: weight ~ kaiming_uniform(a=√5), i.e. U(±1/√fan_in); bias U(±1/√fan_in)."""
    init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
    if layer.bias is not None:
        bound = 1 / math.sqrt(fan_in)
        init.uniform_(layer.bias, -bound, bound)


class Conv2d(Module):
    """2-D convolution (cross-correlation) with learned filters.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or (int, int)
    padding : int, (int, int), "same" or "valid"
        Zero padding on both sides. "same" (stride 1 only) pads by dilation·(k − 1)/2 so the
        output keeps the input's size (needs an odd effective kernel); "valid" is 0.
    groups : int
        Split the channels into ``groups`` independent convolutions (groups = in_channels is
        depthwise).
    bias : bool

    Attributes
    ----------
    weight : Parameter of shape (out_channels, in_channels/groups, KH, KW)
    bias : Parameter of shape (out_channels,) or None

    Shapes: x (N, C_in, H, W) -> y (N, C_out, OH, OW),
    OH = ⌊(H + 2·padding − dilation·(KH − 1) − 1)/stride⌋ + 1 (OW likewise).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True):
        super().__init__()
        _check_channels("Conv2d", in_channels, out_channels, groups)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair("Conv2d: kernel_size", kernel_size)
        self.stride = _pair("Conv2d: stride", stride)
        self.dilation = _pair("Conv2d: dilation", dilation)
        self.padding = self._resolve_padding(padding)
        _check_window("Conv2d", self.kernel_size, self.stride, self.padding, self.dilation)
        kh, kw = self.kernel_size
        self.weight = Parameter(np.empty((out_channels, in_channels // groups, kh, kw),
                                         np.float32))
        has_bias = check_bool("Conv2d", "bias", bias)
        self.bias = Parameter(np.empty(out_channels, np.float32)) if has_bias else None
        self.reset_parameters()

    def _resolve_padding(self, padding):
        if padding == "valid":
            return (0, 0)
        if padding != "same":
            return _pair("Conv2d: padding", padding)
        if self.stride != (1, 1):
            raise ValueError(f"Conv2d: padding='same' needs stride 1, got stride={self.stride}")
        spans = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
        if any(s % 2 for s in spans):
            raise ValueError(f"Conv2d: padding='same' needs dilation·(kernel_size − 1) even on "
                             f"both axes (symmetric padding), got kernel_size="
                             f"{self.kernel_size}, dilation={self.dilation}")
        return spans[0] // 2, spans[1] // 2

    def reset_parameters(self):
        """Draw fresh initial weights (PyTorch's default; see :mod:`edu_seg.nn.init`)."""
        _reset_conv(self, self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1])

    def forward(self, x):
        return conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                      dilation=self.dilation, groups=self.groups)

    def flops(self, x, y):
        """2 · C_in/groups · KH · KW per output element (+1 for the bias)."""
        return 2 * y.size * int(np.prod(self.weight.shape[1:])) + _bias_flops(self, y)

    def window(self):
        return self.kernel_size, self.stride, self.padding, self.dilation

    def extra_repr(self):
        return _conv_repr(self, [("padding", (0, 0)), ("dilation", (1, 1)), ("groups", 1)])


class ConvTranspose2d(Module):
    """Transposed convolution ("deconvolution"): the gradient of Conv2d with respect to its
    input, used as a learned up-sampling (U-Net's 2×2 up-conv, FCN's ×2 score up-sampling).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, output_padding, dilation : int or (int, int)
        ``output_padding`` (< max(stride, dilation)) adds rows/columns on one side to pick
        among the input sizes that a strided conv maps to the same output size.
    groups : int
    bias : bool

    Attributes
    ----------
    weight : Parameter of shape (in_channels, out_channels/groups, KH, KW)
    bias : Parameter of shape (out_channels,) or None

    Shapes: x (N, C_in, H, W) -> y (N, C_out, OH, OW),
    OH = (H − 1)·stride − 2·padding + dilation·(KH − 1) + output_padding + 1.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1):
        super().__init__()
        _check_channels("ConvTranspose2d", in_channels, out_channels, groups)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair("ConvTranspose2d: kernel_size", kernel_size)
        self.stride = _pair("ConvTranspose2d: stride", stride)
        self.padding = _pair("ConvTranspose2d: padding", padding)
        self.output_padding = _pair("ConvTranspose2d: output_padding", output_padding)
        self.dilation = _pair("ConvTranspose2d: dilation", dilation)
        _check_window("ConvTranspose2d", self.kernel_size, self.stride, self.padding,
                      self.dilation)
        if min(self.output_padding) < 0:
            raise ValueError(f"ConvTranspose2d: output_padding must be non-negative, got "
                             f"{self.output_padding}")
        kh, kw = self.kernel_size
        self.weight = Parameter(np.empty((in_channels, out_channels // groups, kh, kw),
                                         np.float32))
        has_bias = check_bool("ConvTranspose2d", "bias", bias)
        self.bias = Parameter(np.empty(out_channels, np.float32)) if has_bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """PyTorch's default initialisation (fan_in read from weight.shape[1], as PyTorch does)."""
        _reset_conv(self, self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1])

    def forward(self, x):
        return conv_transpose2d(x, self.weight, self.bias, stride=self.stride,
                                padding=self.padding, output_padding=self.output_padding,
                                groups=self.groups, dilation=self.dilation)

    def flops(self, x, y):
        """Every input element stamps a C_out/groups · KH · KW kernel: 2 FLOPs per tap."""
        return 2 * x.size * int(np.prod(self.weight.shape[1:])) + _bias_flops(self, y)

    def extra_repr(self):
        return _conv_repr(self, [("padding", (0, 0)), ("output_padding", (0, 0)),
                                 ("dilation", (1, 1)), ("groups", 1)])


class ReLU(Module):
    """max(x, 0), elementwise."""

    def forward(self, x):
        return relu(x)

    def flops(self, x, y):
        return y.size

    def window(self):
        return POINTWISE_WINDOW


class LeakyReLU(Module):
    """x for x > 0, ``negative_slope``·x otherwise, elementwise."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return leaky_relu(x, self.negative_slope)

    def flops(self, x, y):
        return y.size

    def window(self):
        return POINTWISE_WINDOW

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    """1 / (1 + e^−x), elementwise."""

    def forward(self, x):
        return sigmoid(x)

    def flops(self, x, y):
        return y.size

    def window(self):
        return POINTWISE_WINDOW


class Identity(Module):
    """Returns its input: a placeholder where a block is optional (e.g. no norm layer)."""

    def forward(self, x):
        return x

    def flops(self, x, y):
        return 0

    def window(self):
        return POINTWISE_WINDOW


class Dropout(Module):
    """In training, zero each element with probability ``p`` and scale the rest by 1/(1 − p);
    the identity in evaluation. Masks come from the seeded generator of :mod:`edu_seg.nn.init`.
    """

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p must be in [0, 1], got {p!r}")
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)

    def flops(self, x, y):
        return 0

    def window(self):
        return POINTWISE_WINDOW

    def extra_repr(self):
        return f"p={self.p}"


class Dropout2d(Dropout):
    """Channel dropout: in training each (n, c) feature map is zeroed with probability ``p``
    (and the rest scaled by 1/(1 − p)); the identity in evaluation. x: (N, C, H, W).
    """

    def forward(self, x):
        return dropout2d(x, self.p, self.training)


class MaxPool2d(Module):
    """Max over each kernel window (``F.max_pool2d``).

    With ``return_indices=True`` the call returns ``(y, indices)``: the flat position
    h·W + w of each maximum in its (n, c) plane, which :class:`MaxUnpool2d` uses (SegNet).
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.dilation = padding, dilation
        self.return_indices = check_bool("MaxPool2d", "return_indices", return_indices)
        self.ceil_mode = check_bool("MaxPool2d", "ceil_mode", ceil_mode)

    def forward(self, x):
        return max_pool2d(x, self.kernel_size, stride=self.stride, padding=self.padding,
                          dilation=self.dilation, ceil_mode=self.ceil_mode,
                          return_indices=self.return_indices)

    def flops(self, x, y):
        """One comparison per window element read."""
        y = y[0] if isinstance(y, tuple) else y
        kh, kw = _pair("MaxPool2d: kernel_size", self.kernel_size)
        return y.size * kh * kw

    def window(self):
        return tuple(_pair(f"MaxPool2d: {name}", v) for name, v in (
            ("kernel_size", self.kernel_size), ("stride", self.stride),
            ("padding", self.padding), ("dilation", self.dilation)))

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxUnpool2d(Module):
    """Put each value back where :class:`MaxPool2d` found its maximum; zeros elsewhere.

    ``forward(x, indices, output_size=None)``.
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding

    def forward(self, x, indices, output_size=None):
        return max_unpool2d(x, indices, self.kernel_size, stride=self.stride,
                            padding=self.padding, output_size=output_size)

    def flops(self, x, y):
        return 0        # a scatter: it moves values, it computes nothing

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    """Mean over each kernel window (``F.avg_pool2d``)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = check_bool("AvgPool2d", "ceil_mode", ceil_mode)
        self.count_include_pad = check_bool("AvgPool2d", "count_include_pad", count_include_pad)

    def forward(self, x):
        return avg_pool2d(x, self.kernel_size, stride=self.stride, padding=self.padding,
                          ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)

    def flops(self, x, y):
        """One add per window element read (the division is one more per output)."""
        kh, kw = _pair("AvgPool2d: kernel_size", self.kernel_size)
        return y.size * (kh * kw + 1)

    def window(self):
        return tuple(_pair(f"AvgPool2d: {name}", v) for name, v in (
            ("kernel_size", self.kernel_size), ("stride", self.stride),
            ("padding", self.padding))) + ((1, 1),)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average into a fixed ``output_size`` grid of bins, whatever the input size (PSPNet's
    pyramid pooling; ``output_size=1`` is global average pooling)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return adaptive_avg_pool2d(x, self.output_size)

    def flops(self, x, y):
        return x.size   # every input element is added once (bins overlap by at most a row)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """Max into a fixed ``output_size`` grid of bins, whatever the input size."""

    def __init__(self, output_size, return_indices=False):
        super().__init__()
        self.output_size = output_size
        self.return_indices = check_bool("AdaptiveMaxPool2d", "return_indices", return_indices)

    def forward(self, x):
        return adaptive_max_pool2d(x, self.output_size, return_indices=self.return_indices)

    def flops(self, x, y):
        return x.size   # one comparison per input element

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Upsample(Module):
    """Resize by ``scale_factor`` or to ``size`` (``F.interpolate``): "nearest" or "bilinear"."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None):
        super().__init__()
        self.size, self.scale_factor = size, scale_factor
        self.mode = mode
        self.align_corners = check_bool("Upsample", "align_corners", align_corners, allow_none=True)

    def forward(self, x):
        return interpolate(x, size=self.size, scale_factor=self.scale_factor, mode=self.mode,
                           align_corners=self.align_corners)

    def flops(self, x, y):
        """Bilinear: 4 multiply-adds per output element; nearest only copies."""
        return 8 * y.size if self.mode == "bilinear" else 0

    def extra_repr(self):
        what = f"size={self.size}" if self.size is not None else \
            f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}" + (
            "" if self.align_corners is None else f", align_corners={self.align_corners}")


class PixelShuffle(Module):
    """(N, C·r², H, W) -> (N, C, H·r, W·r): sub-pixel up-sampling (ExFuse, ESPCN)."""

    def __init__(self, upscale_factor):
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, x):
        return pixel_shuffle(x, self.upscale_factor)

    def flops(self, x, y):
        return 0        # a permutation of the elements

    def extra_repr(self):
        return f"upscale_factor={self.upscale_factor}"


class ReLU6(Module):
    """min(max(x, 0), 6), elementwise (MobileNetV2's activation)."""

    def forward(self, x):
        return relu6(x)

    def flops(self, x, y):
        return y.size

    def window(self):
        return POINTWISE_WINDOW


class Linear(Module):
    """Fully connected layer: ``y = x Wᵀ + b`` over the last axis (``torch.nn.Linear``).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool

    Attributes
    ----------
    weight : Parameter of shape (out_features, in_features)
    bias : Parameter of shape (out_features,) or None

    Shapes: x (*, in_features) -> y (*, out_features). A classifier's last layer; FCN turns
    it into a convolution with the same weights (a Linear over C·k·k inputs IS a k×k conv).
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        _check_channels("Linear", in_features, out_features, 1)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(np.empty((out_features, in_features), np.float32))
        has_bias = check_bool("Linear", "bias", bias)
        self.bias = Parameter(np.empty(out_features, np.float32)) if has_bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """PyTorch's default: U(±1/√in_features) for weight and bias."""
        _reset_conv(self, self.in_features)

    def forward(self, x):
        y = x @ self.weight.transpose(0, 1)          # (*, out_features)
        return y if self.bias is None else y + self.bias

    def flops(self, x, y):
        return 2 * y.size * self.in_features + _bias_flops(self, y)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
