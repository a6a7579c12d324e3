"""Pictures for chapter 6 (FCN, SegNet, dilated convolutions, the dense CRF).

Every picture is drawn from the library's own computations (the arrays are passed in or
computed here with the library's ops); each function returns a ``matplotlib.figure.Figure``
(shown inline in Jupyter, headless-safe).

- :func:`plot_unpooling`: a max-pool's argmax indices and where ``max_unpool2d`` puts the
  values back (SegNet's decoder).
- :func:`plot_gridding`: effective receptive fields of dilated stacks on a log colour scale,
  with the pixels the stack never reads marked (the gridding effect).
- :func:`plot_crf_comparison`: an image, its truth, a prediction before and after the CRF,
  with the boundary band of the truth outlined.
"""
import matplotlib
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from ..autograd import Tensor, no_grad
from ..functional import max_pool2d, max_unpool2d
from ..metrics import boundary_band
from .palette import colorize

__all__ = ["plot_unpooling", "plot_gridding", "plot_crf_comparison"]


def _annotate(ax, values, fmt="{:.0f}", color="white"):
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8, color=color)


def plot_unpooling(x):
    """Max-pool a 2-D map 2x2 (keeping the indices), then unpool it, as SegNet's decoder does.

    Parameters
    ----------
    x : array, shape (H, W), H and W even

    Returns
    -------
    matplotlib.figure.Figure
        Three panels: the input with each window's argmax ringed, the pooled map, and the
        unpooled map (every value back at its argmax, zeros elsewhere).
    """
    x = np.asarray(x, np.float32)
    with no_grad():
        pooled, idx = max_pool2d(Tensor(x[None, None]), 2, return_indices=True)
        unpooled = max_unpool2d(pooled, idx, 2, output_size=x.shape)
    p, u = pooled.data[0, 0], unpooled.data[0, 0]
    flat = np.asarray(idx.data[0, 0]).ravel()
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    vmax = float(x.max())
    for ax, img, title in zip(axes, (x, p, u),
                              ("input (argmax of each 2x2 window ringed)",
                               "max-pooled + indices", "max_unpool2d: values at the argmax")):
        ax.imshow(img, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        _annotate(ax, img)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    W = x.shape[1]
    for ax in (axes[0], axes[2]):
        for k in flat:
            ax.add_patch(Circle((k % W, k // W), 0.42, fill=False, ec="red", lw=1.5))
        for t in range(0, max(x.shape) + 1, 2):
            ax.axhline(t - 0.5, color="white", lw=1)
            ax.axvline(t - 0.5, color="white", lw=1)
    for (i, j), k in np.ndenumerate(np.asarray(idx.data[0, 0])):
        axes[1].text(j, i + 0.3, f"@{k}", ha="center", va="center", fontsize=7, color="red")
    return fig


def plot_gridding(fields, titles):
    """Effective receptive fields on a LOG colour scale; pixels with zero gradient in black.

    Parameters
    ----------
    fields : sequence of ReceptiveField
        From :func:`edu_seg.viz.receptive_field.receptive_field` (e.g. of ``dilated_stack``).
    titles : sequence of str

    Returns
    -------
    matplotlib.figure.Figure
        One panel per field: ``|gradient| / max`` on a log scale from 1e-4 to 1, so that weak
        but non-zero pixels stay visible; pixels the stack never reads (gradient exactly 0)
        are black, and the caption counts them inside the theoretical field.
    """
    n = len(fields)
    fig = Figure(figsize=(3.4 * n, 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    for ax, f, title in zip(axes, fields, titles):
        g = f.gradient / f.gradient.max()
        shown = np.ma.masked_where(g == 0, g)
        cmap = matplotlib.colormaps["magma"].with_extremes(bad="black")
        im = ax.imshow(shown, cmap=cmap, norm=LogNorm(vmin=1e-4, vmax=1),
                       interpolation="nearest")
        (r0, c0), (h, w) = f.start, f.size
        inside = g[max(r0, 0):r0 + h, max(c0, 0):c0 + w]
        holes = int((inside == 0).sum())
        ax.set_title(f"{title}\nfield {h}x{w}, {holes} unread pixels", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="|gradient| / max (log)")
    return fig


def plot_crf_comparison(image, mask, before, after, band=2, titles=("before CRF", "after CRF")):
    """Image, truth, and two predictions, with the truth's boundary band outlined in white.

    Parameters
    ----------
    image : array, shape (3, H, W) in [0, 1]
    mask, before, after : arrays of int, shape (H, W)
    band : int
        Half-width of :func:`edu_seg.metrics.boundary_band`.

    Returns
    -------
    matplotlib.figure.Figure
        Panel titles give the boundary-band pixel accuracy of each prediction.
    """
    ring = boundary_band(mask, band)
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    axes[0].imshow(np.clip(np.transpose(image, (1, 2, 0)), 0, 1))
    axes[0].set_title("image", fontsize=9)
    for ax, m, t in zip(axes[1:], (mask, before, after), ("truth",) + tuple(titles)):
        ax.imshow(colorize(m))
        if m is not mask:
            acc = float((m[ring] == mask[ring]).mean())
            t = f"{t}\nband accuracy {acc:.3f}"
        ax.contour(ring.astype(float), levels=[0.5], colors="white", linewidths=0.8)
        ax.set_title(t, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
