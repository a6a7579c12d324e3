"""``summary(model, input_shape)``: what each layer outputs, how many parameters and FLOPs it has.

How it sees the layers: a forward hook (:meth:`nn.Module.register_forward_hook`) on every
leaf module (one without children) records its output shape and asks the layer itself for its
FLOPs (:meth:`nn.Module.flops`, which each layer type declares), so a new layer type needs no
edit here. Nothing in the model is changed: the pass runs under ``no_grad`` in eval mode (so
batch-norm running statistics are not updated), and the modes are restored and the hooks
removed afterwards.

FLOPs convention: one multiply-add counts as 2 FLOPs (so a conv costs
``2 * OH * OW * C_out * C_in/groups * KH * KW`` per image); an elementwise layer (batch norm
in eval mode: 2; ReLU and friends: 1) and a pooling window (1 per input element it reads) are
counted per element. Layers that do not declare a count show ``-``; arithmetic a model's
``forward`` does outside any layer (adding two branches, a concatenation) is not counted.
"""
import dataclasses

import numpy as np

from ..autograd import Tensor, no_grad

__all__ = ["summary", "Summary"]


@dataclasses.dataclass
class Summary:
    """The result of :func:`summary`: ``print`` it for the table.

    Attributes
    ----------
    rows : list of dict
        One per leaf-module call, in call order: ``name``, ``type``, ``output_shape``,
        ``params`` (None for a repeated call of the same module), ``flops`` (None if unknown).
    input_shape : tuple
    total_params : int
        All parameters of the model (each counted once).
    total_flops : int
        Sum of the known FLOPs of one forward pass over the whole ``input_shape`` batch.
    """

    rows: list
    input_shape: tuple
    total_params: int
    total_flops: int

    def __str__(self):
        header = ("layer", "type", "output shape", "params", "FLOPs")
        body = [(r["name"], r["type"], str(r["output_shape"]),
                 "" if r["params"] is None else f"{r['params']:,}",
                 "-" if r["flops"] is None else _human(r["flops"])) for r in self.rows]
        widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))

        def line(cells):
            left = [str(c).ljust(w) for c, w in zip(cells[:3], widths[:3])]
            right = [str(c).rjust(w) for c, w in zip(cells[3:], widths[3:])]
            return "  ".join(left + right)

        return "\n".join([f"input {self.input_shape}", line(header), rule]
                         + [line(b) for b in body]
                         + [rule, f"total parameters: {self.total_params:,}",
                            f"total FLOPs     : {_human(self.total_flops)} "
                            f"({self.total_flops:,}) per forward pass"])

    __repr__ = __str__


def _human(n):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def summary(model, input_shape, dtype=np.float32):
    """A table of the layers of ``model``: output shape, parameters and FLOPs of each.

    Parameters
    ----------
    model : nn.Module
    input_shape : tuple of int
        ``(N, C, H, W)``, or ``(C, H, W)`` for one image.
    dtype : numpy dtype
        dtype of the zero-mean random input the forward pass runs on.

    Returns
    -------
    Summary
        ``print(summary(...))`` shows the table; ``.rows``, ``.total_params`` and
        ``.total_flops`` hold the numbers.

    Examples
    --------
    >>> from edu_seg import models
    >>> s = models.summary(models.create("unet", num_classes=2, depth=1, base_width=4),
    ...                    (3, 16, 16))
    >>> s.rows[0]["output_shape"]
    (1, 4, 16, 16)
    """
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) == 3:
        input_shape = (1,) + input_shape
    x = Tensor(np.random.default_rng(0).standard_normal(input_shape).astype(dtype))

    modes = {id(m): m.training for m in model.modules()}
    seen, rows = set(), []

    def record(name):
        def hook(module, args, y):
            x_in = args[0].data if args and isinstance(args[0], Tensor) else None
            y_out = y[0] if isinstance(y, tuple) else y       # (values, indices) of a pool
            y_out = y_out.data if isinstance(y_out, Tensor) else None
            first = id(module) not in seen
            seen.add(id(module))
            rows.append({
                "name": name or type(module).__name__,
                "type": type(module).__name__,
                "output_shape": tuple(y_out.shape) if y_out is not None else "?",
                "params": sum(p.size for p in module.parameters()) if first else None,
                "flops": module.flops(x_in, y_out) if y_out is not None else None,
            })
        return hook

    handles = [m.register_forward_hook(record(name)) for name, m in model.named_modules()
               if next(iter(m.children()), None) is None]
    model.eval()
    try:
        with no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m in model.modules():
            m.training = modes[id(m)]
    return Summary(rows=rows, input_shape=input_shape,
                   total_params=sum(p.size for p in model.parameters()),
                   total_flops=sum(r["flops"] or 0 for r in rows))
