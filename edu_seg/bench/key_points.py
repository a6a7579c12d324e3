"""``edu-seg key-points``: the course's closing claims, each measured with the zoo's recipe.

The segmentation chapter closes with key points. Four of them are claims about what makes a
network good, and each can be measured on our own models, trained exactly as the zoo trains
them (:data:`~edu_seg.bench.recipe.RECIPE`: Shapes 64x64, Adam lr 3e-3 with the poly
schedule, batch 16, 300 steps, weights seeded with 0), with one thing changed per row:

``backbones``
    "Know your classification backbone": one decoder, DeepLabV3+ at output stride 8, on each
    backbone family (VGG, ResNet, DenseNet, MobileNetV2, Xception) in the ``*_small`` presets,
    which are matched at about 200,000 parameters (their FLOPs are not matched: that is part of
    the answer). Accuracy against training and inference time.
``supervision``
    "Deep supervision helps a little but is harder to set up": PSPNet, BiSeNet, DFN and ICNet
    with their auxiliary losses and without them (the same network trained with the final loss
    only; the auxiliary heads exist only in training), each with weight seeds 0, 1 and 2 (the
    data stay the same), so that the spread across seeds is there to compare the difference with.
    The rows keep the final prediction's training cross-entropy too (the ``ce`` term, without
    the auxiliary terms, so that the two settings compare), averaged over twentieths of the
    run: how smoothly each run trained.
``resolution``
    "Do most of the work at low resolution and upsample at the end": DeepLabV3+ with its heavy
    part (the backbone's deep stages and ASPP) at 1/8, 1/16 and 1/32 of the input, its decoder
    at 1/4 in all three. Accuracy against time.
``pretraining``
    "The encoder is a pre-trained classification network": DeepLabV3+ on each ``*_small``
    backbone, from scratch and from a backbone pretrained by :mod:`edu_seg.pretrain` (which
    shapes a scene shows), with 64 and with 1024 labelled images; the held-out mIoU is also
    measured every 50 steps (mIoU against training steps).

The fifth key point (multi-scale pooling, atrous convolution and large 1-D kernels) is the
zoo's ablation rows (``pspnet:no_pyramid``, ``deeplabv3:no_image_pool``, ``gcn:k3``, ...).

Rows merge into ``key_points.csv`` by (study, model, setting, seed, train_samples), and
``KEY_POINTS.md`` with one plot per study is rebuilt after every row, as the zoo does.

>>> rows = run_key_points(["resolution"], out="zoo")               # doctest: +SKIP
[1/3] resolution: deeplabv3plus, heavy part at 1/8 (seed 0, 1024 images): mIoU 0.8...
"""
import dataclasses
import datetime
import statistics
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .. import backend
from ..models import create_backbone
from ..train import Trainer, evaluate
from .recipe import RECIPE, StepTimes, cpu_name, read_rows, setup_row, write_rows
from .zoo import measure_trained

__all__ = ["STUDIES", "BACKBONE_FAMILIES", "DEEP_SUPERVISION", "Run", "study_runs",
           "train_and_measure_run", "run_key_points", "merge_key_points",
           "write_key_points", "key_points_markdown", "COLUMNS"]

STUDIES = ("backbones", "supervision", "resolution", "pretraining")

#: Family -> its backbone preset matched at about 200,000 parameters.
BACKBONE_FAMILIES = {"VGG": "vgg_bn_small", "ResNet": "resnet_small",
                     "DenseNet": "densenet_small", "MobileNetV2": "mobilenet_v2_small",
                     "Xception": "xception_small"}

#: Model -> its preset trained with the final loss only.
DEEP_SUPERVISION = {"pspnet": "no_deep_supervision", "bisenet": "no_deep_supervision",
                    "dfn": "no_deep_supervision", "icnet": "no_label_guidance"}

SEEDS = (0, 1, 2)
OUTPUT_STRIDES = (8, 16, 32)
LABELLED_IMAGES = (64, 1024)
PRETRAIN_STEPS = 3000
CURVE_EVERY = 50               # steps between held-out mIoU measurements (pretraining study)
CE_POINTS = 20                 # the ce curve of a row: its mean over each twentieth

COLUMNS = ("study", "model", "setting", "backbone", "seed", "train_samples", "steps", "miou",
           "boundary_iou", "miou_curve", "params", "flops", "step_ms", "infer_img_s",
           "ce_end", "ce_curve", "pretrain_label_acc", "train_s", "cpu", "threads", "date")


@dataclasses.dataclass(frozen=True)
class Run:
    """One row of a study: the zoo recipe with the fields that differ.

    Attributes
    ----------
    study : str
    model : str
        ``MODEL`` or ``MODEL:PRESET``.
    setting : str
        What this row changes, as the tables name it.
    overrides : tuple of (str, object)
        Config fields of the model on top of its defaults (a tuple, to stay hashable).
    seed : int
        Weight and batch-order seed (the data never change).
    train_samples : int or None
        Labelled training images; None: the recipe's.
    pretrained : bool
        Load the backbone pretrained by :func:`edu_seg.pretrain.pretrain_backbone` first.
    curve : bool
        Measure the held-out mIoU every :data:`CURVE_EVERY` steps.
    """

    study: str
    model: str
    setting: str
    overrides: tuple = ()
    seed: int = 0
    train_samples: Optional[int] = None
    pretrained: bool = False
    curve: bool = False

    @property
    def backbone(self):
        """The ``backbone`` override, or "" (the model's default backbone)."""
        return dict(self.overrides).get("backbone", "")

    @property
    def images(self):
        """The labelled training images this run reads."""
        return self.train_samples or RECIPE["train_samples"]

    def key(self):
        return self.study, self.model, self.setting, str(self.seed), str(self.images)


def study_runs(study):
    """The runs of ``study`` (one of :data:`STUDIES`), in the order they are trained."""
    if study == "backbones":
        return [Run(study, "deeplabv3plus", family, (("backbone", name),))
                for family, name in BACKBONE_FAMILIES.items()]
    if study == "supervision":
        return [Run(study, model if on else f"{model}:{preset}",
                    "deep supervision" if on else "final loss only", seed=seed)
                for model, preset in DEEP_SUPERVISION.items() for on in (True, False)
                for seed in SEEDS]
    if study == "resolution":
        return [Run(study, "deeplabv3plus", f"heavy part at 1/{s}", (("output_stride", s),))
                for s in OUTPUT_STRIDES]
    if study == "pretraining":
        return [Run(study, "deeplabv3plus", f"{family}, {'pretrained' if p else 'scratch'}",
                    (("backbone", name),), train_samples=n, pretrained=p, curve=True)
                for family, name in BACKBONE_FAMILIES.items() for n in LABELLED_IMAGES
                for p in (False, True)]
    raise ValueError(f"key-points: unknown study {study!r}; choose from {', '.join(STUDIES)}")


def pretrained_backbone_file(name, folder, steps):
    """The file of backbone ``name`` pretrained for ``steps`` steps in ``folder``: reused if
    it was pretrained with those steps, else pretrained now (:func:`~edu_seg.pretrain.
    pretrain_backbone`, presence task, seed 0) and saved. Returns ``(path, history)``."""
    from ..pretrain import load_pretrained_backbone, pretrain_backbone, save_backbone

    path = Path(folder) / f"{name}.npz"
    if path.exists():
        history = load_pretrained_backbone(create_backbone(name), path)["history"]
        if history and history["recipe"]["steps"] == steps:
            return path, history
    classifier, history = pretrain_backbone(name, steps=steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_backbone(path, classifier, history)
    return path, history


def _curve(values, points):
    """Means of ``values`` over ``points`` consecutive, nearly equal parts, as "a;b;..."."""
    parts = np.array_split(np.asarray(values, dtype=float), min(points, len(values)))
    return ";".join(f"{p.mean():.4f}" for p in parts)


def train_and_measure_run(run, steps, on_step=None, pretrain_dir="runs/pretrain",
                          pretrain_steps=PRETRAIN_STEPS):
    """Train ``run`` for ``steps`` steps with the zoo's recipe and measure it.

    Returns
    -------
    dict
        One row of ``key_points.csv`` (:data:`COLUMNS`), numbers already formatted.
    """
    recipe = {**RECIPE, "seed": run.seed, "train_samples": run.images}
    train, val, model, config = setup_row(recipe, run.model, "default", steps,
                                          dict(run.overrides))
    pretrain_acc = ""
    if run.pretrained:
        from ..pretrain import load_pretrained_backbone

        path, history = pretrained_backbone_file(run.backbone, pretrain_dir, pretrain_steps)
        load_pretrained_backbone(model, path)
        pretrain_acc = f"{history['records'][-1]['val_label_acc']:.4f}"
    curve, final_ce = [], []

    def measure_curve(trainer, info):
        if on_step is not None:
            on_step(trainer, info)
        final_ce.append(info["terms"]["ce"])
        if run.curve and (info["step"] % CURVE_EVERY == 0 or info["step"] == steps):
            curve.append(f"{info['step']}:{evaluate(model, val, recipe['batch_size'])['miou']:.4f}")

    record = StepTimes(measure_curve)
    start = time.perf_counter()
    Trainer(model, train, None, config, on_step=record).fit()
    train_seconds = time.perf_counter() - start
    tail = final_ce[-max(1, len(final_ce) // 10):]               # the last tenth of the run
    return {"study": run.study, "model": run.model, "setting": run.setting,
            "backbone": run.backbone, "seed": run.seed, "train_samples": run.images,
            "steps": steps, **measure_trained(model, val, train.class_names, recipe),
            "miou_curve": " ".join(curve), "step_ms": record.median_ms(),
            "ce_end": f"{statistics.mean(tail):.4f}",
            "ce_curve": _curve(final_ce, CE_POINTS),
            "pretrain_label_acc": pretrain_acc, "train_s": f"{train_seconds:.1f}",
            "cpu": cpu_name(), "threads": backend.get_num_threads(),
            "date": datetime.date.today().isoformat()}


# ------------------------------------------------------------------------------ the tables
def _row_key(row):
    return tuple(str(row[k]) for k in ("study", "model", "setting", "seed", "train_samples"))


def merge_key_points(old, new):
    """``old`` rows with ``new`` ones added; a key in both is taken from ``new``. Sorted in
    the order the studies run (study, then the run order of :func:`study_runs`)."""
    merged = {_row_key(r): r for r in old}
    merged.update({_row_key(r): {k: str(v) for k, v in r.items()} for r in new})
    order = {run.key(): i for i, run in enumerate(
        run for study in STUDIES for run in study_runs(study))}
    return sorted(merged.values(), key=lambda r: (order.get(_row_key(r), len(order)),
                                                  _row_key(r)))


def _mean_std(values, digits=3):
    """"0.861 ± 0.012": the mean and the sample standard deviation (the mean alone for one)."""
    values = [float(v) for v in values]
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else ""
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _machine(rows):
    """"AMD EPYC, 2 threads" (or every combination the rows were measured with)."""
    seen = dict.fromkeys(f"{r['cpu']}, {r['threads']} thread{'' if r['threads'] == '1' else 's'}"
                         for r in rows)
    return "; ".join(seen)


def _cost_and_scores(row):
    """The table cells ``| params | MFLOPs | step ms | infer img/s | mIoU | boundary IoU |``."""
    return (f"| {int(row['params']):,} | {int(row['flops']) / 1e6:.1f} | {row['step_ms']} "
            f"| {row['infer_img_s']} | {row['miou']} | {row['boundary_iou']} |")


def key_points_markdown(rows):
    """``KEY_POINTS.md``: per study, what it asks, its table and its plot."""
    r = RECIPE
    lines = [
        "# Key points, measured",
        "",
        "Written by `edu-seg key-points` (`edu_seg/bench/key_points.py`) from "
        "`key_points.csv`. Every row is the zoo's recipe (Shapes `default`, "
        f"{r['size']}x{r['size']}, {r['num_classes']} classes, {r['train_samples']} training "
        f"images unless the row says fewer, Adam lr {r['lr']:g} with the poly schedule, batch "
        f"{r['batch_size']}, scored on {r['val_samples']} held-out images) with one thing "
        "changed. Step: median ms of a training step of 16 images; inference: images/s in "
        "eval mode, batch 16.",
    ]
    by_study = {s: [row for row in rows if row["study"] == s] for s in STUDIES}
    if by_study["backbones"]:
        lines += ["", "## Backbones: DeepLabV3+ on each family, matched at ~200K backbone "
                  "parameters", "", f"Measured on {_machine(by_study['backbones'])}.", "",
                  "| family | backbone | steps | params | MFLOPs | step ms | infer img/s | mIoU "
                  "| boundary IoU |", "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
        lines += [f"| {x['setting']} | {x['backbone']} | {x['steps']} {_cost_and_scores(x)}"
                  for x in by_study["backbones"]]
        lines += ["", "![backbones](key_points_backbones.png)"]
    if by_study["supervision"]:
        rs = by_study["supervision"]
        lines += ["", "## Deep supervision on and off, three seeds", "",
                  f"Measured on {_machine(rs)}. mIoU, boundary IoU, step time and the final "
                  "prediction's training cross-entropy over the last tenth of the run (the "
                  "`ce` term alone, comparable with and without the auxiliary terms) as mean "
                  "± standard deviation over the seeds.", "",
                  "| model | setting | steps | seeds | mIoU by seed | mIoU | boundary IoU "
                  "| step ms | final ce |", "|---|---|--:|---|---|--:|--:|--:|--:|"]
        groups = {}
        for x in rs:
            groups.setdefault((x["model"].partition(":")[0], x["setting"]), []).append(x)
        for (model, setting), xs in groups.items():
            lines.append(
                f"| {model} | {setting} | {xs[0]['steps']} "
                f"| {', '.join(x['seed'] for x in xs)} | {' '.join(x['miou'] for x in xs)} "
                f"| {_mean_std(x['miou'] for x in xs)} "
                f"| {_mean_std(x['boundary_iou'] for x in xs)} "
                f"| {_mean_std((x['step_ms'] for x in xs), 1)} "
                f"| {_mean_std(x['ce_end'] for x in xs)} |")
        lines += ["", "![supervision](key_points_supervision.png)"]
    if by_study["resolution"]:
        lines += ["", "## Low resolution first: DeepLabV3+ with its heavy part at 1/8, 1/16, "
                  "1/32", "", f"Measured on {_machine(by_study['resolution'])}.", "",
                  "| setting | steps | params | MFLOPs | step ms | infer img/s | mIoU "
                  "| boundary IoU |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
        lines += [f"| {x['setting']} | {x['steps']} {_cost_and_scores(x)}"
                  for x in by_study["resolution"]]
        lines += ["", "![resolution](key_points_resolution.png)"]
    if by_study["pretraining"]:
        lines += ["", "## Pretraining: DeepLabV3+ from scratch and from a pretrained backbone",
                  "", f"Measured on {_machine(by_study['pretraining'])}. Pretraining: "
                  f"which shape classes a scene shows ({PRETRAIN_STEPS} steps by default, new "
                  "scenes every step; `edu-seg pretrain`); label accuracy on held-out scenes. "
                  "mIoU by step: the held-out mIoU every "
                  f"{CURVE_EVERY} steps.", "",
                  "| setting | labelled images | steps | pretraining label acc | mIoU "
                  "| boundary IoU | mIoU by step |", "|---|--:|--:|--:|--:|--:|---|"]
        lines += [f"| {x['setting']} | {x['train_samples']} | {x['steps']} "
                  f"| {x['pretrain_label_acc']} | {x['miou']} | {x['boundary_iou']} "
                  f"| {x['miou_curve']} |" for x in by_study["pretraining"]]
        lines += ["", "![pretraining](key_points_pretraining.png)"]
    return "\n".join(lines) + "\n"


def write_key_points(rows, out):
    """Write ``key_points.csv``, ``KEY_POINTS.md`` and one plot per study present into
    ``out``; returns the CSV's path."""
    from ..viz.key_points import STUDY_PLOTS

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_rows(out / "key_points.csv", COLUMNS, rows)
    for study, plot in STUDY_PLOTS.items():
        study_rows = [r for r in rows if r["study"] == study]
        if study_rows:
            plot(study_rows).savefig(out / f"key_points_{study}.png", dpi=110)
    (out / "KEY_POINTS.md").write_text(key_points_markdown(rows))
    return out / "key_points.csv"


# ---------------------------------------------------------------------------------- the run
def run_key_points(studies=STUDIES, steps=300, out="zoo", quick=False,
                   pretrain_dir="runs/pretrain", pretrain_steps=PRETRAIN_STEPS, progress=print):
    """Train and measure every run of ``studies``, merging each row into ``out`` as it ends.

    Parameters
    ----------
    studies : sequence of str
        Some of :data:`STUDIES`.
    steps : int
        Optimiser steps per run (the zoo's 300).
    out : str or Path
        Folder of ``key_points.csv``, ``KEY_POINTS.md`` and the plots.
    quick : bool
        Only the first two runs of each study (the test suite's fast mode, with tiny steps).
    pretrain_dir : str or Path
        Where pretrained backbones are kept (``NAME.npz``) and reused.
    pretrain_steps : int
        Steps of each backbone's pretraining.
    progress : callable
        Called with one line per finished row.

    Returns
    -------
    list of dict
        The rows this run measured.
    """
    for name, value in (("--steps", steps), ("--pretrain-steps", pretrain_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"key-points: {name} must be a positive int, got {value!r}")
    runs = []
    for study in dict.fromkeys(studies):
        runs += study_runs(study)[:2] if quick else study_runs(study)
    rows = []
    for i, run in enumerate(runs, 1):
        row = train_and_measure_run(run, steps, pretrain_dir=pretrain_dir,
                                    pretrain_steps=pretrain_steps)
        write_key_points(merge_key_points(read_rows(Path(out) / "key_points.csv"),
                                          [row]), out)
        progress(f"[{i}/{len(runs)}] {run.study}: {run.model}, {run.setting} (seed {run.seed}, "
                 f"{run.images} images): mIoU {row['miou']}, {row['step_ms']} ms/step, "
                 f"{row['train_s']} s")
        rows.append(row)
    return rows
