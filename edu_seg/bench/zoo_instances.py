"""The zoo's instance rows: Mask R-CNN with RoIAlign and with RoIPool, and R-CNN's regions,
scored by mask AP.

A semantic row of the zoo (:mod:`edu_seg.bench.zoo`) is scored by mIoU, a class per pixel. An
instance model finds objects, so its rows are scored the COCO way (box and mask AP,
:class:`~edu_seg.metrics.InstanceAP`) and live in their own table, ``instance_results.csv``,
shown in ``RESULTS.md`` under the semantic tables. The two Mask R-CNN rows differ only in the
RoI op (``mask_rcnn:roi_pool`` is the preset that swaps RoIAlign for RoIPool): what chapter 5
says RoIAlign is worth, measured with everything else equal. ``rcnn_regions`` is a semantic
model whose classified proposals are objects too
(:meth:`~edu_seg.models.rcnn_regions.RCNNRegions.detect_objects`): its row scores the region
approach of 2014 by the same AP, trained with the same recipe.

Recipe: the zoo's data (Shapes ``default``, 64x64, 4 classes, 1024 training and 256 held-out
images, the same seeds, no augmentation), Adam with the poly schedule, batch 16, and the
learning rate (1e-3) and step budget (640) that ``edu-seg train --model mask_rcnn`` uses and
chapter 5 measured (:data:`INSTANCE_RECIPE`), rather than the semantic rows' 3e-3 and 300
steps, which were never tried on the detector. Rows merge by model, like the semantic rows.
"""
import datetime
import time
from pathlib import Path

import numpy as np

from .. import backend, models
from ..train import Trainer, evaluate_instances
from .recipe import RECIPE, StepTimes, cpu_name, inference_rate, read_rows, setup_row, write_rows

__all__ = ["INSTANCE_MODELS", "INSTANCE_RECIPE", "INSTANCE_COLUMNS", "check_instance_models",
           "train_and_measure_instance", "read_instance_results", "merge_instance_results",
           "write_instance_results", "instance_markdown"]

#: The instance rows of ``edu-seg zoo --all``: Mask R-CNN with two RoI ops, and R-CNN's regions.
INSTANCE_MODELS = ("mask_rcnn", "mask_rcnn:roi_pool", "rcnn_regions")

#: The semantic recipe with chapter 5's Mask R-CNN learning rate and step budget.
INSTANCE_RECIPE = {**RECIPE, "variant": "default", "lr": 1e-3, "steps": 640}

#: The columns of ``instance_results.csv``, in order.
INSTANCE_COLUMNS = ("model", "steps", "mask_ap", "mask_ap50", "mask_ap75", "box_ap",
                    "box_ap50", "box_ap75", "params", "step_ms", "infer_img_s", "train_s",
                    "wall_s", "cpu", "threads", "date")

_FILE = "instance_results.csv"


def check_instance_models(labels):
    """``labels`` without repeats; each a registered model that finds objects (an instance
    model, or a semantic one with ``detect_objects``), optionally ``:PRESET``.

    Raises
    ------
    ValueError
        An unknown model or preset, or a semantic model that cannot list objects (its rows
        are the semantic table's).
    """
    labels = list(dict.fromkeys(labels))
    instance = [n for n in models.available() if models.get_model_class(n).task == "instance"
                or hasattr(models.get_model_class(n), "detect_objects")]
    for label in labels:
        name, _, preset = label.partition(":")
        if name not in instance:
            raise ValueError(f"zoo: --instance-models got {name!r}; choose from "
                             f"{', '.join(instance)} (semantic models go in --models)")
        if preset and preset not in models.presets(name):
            raise ValueError(f"zoo: --instance-models got unknown preset {label!r}; {name}'s "
                             f"presets: {', '.join(models.presets(name)) or 'none'}")
    return labels


def train_and_measure_instance(label, steps, on_step=None):
    """Train instance model ``label`` (``MODEL`` or ``MODEL:PRESET``) with
    :data:`INSTANCE_RECIPE` for ``steps`` steps and measure it.

    Returns
    -------
    dict
        One row of ``instance_results.csv``: :data:`INSTANCE_COLUMNS` -> formatted value.
        AP is COCO's, averaged over IoU thresholds 0.50:0.95; AP50 and AP75 at one threshold.
    """
    r = INSTANCE_RECIPE
    start = time.perf_counter()
    train, val, model, config = setup_row(r, label, r["variant"], steps)
    record = StepTimes(on_step)
    train_start = time.perf_counter()
    Trainer(model, train, None, config, on_step=record).fit()
    train_seconds = time.perf_counter() - train_start
    ap = evaluate_instances(model, val, r["batch_size"]).summary()
    images = np.stack([val[i]["image"] for i in range(r["batch_size"])])   # (16, 3, 64, 64)
    rate = inference_rate(model, images)
    return {"model": label, "steps": steps,
            **{f"{kind}_{key.lower()}": f"{ap[kind][key]:.4f}" for kind in ("mask", "box")
               for key in ("AP", "AP50", "AP75")},
            "params": model.num_parameters(),
            "step_ms": record.median_ms(),
            "infer_img_s": f"{rate:.1f}", "train_s": f"{train_seconds:.1f}",
            "wall_s": f"{time.perf_counter() - start:.1f}", "cpu": cpu_name(),
            "threads": backend.get_num_threads(), "date": datetime.date.today().isoformat()}


def read_instance_results(out):
    """The rows of ``out/instance_results.csv`` (dicts of str), or [] if there is none."""
    return read_rows(Path(out) / _FILE)


def merge_instance_results(old, new):
    """``old`` rows with ``new`` ones added (a model in both taken from ``new``), by model."""
    merged = {row["model"]: row for row in old}
    merged.update({row["model"]: row for row in new})
    return [merged[k] for k in sorted(merged)]


def write_instance_results(rows, out):
    """Write ``rows`` to ``out/instance_results.csv``; returns its path."""
    return write_rows(Path(out) / _FILE, INSTANCE_COLUMNS, rows)


def instance_markdown(rows):
    """The ``RESULTS.md`` section of the instance rows ('' when there are none)."""
    if not rows:
        return ""
    r = INSTANCE_RECIPE
    lines = [
        "", "## Instance segmentation: Mask R-CNN with RoIAlign and with RoIPool, and "
        "R-CNN's regions", "",
        f"Recipe: the data above (Shapes `{r['variant']}`), {r['optimizer'].capitalize()}, "
        f"lr {r['lr']:g} (chapter 5's Mask R-CNN rate), poly schedule, batch "
        f"{r['batch_size']}, `steps` optimiser steps ({r['steps']} by default). AP is COCO's "
        "(IoU thresholds 0.50:0.95; AP50 and AP75 at one threshold) on the "
        f"{r['val_samples']} held-out images. `rcnn_regions` is the semantic model of "
        "chapter 5 whose classified proposals are its objects (each region's mask, scored by "
        "its class's SVM, per-class NMS). Recompute a row with `edu-seg zoo "
        "--instance-models MODEL`.", "",
        "| model | steps | mask AP | mask AP50 | mask AP75 | box AP | box AP50 | box AP75 "
        "| params | step ms | infer img/s | train s | wall s | CPU | threads | date |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|---|",
    ]
    for row in rows:
        cells = [row[c] for c in INSTANCE_COLUMNS]
        cells[INSTANCE_COLUMNS.index("params")] = f"{int(row['params']):,}"
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
