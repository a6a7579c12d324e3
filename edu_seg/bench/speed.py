"""``edu-seg zoo --plot``: how fast each zoo model segments one image, against its accuracy.

The 2018 papers (ICNet, BiSeNet) are about a trade: how much accuracy a model gives up for
how much speed. This module measures the speed side for every model of the zoo, the same way
for all: one image at a time (batch 1, what a camera or a video stream gives), eval mode, no
gradients, at two sizes: the zoo's 64x64 and 256x256, where the cost of the large maps of the
first layers starts to dominate, as it does at the papers' 1024x2048. The accuracy side is the
zoo's mIoU on Shapes ``default`` (``results.csv``); the two meet in
:func:`edu_seg.viz.speed.plot_speed_accuracy`.

Speed does not depend on the weights, so the models are timed freshly built (no training):
the whole table takes a minute or two. Rows MERGE into ``speed.csv`` by model, as the zoo's
rows do, and keep the CPU, thread count and date they were measured with.

>>> rows = measure_speed(["unet", "bisenet"], sizes=(64, 256))     # doctest: +SKIP
"""
import datetime
from pathlib import Path

import numpy as np

from .. import backend
from .recipe import RECIPE, build_zoo_model, cpu_name, median_eval_seconds, read_rows, write_rows
from .zoo import check_choices, read_results

__all__ = ["SIZES", "SPEED_COLUMNS", "inference_ms", "measure_speed", "merge_speed",
           "write_speed", "run_speed"]

#: The image sizes every model is timed at.
SIZES = (64, 256)

#: The columns of ``speed.csv``.
SPEED_COLUMNS = ("model", *(f"ms_{s}" for s in SIZES), "cpu", "threads", "date")


def inference_ms(model, size, repeats=7, seed=0):
    """Median milliseconds of ``model`` segmenting one random ``size`` x ``size`` image.

    Eval mode, batch 1, no gradients; one warm-up call first (it allocates the kernels'
    workspaces), then the median of ``repeats`` timed calls
    (:func:`edu_seg.bench.recipe.median_eval_seconds`). The model's mode is restored.
    """
    if (isinstance(size, bool) or not isinstance(size, int) or size < 1
            or size % model.output_stride):
        raise ValueError(f"inference_ms: size must be a positive multiple of {model.name}'s "
                         f"output stride {model.output_stride}, got {size!r}")
    image = np.random.default_rng(seed).random((1, model.config.in_channels, size, size),
                                               dtype=np.float32)
    return 1e3 * median_eval_seconds(model, image, repeats)


def measure_speed(model_names, sizes=SIZES, progress=print):
    """Time every model of ``model_names`` at every size; returns one row per model.

    Parameters
    ----------
    model_names : list of str
        Zoo models (``MODEL:PRESET`` allowed), built at their registry default.
    sizes : tuple of int
        Image sizes; each must be a multiple of every model's output stride.
    progress : callable or None
        Called with one line per finished model.

    Returns
    -------
    list of dict
        :data:`SPEED_COLUMNS` -> value, numbers already formatted.
    """
    names = check_choices(model_names, ["default"])[0]
    rows = []
    for name in names:
        model = build_zoo_model(name, RECIPE["num_classes"])
        row = {"model": name, "cpu": cpu_name(), "threads": backend.get_num_threads(),
               "date": datetime.date.today().isoformat()}
        for size in sizes:
            row[f"ms_{size}"] = f"{inference_ms(model, size):.2f}"
        rows.append(row)
        if progress is not None:
            progress(f"{name}: " + ", ".join(f"{row[f'ms_{s}']} ms at {s}x{s}" for s in sizes))
    return rows


def merge_speed(old, new):
    """``old`` rows with those of ``new`` added (a model in both is taken from ``new``),
    sorted by model."""
    merged = {r["model"]: r for r in old}
    merged.update({r["model"]: r for r in new})
    return [merged[m] for m in sorted(merged)]


def write_speed(rows, out):
    """Write ``rows`` to ``out/speed.csv``; returns its path."""
    return write_rows(Path(out) / "speed.csv", SPEED_COLUMNS, rows)


def run_speed(model_names=None, out="zoo"):
    """``edu-seg zoo --plot``: time the models, merge ``speed.csv``, draw the picture.

    Without ``model_names``, every model with a ``default`` row in ``out/results.csv``.
    Writes ``out/speed.csv`` and ``out/speed_accuracy.png``; returns their paths.
    """
    from ..viz.speed import plot_speed_accuracy

    results = read_results(Path(out) / "results.csv")
    if model_names is None:
        model_names = sorted({r["model"] for r in results if r["variant"] == "default"
                              and ":" not in r["model"] and r["supervision"] == "masks"})
        if not model_names:
            raise ValueError(f"zoo --plot: {Path(out) / 'results.csv'} has no default-variant "
                             f"row to plot; train some first: edu-seg zoo --models MODEL")
    speed = merge_speed(read_rows(Path(out) / "speed.csv"), measure_speed(model_names))
    csv_path = write_speed(speed, out)
    png_path = Path(out) / "speed_accuracy.png"
    plot_speed_accuracy(results, speed).savefig(png_path, dpi=120)
    return csv_path, png_path
