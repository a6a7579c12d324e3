"""Ops on whole tensors: selection, clipping, splitting, statistics.

Each op is a :class:`~edu_seg.autograd.Function` with a hand-written backward, written with
the array module of its input (:func:`~edu_seg.backend.get_array_module`), so the same code
runs on NumPy and on CuPy arrays. The public functions check their arguments first and raise a
``ValueError``/``TypeError`` that names the op, the argument, what it got and what it needs.

Gradients at kinks follow PyTorch, so a model trained here and there sees the same numbers:

- ``abs``: slope 0 at 0 (``sign(0) = 0``);
- ``clip``: slope 1 where ``min <= x <= max`` (boundaries included), else 0;
- ``maximum``/``minimum``: where ``a == b`` each input gets half of the gradient.

The linear ops (``where`` in a and b, ``gather``, ``take_along_axis``, ``split``, ``chunk``)
have as backward the transpose (adjoint) of their forward: ``gather`` picks elements, so its
backward puts gradients back where they were picked, ADDING them where an element was picked
twice.
"""
import math

import numpy as np

from ..autograd import Function, Tensor
from ..backend import get_array_module, is_array

__all__ = ["where", "abs", "clip", "maximum", "minimum", "gather", "take_along_axis", "split",
           "chunk", "var"]


# ------------------------------------------------------------------------------------ helpers
def _tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


def _is_number(x):
    """A plain Python/NumPy number (bool excluded: True is not a useful bound or operand)."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _operand(op, name, v):
    """A Tensor for an array or Tensor operand; a plain number stays a number.

    Numbers stay numbers so that ``where(c, x, 0.0)`` keeps x's dtype (a NumPy array of 0.0
    would be float64 and promote a float32 x).
    """
    if isinstance(v, Tensor):
        return v
    if _is_number(v):
        return v
    if is_array(v) or isinstance(v, (list, tuple)):
        return Tensor(v)
    raise TypeError(f"{op}: {name} must be a Tensor, an array or a number, got "
                    f"{type(v).__name__}")


def _shape(v):
    return v.shape if isinstance(v, Tensor) else ()


def _check_broadcast(op, **operands):
    """The broadcast shape of the operands, else an error listing every shape."""
    shapes = {name: _shape(v) for name, v in operands.items()}
    try:
        return np.broadcast_shapes(*shapes.values())
    except ValueError:
        listed = ", ".join(f"{name} {s}" for name, s in shapes.items())
        raise ValueError(f"{op}: shapes do not broadcast together: {listed}") from None


def _check_floating(op, name, x):
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be float32 or float64, got dtype {x.dtype}")


def _check_axis(op, axis, ndim, shape):
    """``axis`` as an index in [0, ndim), else a clear error (negative axes count from the end)."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{op}: axis must be an int, got {type(axis).__name__} {axis!r}")
    if not -ndim <= axis < ndim:
        need = f"in [{-ndim}, {ndim - 1}]" if ndim else "impossible: x is 0-d"
        raise ValueError(f"{op}: axis={axis} is out of range for x of shape {shape} "
                         f"({ndim} dims); axis must be {need}")
    return int(axis) % ndim


def _check_axes(op, axis, ndim, shape):
    """``axis`` (None, an int or a tuple of ints) as a sorted tuple of distinct axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    axes = tuple(sorted(_check_axis(op, a, ndim, shape) for a in axes))
    if len(set(axes)) != len(axes):
        raise ValueError(f"{op}: axis={axis!r} names an axis twice")
    return axes


def _dtype(v):
    """The dtype of an array operand; None for a plain number (it gets no gradient)."""
    return v.dtype if is_array(v) else None


def _grad_like(g, dtype):
    """``g`` in the input's ``dtype`` (a float32 and a float64 operand give a float64 dy)."""
    if g is None or dtype is None or g.dtype == dtype:
        return g
    return g.astype(dtype)


# -------------------------------------------------------------------------------------- where
class Where(Function):
    """y = a where cond else b. It is linear in (a, b): da = dy·cond, db = dy·(not cond)."""

    @staticmethod
    def forward(ctx, a, b, *, cond):
        ctx.save_for_backward(cond)
        ctx.dtypes = _dtype(a), _dtype(b)   # not a and b: backward needs no values of theirs
        return get_array_module(cond, a, b).where(cond, a, b)

    @staticmethod
    def backward(ctx, dy):
        (cond,) = ctx.saved_tensors
        xp, zero = get_array_module(dy), dy.dtype.type(0)
        da = xp.where(cond, dy, zero) if ctx.needs_input_grad[0] else None
        db = xp.where(cond, zero, dy) if ctx.needs_input_grad[1] else None
        # The engine sums a broadcast operand's gradient back to its shape.
        return _grad_like(da, ctx.dtypes[0]), _grad_like(db, ctx.dtypes[1])


def where(cond, a, b):
    """Pick from ``a`` where ``cond`` is True, from ``b`` elsewhere (``torch.where``).

    Parameters
    ----------
    cond : bool array (or bool Tensor), any shape
        E.g. ``x.data > 0``. It has no gradient.
    a, b : Tensor, array or number
        Broadcast against ``cond`` and each other. A plain number keeps the other operand's
        dtype; if both are numbers the result is float32.

    Returns
    -------
    Tensor, of the broadcast shape of cond, a and b

    Notes
    -----
    y = cond·a + (1 − cond)·b, so ∂L/∂a = cond·dy and ∂L/∂b = (1 − cond)·dy (summed over the
    axes a or b was broadcast along). Unlike ``cond·a + (1 − cond)·b``, ``where`` never
    multiplies the unused branch: an inf or nan there stays out of the result.

    Examples
    --------
    >>> x = Tensor(np.array([-1.0, 2.0]), requires_grad=True)
    >>> where(x.data > 0, x, 0.0).data          # a ReLU
    array([0., 2.])
    """
    op = "where"
    cond = cond.data if isinstance(cond, Tensor) else cond
    if not is_array(cond):
        cond = np.asarray(cond)
    if cond.dtype != np.bool_:
        raise TypeError(f"{op}: cond must be a boolean array (e.g. x.data > 0), got dtype "
                        f"{cond.dtype}")
    a, b = _operand(op, "a", a), _operand(op, "b", b)
    if _is_number(a) and _is_number(b):
        a = Tensor(get_array_module(cond).asarray(a, dtype=np.float32))   # on cond's device
    _check_broadcast(op, cond=Tensor(cond), a=a, b=b)
    return Where.apply(a, b, cond=cond)


# ---------------------------------------------------------------------------------------- abs
class Abs(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return get_array_module(x).abs(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return dy * get_array_module(x).sign(x)     # sign(0) = 0: PyTorch's subgradient


def abs(x):
    """|x|, elementwise (``torch.abs``). x: any shape.

    Notes
    -----
    d|x|/dx = sign(x): −1, 0 at x = 0 (as PyTorch; any value in [−1, 1] is a subgradient
    there), +1.

    Examples
    --------
    >>> abs(Tensor(np.array([-2.0, 0.0, 3.0]))).data
    array([2., 0., 3.])
    """
    return Abs.apply(_tensor(x))


# --------------------------------------------------------------------------------------- clip
class Clip(Function):
    @staticmethod
    def forward(ctx, x, *, low, high):
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return get_array_module(x).clip(x, low, high)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        xp = get_array_module(x)
        # The gradient passes where x was NOT moved by the clip, boundaries included
        # (PyTorch's clamp): a pixel exactly at min still learns.
        inside = xp.ones(x.shape, dtype=bool)
        if ctx.low is not None:
            inside &= x >= ctx.low
        if ctx.high is not None:
            inside &= x <= ctx.high
        return xp.where(inside, dy, dy.dtype.type(0))


def clip(x, min=None, max=None):
    """Limit x to [min, max], elementwise (``torch.clamp``). x: any shape.

    Parameters
    ----------
    x : Tensor, any shape
    min, max : number or None
        The bounds; at least one must be given, and min <= max.

    Returns
    -------
    Tensor, same shape and dtype as x

    Notes
    -----
    y = min(max(x, lo), hi), and ∂y/∂x = 1 where lo <= x <= hi (the boundaries included, as
    PyTorch), 0 where x was moved to a bound.

    Examples
    --------
    >>> clip(Tensor(np.array([-1.0, 0.5, 3.0])), 0.0, 1.0).data
    array([0. , 0.5, 1. ])
    """
    op = "clip"
    x = _tensor(x)
    if min is None and max is None:
        raise ValueError(f"{op}: got min=None and max=None; give at least one bound")
    for name, v in (("min", min), ("max", max)):
        if v is not None and not _is_number(v):
            raise TypeError(f"{op}: {name} must be a number or None, got "
                            f"{type(v).__name__} {v!r}")
        if v is not None and v != v:
            raise ValueError(f"{op}: {name} is nan; a bound must be a number")
    if min is not None and max is not None and min > max:
        raise ValueError(f"{op}: min={min} is greater than max={max}; need min <= max")
    return Clip.apply(x, low=min, high=max)


# -------------------------------------------------------------------------- maximum / minimum
def _share_ties(dy, a, b, a_loses, b_loses):
    """Gradients of an elementwise max/min: all of dy to the winner, half to each on a tie."""
    xp = get_array_module(dy)
    zero = dy.dtype.type(0)
    g = xp.where(a == b, dy / 2, dy)
    return xp.where(a_loses, zero, g), xp.where(b_loses, zero, g)


class Maximum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return get_array_module(a, b).maximum(a, b)

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved_tensors
        da, db = _share_ties(dy, a, b, a_loses=a < b, b_loses=a > b)
        return (_grad_like(da, _dtype(a)) if ctx.needs_input_grad[0] else None,
                _grad_like(db, _dtype(b)) if ctx.needs_input_grad[1] else None)


class Minimum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return get_array_module(a, b).minimum(a, b)

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved_tensors
        da, db = _share_ties(dy, a, b, a_loses=a > b, b_loses=a < b)
        return (_grad_like(da, _dtype(a)) if ctx.needs_input_grad[0] else None,
                _grad_like(db, _dtype(b)) if ctx.needs_input_grad[1] else None)


def _binary(op, function, a, b):
    a, b = _operand(op, "a", a), _operand(op, "b", b)
    if _is_number(a) and _is_number(b):
        a = Tensor(np.asarray(a, dtype=np.float32))
    _check_broadcast(op, a=a, b=b)
    return function.apply(a, b)


def maximum(a, b):
    """Elementwise maximum of a and b, broadcasting (``torch.maximum``).

    Parameters
    ----------
    a, b : Tensor, array or number
        Broadcast against each other.

    Returns
    -------
    Tensor, of the broadcast shape

    Notes
    -----
    The gradient goes to the larger input. Where a == b, each gets dy/2, as in PyTorch (the
    average of the two one-sided choices; the sum of the two still equals dy). A nan in
    either input gives nan, and its gradient reaches both.

    Examples
    --------
    >>> maximum(Tensor(np.array([1.0, 5.0])), 2.0).data
    array([2., 5.])
    """
    return _binary("maximum", Maximum, a, b)


def minimum(a, b):
    """Elementwise minimum of a and b, broadcasting (``torch.minimum``).

    Parameters
    ----------
    a, b : Tensor, array or number

    Returns
    -------
    Tensor, of the broadcast shape

    Notes
    -----
    The gradient goes to the smaller input; on a tie each gets dy/2 (as PyTorch).

    Examples
    --------
    >>> minimum(Tensor(np.array([1.0, 5.0])), 2.0).data
    array([1., 2.])
    """
    return _binary("minimum", Minimum, a, b)


# ------------------------------------------------------------------ gather / take_along_axis
class TakeAlongAxis(Function):
    """y = x[grid]: ``grid`` holds the index array at ``axis`` and an arange on every other
    axis, so y[i, j, k] = x[i, index[i, j, k], k] (for axis 1).

    Its backward is the transpose: a zero array of x's shape into which each dy value is ADDED
    at the place it was read from. ``np.add.at`` adds once per occurrence; ``dx[grid] += dy``
    would not (with a repeated index, NumPy's buffered ``+=`` writes only one of the values).
    """

    @staticmethod
    def forward(ctx, x, *, grid):
        ctx.shape, ctx.dtype, ctx.grid = x.shape, x.dtype, grid
        return x[grid]

    @staticmethod
    def backward(ctx, dy):
        xp = get_array_module(dy)
        dx = xp.zeros(ctx.shape, dtype=ctx.dtype)
        xp.add.at(dx, ctx.grid, dy)
        return dx


def _integer_index(op, name, index, x):
    """The integer array behind ``index`` (a Tensor, array or nested list), else an error."""
    index = index.data if isinstance(index, Tensor) else index
    if not is_array(index):
        index = np.asarray(index)
    if index.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must be an integer array, got dtype {index.dtype}")
    if index.ndim != x.ndim:
        raise ValueError(f"{op}: {name} has {index.ndim} dims (shape {index.shape}) but x has "
                         f"{x.ndim} (shape {x.shape}); they must have the same number of dims")
    return index


def _check_index_range(op, name, index, n, axis, lowest):
    """Every entry of ``index`` in [lowest, n); checked here, before any array is indexed."""
    if index.size == 0:
        return
    bad = (index < lowest) | (index >= n)
    if bad.any():
        first = int(index[bad].ravel()[0])
        need = f"must be in [{lowest}, {n - 1}]" if n else "cannot index an empty axis"
        raise ValueError(f"{op}: {name} contains {first}, out of range for axis {axis} of x "
                         f"(size {n}); {name} {need}")


def _grid(index, axis, lengths):
    """The fancy-index tuple (arange, ..., index, ..., arange): an arange of ``lengths[d]``
    along each axis d != axis, shaped to broadcast against ``index``."""
    xp = get_array_module(index)
    ndim = index.ndim
    grid = []
    for d in range(ndim):
        if d == axis:
            grid.append(index)
        else:
            shape = [1] * ndim
            shape[d] = lengths[d]
            grid.append(xp.arange(lengths[d]).reshape(shape))
    return tuple(grid)


def gather(x, axis, index):
    """Pick one element of x along ``axis`` per entry of ``index`` (``torch.gather``).

    Parameters
    ----------
    x : Tensor, any shape, e.g. (N, C, H, W)
    axis : int
    index : int array (or Tensor) with as many dims as x, e.g. (N, K, H, W) for axis 1
        0 <= index < x.shape[axis]; on every other axis d, index.shape[d] <= x.shape[d].

    Returns
    -------
    Tensor of index's shape: ``y[n, k, h, w] = x[n, index[n, k, h, w], h, w]`` (axis 1)

    Notes
    -----
    Linear in x. Backward scatters dy back: ``dx[n, index[n, k, h, w], h, w] += dy[n, k, h,
    w]``, summing where an index repeats. The score of each pixel's target class in a
    segmentation loss is ``gather(logits, 1, target[:, None])``.

    Examples
    --------
    >>> x = Tensor(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    >>> gather(x, 1, np.array([[2, 2], [0, 1]])).data
    array([[3., 3.],
           [4., 5.]])
    """
    op = "gather"
    x = _tensor(x)
    axis = _check_axis(op, axis, x.ndim, x.shape)
    index = _integer_index(op, "index", index, x)
    too_big = [d for d in range(x.ndim) if d != axis and index.shape[d] > x.shape[d]]
    if too_big:
        raise ValueError(f"{op}: index has shape {index.shape} but x has {x.shape}; on every "
                         f"axis except axis={axis}, index may not be longer than x (axis "
                         f"{too_big[0]})")
    _check_index_range(op, "index", index, x.shape[axis], axis, lowest=0)
    return TakeAlongAxis.apply(x, grid=_grid(index, axis, index.shape))


def take_along_axis(x, indices, axis):
    """NumPy's ``take_along_axis``, differentiable: y = x[..., indices, ...] along ``axis``.

    Parameters
    ----------
    x : Tensor, any shape
    indices : int array (or Tensor) with as many dims as x
        −n <= indices < n with n = x.shape[axis] (negative counts from the end). On every
        other axis, indices and x must have equal lengths or one of them 1 (they broadcast).
    axis : int or None
        None: x is flattened first and indices must be 1-D.

    Returns
    -------
    Tensor: indices' shape on ``axis``, the broadcast of x and indices elsewhere

    Notes
    -----
    The typical use is with ``argsort``/``argmax`` results, e.g. the K hardest pixels of each
    image: ``take_along_axis(losses, np.argsort(-losses.data, axis=1)[:, :K], axis=1)``.
    Backward scatter-adds dy into a zero array of x's shape (repeated indices sum).

    Examples
    --------
    >>> x = Tensor(np.array([[10.0, 30.0, 20.0]]))
    >>> take_along_axis(x, np.argsort(x.data, axis=1), axis=1).data
    array([[10., 20., 30.]])
    """
    op = "take_along_axis"
    x = _tensor(x)
    if axis is None:          # NumPy's rule: work on the flattened array
        x, axis = x.reshape(-1), 0
    axis = _check_axis(op, axis, x.ndim, x.shape)
    indices = _integer_index(op, "indices", indices, x)
    for d in range(x.ndim):
        if d != axis and 1 not in (x.shape[d], indices.shape[d]) \
                and x.shape[d] != indices.shape[d]:
            raise ValueError(f"{op}: indices of shape {indices.shape} do not broadcast "
                             f"against x of shape {x.shape} on axis {d} (every axis but "
                             f"axis={axis} needs equal lengths or a 1)")
    n = x.shape[axis]
    _check_index_range(op, "indices", indices, n, axis, lowest=-n)
    return TakeAlongAxis.apply(x, grid=_grid(indices, axis, x.shape))


# ------------------------------------------------------------------------------ split / chunk
class Split(Function):
    """Cut x along ``axis`` into pieces of the given sizes: several outputs, one Function.

    Backward concatenates the pieces' gradients. A piece nobody used gets None from the
    engine, and only that piece is filled with zeros: a channel split whose halves are both
    used costs exactly one concatenation, not a zero array of x's size per piece.
    """

    @staticmethod
    def forward(ctx, x, *, sizes, axis):
        ctx.axis, ctx.dtype = axis, x.dtype
        ctx.shapes = [x.shape[:axis] + (s,) + x.shape[axis + 1:] for s in sizes]
        pieces, start = [], 0
        for s in sizes:
            # Views of x, like torch.split: cutting copies nothing.
            pieces.append(x[(slice(None),) * axis + (slice(start, start + s),)])
            start += s
        return tuple(pieces)

    @staticmethod
    def backward(ctx, *dys):
        xp = get_array_module(*[d for d in dys if d is not None])
        grads = [xp.zeros(shape, dtype=ctx.dtype) if d is None else d
                 for d, shape in zip(dys, ctx.shapes)]
        return xp.concatenate(grads, axis=ctx.axis)


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def split(x, sizes_or_size, axis=0):
    """Cut x into pieces along ``axis`` (``torch.split``).

    Parameters
    ----------
    x : Tensor, any shape, e.g. (N, C, H, W)
    sizes_or_size : int or sequence of int
        An int s >= 1: pieces of s along the axis, the last one smaller if s does not divide
        the length. A sequence: the length of each piece, summing to x.shape[axis].
    axis : int

    Returns
    -------
    tuple of Tensor
        Views of x (no copy), in order along the axis.

    Notes
    -----
    The inverse of :func:`edu_seg.cat`, and its backward is a ``cat`` of the pieces'
    gradients (zeros for a piece that was not used). ShuffleNet's blocks split the channels
    in two: ``left, right = split(x, C // 2, axis=1)``.

    Examples
    --------
    >>> [p.shape for p in split(Tensor(np.zeros((1, 5, 2, 2))), 2, axis=1)]
    [(1, 2, 2, 2), (1, 2, 2, 2), (1, 1, 2, 2)]
    """
    op = "split"
    x = _tensor(x)
    axis = _check_axis(op, axis, x.ndim, x.shape)
    n = x.shape[axis]
    if _is_int(sizes_or_size):
        size = int(sizes_or_size)
        if size < 1:
            raise ValueError(f"{op}: a piece size must be >= 1, got {size}")
        sizes = [size] * (n // size) + ([n % size] if n % size else [])
        sizes = sizes or [0]              # an empty axis gives one empty piece, as torch
    elif isinstance(sizes_or_size, (list, tuple)) and all(map(_is_int, sizes_or_size)):
        sizes = [int(s) for s in sizes_or_size]
        if not sizes or any(s < 0 for s in sizes):
            raise ValueError(f"{op}: sizes must be a non-empty list of lengths >= 0, got "
                             f"{list(sizes_or_size)}")
        if sum(sizes) != n:
            raise ValueError(f"{op}: sizes {sizes} sum to {sum(sizes)} but axis {axis} of x "
                             f"(shape {x.shape}) has length {n}; they must sum to it")
    else:
        raise TypeError(f"{op}: sizes_or_size must be an int or a list of ints, got "
                        f"{sizes_or_size!r}")
    return Split.apply(x, sizes=tuple(sizes), axis=axis)


def chunk(x, chunks, axis=0):
    """Cut x into ``chunks`` near-equal pieces along ``axis`` (``torch.chunk``).

    Parameters
    ----------
    x : Tensor, any shape
    chunks : int >= 1
    axis : int

    Returns
    -------
    tuple of Tensor
        Pieces of ceil(n / chunks) along the axis (n = x.shape[axis]), the last one smaller.
        As in PyTorch there may be FEWER than ``chunks`` pieces: 6 in 4 chunks gives 2, 2, 2.

    Notes
    -----
    ``chunk(x, k, axis)`` is ``split(x, ceil(n / k), axis)``; same backward.

    Examples
    --------
    >>> [p.shape for p in chunk(Tensor(np.zeros((2, 6))), 4, axis=1)]
    [(2, 2), (2, 2), (2, 2)]
    """
    op = "chunk"
    x = _tensor(x)
    if not _is_int(chunks):
        raise TypeError(f"{op}: chunks must be an int, got {type(chunks).__name__} {chunks!r}")
    if chunks < 1:
        raise ValueError(f"{op}: chunks must be >= 1, got {chunks}")
    axis = _check_axis(op, axis, x.ndim, x.shape)
    n = x.shape[axis]
    if n == 0:                # torch: `chunks` empty pieces
        return Split.apply(x, sizes=(0,) * int(chunks), axis=axis)
    return split(x, math.ceil(n / chunks), axis)


# ---------------------------------------------------------------------------------------- var
class Var(Function):
    @staticmethod
    def forward(ctx, x, *, axes, keepdims, correction):
        xp = get_array_module(x)
        count = math.prod(x.shape[a] for a in axes)
        d = x - x.mean(axis=axes, keepdims=True)                  # deviations, x's shape
        divisor = x.dtype.type(count - correction)
        v = (d * d).sum(axis=axes, keepdims=keepdims) / divisor
        ctx.save_for_backward(d)
        ctx.axes, ctx.keepdims, ctx.divisor = axes, keepdims, divisor
        return xp.asarray(v, dtype=x.dtype)

    @staticmethod
    def backward(ctx, dy):
        (d,) = ctx.saved_tensors
        if not ctx.keepdims:  # give dy its reduced axes back (size 1) so it broadcasts
            dy = get_array_module(dy).expand_dims(dy, ctx.axes)
        # d/dx_i Σ_j (x_j − m)² = 2(x_i − m) (the terms through m sum to 0).
        return dy * (d * (2 / ctx.divisor))


def var(x, axis=None, keepdims=False, correction=1):
    """Variance over ``axis`` (``torch.var`` with ``correction``).

    Parameters
    ----------
    x : Tensor, float32 or float64, any shape
    axis : None, int or tuple of int
        The axes reduced (None: all).
    keepdims : bool
        Keep the reduced axes with length 1.
    correction : int or float >= 0
        Subtracted from the number of values n in the divisor: 1 (default, as torch) gives
        the unbiased sample variance, 0 the population variance (what normalisation layers
        use). Needs correction < n.

    Returns
    -------
    Tensor, x's shape without (or with length 1 on) the reduced axes

    Notes
    -----
    With m the mean of the n reduced values:

        var = Σ (x_i − m)² / (n − correction),   ∂var/∂x_i = 2 (x_i − m) / (n − correction)

    Examples
    --------
    >>> var(Tensor(np.array([1.0, 2.0, 3.0, 4.0]))).item()
    1.6666666666666667
    """
    op = "var"
    x = _tensor(x)
    _check_floating(op, "x", x)
    axes = _check_axes(op, axis, x.ndim, x.shape)
    if isinstance(correction, bool) or not _is_number(correction) or not correction >= 0:
        raise ValueError(f"{op}: correction must be a number >= 0, got {correction!r}")
    count = math.prod(x.shape[a] for a in axes)
    if correction >= count:
        raise ValueError(f"{op}: correction={correction} but only {count} value(s) are "
                         f"reduced (x of shape {x.shape}, axis={axis!r}); the variance is "
                         f"undefined: need correction < the number of values reduced")
    return Var.apply(x, axes=axes, keepdims=bool(keepdims), correction=correction)
