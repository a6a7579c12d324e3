"""Resampling as differentiable ops: ``interpolate`` (bilinear, nearest) and pixel (un)shuffle.

Every decoder ends by bringing its logits back to the input size (DeepLab and PSPNet upsample
bilinearly by 8), FCN and U-Net variants upsample on the way, and ExFuse's sub-pixel
convolution rearranges channels into space with ``pixel_shuffle``. Semantics and signatures are
PyTorch's; the coordinate rules are in :mod:`edu_seg.reference.resample`.
"""
import math
import numbers

from ..autograd import Function
from ..backend import contiguous, kernels
from .limits import MAX_GEOMETRY, check_geometry, check_output_size
from .pool import _check_input, _is_int, _pair, check_bool

__all__ = ["interpolate", "pixel_shuffle", "pixel_unshuffle"]


# ============================================================================== interpolate
class BilinearInterpolateFunction(Function):
    """y = A_H · x · A_Wᵀ (two taps per row of each A); the gradient is dx = A_Hᵀ · dy · A_W."""

    @staticmethod
    def forward(ctx, x, *, out_hw, align_corners, scales):
        ctx.K = kernels("resample", x)  # backward runs on the backend that ran forward
        ctx.in_hw, ctx.dtype = x.shape[2:], x.dtype
        ctx.align_corners, ctx.scales = align_corners, scales
        return ctx.K.interpolate_bilinear_forward(contiguous(x, x.dtype), out_hw,
                                                                align_corners, scales)

    @staticmethod
    def backward(ctx, dy):
        return ctx.K.interpolate_bilinear_backward(
            contiguous(dy, ctx.dtype), ctx.in_hw, ctx.align_corners, ctx.scales)


class NearestInterpolateFunction(Function):
    """y = x[rows][:, cols]; the gradient sums dy over the outputs that copied each pixel."""

    @staticmethod
    def forward(ctx, x, *, out_hw, scales):
        ctx.K, ctx.in_hw = kernels("resample", x), x.shape[2:]
        ctx.dtype, ctx.scales = x.dtype, scales
        return ctx.K.interpolate_nearest_forward(contiguous(x, x.dtype), out_hw, scales)

    @staticmethod
    def backward(ctx, dy):
        return ctx.K.interpolate_nearest_backward(contiguous(dy, ctx.dtype), ctx.in_hw,
                                                  ctx.scales)


def _scale_pair(op, scale_factor):
    """scale_factor as a pair of positive finite floats."""
    pair = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * 2
    if len(pair) != 2 or not all(isinstance(s, numbers.Real) and not isinstance(s, bool)
                                 for s in pair):
        raise TypeError(f"{op}: scale_factor must be a number or a pair of numbers, got "
                        f"{scale_factor!r}")
    if not all(math.isfinite(s) and s > 0 for s in pair):
        raise ValueError(f"{op}: scale_factor must be positive and finite, got {scale_factor!r}")
    return float(pair[0]), float(pair[1])


def interpolate(x, size=None, scale_factor=None, mode="bilinear", align_corners=None):
    """Resize images (``torch.nn.functional.interpolate`` for 4-D input).

    Parameters
    ----------
    x : Tensor or ndarray, shape (N, C, H, W), float32 or float64
    size : int or (int, int), optional
        Output (OH, OW). Give exactly one of ``size`` and ``scale_factor``.
    scale_factor : float or (float, float), optional
        OH = ⌊H · scale⌋ (likewise OW). As in PyTorch (``recompute_scale_factor`` unset), the
        sampling step is then 1/scale, not H/OH: the two differ when H·scale is not an integer
        (except along an axis whose size does not change, which is copied; see
        :func:`edu_seg.reference.resample.linear_source_taps`).
    mode : {"bilinear", "nearest"}
    align_corners : bool, optional
        Bilinear only (default False): True maps the corner pixels' centres onto each other;
        False maps pixel squares, which is what ``scale_factor`` means geometrically.

    Returns
    -------
    y : Tensor, shape (N, C, OH, OW)

    Notes
    -----
    Bilinear: with src = max((o + ½)·step − ½, 0) (align_corners=False) or
    o·(in−1)/(out−1) (True) per axis, i0 = ⌊src⌋, λ = src − i0,

        y[oh, ow] = Σ_{a, b ∈ {0, 1}} λh^a (1−λh)^(1−a) λw^b (1−λw)^(1−b) x[i0h + a, i0w + b]

    (taps clamped to the image). Nearest: src = min(⌊o·step⌋, in − 1), PyTorch's legacy
    ``nearest``. Both are linear in x; the backward is the adjoint, a scatter that adds.

    Raises
    ------
    TypeError
        x not float32/float64; size or scale_factor of the wrong type.
    ValueError
        x not 4-D; both or neither of size and scale_factor; unknown mode; align_corners with
        "nearest"; a non-positive size or scale_factor, or a scale giving an empty output;
        an output side above 2**24 or an output above :func:`edu_seg.ops.limits.max_bytes`.

    Examples
    --------
    >>> import numpy as np
    >>> from edu_seg import Tensor
    >>> x = Tensor(np.array([[[[0.0, 1.0]]]]))
    >>> interpolate(x, scale_factor=2).numpy()[0, 0]
    array([[0.  , 0.25, 0.75, 1.  ],
           [0.  , 0.25, 0.75, 1.  ]])
    """
    op = "interpolate"
    x = _check_input(op, x)
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"{op}: mode must be 'bilinear' or 'nearest', got {mode!r}")
    align_corners = check_bool(op, "align_corners", align_corners, allow_none=True)
    if align_corners is not None and mode == "nearest":
        raise ValueError(f"{op}: align_corners={align_corners!r} is only for mode='bilinear'; "
                         f"leave it None with mode='nearest'")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{op}: give exactly one of size and scale_factor, got size={size!r} "
                         f"and scale_factor={scale_factor!r}")
    H, W = x.shape[2:]
    if size is not None:
        out_hw, scales = _pair(op, "size", size, 1), None
        check_geometry(op, "size", out_hw)
        what = f"size={size!r}"
    else:
        scales = _scale_pair(op, scale_factor)
        # Refuse a huge scale before multiplying: H * 1e308 would be inf and floor() raise.
        if max(H * scales[0], W * scales[1]) > MAX_GEOMETRY:
            raise ValueError(f"{op}: scale_factor={scale_factor!r} turns the {H}x{W} input into "
                             f"a {H * scales[0]:.4g}x{W * scales[1]:.4g} output, above the limit "
                             f"of 2**24 = {MAX_GEOMETRY} pixels per side "
                             f"(edu_seg.ops.limits.MAX_GEOMETRY); use a smaller scale_factor")
        out_hw = (math.floor(H * scales[0]), math.floor(W * scales[1]))
        if min(out_hw) < 1:
            raise ValueError(f"{op}: scale_factor={scale_factor!r} turns the {H}x{W} input "
                             f"into an empty {out_hw[0]}x{out_hw[1]} output")
        what = f"scale_factor={scale_factor!r}"
    check_output_size(op, tuple(x.shape[:2]) + tuple(out_hw), x.dtype, what)
    if mode == "nearest":
        return NearestInterpolateFunction.apply(x, out_hw=out_hw, scales=scales)
    return BilinearInterpolateFunction.apply(x, out_hw=out_hw, align_corners=bool(align_corners),
                                             scales=scales)


# ============================================================================= pixel shuffle
def _factor(op, name, value):
    if not _is_int(value):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{op}: {name} must be positive, got {value}")
    return int(value)


def pixel_shuffle(x, upscale_factor):
    """Rearrange channels into space (``torch.nn.functional.pixel_shuffle``), sub-pixel conv.

    Parameters
    ----------
    x : Tensor or ndarray, shape (N, C·r², H, W), float32 or float64
    upscale_factor : int
        r.

    Returns
    -------
    y : Tensor, shape (N, C, H·r, W·r)
        y[n, c, h·r + i, w·r + j] = x[n, c·r² + i·r + j, h, w].

    Notes
    -----
    A pure permutation of elements, written with differentiable reshape and permute, so its
    backward (the inverse permutation, :func:`pixel_unshuffle`) comes from autograd.

    Raises
    ------
    TypeError
        x not float32/float64; r not an int.
    ValueError
        x not 4-D; r not positive; channels not divisible by r².

    Examples
    --------
    >>> import numpy as np
    >>> from edu_seg import Tensor
    >>> pixel_shuffle(Tensor(np.arange(4.0).reshape(1, 4, 1, 1)), 2).numpy()[0, 0]
    array([[0., 1.],
           [2., 3.]])
    """
    op = "pixel_shuffle"
    x = _check_input(op, x)
    r = _factor(op, "upscale_factor", upscale_factor)
    N, C, H, W = x.shape
    if C % (r * r):
        raise ValueError(f"{op}: x has {C} channels, which upscale_factor={r} cannot split: "
                         f"they must be divisible by r² = {r * r}")
    c = C // (r * r)
    return (x.reshape(N, c, r, r, H, W)          # channel c·r² + i·r + j -> (c, i, j)
            .permute(0, 1, 4, 2, 5, 3)           # (N, c, H, i, W, j)
            .reshape(N, c, H * r, W * r))        # row h·r + i, column w·r + j


def pixel_unshuffle(x, downscale_factor):
    """Rearrange space into channels (``torch.nn.functional.pixel_unshuffle``).

    Parameters
    ----------
    x : Tensor or ndarray, shape (N, C, H·r, W·r), float32 or float64
    downscale_factor : int
        r.

    Returns
    -------
    y : Tensor, shape (N, C·r², H, W)
        The inverse of :func:`pixel_shuffle`:
        y[n, c·r² + i·r + j, h, w] = x[n, c, h·r + i, w·r + j].

    Raises
    ------
    TypeError
        x not float32/float64; r not an int.
    ValueError
        x not 4-D; r not positive; height or width not divisible by r.

    Examples
    --------
    >>> import numpy as np
    >>> from edu_seg import Tensor
    >>> pixel_unshuffle(Tensor(np.arange(4.0).reshape(1, 1, 2, 2)), 2).numpy()[0, :, 0, 0]
    array([0., 1., 2., 3.])
    """
    op = "pixel_unshuffle"
    x = _check_input(op, x)
    r = _factor(op, "downscale_factor", downscale_factor)
    N, C, H, W = x.shape
    if H % r or W % r:
        raise ValueError(f"{op}: x is {H}x{W}, which downscale_factor={r} cannot split: height "
                         f"and width must be divisible by {r}")
    h, w = H // r, W // r
    return (x.reshape(N, C, h, r, w, r)          # row h·r + i -> (h, i), column w·r + j -> (w, j)
            .permute(0, 1, 3, 5, 2, 4)           # (N, C, i, j, h, w)
            .reshape(N, C * r * r, h, w))        # channel c·r² + i·r + j
