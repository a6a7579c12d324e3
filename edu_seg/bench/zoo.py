"""``edu-seg zoo``: every model trained with ONE recipe on Shapes, and a table to compare them.

A comparison of architectures means something only if nothing but the architecture changes.
So every row of the zoo is trained the same way (:data:`RECIPE`): the same synthetic data (a
Shapes variant at 64x64 with 4 classes, training seed 0), the same number of optimiser steps,
Adam at lr 3e-3 with the poly schedule, batch 16, weight seed 0, no augmentation, and each
model at its registry default (the small CPU size that ``models.create(name, num_classes=4)``
builds). It is then scored on 256 held-out images (validation seed 1).

Each (model, variant) row holds the validation mIoU, the boundary IoU (mIoU over only the
pixels within 2 px of a true edge, :class:`~edu_seg.metrics.BoundaryConfusion`: how well the
boundaries are placed) and per-class IoU, the parameters and
FLOPs of one 64x64 image, the median training step (forward, loss, backward, update of a
batch of 16) in ms, the inference rate (eval mode, no gradients, batch 16, after a warm-up
call) in images/s, the wall time, and the CPU, thread count and date it was measured with.

A row's model may name a preset of the model as ``MODEL:PRESET`` (``pspnet:no_pyramid``):
that is how an ablation gets its row, trained with the same recipe, so that the table shows
what one idea is worth (:func:`build_zoo_model`).

A row's *supervision* says what the training read (:data:`edu_seg.weak.SUPERVISIONS`):
``masks`` (every row unless asked otherwise), or only the boxes and classes of the training
images, with BoxSup's estimated masks (``boxes``) or the filled boxes as masks
(``filled-boxes``). The latter two rows also keep the mIoU of the training masks against the
true ones, round by round (how good the estimate was that the network learnt from).

Rows MERGE into ``results.csv`` by (model, variant, supervision): a run replaces its own rows and keeps
every other one, so the table grows model by model. ``RESULTS.md`` is rebuilt from the
merged CSV after every row, so an interrupted run keeps the rows it finished.

>>> rows = run_zoo(["unet"], ["default"], steps=300, out="zoo")    # doctest: +SKIP
[1/1] unet on default: mIoU 0.9xxx, ... ms/step, ... img/s, ... s
"""
import datetime
import time
from pathlib import Path

import numpy as np

from .. import backend, models
from ..autograd import no_grad
from ..data.shapes import VARIANTS
from ..train import Trainer, evaluate
from ..weak import SUPERVISIONS, BoxSup, BoxSupConfig
from .recipe import (RECIPE, StepTimes, cpu_name, inference_rate, read_rows, setup_row,
                     split_preset, write_rows)
from .zoo_instances import (INSTANCE_RECIPE, check_instance_models,
                            instance_markdown, merge_instance_results, read_instance_results,
                            train_and_measure_instance, write_instance_results)

__all__ = ["COLUMNS", "ALL_VARIANTS", "QUICK_MODELS", "QUICK_VARIANTS", "run_zoo", "train_and_measure", "measure_trained", "semantic_models", "check_choices", "read_results", "merge_results", "write_results",
           "results_markdown"]

#: ``edu-seg zoo --all``: every semantic model on each variant built to test one idea
#: (the instance rows, :data:`~edu_seg.bench.zoo_instances.INSTANCE_MODELS`, come with it).
ALL_VARIANTS = ("default", "scale", "context", "thin", "boundary")
#: ``edu-seg zoo --quick``: a few fast models of different kinds on two variants (minutes).
QUICK_MODELS = ("unet", "fcn8s", "bisenet", "icnet", "deeplabv3", "denseaspp")
QUICK_VARIANTS = ("default", "context")

#: The columns of ``results.csv``, in order.
COLUMNS = ("model", "variant", "supervision", "steps", "miou", "boundary_iou", "class_iou",
           "estimate_miou", "params", "flops", "step_ms", "infer_img_s", "train_s", "wall_s",
           "cpu", "threads", "date")

#: The picture beside RESULTS.md: mIoU by model and variant, and mIoU against step time.
PLOT = "results.png"


def semantic_models():
    """Names of the registered semantic models with a small version, sorted (the zoo's rows;
    full-size-only models such as ``deeplabv3_resnet50`` are left out)."""
    return [n for n in models.available() if models.get_model_class(n).task == "semantic"
            and models.get_model_class(n).small_version]


def check_choices(model_names=None, variants=("default",), supervisions=("masks",)):
    """Validate ``--models``, ``--variants`` and ``--supervision``; returns the three as lists
    without repeats.

    Parameters
    ----------
    model_names : list of str, optional
        Registered semantic models, each optionally with a preset as ``MODEL:PRESET``;
        default all of them at their defaults.
    variants : list of str
        Shapes variants (:data:`edu_seg.data.shapes.VARIANTS`).
    supervisions : list of str
        :data:`edu_seg.weak.SUPERVISIONS`.

    Raises
    ------
    ValueError
        An unknown or instance model, an unknown preset, an unknown variant or supervision;
        the message lists the choices.
    """
    semantic = semantic_models()
    names = list(dict.fromkeys(semantic if model_names is None else model_names))
    for label in names:
        name, preset = split_preset(label)
        if name not in models.available():
            raise ValueError(f"zoo: --models got unknown model {name!r}; choose from "
                             f"{', '.join(semantic)}")
        if models.get_model_class(name).task != "semantic":
            raise ValueError(f"zoo: --models got {name!r}, an instance model; the zoo trains "
                             f"semantic models: {', '.join(semantic)}")
        if name not in semantic:
            raise ValueError(f"zoo: --models got {name!r}, a full-size model without a small "
                             f"version (it loads published weights); the zoo trains "
                             f"{', '.join(semantic)}")
        if preset is not None and preset not in models.presets(name):
            choices = ", ".join(f"{name}:{p}" for p in models.presets(name)) or "none"
            raise ValueError(f"zoo: --models got unknown preset {label!r}; {name}'s presets: "
                             f"{choices}")
    variants = list(dict.fromkeys(variants))
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"zoo: --variants got unknown variant {variant!r}; choose from "
                             f"{', '.join(VARIANTS)}")
    supervisions = list(dict.fromkeys(supervisions))
    for supervision in supervisions:
        if supervision not in SUPERVISIONS:
            raise ValueError(f"zoo: --supervision got unknown supervision {supervision!r}; "
                             f"choose from {', '.join(SUPERVISIONS)}")
    return names, variants, supervisions


@no_grad()
def measure_trained(model, val, class_names, recipe=RECIPE):
    """What every row says about a trained ``model``, measured on the held-out set ``val``.

    Returns
    -------
    dict
        ``miou``, ``boundary_iou`` and ``class_iou`` (``class_names`` name the classes),
        ``params`` and ``flops`` of one image, ``infer_img_s`` (eval mode, no gradients, a
        batch of ``recipe["batch_size"]`` held-out images); numbers already formatted.
    """
    r = recipe
    scores = evaluate(model, val, r["batch_size"], boundary_band=r["boundary_band"])
    images = np.stack([val[i]["image"] for i in range(r["batch_size"])])   # (16, 3, 64, 64)
    rate = inference_rate(model, images)
    size = models.summary(model, (1, 3, r["size"], r["size"]))
    class_iou = "; ".join(f"{c}={'-' if np.isnan(v) else f'{v:.3f}'}"
                          for c, v in zip(class_names, scores["iou"]))
    return {"miou": f"{scores['miou']:.4f}", "boundary_iou": f"{scores['boundary_miou']:.4f}",
            "class_iou": class_iou, "params": size.total_params, "flops": size.total_flops,
            "infer_img_s": f"{rate:.1f}"}


def train_and_measure(name, variant, steps, on_step=None, supervision="masks"):
    """Train model ``name`` on Shapes ``variant`` with :data:`RECIPE` and measure it.

    Parameters
    ----------
    name : str
        A registered semantic model, built at its registry default size, or
        ``MODEL:PRESET`` for one of its presets (an ablation).
    variant : str
        A Shapes variant.
    steps : int
        Optimiser steps (``TrainConfig.steps``: 1024 training images / batch 16 = 64 steps
        per epoch, so 300 steps are 4 epochs and 44 steps of a fifth).
    on_step : callable, optional
        Passed on to the :class:`~edu_seg.train.Trainer` (progress).
    supervision : str
        ``"masks"``, or ``"boxes"`` / ``"filled-boxes"``: the same recipe through
        :class:`~edu_seg.weak.BoxSup` (its defaults, or the filled boxes never re-estimated),
        which reads only the boxes and classes of the training images.

    Returns
    -------
    dict
        One row of ``results.csv``: :data:`COLUMNS` -> value, numbers already formatted.
    """
    r = RECIPE
    start = time.perf_counter()
    train, val, model, config = setup_row(r, name, variant, steps)
    record = StepTimes(on_step)
    train_start = time.perf_counter()
    estimates = ""
    if supervision == "masks":
        Trainer(model, train, None, config, on_step=record).fit()
    else:
        boxsup = BoxSup(model, train, None, BoxSupConfig(init="segment" if supervision == "boxes"
                                                         else "box",
                                                         refine=supervision == "boxes"),
                        config, truth=train, on_step=record)
        estimates = " ".join(f"{r['estimate_miou']:.4f}" for r in boxsup.fit())
    train_seconds = time.perf_counter() - train_start
    return {"model": name, "variant": variant, "supervision": supervision, "steps": steps,
            **measure_trained(model, val, train.class_names, r), "estimate_miou": estimates,
            "step_ms": record.median_ms(), "train_s": f"{train_seconds:.1f}",
            "wall_s": f"{time.perf_counter() - start:.1f}", "cpu": cpu_name(),
            "threads": backend.get_num_threads(), "date": datetime.date.today().isoformat()}


# ------------------------------------------------------------------------------ the tables
def read_results(path):
    """The rows of an existing ``results.csv`` (a list of dicts of str), or [] if none.

    Rows written before the supervision column existed were trained on masks: they read as
    ``supervision="masks"``.
    """
    return [{**row, "supervision": row.get("supervision") or "masks"} for row in read_rows(path)]


def _key(row):
    return row["model"], row["variant"], row.get("supervision") or "masks"


def merge_results(old, new):
    """``old`` rows with those of ``new`` added, a (model, variant, supervision) in both taken
    from ``new``.

    Returns
    -------
    list of dict
        Sorted by variant (in :data:`VARIANTS` order), model name and supervision (in
        :data:`~edu_seg.weak.SUPERVISIONS` order), so that the files change only where a row
        changed.
    """
    merged = {_key(r): r for r in old}
    merged.update({_key(r): r for r in new})
    order = {v: i for i, v in enumerate(VARIANTS)}
    kind = {v: i for i, v in enumerate(SUPERVISIONS)}
    return sorted(merged.values(), key=lambda r: (order.get(r["variant"], len(order)),
                                                  r["model"], kind.get(_key(r)[2], len(kind))))


def _label(row):
    """The model as the summary tables name it: ``unet``, or ``unet [boxes]`` when the row was
    not trained on masks."""
    supervision = _key(row)[2]
    return row["model"] if supervision == "masks" else f"{row['model']} [{supervision}]"


def _has_plot(rows):
    """Whether ``results.png`` is drawn: it shows the models at their default, trained on masks."""
    return any(":" not in row["model"] and _key(row)[2] == "masks" for row in rows)


def results_markdown(rows):
    """``RESULTS.md``: the recipe, the full table and an mIoU table of models x variants."""
    r = RECIPE
    lines = [
        "# Model zoo on Shapes",
        "",
        "Written by `edu-seg zoo` (`edu_seg/bench/zoo.py`); rows are merged by (model, "
        "variant, supervision), and each keeps the CPU, thread count and date it was measured "
        "with. Recompute a row with `edu-seg zoo --models MODEL --variants VARIANT --steps "
        "STEPS [--supervision SUPERVISION]`; a model written `MODEL:PRESET` is that model "
        "built with one of its presets (an ablation: `pspnet:no_pyramid`).",
        "",
        f"**Recipe (the same for every row).** Each model at its registry default size "
        f"(`models.create(name, num_classes={r['num_classes']})`, or with the named preset "
        f"for `MODEL:PRESET` rows, weights seeded with "
        f"{r['seed']}); Shapes of the row's variant, {r['size']}x{r['size']}, "
        f"{r['num_classes']} classes, {r['train_samples']} training images (seed "
        f"{r['train_seed']}), no augmentation; {r['optimizer'].capitalize()}, lr {r['lr']:g}, "
        f"{r['schedule']} schedule (power 0.9) over the run's steps, batch {r['batch_size']}, "
        f"no weight decay, loader seed {r['seed']}; `steps` optimiser steps "
        f"({r['train_samples'] // r['batch_size']} per epoch; 300 by default). Scored on "
        f"{r['val_samples']} held-out images of the same variant (seed {r['val_seed']}).",
        "",
        "**Supervision.** What training read: `masks` (the true masks), or only the boxes "
        "and classes of the training images: `boxes` trains by BoxSup (masks estimated from "
        "selective-search candidates and re-estimated with the network's opinion after every "
        "epoch), `filled-boxes` on the filled boxes, never re-estimated. The validation "
        "images are always scored against their true masks. The summary tables name such a "
        "row `MODEL [SUPERVISION]`.",
        "",
        "**Columns.** mIoU and per-class IoU on the held-out images; boundary IoU: the mIoU "
        f"over only the pixels within {r['boundary_band']} px (Chebyshev distance) of an edge "
        "of the true mask, which scores where the boundaries are placed (blank in rows "
        "measured before the column existed); parameters; FLOPs of one "
        f"{r['size']}x{r['size']} image (a multiply-add counts 2); step: median ms of one "
        f"training step (forward, loss, backward, update; batch {r['batch_size']}; data "
        f"generation excluded); inference: images/s in eval mode without gradients, batch "
        f"{r['batch_size']}, after one warm-up call; train s: the training loop; wall s: the "
        "whole row (build, train, evaluate, time); estimate mIoU by round (box-supervised "
        "rows only): the mIoU of the masks each round trained on, against the true masks of "
        "the training images.",
        "",
        *([f"**Measured on** {', '.join(sorted({row['cpu'] for row in rows}))}, "
           f"{'/'.join(sorted({str(row['threads']) for row in rows}))} thread(s), from "
           f"{min(row['date'] for row in rows)} to {max(row['date'] for row in rows)} (each "
           "row says its own).", ""] if rows else []),
        *([f"![mIoU of every model on every variant, and mIoU against step time]({PLOT})", ""]
          if _has_plot(rows) else []),
        "| model | variant | supervision | steps | mIoU | boundary IoU | per-class IoU "
        "| estimate mIoU by round | params | MFLOPs | step ms | infer img/s | train s | wall s "
        "| CPU | threads | date |",
        "|---|---|---|--:|--:|--:|---|---|--:|--:|--:|--:|--:|--:|---|--:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['variant']} | {_key(row)[2]} | {row['steps']} "
            f"| {row['miou']} | {row.get('boundary_iou', '')} | {row['class_iou']} "
            f"| {row.get('estimate_miou', '')} | {int(row['params']):,} "
            f"| {int(row['flops']) / 1e6:.1f} | {row['step_ms']} | {row['infer_img_s']} "
            f"| {row['train_s']} | {row['wall_s']} | {row['cpu']} | {row['threads']} "
            f"| {row['date']} |")
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    names = sorted({_label(row) for row in rows})
    for column, title in (("miou", "mIoU"), ("boundary_iou", "Boundary IoU")):
        value = {(_label(row), row["variant"]): row.get(column, "") for row in rows}
        lines += ["", f"## {title} by model and variant", "",
                  "| model | " + " | ".join(variants) + " |",
                  "|---|" + "--:|" * len(variants)]
        lines += [f"| {name} | " + " | ".join(value.get((name, v), "") for v in variants)
                  + " |" for name in names]
    return "\n".join(lines) + "\n"


def write_results(rows, out):
    """Write ``rows`` to ``out/results.csv`` and ``out/RESULTS.md``, and draw ``out/results.png``
    (:func:`edu_seg.viz.zoo.plot_zoo`) when a row is a model at its default; returns the paths
    of the CSV and the Markdown."""
    from ..viz.zoo import plot_zoo

    out = Path(out)
    csv_path, md_path = write_rows(out / "results.csv", COLUMNS, rows), out / "RESULTS.md"
    md_path.write_text(results_markdown(rows) + instance_markdown(read_instance_results(out)))
    if _has_plot(rows):
        plot_zoo(rows, [v for v in VARIANTS if any(r["variant"] == v for r in rows)]).savefig(
            out / PLOT, dpi=100)
    return csv_path, md_path


# ---------------------------------------------------------------------------------- the run
def _run_row(name, variant, supervision, steps, on_step=None):
    """Train and measure one row: an instance row when ``variant`` is None."""
    if variant is None:
        return train_and_measure_instance(name, steps, on_step)
    return train_and_measure(name, variant, steps, on_step, supervision)


def _run_row_in_worker(threads, recipes, task):
    """One row in a worker process of ``run_zoo(jobs=...)``. A spawned process imports the
    package afresh, so it gets the parent's thread share and recipes explicitly (a recipe
    changed in the parent, as the tests do, must be the one trained)."""
    backend.set_num_threads(threads)
    RECIPE.update(recipes[0])
    INSTANCE_RECIPE.update(recipes[1])
    return _run_row(*task)


def _save_row(row, label, variant, out, write):
    """Merge a finished row into the tables in ``out`` and print its line."""
    if variant is None:
        write_instance_results(merge_instance_results(read_instance_results(out), [row]), out)
        write_results(read_results(Path(out) / "results.csv"), out)
        write(f"{label}: mask AP {row['mask_ap']} (AP50 {row['mask_ap50']}), box AP "
              f"{row['box_ap']}, {row['step_ms']} ms/step, {row['wall_s']} s")
    else:
        write_results(merge_results(read_results(Path(out) / "results.csv"), [row]), out)
        write(f"{label}: mIoU {row['miou']}, boundary IoU {row['boundary_iou']}, "
              f"{row['step_ms']} ms/step, {row['infer_img_s']} img/s, {row['wall_s']} s"
              + (f"; training masks' mIoU by round {row['estimate_miou']}"
                 if row["estimate_miou"] else ""))


def run_zoo(model_names=None, variants=("default",), steps=300, out="zoo", progress=True,
            supervisions=("masks",), instance_models=(), instance_steps=None, jobs=1):
    """Train and measure every (model, variant, supervision), then every instance model; merge
    each row into ``out`` as it ends.

    Parameters
    ----------
    model_names : list of str, optional
        Semantic models (``MODEL`` or ``MODEL:PRESET``). None: every registered semantic
        model; an empty list: none (only instance rows).
    variants : list of str
        Shapes variants.
    steps : int
        Optimiser steps per semantic row.
    out : str or Path
        Folder of ``results.csv``, ``instance_results.csv`` and ``RESULTS.md``.
    progress : bool
        One tqdm bar over all steps of the run, described ``[i/n] MODEL on VARIANT`` with
        the row's step (with ``jobs`` > 1 it advances when a row ends); a line per finished
        row is printed either way.
    supervisions : list of str
        :data:`edu_seg.weak.SUPERVISIONS` (default: masks only).
    instance_models : list of str
        Instance models (``mask_rcnn``, ``mask_rcnn:roi_pool``): one row each, scored by mask
        AP (:mod:`edu_seg.bench.zoo_instances`).
    instance_steps : int, optional
        Optimiser steps per instance row (default: the instance recipe's).
    jobs : int
        Rows trained at once, each in its own process with ``threads // jobs`` of the
        threads (at least 1). A row gains less than 2x from a second thread, so on 2 cores
        two 1-thread rows at a time finish sooner than one 2-thread row at a time (the
        ``--quick`` subset: 306 s against 342 s on an AMD EPYC). Each row records the thread
        count it ran with, and its step time is that of one row sharing the machine with
        another.

    Returns
    -------
    list of dict
        The rows this run measured, in the order they ended.
    """
    instance_steps = INSTANCE_RECIPE["steps"] if instance_steps is None else instance_steps
    for name, value in (("--steps", steps), ("--instance-steps", instance_steps),
                        ("--jobs", jobs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"zoo: {name} must be a positive int, got {value!r}")
    from tqdm.auto import tqdm

    if model_names is not None and not model_names:
        names, variants, supervisions = [], list(variants), list(supervisions)
    else:
        names, variants, supervisions = check_choices(model_names, variants, supervisions)
    instance_models = check_instance_models(instance_models)
    rows_to_run = [(name, variant, supervision, steps) for variant in variants
                   for name in names for supervision in supervisions]
    rows_to_run += [(name, None, None, instance_steps) for name in instance_models]
    labels = [f"[{i}/{len(rows_to_run)}] {name}"
              + (" (instances)" if variant is None else f" on {variant}")
              + ("" if supervision in (None, "masks") else f" from {supervision}")
              for i, (name, variant, supervision, _) in enumerate(rows_to_run, 1)]
    threads = max(1, backend.get_num_threads() // jobs)
    print(f"zoo: {len(names)} model(s) x {len(variants)} variant(s) x {len(supervisions)} "
          f"supervision(s), {steps} steps each"
          + (f", and {len(instance_models)} instance model(s), {instance_steps} steps each"
             if instance_models else "")
          + (f", {jobs} rows at a time with {threads} thread(s) each" if jobs > 1
             else f", {threads} thread(s)") + f"; results in {Path(out)}/", flush=True)
    bar = tqdm(total=sum(r[3] for r in rows_to_run), unit="step", disable=not progress,
               dynamic_ncols=True)
    rows = []
    try:
        if jobs == 1:
            for label, task in zip(labels, rows_to_run):
                bar.set_description(label)

                def on_step(trainer, info, row_steps=task[3]):
                    bar.update(1)
                    bar.set_postfix_str(f"step {info['step']}/{row_steps}, loss "
                                        f"{info['loss']:.3f}")

                rows.append(_run_row(*task, on_step))
                _save_row(rows[-1], label, task[1], out, tqdm.write)
        else:
            rows = _run_rows_in_workers(rows_to_run, labels, jobs, threads, out, bar)
    finally:
        bar.close()
    return rows


def _run_rows_in_workers(rows_to_run, labels, jobs, threads, out, bar):
    """``run_zoo``'s rows in ``jobs`` spawned worker processes; the parent alone writes the
    tables, as each row ends. A failed row stops the run with its error: no new row starts,
    the rows already running end and are kept."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from tqdm.auto import tqdm

    rows, recipes, error = [], (dict(RECIPE), dict(INSTANCE_RECIPE)), None
    # spawn, not fork: a forked child inherits the parent's OpenMP and BLAS thread pools
    # in an undefined state, and can hang in its first parallel region.
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        pending = {pool.submit(_run_row_in_worker, threads, recipes, task): i
                   for i, task in enumerate(rows_to_run)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                i = pending.pop(future)
                if future.cancelled():
                    continue
                if future.exception() is not None:
                    error = error or future.exception()
                    for other in pending:
                        other.cancel()          # only rows not yet started can be
                    continue
                rows.append(future.result())
                bar.update(rows_to_run[i][3])
                _save_row(rows[-1], labels[i], rows_to_run[i][1], out, tqdm.write)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if error is not None:
        raise error
    return rows
