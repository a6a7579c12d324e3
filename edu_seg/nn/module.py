"""``Module`` and ``Parameter``: how a network keeps track of its weights, shaped like PyTorch's.

A model is a tree of modules. Assigning a :class:`Parameter` or a :class:`Module` to an
attribute REGISTERS it (``Module.__setattr__``), in order, so the model can later list every
weight (``parameters()`` for the optimiser), switch every layer between training and
evaluation (``train()``/``eval()``) and save or load everything it holds (``state_dict()``)::

    class TwoConvs(Module):
        def __init__(self):
            super().__init__()
            self.conv1 = Conv2d(3, 8, 3, padding=1)    # registered as child "conv1"
            self.conv2 = Conv2d(8, 2, 1)               # registered as child "conv2"

        def forward(self, x):                          # model(x) calls forward(x)
            return self.conv2(relu(self.conv1(x)))

    TwoConvs().state_dict().keys()  # conv1.weight, conv1.bias, conv2.weight, conv2.bias

Buffers (:meth:`Module.register_buffer`) are arrays that belong to the model's state but are
not trained, e.g. BatchNorm's running mean: they are saved and loaded, never optimised.
"""
import contextlib
import contextvars
from collections import OrderedDict, namedtuple

import numpy as np

from ..autograd import Tensor
from ..backend import check_device, device_of, is_array, to_device

__all__ = ["Parameter", "Module", "Sequential", "ModuleList", "ModuleDict", "StateDictError",
           "parameter_budget", "ParameterBudgetError"]

# The parameter values that may still be created in this context (None: no limit).
_BUDGET = contextvars.ContextVar("parameter_budget", default=None)


class ParameterBudgetError(MemoryError):
    """More parameter values were created inside :func:`parameter_budget` than it allows."""


@contextlib.contextmanager
def parameter_budget(values):
    """Refuse to create more than ``values`` parameter values (elements) inside the block.

    Layers create their weights with ``np.empty`` and fill them afterwards; ``np.empty`` only
    reserves address space, and :class:`Parameter` counts the elements before anything is
    written. So a model too large for the budget fails at its first parameter over it with a
    :class:`ParameterBudgetError`, before its memory is touched. Used to build a model from an
    untrusted config (a checkpoint's) no larger than the weights that come with it.
    """
    token = _BUDGET.set([int(values)])        # a list: Parameter decrements it in place
    try:
        yield
    finally:
        _BUDGET.reset(token)


class Parameter(Tensor):
    """A Tensor that is a trainable weight of a Module (``requires_grad=True`` by default).

    Parameters
    ----------
    data : array_like
        The initial value; its dtype is kept (Python lists become float32).
    requires_grad : bool
        False freezes the weight (the optimiser skips parameters without a gradient).
    """

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        budget = _BUDGET.get()
        if budget is not None:
            budget[0] -= int(np.size(data))
            if budget[0] < 0:
                raise ParameterBudgetError(f"Parameter: creating {np.size(data):,} more values "
                                           f"exceeds the parameter budget")
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class StateDictError(KeyError, ValueError):
    """``load_state_dict`` found missing, unexpected or mis-shaped keys (message lists them).

    Both a KeyError (keys) and a ValueError (shapes), so either ``except`` catches it.
    """

    def __str__(self):  # KeyError would print the message in quotes, as a repr
        return str(self.args[0])


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class of every layer and model.

    Subclasses call ``super().__init__()`` first, assign their parameters and sub-modules as
    attributes, and define ``forward``. Calling the module calls ``forward``.

    Attributes
    ----------
    training : bool
        True in training mode (the default), False after :meth:`eval`. Dropout and BatchNorm
        behave differently in the two modes.
    """

    def __init__(self):
        # object.__setattr__: these must exist before our own __setattr__ can use them.
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_forward_hooks", OrderedDict())

    # ------------------------------------------------------------------------- registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                 f"assigning attributes (assigning {name!r})")
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, (Parameter, Module)):
            registry = params if isinstance(value, Parameter) else modules
            if name not in registry:     # a replacement keeps its place in the order
                self._forget(name)
            registry[name] = value
        elif name in buffers:
            if value is not None and not is_array(value):
                raise TypeError(f"{type(self).__name__}: buffer {name!r} must be an array or "
                                f"None, got {type(value).__name__}")
            buffers[name] = value
        elif name in params and value is not None:
            raise TypeError(f"{type(self).__name__}: cannot assign a {type(value).__name__} to "
                            f"parameter {name!r}; wrap it in Parameter(...) or set "
                            f"{name}.data instead")
        else:
            if name in params or name in modules:   # assigning None unregisters
                self._forget(name)
            object.__setattr__(self, name, value)

    def _forget(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        self.__dict__.pop(name, None)

    def __getattr__(self, name):  # only called when normal lookup fails
        for registry in ("_parameters", "_buffers", "_modules"):
            found = self.__dict__.get(registry, {})
            if name in found:
                return found[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        if name in self._parameters or name in self._buffers or name in self._modules:
            self._forget(name)
        else:
            object.__delattr__(self, name)

    def register_buffer(self, name, array):
        """Register ``array`` (or None) as state that is saved and loaded but not trained."""
        if array is not None and not is_array(array):
            raise TypeError(f"register_buffer: {name!r} must be an ndarray or None, got "
                            f"{type(array).__name__}")
        self._forget(name)
        self._buffers[name] = array

    # ------------------------------------------------------------------------------ walking
    def named_children(self):
        """(name, module) for each direct sub-module, in registration order."""
        return iter(self._modules.items())

    def children(self):
        """Each direct sub-module, in registration order."""
        return iter(self._modules.values())

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module ("") and every descendant, depth first."""
        seen = set()

        def walk(module, prefix):
            if id(module) in seen:
                return
            seen.add(id(module))
            yield prefix, module
            for name, child in module._modules.items():
                yield from walk(child, f"{prefix}.{name}" if prefix else name)

        return walk(self, prefix)

    def modules(self):
        """This module and every descendant, depth first."""
        return (m for _, m in self.named_modules())

    def named_parameters(self):
        """(dotted name, Parameter), e.g. ``("encoder.0.weight", p)``; each parameter once."""
        seen = set()
        for prefix, module in self.named_modules():
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self):
        """Every Parameter of the tree, each once (what an optimiser is given)."""
        return (p for _, p in self.named_parameters())

    def named_buffers(self):
        """(dotted name, array) for every buffer that is not None."""
        for prefix, module in self.named_modules():
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{prefix}.{name}" if prefix else name), b

    def apply(self, fn):
        """Call ``fn(module)`` on every module, children first (e.g. a custom init); returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # -------------------------------------------------------------------------------- modes
    def train(self, mode=True):
        """Set training mode (``mode=True``) or evaluation mode on every module; returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode: BatchNorm uses its running statistics, Dropout does nothing."""
        return self.train(False)

    def zero_grad(self):
        """Forget the gradients of every parameter (``.grad = None``) before the next backward."""
        for p in self.parameters():
            p.grad = None

    def to_dtype(self, dtype):
        """Cast every parameter and floating buffer to ``dtype`` in place; returns self.

        ``model.to_dtype(np.float64)`` before :func:`edu_seg.gradcheck` of a whole model.
        Gradients are reset (they would have the old dtype).
        """
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"to_dtype: dtype must be floating, got {dtype}")
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = None
        for m in self.modules():
            for name, b in m._buffers.items():
                if b is not None and b.dtype.kind == "f":
                    m._buffers[name] = b.astype(dtype)
        return self

    astype = to_dtype

    def to(self, device):
        """Move every parameter, gradient and buffer to ``device`` (``"cpu"`` or ``"cuda"``) in
        place; returns self. Parameters stay the same objects, so an optimiser built before
        still updates them; move the model before the optimiser's first step, which creates its
        state (moment buffers) where the parameters are then.

        Raises
        ------
        ValueError, RuntimeError
            An unknown device; ``"cuda"`` without CuPy or a GPU (the message says what to
            install).
        """
        check_device(f"{type(self).__name__}.to", device)
        for p in self.parameters():
            p.data = to_device(p.data, device)
            if p.grad is not None:
                p.grad = to_device(p.grad, device)
        for m in self.modules():
            for name, b in m._buffers.items():
                if b is not None:
                    m._buffers[name] = to_device(b, device)
        return self

    @property
    def device(self):
        """Where the parameters live: ``"cpu"`` or ``"cuda"`` (``"cpu"`` if there are none)."""
        return device_of(*(p.data for p in self.parameters()))

    # -------------------------------------------------------------------------------- state
    def state_dict(self):
        """An ordered dict: dotted name -> a COPY of every parameter and buffer array (on the
        model's device; :func:`edu_seg.checkpoint.save_checkpoint` writes host copies).

        The order is registration order, each module's parameters then its buffers, then
        its children, the same as PyTorch (so the keys of an identical PyTorch model match).
        """
        state = OrderedDict()
        for prefix, module in self.named_modules():
            dot = prefix + "." if prefix else ""
            for name, p in module._parameters.items():
                state[dot + name] = p.data.copy()
            for name, b in module._buffers.items():
                if b is not None:
                    state[dot + name] = b.copy()
        return state

    def _state_slots(self):
        """name -> (module, registry, key) for every entry of the state dict."""
        slots = OrderedDict()
        for prefix, module in self.named_modules():
            dot = prefix + "." if prefix else ""
            for registry in (module._parameters, module._buffers):
                for name, v in registry.items():
                    if v is not None:
                        slots[dot + name] = (registry, name)
        return slots

    def load_state_dict(self, state, strict=True):
        """Copy the arrays of ``state`` (from :meth:`state_dict`) into this model.

        Parameters
        ----------
        state : mapping of str to array
        strict : bool
            If True, the keys must match exactly. If False, missing and unexpected keys are
            tolerated (and returned); shapes must still match.

        Returns
        -------
        IncompatibleKeys
            ``(missing_keys, unexpected_keys)``, both empty after a strict load.

        Raises
        ------
        StateDictError
            (a KeyError and a ValueError) naming every missing and unexpected key and every
            key whose shape differs, with both shapes. Nothing is loaded then.
        """
        slots = self._state_slots()
        missing = [k for k in slots if k not in state]
        unexpected = [k for k in state if k not in slots]
        mismatched = []
        for key, (registry, name) in slots.items():
            if key in state:
                have, got = registry[name].shape, np.shape(state[key])
                if have != got:
                    mismatched.append(f"{key}: checkpoint has shape {got}, model has {have}")
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if mismatched:
            problems.append("shape mismatch: " + "; ".join(mismatched))
        if problems:
            raise StateDictError(f"load_state_dict into {type(self).__name__}: "
                                 + "; ".join(problems))
        for key, (registry, name) in slots.items():
            if key not in state:
                continue
            current = registry[name]
            value = state[key] if is_array(state[key]) else np.asarray(state[key])
            here = current.data if isinstance(current, Tensor) else current
            value = to_device(value, device_of(here))   # a host checkpoint onto the model's device
            if isinstance(current, Parameter):
                current.copy_(value)           # in place: optimisers keep their references
            else:
                registry[name] = value.astype(current.dtype, copy=True)
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------------------ calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        y = self.forward(*args, **kwargs)
        for hook in tuple(self._forward_hooks.values()):
            hook(self, args, y)
        return y

    def register_forward_hook(self, hook):
        """Call ``hook(module, args, output)`` after every forward of this module.

        Tools that watch a model without changing it use hooks: :func:`edu_seg.models.summary`
        records each layer's output shape and FLOPs this way. Returns a handle whose
        ``remove()`` unregisters the hook.
        """
        key = object()
        self._forward_hooks[key] = hook
        return _HookHandle(self._forward_hooks, key)

    # ------------------------------------------------------------------- layer declarations
    def flops(self, x, y):
        """FLOPs of one call of this layer with input array ``x`` and output array ``y``.

        One multiply-add counts as 2 FLOPs. Each layer type that computes something declares
        its own count by overriding this method (a container returns None: its children are
        counted); None means "not known", and the summary shows ``-``.
        """
        return None

    def window(self):
        """How this layer maps input pixels to output pixels, for receptive-field arithmetic.

        Returns ``(kernel, stride, padding, dilation)``, each an ``(int, int)`` pair, for a
        layer that slides a window over its input (convolutions, poolings; a pointwise layer
        such as ReLU or batch norm is the window ``(1, 1)`` with stride 1), or None for a layer
        whose output pixel is not a single window of its input (a transposed conv, a
        resampling, a container).
        """
        return None

    # ------------------------------------------------------------------------------- repr
    def extra_repr(self):
        """The text inside this module's parentheses, e.g. ``3, 16, kernel_size=(3, 3)``."""
        return ""

    def num_parameters(self):
        """Number of trainable values (elements of all parameters)."""
        return sum(p.size for p in self.parameters())

    def __repr__(self):
        """PyTorch's nested layout, plus the number of parameters of each module that has any."""
        count = self.num_parameters()
        note = f"  # {count:,} parameters" if count else ""
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()}){note}"
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + f"\n){note}"


class Sequential(Module):
    """Modules applied one after the other: ``Sequential(conv, bn, relu)(x)``.

    Children are named "0", "1", ... (or by an OrderedDict's keys). Indexing gives a child
    (``seq[0]``) or a new Sequential of a slice (``seq[:2]``).
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            items = modules[0].items()
        else:
            items = ((str(i), m) for i, m in enumerate(modules))
        for name, m in items:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: element {name!r} is a {type(m).__name__}, not a "
                                f"Module")
            setattr(self, name, m)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return list(self._modules.values())[index]

    def append(self, module):
        """Add ``module`` at the end; returns self."""
        setattr(self, str(len(self)), module)
        return self

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class _HookHandle:
    """What :meth:`Module.register_forward_hook` returns: ``remove()`` unregisters the hook."""

    def __init__(self, hooks, key):
        self._hooks, self._key = hooks, key

    def remove(self):
        self._hooks.pop(self._key, None)


class ModuleList(Module):
    """A list of modules whose parameters are registered (a plain list would hide them).

    Use it for blocks that ``forward`` calls in its own way, e.g. U-Net's encoder stages,
    whose outputs are also kept as skips.
    """

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return list(self._modules.values())[index]

    def __setitem__(self, index, module):
        name = list(self._modules)[index]
        setattr(self, name, module)

    def append(self, module):
        """Add ``module`` at the end; returns self."""
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList: can only hold Modules, got {type(module).__name__}")
        setattr(self, str(len(self)), module)
        return self

    def extend(self, modules):
        """Append each of ``modules``; returns self."""
        for m in modules:
            self.append(m)
        return self

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward: iterate over it in yours")


class ModuleDict(Module):
    """A dict of named modules whose parameters are registered (``torch.nn.ModuleDict``).

    Use it for named branches, e.g. the heads of a multi-task model or the stages of a
    backbone keyed by their output stride (keys are strings: ``heads["aux"]``).
    """

    def __init__(self, modules=None):
        super().__init__()
        for name, m in dict(modules or {}).items():
            self[name] = m

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, name):
        return name in self._modules

    def __getitem__(self, name):
        return self._modules[name]

    def __setitem__(self, name, module):
        if not isinstance(name, str):
            raise TypeError(f"ModuleDict: keys must be strings, got {name!r}")
        if not isinstance(module, Module):
            raise TypeError(f"ModuleDict: can only hold Modules, got {type(module).__name__}")
        setattr(self, name, module)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict has no forward: pick its modules in yours")
