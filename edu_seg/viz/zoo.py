"""The zoo's picture (``zoo/results.png``, drawn by ``edu-seg zoo`` beside ``RESULTS.md``).

:func:`plot_zoo` takes the rows of the zoo's ``results.csv``
(:func:`edu_seg.bench.zoo.read_results`) and returns a ``matplotlib.figure.Figure`` of two
panels: what each model scores on each Shapes variant, and what that accuracy costs.
"""
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from .speed import _label_2_and_5

__all__ = ["plot_zoo"]


def plot_zoo(rows, variants=None):
    """Left: the mIoU of every model at its default (no preset, trained on masks) on each
    variant, as a table of coloured cells. Right: mIoU on ``default`` against the training
    step's ms (log scale), one labelled point per model.

    Parameters
    ----------
    rows : list of dict
        Rows of ``results.csv``; ablation (``MODEL:PRESET``) and box-supervised rows are left
        out: the picture compares architectures.
    variants : sequence of str, optional
        Columns of the left panel, in order (default: the variants present, in row order).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        No row is a model at its default trained on masks.
    """
    rows = [r for r in rows if ":" not in r["model"]
            and (r.get("supervision") or "masks") == "masks"]
    if not rows:
        raise ValueError("plot_zoo: no row of a model at its default trained on masks; run "
                         "`edu-seg zoo` first")
    variants = list(variants or dict.fromkeys(r["variant"] for r in rows))
    models = sorted({r["model"] for r in rows})
    miou = {(r["model"], r["variant"]): float(r["miou"]) for r in rows}
    grid = np.array([[miou.get((m, v), np.nan) for v in variants] for m in models])

    fig = Figure(figsize=(13, 0.3 * len(models) + 1.8), layout="constrained")
    table, cost = fig.subplots(1, 2, width_ratios=[1, 1.5])
    image = table.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):          # dark text on the light (high) end of viridis
            table.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                       color="black" if value > 0.6 else "white")
    table.set_xticks(range(len(variants)), variants, fontsize=8)
    table.set_yticks(range(len(models)), models, fontsize=8)
    table.set_title("mIoU by model and Shapes variant", fontsize=9)
    fig.colorbar(image, ax=table, shrink=0.6)

    default = [r for r in rows if r["variant"] == "default" and r.get("step_ms")]
    for r in default:
        x, y = float(r["step_ms"]), float(r["miou"])
        cost.scatter(x, y, s=30, zorder=3)
        cost.annotate(r["model"], (x, y), xytext=(4, 3), textcoords="offset points",
                      fontsize=7)
    cost.set_xscale("log")
    cost.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    cost.xaxis.set_minor_formatter(FuncFormatter(_label_2_and_5))
    threads = sorted({str(r["threads"]) for r in default}) or ["?"]
    cost.set_xlabel(f"ms per training step (batch 16, {'/'.join(threads)} "
                    f"thread{'' if threads == ['1'] else 's'}; log scale)")
    cost.set_ylabel("mIoU on Shapes default")
    cpus = ", ".join(sorted({r["cpu"] for r in rows}))
    cost.set_title(f"Accuracy against training cost ({cpus})", fontsize=9)
    cost.grid(True, which="both", alpha=0.3)
    return fig
