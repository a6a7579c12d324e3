"""A small reverse-mode autograd: ``Tensor`` records the ``Function`` that made it; ``backward``
walks that record in reverse and applies the chain rule.

The whole idea in four lines (micrograd's, with arrays instead of scalars)::

    y = Mul.apply(a, b)       # forward: y.data = a.data * b.data, and y remembers (Mul, ctx, a, b)
    y.backward(dy)            # backward: Mul.backward(ctx, dy) -> (dy * b, dy * a)
                              #           each input adds its share into its own .grad
                              # (in topological order, so a node runs after all its consumers)

Every op of the library is a :class:`Function` with a ``forward(ctx, ...)`` that computes on raw
arrays and a ``backward(ctx, dy)`` that returns one gradient per positional input. The kernels
of :mod:`edu_seg.functional` (convolution, pooling, RoIAlign, ...) plug in the same way.

Conventions
-----------
- ``Tensor.data`` is a NumPy (or CuPy) array; ``Tensor.grad`` is a plain array of the same shape
  and dtype as ``data`` (or None), so an optimiser can update ``p.data -= lr * p.grad``.
- Gradients of broadcast inputs are summed back to the input's shape by the engine
  (:func:`unbroadcast`), so an op's ``backward`` may return a gradient of the output's shape.
- Reductions and joins take ``axis`` and ``keepdims`` like NumPy (PyTorch calls them ``dim``,
  ``keepdim``).
- ``.grad`` is always a fresh, writable array that belongs to its tensor alone (never a view of
  an op's array, never shared with another tensor), so an optimiser may read it freely and a
  learner may change it without touching anything else.
- Memory: each node drops the arrays it saved, and its links to its inputs, as soon as its
  backward has run, so after ``loss.backward()`` the activations are freed even while ``loss``
  is still referenced.
- In-place changes: a tensor counts its in-place changes (``_version``, bumped by ``add_``,
  ``sub_``, ``mul_``, ``copy_``, which the optimisers and ``load_state_dict`` use). If an
  array that an op saved for backward was changed in place after the forward pass, backward
  raises a ``RuntimeError`` naming the op instead of returning a silently wrong gradient
  (PyTorch's version counter). Writing into ``t.data`` directly bypasses the counter.
"""
import contextlib
import threading

import numpy as np

from .backend import check_device, device_of, get_array_module, is_array, kernels, to_device
from .ops.limits import check_output_size

__all__ = ["Tensor", "Function", "Context", "no_grad", "is_grad_enabled", "cat", "stack", "pad",
           "unbroadcast"]

_grad_mode = threading.local()


def is_grad_enabled():
    """False inside a :func:`no_grad` block: ops then record nothing for backward."""
    return getattr(_grad_mode, "enabled", True)


@contextlib.contextmanager
def no_grad():
    """Context manager: ops inside build no graph (evaluation, optimiser updates)."""
    previous = is_grad_enabled()
    _grad_mode.enabled = False
    try:
        yield
    finally:
        _grad_mode.enabled = previous


def _as_array(data):
    """An array for ``data``: arrays keep their dtype; Python numbers and lists become float32."""
    if isinstance(data, Tensor):
        return data.data
    if is_array(data):
        return data
    if isinstance(data, np.generic):
        return np.asarray(data)
    return np.asarray(data, dtype=np.float32)


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes that broadcasting added or stretched, so it has ``shape``.

    If ``a`` of shape (3, 1) was broadcast against (2, 3, 4), each ``a[i, 0]`` was used 2·4 times,
    so its gradient is the sum of the output gradient over those copies.
    """
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)


class Context:
    """Scratch space that ``forward`` fills for its ``backward``.

    Attributes
    ----------
    needs_input_grad : tuple of bool
        One flag per positional input of ``forward``: does that input need a gradient? A
        ``backward`` can skip work (e.g. the input gradient of a network's first conv).
    saved_tensors : tuple of arrays
        What ``save_for_backward`` stored. Other values can be set as plain attributes.
    """

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved_tensors = ()

    def save_for_backward(self, *arrays):
        self.saved_tensors = arrays


class _Node:
    """One recorded call of a Function: what to call backward on and where gradients go."""

    __slots__ = ("function", "ctx", "inputs", "n_outputs", "saved_versions", "__weakref__")

    def __init__(self, function, ctx, inputs, n_outputs, saved_versions):
        self.function = function
        self.ctx = ctx
        self.inputs = inputs        # per positional input: the Tensor if it needs a grad, else None
        self.n_outputs = n_outputs
        self.saved_versions = saved_versions  # (position, Tensor, version) of saved inputs

    def check_versions(self):
        """Raise if an input whose array this node saved was changed in place since forward."""
        for position, tensor, version in self.saved_versions:
            if tensor._version != version:
                raise RuntimeError(
                    f"backward: input {position} of {self.function.__name__} (shape "
                    f"{tensor.shape}) was modified in place after the forward pass saved it "
                    f"(version {version} -> {tensor._version}); its gradient would be computed "
                    f"from the new values and be wrong. Run the forward pass again after the "
                    f"change (e.g. call optimizer.step() only after backward), or change a copy")

    def free(self):
        """Drop what backward needed: saved arrays and links to the inputs (their memory)."""
        self.ctx = None
        self.inputs = ()
        self.saved_versions = ()


def _saved_versions(args, ctx):
    """(position, Tensor, version) for each Tensor input whose array ``forward`` kept in ctx.

    Only those matter: an op that saved nothing of an input (Add) gives the right gradient
    whatever later happens to that input.
    """
    saved = [a for a in ctx.saved_tensors if is_array(a)]
    saved += [v for k, v in vars(ctx).items() if k != "saved_tensors" and is_array(v)]
    if not saved:
        return ()
    return tuple((i, a, a._version) for i, a in enumerate(args) if isinstance(a, Tensor)
                 and any(s is a.data or getattr(s, "base", None) is a.data for s in saved))


class Function:
    """Base class of every differentiable op.

    Subclasses define two static methods::

        @staticmethod
        def forward(ctx, *args, **kwargs):   # args: arrays (Tensors arrive unwrapped) and options
            ...                              # returns an array, or a tuple of arrays
        @staticmethod
        def backward(ctx, *dys):             # one output gradient per output (None if unused)
            ...                              # returns one gradient per positional arg (or None)

    and are called through ``MyOp.apply(*args, **kwargs)``, which unwraps Tensors, runs
    ``forward`` and, if any input requires a gradient, records the call for ``backward``.
    Integer outputs (e.g. max-pool indices) never require a gradient.
    """

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        ctx = Context(needs)
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        out = cls.forward(ctx, *raw, **kwargs)
        outputs = out if isinstance(out, tuple) else (out,)
        track = any(needs) and is_grad_enabled()
        node = None
        if track:
            inputs = tuple(a if need else None for a, need in zip(args, needs))
            node = _Node(cls, ctx, inputs, len(outputs), _saved_versions(args, ctx))
        wrapped = []
        for i, o in enumerate(outputs):
            t = Tensor(o)
            if track and t.dtype.kind in "fc":
                t.requires_grad = True
                t._node, t._output_index = node, i
            wrapped.append(t)
        return tuple(wrapped) if isinstance(out, tuple) else wrapped[0]


class Tensor:
    """An array that can remember how it was computed, so gradients can flow back through it.

    Parameters
    ----------
    data : array_like
        A NumPy/CuPy array keeps its dtype (float32 and float64 both work end to end);
        Python numbers and lists become float32.
    requires_grad : bool
        If True, ``backward`` fills ``.grad`` for this tensor. Only floating tensors can.

    Examples
    --------
    >>> x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    array([2., 4., 6.], dtype=float32)
    """

    __slots__ = ("data", "grad", "requires_grad", "_node", "_output_index", "_version",
                 "__weakref__")
    __array_priority__ = 1000  # ndarray + Tensor -> Tensor.__radd__, not an object array

    def __init__(self, data, requires_grad=False):
        self.data = _as_array(data)
        if requires_grad and self.data.dtype.kind not in "fc":
            raise TypeError(f"Tensor: only floating tensors can require grad, got dtype "
                            f"{self.data.dtype}; convert with .astype(np.float32) first")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._node = None
        self._output_index = 0
        self._version = 0           # in-place changes so far (see add_, copy_)

    # ------------------------------------------------------------------ array-like properties
    shape = property(lambda self: self.data.shape, doc="Shape of the data, a tuple.")
    dtype = property(lambda self: self.data.dtype, doc="dtype of the data.")
    ndim = property(lambda self: self.data.ndim, doc="Number of dimensions.")
    size = property(lambda self: self.data.size, doc="Number of elements.")

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        body = np.array2string(self.numpy(), precision=4, separator=", ", prefix="Tensor(")
        return f"Tensor({body}, dtype={self.dtype}{grad})"

    def numpy(self):
        """The data as a NumPy array (copied from the GPU if needed)."""
        return self.data.get() if hasattr(self.data, "get") else self.data

    def item(self):
        """The single value of a one-element tensor, as a Python number."""
        return self.data.item()

    @property
    def device(self):
        """Where the data lives: ``"cpu"`` (a NumPy array) or ``"cuda"`` (a CuPy array)."""
        return device_of(self.data)

    def to(self, device):
        """This tensor on ``device`` (``"cpu"`` or ``"cuda"``): itself if it is already there,
        else a copy that stays in the graph (the gradient is copied back in backward).

        Raises
        ------
        ValueError, RuntimeError
            An unknown device; ``"cuda"`` without CuPy or a GPU (the message says what to
            install).
        """
        check_device("Tensor.to", device)
        if self.device == device:
            return self
        return ToDevice.apply(self, device=device)

    def detach(self):
        """A tensor sharing the data but cut from the graph: no gradient flows through it."""
        return Tensor(self.data)

    def astype(self, dtype):
        """A differentiable cast to ``dtype`` (e.g. float32 -> float64 for gradient checks)."""
        return Cast.apply(self, dtype=np.dtype(dtype))

    @property
    def is_leaf(self):
        """True for tensors made by the user (parameters, inputs), not by an op."""
        return self._node is None

    # ------------------------------------------------------------------------------- backward
    def backward(self, grad=None):
        """Backpropagate from this tensor: add d(self)/d(leaf) · grad into every leaf's ``.grad``.

        Parameters
        ----------
        grad : array_like, optional
            The gradient of the final objective with respect to this tensor. May be omitted
            only for a one-element tensor (a loss), where it is 1.

        The graph is freed afterwards (saved arrays are released), like PyTorch's default.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad; no input of the "
                               "ops that made it had requires_grad=True")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: grad can be omitted only for a one-element tensor "
                                   f"(a loss); this one has shape {self.shape}. Pass grad= an "
                                   f"array of that shape, or reduce first (.sum(), .mean())")
            grad = np.ones_like(self.data)
        grad = _as_array(grad)
        if grad.shape != self.shape:
            raise ValueError(f"backward: grad has shape {grad.shape} but the tensor has "
                             f"shape {self.shape}")
        if self._node is None:  # a leaf: its gradient is grad itself
            self._accumulate(grad, owned=set())
            return
        _run_backward(self._node, self._output_index, grad)

    def _accumulate(self, g, owned):
        """Add ``g`` into ``.grad``, which stays an array that this tensor alone owns."""
        dtype = self.data.dtype
        if self.grad is None:
            self.grad = _dense(g, dtype, copy=True)
        elif id(self) in owned:         # made by this backward pass: add in place
            _add_into(self.grad, g)
        elif isinstance(g, IndexedGradient):
            # .grad from an earlier backward pass: the user may hold that array, so the sum
            # goes to a new one.
            self.grad = _dense(self.grad, dtype, copy=True)
            g.add_into(self.grad)
        else:                           # the same, in one pass over memory
            self.grad = _xp(self.grad).add(self.grad, g, dtype=dtype)
        owned.add(id(self))

    # ------------------------------------------------------------------------ in-place updates
    def _changed_in_place(self):
        self._version += 1
        return self

    def add_(self, other):
        """In place: ``self.data += other``; counts as an in-place change (see module doc)."""
        self.data += _raw(other)
        return self._changed_in_place()

    def sub_(self, other):
        """In place: ``self.data -= other`` (an optimiser's step)."""
        self.data -= _raw(other)
        return self._changed_in_place()

    def mul_(self, other):
        """In place: ``self.data *= other`` (AdamW's weight decay)."""
        self.data *= _raw(other)
        return self._changed_in_place()

    def copy_(self, src):
        """In place: copy ``src`` into ``self.data`` (cast to its dtype; loading, initialising)."""
        self.data[...] = _raw(src)
        return self._changed_in_place()

    # ------------------------------------------------------------------------------ operators
    def __add__(self, other):
        return Add.apply(self, other)

    def __radd__(self, other):
        return Add.apply(other, self)

    def __sub__(self, other):
        return Sub.apply(self, other)

    def __rsub__(self, other):
        return Sub.apply(other, self)

    def __mul__(self, other):
        return Mul.apply(self, other)

    def __rmul__(self, other):
        return Mul.apply(other, self)

    def __truediv__(self, other):
        return Div.apply(self, other)

    def __rtruediv__(self, other):
        return Div.apply(other, self)

    def __neg__(self):
        return Neg.apply(self)

    def __pow__(self, exponent):
        return Pow.apply(self, exponent)

    def __rpow__(self, base):
        return Pow.apply(base, self)

    def __matmul__(self, other):
        return MatMul.apply(self, other)

    def __rmatmul__(self, other):
        return MatMul.apply(other, self)

    def __getitem__(self, index):
        return GetItem.apply(self, index=index)

    # Comparisons give plain boolean arrays: they have no gradient.
    def __lt__(self, other):
        return self.data < _raw(other)

    def __le__(self, other):
        return self.data <= _raw(other)

    def __gt__(self, other):
        return self.data > _raw(other)

    def __ge__(self, other):
        return self.data >= _raw(other)

    # --------------------------------------------------------------------------- elementwise
    def exp(self):
        return Exp.apply(self)

    def log(self):
        return Log.apply(self)

    def sqrt(self):
        return Sqrt.apply(self)

    def relu(self):
        return ReLU.apply(self)

    def sigmoid(self):
        return Sigmoid.apply(self)

    def tanh(self):
        return Tanh.apply(self)

    # ----------------------------------------------------------------------------- reductions
    def sum(self, axis=None, keepdims=False):
        return Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return Mean.apply(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return Max.apply(self, axis=axis, keepdims=keepdims)

    def argmax(self, axis=None):
        """Indices of the maxima (an integer array, not differentiable)."""
        return self.data.argmax(axis=axis)

    # ------------------------------------------------------------------------------- reshaping
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Reshape.apply(self, shape=shape)

    def flatten(self, start_axis=0):
        """Merge axes ``start_axis`` .. last into one (``flatten(1)``: (N, C, H, W) -> (N, CHW))."""
        return self.reshape(self.shape[:start_axis] + (-1,))

    def permute(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return Permute.apply(self, axes=axes)

    def transpose(self, axis0, axis1):
        """Swap two axes (PyTorch's ``transpose(dim0, dim1)``)."""
        axes = list(range(self.ndim))
        axes[axis0], axes[axis1] = axes[axis1], axes[axis0]
        return Permute.apply(self, axes=tuple(axes))


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


class ToDevice(Function):
    """y = x copied to another device; the gradient is dy copied back to x's device."""

    @staticmethod
    def forward(ctx, x, *, device):
        ctx.source = device_of(x)
        return to_device(x, device)

    @staticmethod
    def backward(ctx, dy):
        return to_device(dy, ctx.source)


class IndexedGradient:
    """The gradient of ``x[index]`` with respect to ``x``, kept sparse until it is needed.

    It is zero except at ``x[index]``, where it is ``values``. A model that slices one tensor
    many times (the channel groups of a DenseNet or ShuffleNet block) would otherwise
    allocate a full-size zero array per slice; the engine instead adds each slice's values
    into ONE array for that tensor (:func:`_sum_gradients`), and makes a dense array only
    when a node or a leaf needs it.
    """

    __slots__ = ("shape", "dtype", "index", "values")

    def __init__(self, shape, dtype, index, values):
        self.shape, self.dtype, self.index, self.values = tuple(shape), dtype, index, values

    def add_into(self, total):
        if _is_basic_index(self.index):
            total[self.index] += self.values
        else:  # an integer array may pick one element several times: gradients must add
            _xp(total).add.at(total, self.index, self.values)

    def dense(self, dtype=None):
        total = _xp(self.values).zeros(self.shape, dtype=dtype or self.dtype)
        self.add_into(total)
        return total


def _dense(g, dtype, copy=False):
    """``g`` as an ordinary array of ``dtype``; a new, writable one if ``copy``."""
    if isinstance(g, IndexedGradient):
        return g.dense(dtype)
    return _xp(g).array(g, dtype=dtype, copy=True) if copy or g.dtype != dtype else g


def _add_into(total, g):
    if isinstance(g, IndexedGradient):
        g.add_into(total)
    else:
        total += g


def _sum_gradients(total, g, owned, key):
    """``total + g`` for gradients arriving at a node's output slot ``key``.

    The first gradient is kept as it is: it may be an array that an op still holds (``Add``
    returns ``dy`` twice), so it must never be written to. The first sum makes a new array
    that only this backward pass holds (its ``key`` goes into ``owned``); every later gradient
    is added into that array in place, so a tensor feeding many consumers (a pyramid of
    poolings, a DenseNet block's concatenations, many slices) costs one new array, not one per
    consumer.
    """
    if total is None:
        return g
    if key not in owned:
        owned.add(key)
        if isinstance(total, IndexedGradient):
            total = total.dense()
        elif isinstance(g, IndexedGradient):
            total = _xp(total).array(total, copy=True)
        else:
            return total + g
    _add_into(total, g)
    return total


def _run_backward(root, root_index, root_grad):
    """Apply the chain rule to every node reachable from ``root``, each after all its consumers.

    Kahn's algorithm: count, for each node, how many later nodes feed it gradient; a node runs
    once that count drops to zero, so its output gradients are complete when it runs.
    """
    freed = RuntimeError("backward: this graph was already backpropagated and freed; "
                         "recompute the forward pass")
    if root.ctx is None:
        raise freed
    consumers = {id(root): 0}
    nodes = {id(root): root}
    stack = [root]
    while stack:  # discover the graph and count the edges into each node
        node = stack.pop()
        node.check_versions()
        for t in node.inputs:
            if t is None or t._node is None:
                continue
            child = t._node
            if child.ctx is None:
                raise freed
            if id(child) not in nodes:
                nodes[id(child)] = child
                consumers[id(child)] = 0
                stack.append(child)
            consumers[id(child)] += 1

    grads = {id(root): [None] * root.n_outputs}
    grads[id(root)][root_index] = root_grad
    owned = set()  # gradient sums this pass created and may add into in place
    ready = [root]
    while ready:
        node = ready.pop()
        dys = grads.pop(id(node), None)
        if dys is None or all(d is None for d in dys):
            input_grads = (None,) * len(node.inputs)  # nothing flows here; just release it
        else:
            dys = [d.dense() if isinstance(d, IndexedGradient) else d for d in dys]
            input_grads = node.function.backward(node.ctx, *dys)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if len(input_grads) != len(node.inputs):
                raise RuntimeError(f"{node.function.__name__}.backward returned "
                                   f"{len(input_grads)} gradients for {len(node.inputs)} inputs")
        inputs = node.inputs
        node.free()  # saved arrays and input links go as soon as they are used
        for t, g in zip(inputs, input_grads):
            if t is None:
                continue
            if g is not None:
                if not isinstance(g, IndexedGradient):
                    g = unbroadcast(g, t.shape)
                if t._node is None:
                    t._accumulate(g, owned)
                    continue
                slots = grads.setdefault(id(t._node), [None] * t._node.n_outputs)
                i = t._output_index
                slots[i] = _sum_gradients(slots[i], g, owned, (id(t._node), i))
            if t._node is not None:
                consumers[id(t._node)] -= 1
                if consumers[id(t._node)] == 0:
                    ready.append(t._node)


# ===================================================================================== ops
def _xp(*arrays):
    return get_array_module(*arrays)


class Cast(Function):
    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, dy):
        return dy.astype(ctx.dtype)


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, dy):
        return dy, dy


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, dy):
        return dy, (-dy if ctx.needs_input_grad[1] else None)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved_tensors
        return (dy * b if ctx.needs_input_grad[0] else None,
                dy * a if ctx.needs_input_grad[1] else None)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved_tensors
        da = dy / b if ctx.needs_input_grad[0] else None
        db = -dy * a / (b * b) if ctx.needs_input_grad[1] else None  # d(a/b)/db = -a/b²
        return da, db


class Neg(Function):
    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, dy):
        return -dy


class Pow(Function):
    """``base ** exponent``; either may be a Tensor."""

    @staticmethod
    def forward(ctx, base, exponent):
        y = base ** exponent
        ctx.save_for_backward(base, exponent, y)
        return y

    @staticmethod
    def backward(ctx, dy):
        base, exponent, y = ctx.saved_tensors
        dbase = dexp = None
        if ctx.needs_input_grad[0]:
            dbase = dy * exponent * base ** (exponent - 1)   # d(b^e)/db = e·b^(e-1)
        if ctx.needs_input_grad[1]:
            dexp = dy * y * _xp(y).log(base)                  # d(b^e)/de = b^e·ln b
        return dbase, dexp


def _matmul_shapes_ok(a, b):
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    return a.ndim >= 1 and b.ndim >= 1 and k_a == k_b


class MatMul(Function):
    """Matrix product with NumPy's ``@`` rules (batch axes broadcast, 1-D operands promoted)."""

    @staticmethod
    def forward(ctx, a, b):
        a, b = _as_array(a), _as_array(b)
        if not _matmul_shapes_ok(a, b):
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not fit: the last axis "
                             f"of the left operand must equal the "
                             f"{'first' if b.ndim == 1 else 'second-to-last'} axis of the right")
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved_tensors
        # Promote 1-D operands to matrices the way @ does, so one formula covers every case:
        # dA = dY Bᵀ,  dB = Aᵀ dY.
        # (For 1-D @ 1-D the output is a scalar and dy has shape (): it becomes (1, 1).)
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        dy2 = dy
        if a.ndim == 1:
            dy2 = _xp(dy2).expand_dims(dy2, -1 if b.ndim == 1 else -2)
        if b.ndim == 1:
            dy2 = dy2[..., None]
        da = db = None
        if ctx.needs_input_grad[0]:
            da = dy2 @ b2.swapaxes(-1, -2)
            if a.ndim == 1:
                da = da[..., 0, :]
        if ctx.needs_input_grad[1]:
            db = a2.swapaxes(-1, -2) @ dy2
            if b.ndim == 1:
                db = db[..., 0]
        return da, db


class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        y = _xp(x).exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy * y


class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _xp(x).log(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return dy / x


class Sqrt(Function):
    @staticmethod
    def forward(ctx, x):
        y = _xp(x).sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy / (2 * y)


class ReLU(Function):
    """y = max(x, 0); dx = dy · [y > 0] (the kernels of ``edu_seg/reference/activation.py``)."""

    @staticmethod
    def forward(ctx, x):
        y = kernels("activation", x).relu_forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return kernels("activation", dy, y).relu_backward(dy, y)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        xp = _xp(x)
        # 1/(1+e^-x) overflows for very negative x; tanh form is stable everywhere.
        y = 0.5 * (xp.tanh(0.5 * x) + 1)
        ctx.save_for_backward(y)
        return y.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy * y * (1 - y)


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        y = _xp(x).tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy * (1 - y * y)


def _expand_reduced(dy, shape, axis, keepdims):
    """Give a reduction's output gradient back its reduced axes (size 1) so it broadcasts."""
    if axis is None or keepdims:
        return dy.reshape([1] * len(shape)) if axis is None and not keepdims else dy
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = sorted(a % len(shape) for a in axes)
    for a in axes:
        dy = _xp(dy).expand_dims(dy, a)
    return dy


class Sum(Function):
    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        return _xp(x).asarray(x.sum(axis=axis, keepdims=keepdims))

    @staticmethod
    def backward(ctx, dy):
        dy = _expand_reduced(dy, ctx.shape, ctx.axis, ctx.keepdims)
        return _xp(dy).broadcast_to(dy, ctx.shape)


class Mean(Function):
    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        y = _xp(x).asarray(x.mean(axis=axis, keepdims=keepdims))
        ctx.count = x.size // max(y.size, 1) if x.size else 1
        return y

    @staticmethod
    def backward(ctx, dy):
        dy = _expand_reduced(dy, ctx.shape, ctx.axis, ctx.keepdims)
        return _xp(dy).broadcast_to(dy / ctx.count, ctx.shape)


class Max(Function):
    """Maximum over axes. Ties share the gradient equally (the subgradient PyTorch's amax uses)."""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        y = _xp(x).asarray(x.max(axis=axis, keepdims=True))
        ctx.save_for_backward(x, y)
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        return y if keepdims else (y.reshape(()) if axis is None else y.squeeze(axis))

    @staticmethod
    def backward(ctx, dy):
        x, y = ctx.saved_tensors
        mask = (x == y).astype(x.dtype)
        mask /= mask.sum(axis=ctx.axis, keepdims=True)
        return _expand_reduced(dy, ctx.shape, ctx.axis, ctx.keepdims) * mask


class Reshape(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, dy):
        return dy.reshape(ctx.shape)


class Permute(Function):
    @staticmethod
    def forward(ctx, x, axes):
        if sorted(a % x.ndim for a in axes) != list(range(x.ndim)):
            raise ValueError(f"permute: axes {axes} are not a permutation of the "
                             f"{x.ndim} axes of a tensor of shape {x.shape}")
        ctx.axes = axes
        return x.transpose(axes)

    @staticmethod
    def backward(ctx, dy):
        return dy.transpose(np.argsort([a % dy.ndim for a in ctx.axes]))


def _is_basic_index(index):
    """Basic (slice) indexing never selects an element twice, so backward can assign."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (slice, int, np.integer))
               for p in parts)


class GetItem(Function):
    @staticmethod
    def forward(ctx, x, index):
        if isinstance(index, tuple):
            index = tuple(_raw(i) for i in index)
        else:
            index = _raw(index)
        ctx.shape, ctx.dtype, ctx.index = x.shape, x.dtype, index
        return x[index]

    @staticmethod
    def backward(ctx, dy):
        return IndexedGradient(ctx.shape, ctx.dtype, ctx.index, dy)


class Cat(Function):
    @staticmethod
    def forward(ctx, *xs, axis=0):
        ctx.axis = axis
        ctx.sizes = [x.shape[axis] for x in xs]
        return _xp(*xs).concatenate(xs, axis=axis)

    @staticmethod
    def backward(ctx, dy):
        splits = np.cumsum(ctx.sizes)[:-1]
        return tuple(_xp(dy).split(dy, splits, axis=ctx.axis))


class Stack(Function):
    @staticmethod
    def forward(ctx, *xs, axis=0):
        ctx.axis = axis
        return _xp(*xs).stack(xs, axis=axis)

    @staticmethod
    def backward(ctx, dy):
        return tuple(_xp(dy).moveaxis(dy, ctx.axis, 0))


class Pad(Function):
    @staticmethod
    def forward(ctx, x, widths, value):
        ctx.slices = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, x.shape))
        return _xp(x).pad(x, widths, mode="constant", constant_values=value)

    @staticmethod
    def backward(ctx, dy):
        return dy[ctx.slices]


def _check_tensors(name, tensors):
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{name}: expected a non-empty sequence of tensors")
    return tensors


def cat(tensors, axis=0):
    """Concatenate tensors along an existing axis (``torch.cat``); all other sizes must match.

    The workhorse of U-Net skips and DenseNet blocks: its backward just slices the gradient.
    """
    tensors = _check_tensors("cat", tensors)
    ref = _as_array(tensors[0]).shape
    for i, t in enumerate(tensors[1:], 1):
        s = _as_array(t).shape
        if len(s) != len(ref) or any(a != b for k, (a, b) in enumerate(zip(s, ref))
                                     if k != axis % len(ref)):
            raise ValueError(f"cat: tensor {i} has shape {s} but tensor 0 has {ref}; all axes "
                             f"except axis={axis} must match")
    return Cat.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    """Stack same-shaped tensors along a new axis (``torch.stack``)."""
    tensors = _check_tensors("stack", tensors)
    ref = _as_array(tensors[0]).shape
    for i, t in enumerate(tensors[1:], 1):
        if _as_array(t).shape != ref:
            raise ValueError(f"stack: tensor {i} has shape {_as_array(t).shape} but tensor 0 "
                             f"has {ref}; stack needs equal shapes")
    return Stack.apply(*tensors, axis=axis)


def pad(x, pad, value=0.0):
    """Constant padding with PyTorch's ``F.pad`` convention.

    Parameters
    ----------
    x : Tensor
    pad : tuple of int
        ``(left, right)`` for the last axis, then ``(top, bottom)`` for the one before, and so
        on: ``pad(x, (1, 1, 2, 2))`` pads W by 1 and H by 2 on each side of an (N, C, H, W) x.
    value : float
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: needs an even number of widths, at most 2*{x.ndim}, got {pad}")
    if any((not isinstance(p, (int, np.integer))) or p < 0 for p in pad):
        raise ValueError(f"pad: widths must be non-negative integers, got {pad}")
    widths = [(0, 0)] * x.ndim
    for k in range(len(pad) // 2):
        widths[x.ndim - 1 - k] = (int(pad[2 * k]), int(pad[2 * k + 1]))
    check_output_size("pad", [n + a + b for n, (a, b) in zip(x.shape, widths)], x.dtype,
                      f"pad={tuple(pad)}")
    return Pad.apply(x, widths=tuple(widths), value=value)
