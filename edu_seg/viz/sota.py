"""Pictures for chapter 8 (the 2016–2017 state of the art), drawn from the real models.

Every picture is computed with the library's own ops from arrays passed in (a feature map
taken from a model, an image, a results table); each function returns a
``matplotlib.figure.Figure`` (shown inline in Jupyter, headless-safe).

- :func:`plot_pyramid_bins`: PSPNet's pyramid: a feature map with the bins of each pooling
  level drawn on it, and what each level hands on (the bin averages, spread back over the map).
- :func:`plot_atrous_taps`: where the nine taps of each atrous 3x3 of ASPP land in the image
  for one feature pixel, and which of them fall outside the feature map (they read padding).
- :func:`plot_ablations`: the mIoU of each idea beside its ablation, from the zoo's rows.
"""
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..autograd import Tensor, no_grad
from ..functional import adaptive_avg_pool2d, interpolate
from ..ops.pool import adaptive_pool_bins

__all__ = ["plot_pyramid_bins", "atrous_taps", "plot_atrous_taps", "plot_ablations"]


def _bare(ax, title):
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_pyramid_bins(feature, bins=(1, 2, 3, 6)):
    """PSPNet's pyramid pooling on one feature map, one column per pyramid level.

    Parameters
    ----------
    feature : array, shape (H, W)
        One channel (or the channel mean) of the map the pyramid pools, e.g. a PSPNet
        backbone's stride-8 output.
    bins : sequence of int
        The pyramid levels: level ``b`` averages the map over a ``b x b`` grid of bins
        (:func:`edu_seg.ops.pool.adaptive_pool_bins` gives each bin's rows and columns).

    Returns
    -------
    matplotlib.figure.Figure
        Top row: the map with each level's bins outlined (bins overlap by a pixel where
        ``b`` does not divide the size). Bottom row: the level's output, each bin's average
        spread back over the map by bilinear up-sampling, as the pyramid does before it
        concatenates the levels with the map itself.
    """
    feature = np.asarray(feature, np.float32)
    if feature.ndim != 2:
        raise ValueError(f"plot_pyramid_bins: feature must be a 2-D map (H, W), got shape "
                         f"{feature.shape}")
    H, W = feature.shape
    x = Tensor(feature[None, None])                                 # (1, 1, H, W)
    fig = Figure(figsize=(2.6 * len(bins), 5.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(2, len(bins)))
    lo, hi = float(feature.min()), float(feature.max())
    for col, b in enumerate(bins):
        with no_grad():
            pooled = adaptive_avg_pool2d(x, b)                      # (1, 1, b, b)
            spread = interpolate(pooled, size=(H, W), mode="bilinear",
                                 align_corners=False).data[0, 0]   # (H, W)
        top, bottom = axes[0, col], axes[1, col]
        top.imshow(feature, cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
        rows, cols = adaptive_pool_bins(H, b), adaptive_pool_bins(W, b)
        for r0, r1 in zip(*rows):
            for c0, c1 in zip(*cols):
                top.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False,
                                        ec="white", lw=1.2))
        _bare(top, f"{b}x{b} bins on the {H}x{W} map")
        bottom.imshow(spread, cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
        _bare(bottom, f"level {b}: bin means, up-sampled")
    return fig


def atrous_taps(rate, output_stride, feature_size, position):
    """The nine taps of a 3x3 atrous conv at one feature pixel, in feature and image pixels.

    Parameters
    ----------
    rate : int
        The dilation: taps are ``rate`` feature pixels apart.
    output_stride : int
        Image pixels per feature pixel.
    feature_size : (int, int)
        The feature map's (H, W); a tap outside it reads the zero padding.
    position : (int, int)
        The feature pixel (row, column) at the kernel's centre.

    Returns
    -------
    taps : ndarray of int, shape (9, 2)
        Feature-map (row, column) of each tap (may lie outside the map).
    inside : ndarray of bool, shape (9,)
        Whether the tap reads the map (False: it reads padding, and its weight is wasted).
    """
    offsets = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)]) * rate
    taps = np.asarray(position)[None, :] + offsets
    H, W = feature_size
    inside = (taps[:, 0] >= 0) & (taps[:, 0] < H) & (taps[:, 1] >= 0) & (taps[:, 1] < W)
    return taps, inside


def plot_atrous_taps(image, rates, output_stride, position=None):
    """Where each atrous branch of ASPP looks in the image, for one feature pixel.

    Parameters
    ----------
    image : array, shape (3, H, W) or (H, W, 3), values in [0, 1]
    rates : sequence of int
        The dilation of each 3x3 branch (DeepLabV3: 6, 12, 18 at output stride 16).
    output_stride : int
        The feature map is ``H / output_stride`` pixels high.
    position : (int, int), optional
        The feature pixel; default the centre.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per rate: the image with the feature grid, the centre pixel and the nine
        taps (filled where they read the map, hollow red where they read padding); the title
        counts the taps that read the map.
    """
    image = np.asarray(image, np.float32)
    if image.ndim == 3 and image.shape[0] == 3:
        image = image.transpose(1, 2, 0)
    H, W = image.shape[:2]
    fh, fw = H // output_stride, W // output_stride
    position = (fh // 2, fw // 2) if position is None else tuple(position)
    fig = Figure(figsize=(3.2 * len(rates), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(rates)))
    for ax, rate in zip(axes, rates):
        taps, inside = atrous_taps(rate, output_stride, (fh, fw), position)
        ax.imshow(np.clip(image, 0, 1), interpolation="nearest")
        for t in range(1, max(fh, fw)):
            ax.axhline(t * output_stride - 0.5, color="white", lw=0.4, alpha=0.5)
            ax.axvline(t * output_stride - 0.5, color="white", lw=0.4, alpha=0.5)
        centre = (np.asarray(taps) + 0.5) * output_stride - 0.5     # feature -> image pixels
        ax.scatter(centre[inside, 1], centre[inside, 0], s=40, c="yellow", edgecolors="black")
        ax.scatter(centre[~inside, 1], centre[~inside, 0], s=40, facecolors="none",
                   edgecolors="red")
        ax.set_xlim(min(-0.5, centre[:, 1].min() - output_stride),
                    max(W - 0.5, centre[:, 1].max() + output_stride))
        ax.set_ylim(max(H - 0.5, centre[:, 0].max() + output_stride),
                    min(-0.5, centre[:, 0].min() - output_stride))
        ax.add_patch(Rectangle((-0.5, -0.5), W, H, fill=False, ec="cyan", lw=1))
        _bare(ax, f"rate {rate}: {int(inside.sum())}/9 taps on the {fh}x{fw} map")
    return fig


def plot_ablations(rows, pairs, column="miou"):
    """Bars of each idea beside its ablation, from the zoo's rows.

    Parameters
    ----------
    rows : list of dict
        Rows of ``zoo/results.csv`` (:func:`edu_seg.bench.zoo.read_results`).
    pairs : sequence of (str, str, str)
        ``(model, ablation, variant)``, e.g. ``("pspnet", "pspnet:no_pyramid", "context")``.
    column : str
        The score to plot (``"miou"`` or ``"boundary_iou"``).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        A pair whose rows are not in ``rows`` (run ``edu-seg zoo`` for it first).
    """
    value = {(r["model"], r["variant"]): float(r[column]) for r in rows if r.get(column)}
    missing = [f"{m} on {v}" for a, b, v in pairs for m in (a, b) if (m, v) not in value]
    if missing:
        raise ValueError(f"plot_ablations: no zoo row for {', '.join(missing)}; run `edu-seg "
                         f"zoo --models MODEL --variants VARIANT` first")
    fig = Figure(figsize=(1.9 * len(pairs) + 1, 3.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(pairs))
    idea = [value[(a, v)] for a, _, v in pairs]
    ablation = [value[(b, v)] for _, b, v in pairs]
    ax.bar(x - 0.2, idea, 0.4, label="with the idea")
    ax.bar(x + 0.2, ablation, 0.4, label="ablation")
    for xi, a, b in zip(x, idea, ablation):
        ax.text(xi - 0.2, a, f"{a:.2f}", ha="center", va="bottom", fontsize=7)
        ax.text(xi + 0.2, b, f"{b:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [f"{a}\nvs {b.partition(':')[2] or b}\non {v}" for a, b, v in pairs],
                  fontsize=7)
    ax.set_ylabel(column)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    return fig
