"""RoIPool versus RoIAlign on one box: where each op reads the feature map, and how far off it is.

Both pictures are drawn from the geometry helpers the kernels themselves call
(:func:`edu_seg.reference.roi.roi_pool_bins` and
:func:`edu_seg.reference.roi.roi_align_sample_points`), so the bins and the sample points shown
are the ones the forward pass uses; ``tests/test_viz.py`` checks them against the gradient of
``roi_align`` and the argmax of ``roi_pool``.

Coordinates. The drawing uses the half-pixel model: feature pixel ``i`` is the square
``[i, i + 1)`` and its value sits at its centre ``i + ½``; an image coordinate ``u`` lands at
``u · spatial_scale``. So the box "really" covers ``[x1·s, x2·s] × [y1·s, y2·s]``. RoIAlign's
bilinear read at continuous coordinate ``v`` returns the value at pixel centre ``v`` (pixel ``i``
at ``v = i``), i.e. at drawing position ``v + ½``: that half-pixel offset is exactly what
``aligned=True`` removes.
"""
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..reference.roi import roi_align_sample_points, roi_pool_bins

__all__ = ["roi_sampling", "roi_sampling_geometry", "RoISamplingGeometry"]


@dataclass
class RoISamplingGeometry:
    """Everything :func:`roi_sampling` draws, in drawing coordinates (pixel ``i`` = ``[i, i+1)``).

    Attributes
    ----------
    true_box : (4,) float array
        ``(x1·s, y1·s, x2·s, y2·s)``: where the box lies on the feature map.
    pool_box : (4,) int array
        RoIPool's rounded box as a half-open pixel range ``(xs, ys, xe + 1, ye + 1)``.
    pool_bins : list of (y0, y1, x0, x1)
        The pixel range ``[y0, y1) × [x0, x1)`` of each RoIPool bin, row-major over (PH, PW);
        bins are clipped to the feature map as in the forward pass.
    align_box : (4,) float array
        The region RoIAlign's bins tile: ``(x1', y1', x2', y2') + ½``.
    align_points : (PH, PW, gh * gw, 2) float array
        RoIAlign's sample points ``(y, x)`` per bin (the bilinear coordinates + ½).
    pool_error, align_error : float
        Largest distance, in feature pixels, between an edge of the true box and the edge each
        op actually uses (RoIPool: its rounded box and its floored/ceiled bin edges against the
        ideal, evenly split bins; RoIAlign: its bin edges).
    spatial_scale : float
        To turn feature pixels into image pixels: divide by it.
    """

    true_box: np.ndarray
    pool_box: np.ndarray
    pool_bins: list
    align_box: np.ndarray
    align_points: np.ndarray
    pool_error: float
    align_error: float
    spatial_scale: float


def roi_sampling_geometry(box, feature_size, output_size=(2, 2), spatial_scale=1.0,
                          sampling_ratio=2, aligned=True):
    """The bins and sample points of RoIPool and RoIAlign for one box: what :func:`roi_sampling`
    draws.

    Parameters
    ----------
    box, feature_size, output_size, spatial_scale, sampling_ratio, aligned
        As in :func:`roi_sampling`.

    Returns
    -------
    RoISamplingGeometry
    """
    PH, PW = output_size
    s = float(spatial_scale)
    true_box = np.asarray(box, dtype=np.float64) * s

    bins = roi_pool_bins(box, output_size, s, feature_size)
    xs, ys, xe, ye = bins.box
    pool_box = np.array([xs, ys, xe + 1, ye + 1])
    pool_bins = [(int(bins.hstart[ph]), int(bins.hend[ph]), int(bins.wstart[pw]),
                  int(bins.wend[pw])) for ph in range(PH) for pw in range(PW)]

    geo = roi_align_sample_points(box, output_size, s, sampling_ratio, aligned)
    align_box = np.asarray(geo.box, dtype=np.float64) + 0.5
    points = np.stack([np.stack([geo.bin_points(ph, pw) for pw in range(PW)])
                       for ph in range(PH)]) + 0.5                  # (PH, PW, gh*gw, 2)

    # Ideal bin edges: the true box cut into PH x PW equal parts.
    ideal_y = np.linspace(true_box[1], true_box[3], PH + 1)
    ideal_x = np.linspace(true_box[0], true_box[2], PW + 1)
    pool_edges_y = np.concatenate([bins.hstart, bins.hend])
    pool_edges_x = np.concatenate([bins.wstart, bins.wend])
    # RoIPool bin ph spans [hstart, hend), ideally [ideal_y[ph], ideal_y[ph+1]).
    pool_error = max(np.abs(pool_edges_y - np.concatenate([ideal_y[:-1], ideal_y[1:]])).max(),
                     np.abs(pool_edges_x - np.concatenate([ideal_x[:-1], ideal_x[1:]])).max())
    align_error = max(np.abs(np.asarray(geo.y_edges) + 0.5 - ideal_y).max(),
                      np.abs(np.asarray(geo.x_edges) + 0.5 - ideal_x).max())
    return RoISamplingGeometry(true_box=true_box, pool_box=pool_box, pool_bins=pool_bins,
                               align_box=align_box, align_points=points,
                               pool_error=float(pool_error), align_error=float(align_error),
                               spatial_scale=s)


def _feature_grid(ax, H, W):
    """Draw the H x W feature pixels as squares [i, i+1) with y pointing down."""
    for i in range(H + 1):
        ax.plot([0, W], [i, i], color="0.8", lw=0.8, zorder=0)
    for j in range(W + 1):
        ax.plot([j, j], [0, H], color="0.8", lw=0.8, zorder=0)
    ax.set_xlim(-0.5, W + 0.5)
    ax.set_ylim(H + 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xticks(np.arange(W) + 0.5, [str(j) for j in range(W)], fontsize=7)
    ax.set_yticks(np.arange(H) + 0.5, [str(i) for i in range(H)], fontsize=7)


def _box(ax, b, **style):
    x1, y1, x2, y2 = b
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, **style))


def roi_sampling(box, feature_size, output_size=(2, 2), spatial_scale=1.0, sampling_ratio=2,
                 aligned=True):
    """Draw RoIPool's quantised bins next to RoIAlign's fractional bins and sample points.

    Parameters
    ----------
    box : sequence of 4 numbers
        ``(x1, y1, x2, y2)`` in input-image coordinates.
    feature_size : (int, int)
        ``(H, W)`` of the feature map the box is pooled from.
    output_size : (int, int)
        ``(PH, PW)`` bins.
    spatial_scale : float
        Feature pixels per image pixel (1/16 for a stride-16 backbone).
    sampling_ratio : int
        RoIAlign's sample points per bin side (``<= 0``: adaptive, ``ceil(bin size)``).
    aligned : bool
        RoIAlign's half-pixel correction.

    Returns
    -------
    matplotlib.figure.Figure
        Left: the true box (dashed), RoIPool's rounded box and its bins (shaded: each bin is
        the set of pixels its max is taken over). Right: RoIAlign's bins and the points it
        reads by bilinear interpolation. Titles give the worst misalignment in feature and
        image pixels.

    Examples
    --------
    >>> fig = roi_sampling((10, 6, 50, 41), (6, 8), output_size=(2, 2), spatial_scale=1 / 8)
    """
    g = roi_sampling_geometry(box, feature_size, output_size, spatial_scale, sampling_ratio,
                              aligned)
    H, W = feature_size
    fig = Figure(figsize=(11, 5.2))
    ax_pool, ax_align = fig.subplots(1, 2)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:cyan", "tab:olive"]
    s = g.spatial_scale

    _feature_grid(ax_pool, H, W)
    for n, (y0, y1, x0, x1) in enumerate(g.pool_bins):
        if y1 > y0 and x1 > x0:
            ax_pool.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, alpha=0.25,
                                        color=colours[n % len(colours)], lw=0))
            _box(ax_pool, (x0, y0, x1, y1), edgecolor=colours[n % len(colours)], lw=1.2)
    _box(ax_pool, g.pool_box, edgecolor="tab:red", lw=2.5, label="rounded box")
    _box(ax_pool, g.true_box, edgecolor="black", lw=2, ls="--", label="true box")
    ax_pool.set_title(f"RoIPool: round the box, floor/ceil the bins\nworst edge off by "
                      f"{g.pool_error:.2f} feature px = {g.pool_error / s:.1f} image px",
                      fontsize=10)
    ax_pool.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2, fontsize=8)

    _feature_grid(ax_align, H, W)
    PH, PW = g.align_points.shape[:2]
    x1, y1, x2, y2 = g.align_box
    for ph in range(PH + 1):          # fractional bin edges
        yy = y1 + ph * (y2 - y1) / PH
        ax_align.plot([x1, x2], [yy, yy], color="tab:gray", lw=1)
    for pw in range(PW + 1):
        xx = x1 + pw * (x2 - x1) / PW
        ax_align.plot([xx, xx], [y1, y2], color="tab:gray", lw=1)
    _box(ax_align, g.align_box, edgecolor="tab:red", lw=2.5, label="sampled region")
    _box(ax_align, g.true_box, edgecolor="black", lw=2, ls="--", label="true box")
    points = g.align_points.reshape(-1, 2)
    bin_of_point = np.repeat(np.arange(PH * PW), g.align_points.shape[2])
    ax_align.scatter(points[:, 1], points[:, 0], s=22, zorder=3,
                     c=[colours[n % len(colours)] for n in bin_of_point], edgecolors="black",
                     linewidths=0.5)
    name = "aligned=True" if aligned else "aligned=False"
    ax_align.set_title(f"RoIAlign ({name}): no rounding, bilinear samples\nworst edge off by "
                       f"{g.align_error:.2f} feature px = {g.align_error / s:.1f} image px",
                       fontsize=10)
    ax_align.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2, fontsize=8)
    fig.tight_layout()
    return fig
