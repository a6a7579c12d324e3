"""The zoo's recipe and the tools its tables share: how a row's model is built, the CPU it ran
on, how fast a model infers, and how a CSV table of rows is read and written.

:mod:`edu_seg.bench.zoo` (semantic rows), :mod:`edu_seg.bench.zoo_instances` (instance rows)
and :mod:`edu_seg.bench.speed` (inference time against accuracy) all use these, so that every
table is built and timed one way.
"""
import csv
import platform
import statistics
import time
from pathlib import Path

from .. import models
from .._cpu import cpu_flags, cpu_model_name, widest_vectors
from ..autograd import Tensor, no_grad
from ..data import Shapes
from ..train import TrainConfig, seed_everything

__all__ = ["RECIPE", "split_preset", "build_zoo_model", "setup_row", "StepTimes", "cpu_name",
           "median_eval_seconds", "inference_rate", "read_rows", "write_rows"]

#: The one training recipe of every zoo row (only the step budget may change, per row).
RECIPE = {
    "size": 64, "num_classes": 4, "train_samples": 1024, "val_samples": 256,
    "train_seed": 0, "val_seed": 1, "seed": 0,
    "optimizer": "adam", "lr": 3e-3, "schedule": "poly", "batch_size": 16,
    "boundary_band": 2,
}


def split_preset(label):
    """``"pspnet:no_pyramid"`` -> ``("pspnet", "no_pyramid")``; ``"unet"`` -> ``("unet", None)``."""
    name, _, preset = label.partition(":")
    return name, preset or None


def build_zoo_model(label, num_classes, overrides=None):
    """The model of a zoo row: ``MODEL`` at its registry default, or ``MODEL:PRESET``;
    ``overrides`` (a dict of config fields, e.g. ``{"backbone": "vgg_bn_small"}``) on top."""
    name, preset = split_preset(label)
    return models.create(name, preset=preset, num_classes=num_classes, **(overrides or {}))


def setup_row(recipe, label, variant, steps, overrides=None):
    """What one row trains: ``(train, val, model, config)`` under ``recipe`` (a dict like
    :data:`RECIPE`): the Shapes ``variant``'s training and held-out sets, the model ``label``
    (with the config fields ``overrides``) built with the recipe's weight seed, and its
    :class:`~edu_seg.train.TrainConfig` for ``steps`` steps (silent: the zoo prints its own
    progress)."""
    r = recipe
    common = dict(size=r["size"], num_classes=r["num_classes"], variant=variant)
    train = Shapes(r["train_samples"], seed=r["train_seed"], **common)
    val = Shapes(r["val_samples"], seed=r["val_seed"], **common)
    seed_everything(r["seed"])              # the same initial weights whatever ran before
    model = build_zoo_model(label, r["num_classes"], overrides)
    config = TrainConfig(steps=steps, batch_size=r["batch_size"], lr=r["lr"],
                         optimizer=r["optimizer"], schedule=r["schedule"], seed=r["seed"],
                         progress=False, verbose=False)
    return train, val, model, config


class StepTimes:
    """A Trainer ``on_step`` that keeps every step's seconds and passes the call on."""

    def __init__(self, on_step=None):
        self.seconds, self.on_step = [], on_step

    def __call__(self, trainer, info):
        self.seconds.append(info["seconds"])
        if self.on_step is not None:
            self.on_step(trainer, info)

    def median_ms(self):
        """The median step in milliseconds, formatted as the tables show it."""
        return f"{1e3 * statistics.median(self.seconds):.1f}"


def cpu_name():
    """The CPU's ``model name`` from ``/proc/cpuinfo`` (else what ``platform`` knows), with its
    widest vector instructions: "AMD EPYC (AVX-512)" (:func:`edu_seg._cpu.widest_vectors`)."""
    name = cpu_model_name() or platform.processor() or platform.machine() or "unknown"
    vectors = widest_vectors(cpu_flags())
    return f"{name} ({vectors})" if vectors else name


@no_grad()
def median_eval_seconds(model, images, repeats=5):
    """Median seconds of ``model(images)`` in eval mode without gradients.

    ``images``: (N, C, H, W). One warm-up call first (it allocates the kernels' workspaces),
    then the median of ``repeats`` timed calls; the model's mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    x = Tensor(images)
    model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    model.train(was_training)
    return statistics.median(times)


def inference_rate(model, images, repeats=5):
    """Images per second of ``model`` in eval mode on ``images`` (N, 3, H, W), batch N
    (:func:`median_eval_seconds`)."""
    return len(images) / median_eval_seconds(model, images, repeats)


def read_rows(path):
    """The rows of the CSV table at ``path`` (a list of dicts of str), or [] if there is none
    yet (a table grows row by row, so a missing file is an empty table)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path, columns, rows):
    """Write ``rows`` (dicts) to the CSV table at ``path`` under the header ``columns``: a
    column a row lacks is an empty cell, a key not in ``columns`` is left out. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
