"""The speed/accuracy picture of the zoo (chapter 9): milliseconds per image against mIoU.

Drawn from the zoo's two tables, ``results.csv`` (accuracy, :mod:`edu_seg.bench.zoo`) and
``speed.csv`` (:mod:`edu_seg.bench.speed`); returns a ``matplotlib.figure.Figure``.
"""
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

__all__ = ["REAL_TIME_MODELS", "plot_speed_accuracy"]

#: The models built for speed; drawn in their own colour.
REAL_TIME_MODELS = ("icnet", "bisenet")


def _label_2_and_5(value, _):
    """Minor tick labels of a log axis: only 2, 5, 20, 50, ... (the others would overlap)."""
    return f"{value:g}" if f"{value:.0e}"[0] in "25" else ""


def plot_speed_accuracy(results, speed, variant="default", highlight=REAL_TIME_MODELS):
    """One scatter per image size: ms per image (log scale) against mIoU on ``variant``.

    Parameters
    ----------
    results : list of dict
        Rows of the zoo's ``results.csv`` (:func:`edu_seg.bench.zoo.read_results`).
    speed : list of dict
        Rows of ``speed.csv``: ``model`` and one ``ms_<size>`` column per size.
    variant : str
        The Shapes variant whose mIoU is the accuracy.
    highlight : sequence of str
        Models drawn in a second colour (the real-time designs).

    Returns
    -------
    matplotlib.figure.Figure
        Up and to the left is better: faster and more accurate.

    Raises
    ------
    ValueError
        No model has both a ``variant`` row and a speed row.
    """
    miou = {r["model"]: float(r["miou"]) for r in results
            if r["variant"] == variant and (r.get("supervision") or "masks") == "masks"}
    rows = [r for r in speed if r["model"] in miou]
    if not rows:
        raise ValueError(f"plot_speed_accuracy: no model has both a {variant!r} zoo row and a "
                         f"speed row; run `edu-seg zoo` and then `edu-seg zoo --plot`")
    sizes = sorted(int(k[3:]) for k in rows[0] if k.startswith("ms_"))
    fig = Figure(figsize=(5.2 * len(sizes), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(sizes), sharey=True))
    for ax, size in zip(axes, sizes):
        for r in rows:
            ms, y = float(r[f"ms_{size}"]), miou[r["model"]]
            fast = r["model"] in highlight
            ax.scatter(ms, y, s=36, color="tab:red" if fast else "tab:blue", zorder=3)
            ax.annotate(r["model"], (ms, y), xytext=(4, 3), textcoords="offset points",
                        fontsize=7, color="tab:red" if fast else "black")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(_label_2_and_5))
        threads = rows[0]["threads"]
        ax.set_xlabel(f"ms per {size}x{size} image (batch 1, {threads} "
                      f"thread{'' if str(threads) == '1' else 's'})")
        ax.set_title(f"{size}x{size}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"mIoU on Shapes {variant} (zoo recipe)")
    fig.suptitle(f"Speed against accuracy ({rows[0]['cpu']}); red: designed for real time",
                 fontsize=10)
    return fig
