"""Receptive fields: how much of the input one output pixel can see, in theory and in practice.

Two numbers describe what output pixel ``(i, j)`` of a network depends on:

- the **theoretical receptive field**, from layer arithmetic alone. For a chain of layers with
  kernel ``k_l``, stride ``s_l``, padding ``p_l`` and dilation ``d_l`` (effective kernel
  ``k̂_l = d_l(k_l − 1) + 1``) and *jump* ``J_l = s_1···s_l`` (input pixels between neighbouring
  outputs of layer ``l``)::

      size  r = 1 + Σ_l (k̂_l − 1)·J_{l−1}
      start   = i·J_L − Σ_l p_l·J_{l−1}           (first input row it sees; columns likewise)

  A stack of stride-1 dilated 3×3 convs with rates 3, 6, 12, 18, 24 (DenseASPP) sees
  ``1 + 2·(3 + 6 + 12 + 18 + 24) = 127`` pixels.
- the **effective receptive field** (Luo et al., 2016): the gradient of that output pixel with
  respect to the input, computed by the library's own backward pass. It is zero outside the
  theoretical field, and inside it is usually concentrated near the centre, since central
  pixels reach the output through many more paths than border ones; dilated stacks show
  "gridding": pixels they never read at all.
"""
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .. import nn
from ..autograd import Tensor

__all__ = ["ReceptiveField", "receptive_field", "layer_arithmetic", "dilated_stack",
           "plot_receptive_fields"]

def _leaves(model_or_layers):
    """The layers of a chain in order (nested Sequentials flattened); None if not a chain."""
    if isinstance(model_or_layers, (list, tuple, nn.Sequential)):
        out = []
        for m in model_or_layers:
            sub = _leaves(m)
            if sub is None:
                return None
            out += sub
        return out
    if isinstance(model_or_layers, nn.Module) and model_or_layers.window() is not None:
        return [model_or_layers]   # the layer declares its sliding window (nn.Module.window)
    return None                    # a general model (skips, branches): no simple arithmetic


def layer_arithmetic(layers):
    """Theoretical receptive field of a chain of layers.

    Parameters
    ----------
    layers : sequence of Modules, or a Sequential
        Every layer must declare its sliding window (:meth:`edu_seg.nn.Module.window`):
        Conv2d, MaxPool2d and AvgPool2d change the field; activations, BatchNorm, Dropout and
        Identity declare a 1x1 window and do not.

    Returns
    -------
    size, jump, offset : (int, int) each, or None
        Output pixel ``(i, j)`` sees input rows ``[i·jump + offset, i·jump + offset + size)``
        (columns likewise). None if ``layers`` is not a chain of the layers above (e.g. a
        U-Net, or a transposed conv / upsampling, whose field is not a single window).

    Examples
    --------
    >>> layer_arithmetic(dilated_stack([3, 6, 12, 18, 24]))[0]
    (127, 127)
    """
    leaves = _leaves(layers)
    if leaves is None:
        return None, None, None
    size, jump, offset = np.ones(2, int), np.ones(2, int), np.zeros(2, int)
    for layer in leaves:
        k, s, p, d = (np.array(v) for v in layer.window())
        size += (d * (k - 1)) * jump       # each tap spans (k̂ - 1) previous-layer jumps
        offset -= p * jump                 # padding shifts the window up/left
        jump *= s
    return tuple(int(v) for v in size), tuple(int(v) for v in jump), tuple(int(v) for v in offset)


@dataclass
class ReceptiveField:
    """What one output pixel of a model sees (see :func:`receptive_field`).

    Attributes
    ----------
    position : (int, int)
        The output pixel.
    size : (int, int) or None
        Theoretical receptive field (None when the model is not a simple chain).
    start : (int, int) or None
        Input ``(row, col)`` of the theoretical field's top-left corner (may be negative:
        the field then reaches into the padding).
    jump : (int, int) or None
        Input pixels between neighbouring output pixels (the total stride).
    gradient : (H, W) float64 array
        ``|∂ y[:, i, j] / ∂ x|`` summed over channels: the effective receptive field.
    """

    position: tuple
    size: tuple
    start: tuple
    jump: tuple
    gradient: np.ndarray

    def support(self):
        """Height and width of the bounding box of the pixels with a non-zero gradient."""
        rows, cols = np.nonzero(self.gradient)
        if len(rows) == 0:
            return (0, 0)
        return (int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1))

    def effective_size(self, fraction=0.95):
        """Side of the smallest square, centred on the gradient's centre of mass, that holds
        ``fraction`` of the total gradient."""
        g = self.gradient
        total = g.sum()
        if total == 0:
            return 0
        rows, cols = np.indices(g.shape)
        r0 = int(round((rows * g).sum() / total))
        c0 = int(round((cols * g).sum() / total))
        need = fraction * total * (1 - 1e-12)    # a box's sum may round just below the total
        half = 0                                  # grows until the box holds enough (at the
        while g[max(r0 - half, 0):r0 + half + 1,  # latest when it covers the whole image)
                max(c0 - half, 0):c0 + half + 1].sum() < need:
            half += 1
        return 2 * half + 1


def receptive_field(model_or_layers, input_shape, position=None, seed=0):
    """Theoretical and effective receptive field of one output pixel.

    Parameters
    ----------
    model_or_layers : Module or sequence of Modules
        A model (called as ``model(x)``) or layers applied in order.
    input_shape : (C, H, W) or (H, W)
        Shape of one input image (batch 1 is used).
    position : (int, int), optional
        Output pixel; default the centre of the output.
    seed : int
        The input is standard normal noise from this seed (the gradient of a model with
        ReLUs depends on the input; a linear model's does not).

    Returns
    -------
    ReceptiveField

    Notes
    -----
    The model runs in evaluation mode (BatchNorm uses its running statistics: in training
    mode a batch-1 BatchNorm would mix every pixel with every other one), with its parameters
    frozen, so neither its mode nor its gradients change. The backward pass starts from a
    gradient that is 1 at ``position`` in every output channel and 0 elsewhere.
    """
    model = nn.Sequential(*model_or_layers) if isinstance(model_or_layers, (list, tuple)) \
        else model_or_layers
    shape = tuple(int(v) for v in input_shape)
    if len(shape) == 2:
        shape = (1,) + shape
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"receptive_field: input_shape must be (C, H, W) or (H, W), got "
                         f"{input_shape!r}")
    params = list(model.parameters())
    dtype = params[0].dtype if params else np.float32
    x = Tensor(np.random.default_rng(seed).standard_normal((1,) + shape).astype(dtype),
               requires_grad=True)
    modes = [(m, m.training) for m in model.modules()]
    frozen = [p.requires_grad for p in params]
    model.eval()
    for p in params:
        p.requires_grad = False
    try:
        y = model(x)
        y = y[0] if isinstance(y, tuple) else y
        OH, OW = y.shape[-2:]
        position = (OH // 2, OW // 2) if position is None else tuple(int(v) for v in position)
        if not (0 <= position[0] < OH and 0 <= position[1] < OW):
            raise ValueError(f"receptive_field: position must lie in the {OH}x{OW} output, got "
                             f"{position!r}")
        dy = np.zeros(y.shape, dtype=y.dtype)
        dy[0, :, position[0], position[1]] = 1
        y.backward(dy)
    finally:
        for m, training in modes:
            m.training = training
        for p, f in zip(params, frozen):
            p.requires_grad = f
    gradient = np.abs(x.grad[0].astype(np.float64)).sum(axis=0)
    size, jump, offset = layer_arithmetic(model_or_layers)
    start = None if size is None else tuple(position[a] * jump[a] + offset[a] for a in range(2))
    return ReceptiveField(position=position, size=size, start=start, jump=jump,
                          gradient=gradient)


def dilated_stack(rates, kernel_size=3, channels=1, weights="uniform"):
    """A chain of stride-1 ``kernel_size`` convolutions with the given dilation rates.

    Padding is ``rate·(k − 1)/2``, so every layer keeps the image size (odd ``k``).

    Parameters
    ----------
    rates : sequence of int
        One dilation rate per layer: ``[1, 1, 1, 1]`` is a plain stack of four 3×3 convs,
        ``[1, 2, 4, 8]`` doubles the rate at each layer, ``[3, 6, 12, 18, 24]`` is DenseASPP's.
    kernel_size : int
    channels : int
    weights : {"uniform", "random"}
        ``"uniform"``: every weight is ``1 / (k²·channels)`` and there is no bias, so the
        gradient counts the paths from each input pixel to the output (nothing cancels);
        ``"random"``: the default initialisation.

    Returns
    -------
    nn.Sequential
    """
    if weights not in ("uniform", "random"):
        raise ValueError(f"dilated_stack: weights must be 'uniform' or 'random', got {weights!r}")
    if kernel_size % 2 == 0:
        raise ValueError(f"dilated_stack: kernel_size must be odd to keep the size, got "
                         f"{kernel_size}")
    layers = []
    for r in rates:
        conv = nn.Conv2d(channels, channels, kernel_size, padding=r * (kernel_size - 1) // 2,
                         dilation=r, bias=weights == "random")
        if weights == "uniform":
            conv.weight.data[...] = 1.0 / (kernel_size * kernel_size * channels)
        layers.append(conv)
    return nn.Sequential(*layers)


def plot_receptive_fields(fields, titles=None, scale="linear", margin=None):
    """Heat maps of effective receptive fields with the theoretical field outlined.

    Parameters
    ----------
    fields : sequence of ReceptiveField
    titles : sequence of str, optional
    scale : {"linear", "log"}
        ``"linear"`` shows where most of the gradient is; ``"log"`` (from 1e-4 of the maximum
        to 1, smaller values in the darkest colour) shows how far the non-zero gradient
        reaches, paints the pixels whose gradient is exactly zero grey, so the holes of a
        dilated stack stand out from its weak border, and counts those holes.
    margin : int, optional
        Show only the theoretical field (or, when it is unknown, the bounding box of the
        non-zero gradient) and ``margin`` pixels around it, so that a small field in a large
        input is not a speck. Default: the whole input.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per field: ``|gradient|`` normalised to its maximum, the output pixel's
        centre (cross) and, when known, the theoretical field (dashed square). The caption
        gives the theoretical size, the size of the non-zero support and the sides of the
        squares (see :meth:`ReceptiveField.effective_size`) holding 50% and 95% of the
        gradient; with ``scale="log"`` also the number of holes: zero-gradient pixels inside
        the bounding box of the non-zero support.
    """
    if scale not in ("linear", "log"):
        raise ValueError(f"plot_receptive_fields: scale must be 'linear' or 'log', got {scale!r}")
    n = len(fields)
    fig = Figure(figsize=(3.6 * n + (0.9 if scale == "log" else 0), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    # log: zeros are masked and drawn in the colour map's "bad" colour
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.6", under="black")
    norm = LogNorm(vmin=1e-4, vmax=1) if scale == "log" else Normalize(vmin=0, vmax=1)
    for k, (ax, f) in enumerate(zip(axes, fields)):
        g = f.gradient / f.gradient.max() if f.gradient.max() > 0 else f.gradient
        rows, cols = np.nonzero(g)
        if f.size is not None:
            box = (f.start[0], f.start[1], f.start[0] + f.size[0], f.start[1] + f.size[1])
        elif len(rows):
            box = (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
        else:
            box = (0, 0) + g.shape
        r0, c0, r1, c1 = (0, 0) + g.shape if margin is None else (
            max(box[0] - margin, 0), max(box[1] - margin, 0),
            min(box[2] + margin, g.shape[0]), min(box[3] + margin, g.shape[1]))
        shown = np.ma.masked_equal(g[r0:r1, c0:c1], 0) if scale == "log" else g[r0:r1, c0:c1]
        # the extent keeps input coordinates, so the square and the cross need no shifting
        im = ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest",
                       extent=(c0 - 0.5, c1 - 0.5, r1 - 0.5, r0 - 0.5))
        if f.size is not None:
            (sr, sc), (h, w) = f.start, f.size
            ax.add_patch(Rectangle((sc - 0.5, sr - 0.5), w, h, fill=False, ec="cyan", lw=1.2,
                                   ls="--"))
            ax.plot(sc + (w - 1) / 2, sr + (h - 1) / 2, "+", color="cyan", ms=8)
        theory = "n/a (not a chain)" if f.size is None else f"{f.size[0]}x{f.size[1]}"
        support = "x".join(map(str, f.support()))
        ax.set_title(titles[k] if titles else f"output {f.position}", fontsize=10)
        half, most = f.effective_size(0.5), f.effective_size(0.95)
        label = (f"theory {theory}, non-zero {support}\ngradient: 50% in {half}x{half}, "
                 f"95% in {most}x{most}")
        if scale == "log":
            holes = 0 if len(rows) == 0 else int(
                (g[rows.min():rows.max() + 1, cols.min():cols.max() + 1] == 0).sum())
            label += f"\n{holes} holes (zero gradient) in the support"
        ax.set_xlabel(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if scale == "log":
        fig.colorbar(im, ax=list(axes), shrink=0.8, extend="min",
                     label="|gradient| / max, log scale\ngrey: exactly 0")
    return fig
