"""edu_seg: semantic segmentation built from scratch, for learning.

Layers, bottom to top (imports point down only): kernels (``edu_seg._kernels``, ``edu_seg.reference``),
the backend switch, autograd and differentiable ops (``edu_seg.functional``), ``nn`` modules,
models, data and training, pictures.

>>> import edu_seg
>>> edu_seg.show_config()          # what runs where            # doctest: +SKIP
>>> x = edu_seg.Tensor([[1.0, 2.0]], requires_grad=True)
"""
from . import _startup  # noqa: F401  (must run before NumPy is imported: sets OPENBLAS_CORETYPE)

__version__ = "0.1.0"

from .backend import (  # noqa: E402
    get_backend,
    get_num_threads,
    set_backend,
    set_num_threads,
    show_config,
    use_backend,
)
from .autograd import Function, Tensor, cat, is_grad_enabled, no_grad, pad, stack  # noqa: E402
from .gradcheck import gradcheck  # noqa: E402
from .ops.misc import manual_seed  # noqa: E402

__all__ = ["Tensor", "Function", "no_grad", "is_grad_enabled", "cat", "stack", "pad",
           "gradcheck", "set_backend", "get_backend", "use_backend", "set_num_threads",
           "get_num_threads", "show_config", "manual_seed"]

#: Sub-packages reachable as attributes after a plain ``import edu_seg``
#: (``edu_seg.models.create(...)``). They are imported on first use, so ``import edu_seg``
#: stays quick and does not load plotting libraries a script may never need.
_SUBMODULES = ("functional", "nn", "optim", "models", "data", "metrics", "train", "viz")


def __getattr__(name):
    if name in _SUBMODULES:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'edu_seg' has no attribute {name!r}")
