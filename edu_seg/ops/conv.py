"""Differentiable convolutions: ``conv2d`` and ``conv_transpose2d``, with PyTorch's signatures.

Each public function checks and normalises its arguments (so a kernel never sees a bad shape),
then runs a :class:`~edu_seg.autograd.Function` whose forward and backward call the kernels of
the current backend (``kernels("conv")``: :mod:`edu_seg._kernels.conv` or
:mod:`edu_seg.reference.conv`).

The two ops are each other's adjoint, which is all their backward passes use::

    conv2d            forward  conv2d_forward(x, w)
                      dx       conv2d_backward_input(dy, w)      = conv_transpose2d(dy, w)
                      dw       conv2d_backward_weight(dy, x)
    conv_transpose2d  forward  conv_transpose2d_forward(x, w)    = conv2d_backward_input(x, w)
                      dx       conv2d_forward(dy, w)             = conv2d(dy, w)
                      dw       conv2d_backward_weight(x, dy)     (the roles of x and dy swap)
    both              db       conv2d_backward_bias(dy)          = dy summed over (N, H, W)

:func:`conv2d_output_size` and :func:`conv_transpose2d_output_size` are the size formulas
(chapter 02 derives them), shared with the model summary and the pictures.
"""
import numpy as np

from ..autograd import Function, Tensor
from ..backend import contiguous, kernels
from .limits import check_geometry, check_output_size, check_workspace

__all__ = ["conv2d", "conv_transpose2d", "conv2d_output_size", "conv_transpose2d_output_size",
           "Conv2dFunction", "ConvTranspose2dFunction"]


# --------------------------------------------------------------------------- size formulas
def _pair(op, name, value, minimum):
    """``value`` (an int or a pair of ints) as an (int, int) tuple, each >= ``minimum``.

    Raises TypeError for anything that is not an integer (floats, including nan and inf,
    bools, strings) and ValueError for a wrong length or a value below ``minimum``.
    """
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int \
            and type(value[1]) is int and value[0] >= minimum and value[1] >= minimum:
        return value            # already a valid pair: the common case, checked cheaply
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2:
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r} "
                         f"({len(items)} values)")
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r} "
                            f"(a {type(v).__name__})")
        if v < minimum:
            raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return int(items[0]), int(items[1])


def conv2d_output_size(input_size, kernel_size, stride=1, padding=0, dilation=1):
    """Spatial output size (OH, OW) of a convolution (or pooling window) over (H, W).

    Parameters
    ----------
    input_size, kernel_size : int or (int, int)
    stride, padding, dilation : int or (int, int)

    Returns
    -------
    (int, int)
        Per axis ⌊(i + 2p − d(k−1) − 1)/s⌋ + 1. A value <= 0 means the input is smaller than
        the dilated kernel: :func:`conv2d` refuses it.

    Examples
    --------
    >>> conv2d_output_size((64, 60), 3, stride=2, padding=1)
    (32, 30)
    """
    op = "conv2d_output_size"
    i = _pair(op, "input_size", input_size, 0)
    k = _pair(op, "kernel_size", kernel_size, 1)
    s = _pair(op, "stride", stride, 1)
    p = _pair(op, "padding", padding, 0)
    d = _pair(op, "dilation", dilation, 1)
    return tuple((i[a] + 2 * p[a] - d[a] * (k[a] - 1) - 1) // s[a] + 1 for a in (0, 1))


def conv_transpose2d_output_size(input_size, kernel_size, stride=1, padding=0, output_padding=0,
                                 dilation=1):
    """Spatial output size (OH, OW) of a transposed convolution over (H, W).

    Returns
    -------
    (int, int)
        Per axis (i − 1)s − 2p + d(k − 1) + output_padding + 1.

    Examples
    --------
    >>> conv_transpose2d_output_size(16, 4, stride=2, padding=1)   # the classic x2 upsampler
    (32, 32)
    """
    op = "conv_transpose2d_output_size"
    i = _pair(op, "input_size", input_size, 0)
    k = _pair(op, "kernel_size", kernel_size, 1)
    s = _pair(op, "stride", stride, 1)
    p = _pair(op, "padding", padding, 0)
    q = _pair(op, "output_padding", output_padding, 0)
    d = _pair(op, "dilation", dilation, 1)
    return tuple((i[a] - 1) * s[a] - 2 * p[a] + d[a] * (k[a] - 1) + q[a] + 1 for a in (0, 1))


# ------------------------------------------------------------------------------ validation
def _tensor(v):
    return v if isinstance(v, Tensor) else Tensor(v)


def _check_arrays(op, x, w, b):
    """dtypes (TypeError) and ranks (ValueError) of x, w, b."""
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: x has dtype {x.dtype}; it needs float32 or float64 "
                        f"(convert with x.astype(np.float32))")
    for name, t in (("w", w), ("b", b)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but x has {x.dtype}; they must "
                            f"match (cast one of them)")
    if x.ndim != 4:
        raise ValueError(f"{op}: x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if w.ndim != 4:
        raise ValueError(f"{op}: w must be 4-D, got shape {tuple(w.shape)}")
    if x.size == 0 or w.size == 0:
        raise ValueError(f"{op}: x {tuple(x.shape)} and w {tuple(w.shape)} must have no "
                         f"zero-sized dimension")


def _check_groups(op, groups):
    if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, (int, np.integer)):
        raise TypeError(f"{op}: groups must be an int, got {groups!r} (a {type(groups).__name__})")
    if groups < 1:
        raise ValueError(f"{op}: groups must be >= 1, got {groups}")
    return int(groups)


def _check_bias(op, b, c_out):
    if b is not None and (b.ndim != 1 or b.shape[0] != c_out):
        raise ValueError(f"{op}: b must have shape ({c_out},) (one value per output channel), "
                         f"got {tuple(b.shape)}")


def _check_output_size(op, sizes, formula, values):
    """Raise if an output size is <= 0, naming the dimension and the formula's numbers
    (``values()``: the formula with each axis's numbers, formatted only to raise)."""
    for axis, name in enumerate(("height", "width")):
        if sizes[axis] <= 0:
            raise ValueError(f"{op}: output {name} would be {sizes[axis]} (it must be >= 1): "
                             f"{formula} = {values()[axis]} = {sizes[axis]}; the input is too "
                             f"small for this kernel, dilation and padding")


def _check_geometry(op, kernel_hw, **pairs):
    """Refuse a kernel size or a stride/padding/... above MAX_GEOMETRY before any arithmetic."""
    check_geometry(op, "kernel size (w.shape[2:])", kernel_hw)
    for name, value in pairs.items():
        check_geometry(op, name, value)


def _validate_conv2d(x, w, b, stride, padding, dilation, groups):
    op = "conv2d"
    _check_arrays(op, x, w, b)
    stride = _pair(op, "stride", stride, 1)
    padding = _pair(op, "padding", padding, 0)
    dilation = _pair(op, "dilation", dilation, 1)
    groups = _check_groups(op, groups)
    N, C, H, W = x.shape
    C_out, Cg, KH, KW = w.shape
    _check_geometry(op, (KH, KW), stride=stride, padding=padding, dilation=dilation)
    if C % groups:
        raise ValueError(f"{op}: groups={groups} does not divide x's C={C}")
    if C_out % groups:
        raise ValueError(f"{op}: groups={groups} does not divide w's C_out={C_out} (w.shape[0])")
    if C != Cg * groups:
        raise ValueError(f"{op}: x has C={C} but w expects {Cg * groups} "
                         f"(w.shape[1]*groups = {Cg}*{groups})")
    _check_bias(op, b, C_out)
    sizes = conv2d_output_size((H, W), (KH, KW), stride, padding, dilation)
    _check_output_size(
        op, sizes, "floor((H + 2*padding - dilation*(K-1) - 1)/stride) + 1",
        lambda: [f"floor(({i} + 2*{p} - {d}*({k}-1) - 1)/{s}) + 1"
                 for i, k, s, p, d in zip((H, W), (KH, KW), stride, padding, dilation)])

    def what():
        return (f"x {tuple(x.shape)}, w {tuple(w.shape)}, stride={stride}, padding={padding}, "
                f"dilation={dilation}")

    check_output_size(op, (N, C_out) + sizes, x.dtype, what)
    check_workspace(op, (C * KH * KW, sizes[0] * sizes[1]), x.dtype,
                    lambda: f"im2col of C*KH*KW x OH*OW for {what()}")
    return stride, padding, dilation, groups


def _validate_conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation):
    op = "conv_transpose2d"
    _check_arrays(op, x, w, b)
    stride = _pair(op, "stride", stride, 1)
    padding = _pair(op, "padding", padding, 0)
    output_padding = _pair(op, "output_padding", output_padding, 0)
    dilation = _pair(op, "dilation", dilation, 1)
    groups = _check_groups(op, groups)
    N, C, H, W = x.shape
    C_in, Cog, KH, KW = w.shape
    _check_geometry(op, (KH, KW), stride=stride, padding=padding, output_padding=output_padding,
                    dilation=dilation)
    if C != C_in:
        raise ValueError(f"{op}: x has C={C} but w expects {C_in} (w.shape[0]; the transposed "
                         f"conv weight is (C_in, C_out/groups, KH, KW))")
    if C % groups:
        raise ValueError(f"{op}: groups={groups} does not divide x's C={C}")
    for axis in (0, 1):
        if output_padding[axis] >= max(stride[axis], dilation[axis]):
            raise ValueError(f"{op}: output_padding={output_padding} must be smaller than "
                             f"max(stride, dilation) = ({max(stride[0], dilation[0])}, "
                             f"{max(stride[1], dilation[1])}) in each dimension")
    _check_bias(op, b, Cog * groups)
    sizes = conv_transpose2d_output_size((H, W), (KH, KW), stride, padding, output_padding,
                                         dilation)
    _check_output_size(
        op, sizes, "(H-1)*stride - 2*padding + dilation*(K-1) + output_padding + 1",
        lambda: [f"({i}-1)*{s} - 2*{p} + {d}*({k}-1) + {q} + 1"
                 for i, k, s, p, q, d in zip((H, W), (KH, KW), stride, padding, output_padding,
                                             dilation)])

    def what():
        return (f"x {tuple(x.shape)}, w {tuple(w.shape)}, stride={stride}, padding={padding}, "
                f"output_padding={output_padding}, dilation={dilation}")

    check_output_size(op, (N, Cog * groups) + sizes, x.dtype, what)
    check_workspace(op, (Cog * groups * KH * KW, H * W), x.dtype,
                    lambda: f"col2im of C_out*KH*KW x H*W for {what()}")
    return stride, padding, output_padding, dilation, groups


# ------------------------------------------------------------------------------- Functions
class Conv2dFunction(Function):
    """y = conv2d(x, w, b); backward: dx = conv_transpose(dy, w), dw = Σ dy colsᵀ, db = Σ dy."""

    @staticmethod
    def forward(ctx, x, w, b, *, stride, padding, dilation, groups):
        x, w = contiguous(x), contiguous(w)
        b = None if b is None else contiguous(b)
        ctx.save_for_backward(x, w)
        ctx.geometry = (stride, padding, dilation, groups)
        ctx.K = kernels("conv", x, w, b)   # backward runs on the backend that ran forward
        return ctx.K.conv2d_forward(x, w, b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        K = ctx.K
        dy = contiguous(dy, x.dtype)  # e.g. a broadcast view from .sum()
        dx = dw = db = None
        if ctx.needs_input_grad[0]:  # skipped for a network's first layer (x is the image)
            dx = K.conv2d_backward_input(dy, w, x.shape, *ctx.geometry)
        if ctx.needs_input_grad[1]:
            dw = K.conv2d_backward_weight(dy, x, w.shape, *ctx.geometry)
        if ctx.needs_input_grad[2]:
            db = K.conv2d_backward_bias(dy)
        return dx, dw, db


class ConvTranspose2dFunction(Function):
    """y = conv_transpose2d(x, w, b); backward: dx = conv2d(dy, w), dw with x and dy swapped."""

    @staticmethod
    def forward(ctx, x, w, b, *, stride, padding, output_padding, dilation, groups):
        x, w = contiguous(x), contiguous(w)
        b = None if b is None else contiguous(b)
        ctx.save_for_backward(x, w)
        ctx.geometry = (stride, padding, dilation, groups)
        ctx.K = kernels("conv", x, w, b)   # backward runs on the backend that ran forward
        return ctx.K.conv_transpose2d_forward(x, w, b, stride, padding, output_padding,
                                              dilation, groups)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        K = ctx.K
        dy = contiguous(dy, x.dtype)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = K.conv2d_forward(dy, w, None, *ctx.geometry)
            # With output_padding >= stride (possible when dilation > stride) the conv of dy
            # has extra rows/columns that no input pixel of x produced: they are not x's.
            H, W = x.shape[2:]
            if dx.shape[2:] != (H, W):
                dx = contiguous(dx[:, :, :H, :W])
        if ctx.needs_input_grad[1]:
            # y = conv_transpose(x) pairs x with dy exactly as a conv pairs dy with its input
            dw = K.conv2d_backward_weight(x, dy, w.shape, *ctx.geometry)
        if ctx.needs_input_grad[2]:
            db = K.conv2d_backward_bias(dy)
        return dx, dw, db


# ------------------------------------------------------------------------------ public ops
def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation), like ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : Tensor, (N, C, H, W), float32 or float64
    w : Tensor, (C_out, C/groups, KH, KW), same dtype
    b : Tensor, (C_out,), optional
    stride, padding, dilation : int or (int, int)
        padding is zero padding on both sides; dilation d spaces the kernel taps d pixels apart.
    groups : int
        Split channels into independent groups (groups = C: depthwise).

    Returns
    -------
    Tensor, (N, C_out, OH, OW)

    Notes
    -----
    y[n, o, i, j] = b[o] + Σ_{c, kh, kw} w[o, c, kh, kw] · x_pad[n, g·C/G + c, i·s + kh·d, j·s + kw·d]
    with OH = ⌊(H + 2p − d(KH−1) − 1)/s⌋ + 1 (likewise OW).

    Raises
    ------
    TypeError
        Non-float x, mismatched dtypes, non-integer geometry (floats, nan, bools).
    ValueError
        Wrong ranks, channel/group mismatch, bad bias shape, negative padding, stride or
        dilation < 1, or an output size <= 0; a geometry value above 2**24, or an output or
        im2col workspace (C·KH·KW × OH·OW) above :func:`edu_seg.ops.limits.max_bytes`.

    Examples
    --------
    >>> x = Tensor(np.ones((1, 3, 8, 8), np.float32))
    >>> conv2d(x, np.ones((4, 3, 3, 3), np.float32), padding=1).shape
    (1, 4, 8, 8)
    """
    x, w = _tensor(x), _tensor(w)
    b = None if b is None else _tensor(b)
    stride, padding, dilation, groups = _validate_conv2d(x, w, b, stride, padding, dilation,
                                                         groups)
    return Conv2dFunction.apply(x, w, b, stride=stride, padding=padding, dilation=dilation,
                                groups=groups)


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """2-D transposed convolution, like ``torch.nn.functional.conv_transpose2d``.

    It is the gradient of :func:`conv2d` with respect to its input, used as a layer: each input
    pixel stamps a scaled copy of the kernel into the output, ``stride`` pixels apart.

    Parameters
    ----------
    x : Tensor, (N, C_in, H, W), float32 or float64
    w : Tensor, (C_in, C_out/groups, KH, KW), same dtype
    b : Tensor, (C_out,), optional
    stride, padding, output_padding, dilation : int or (int, int)
        ``padding`` crops the output on each side; ``output_padding`` (< max(stride, dilation))
        adds rows/columns at the bottom/right to pick among the sizes that a stride-s conv maps
        to the same H.
    groups : int

    Returns
    -------
    Tensor, (N, C_out, OH, OW)

    Notes
    -----
    OH = (H − 1)·s − 2p + d(KH − 1) + output_padding + 1 (likewise OW). Note the argument order
    (PyTorch's): ``groups`` comes before ``dilation``. Raises as :func:`conv2d`; the workspace
    checked is C_out·KH·KW × H·W.

    Examples
    --------
    >>> x = Tensor(np.ones((1, 4, 16, 16), np.float32))
    >>> conv_transpose2d(x, np.ones((4, 2, 4, 4), np.float32), stride=2, padding=1).shape
    (1, 2, 32, 32)
    """
    x, w = _tensor(x), _tensor(w)
    b = None if b is None else _tensor(b)
    stride, padding, output_padding, dilation, groups = _validate_conv_transpose2d(
        x, w, b, stride, padding, output_padding, groups, dilation)
    return ConvTranspose2dFunction.apply(x, w, b, stride=stride, padding=padding,
                                         output_padding=output_padding, dilation=dilation,
                                         groups=groups)
