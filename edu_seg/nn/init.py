"""Weight initialisation, in place, with PyTorch's formulas and one seeded generator.

Why it matters: with n inputs per unit, a weight variance of 1/n keeps the activations'
variance steady from layer to layer (LeCun); ReLU zeroes half of them, hence 2/n (He et al.,
2015, "kaiming"); Glorot & Bengio (2010, "xavier") average the forward and backward fan.
Too small and the signal dies out over depth; too large and it explodes.

Every function draws from :func:`edu_seg.ops.misc.default_generator` unless given a
``generator``, so ``manual_seed(0)`` makes model construction reproducible::

    init.manual_seed(0)
    model = UNet(...)          # the same weights on every run

For a conv weight (C_out, C_in/groups, KH, KW): fan_in = C_in/groups·KH·KW (inputs per output)
and fan_out = C_out·KH·KW. PyTorch reads the fans from the two leading axes whatever the layer,
so for a transposed-conv weight (C_in, C_out/groups, KH, KW) "fan_in" is C_out/groups·KH·KW;
we do the same, so our default initialisation matches PyTorch's.
"""
import math

import numpy as np

from ..ops.misc import default_generator, manual_seed

__all__ = ["manual_seed", "calculate_gain", "uniform_", "normal_", "zeros_", "ones_",
           "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "bilinear_kernel",
           "bilinear_"]


def _fans(w):
    """(fan_in, fan_out) of a weight (C_out, C_in, *kernel) (PyTorch's rule, see module doc)."""
    if w.ndim < 2:
        raise ValueError(f"init: fan in/out need a weight with at least 2 axes, got shape "
                         f"{w.shape}")
    receptive = int(np.prod(w.shape[2:])) if w.ndim > 2 else 1
    return w.shape[1] * receptive, w.shape[0] * receptive


def calculate_gain(nonlinearity, param=None):
    """The gain that keeps the activation variance steady after ``nonlinearity``.

    "linear"/"conv2d"/"sigmoid": 1; "tanh": 5/3; "relu": √2;
    "leaky_relu" with slope a (default 0.01): √(2/(1 + a²)).
    """
    if nonlinearity in ("linear", "conv2d", "conv_transpose2d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        a = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + a * a))
    raise ValueError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}")


def _fill(w, values):
    return w.copy_(values)        # in place, cast to the weight's dtype


def _rng(generator):
    return default_generator() if generator is None else generator


def uniform_(w, a=0.0, b=1.0, generator=None):
    """Fill ``w`` (a Parameter/Tensor) with draws from U(a, b); returns w."""
    return _fill(w, _rng(generator).uniform(a, b, size=w.shape))


def normal_(w, mean=0.0, std=1.0, generator=None):
    """Fill ``w`` with draws from N(mean, std²); returns w."""
    return _fill(w, _rng(generator).normal(mean, std, size=w.shape))


def zeros_(w):
    """Fill ``w`` with 0; returns w."""
    return _fill(w, 0)


def ones_(w):
    """Fill ``w`` with 1; returns w."""
    return _fill(w, 1)


def _kaiming_std(w, a, mode, nonlinearity):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(w)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He initialisation, uniform: U(−b, b) with b = gain·√(3/fan).

    PyTorch's default for Conv2d weights is ``kaiming_uniform_(w, a=√5)``, i.e. b = 1/√fan_in.
    """
    bound = math.sqrt(3.0) * _kaiming_std(w, a, mode, nonlinearity)
    return uniform_(w, -bound, bound, generator)


def kaiming_normal_(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He initialisation, normal: N(0, std²) with std = gain/√fan (gain √2 for ReLU).

    The usual choice for conv layers followed by ReLU:
    ``kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")``.
    """
    return normal_(w, 0.0, _kaiming_std(w, a, mode, nonlinearity), generator)


def xavier_uniform_(w, gain=1.0, generator=None):
    """Glorot initialisation: U(−b, b) with b = gain·√(6/(fan_in + fan_out))."""
    fan_in, fan_out = _fans(w)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(w, -bound, bound, generator)


def bilinear_kernel(kh, kw):
    """The (kh, kw) bilinear interpolation kernel of a ×s up-sampling (s = ⌈k/2⌉).

    The outer product of two triangles 1 − |i − centre|/f, f = ⌈k/2⌉, centre f − 1 for odd
    k and f − 0.5 for even k (Long et al.'s FCN). With k = 2s, stride s and padding s/2 a
    transposed conv with this kernel is bilinear up-sampling by s (away from the border).
    """
    def triangle(k):
        f = (k + 1) // 2
        centre = f - 1 if k % 2 == 1 else f - 0.5
        return 1 - np.abs(np.arange(k) - centre) / f
    return np.outer(triangle(kh), triangle(kw))


def bilinear_(w):
    """Initialise a transposed-conv weight (C_in, C_out/groups, KH, KW) as bilinear up-sampling.

    Channel i is up-sampled into channel i: ``w[i, i]`` is the bilinear kernel and the other
    entries are 0, which needs C_in == C_out/groups (FCN's score up-sampling). A depthwise
    weight (C_in, 1, KH, KW) (groups = C_in) gets the kernel in every filter.
    """
    if w.ndim != 4 or not (w.shape[0] == w.shape[1] or w.shape[1] == 1):
        raise ValueError(f"bilinear_: needs a transposed-conv weight (C, C, KH, KW) or a "
                         f"depthwise one (C, 1, KH, KW), got shape {w.shape}")
    kernel = bilinear_kernel(w.shape[2], w.shape[3])
    values = np.zeros(w.shape)
    if w.shape[1] == 1:
        values[:, 0] = kernel
    else:
        values[np.arange(w.shape[0]), np.arange(w.shape[0])] = kernel
    return _fill(w, values)
