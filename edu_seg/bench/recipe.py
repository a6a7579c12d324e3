"""The zoo's recipe and the tools its tables share: how a row's model is built, the CPU it ran
on, and how fast a model infers.

:mod:`edu_seg.bench.zoo` (semantic rows), :mod:`edu_seg.bench.zoo_instances` (instance rows)
and :mod:`edu_seg.bench.speed` (inference time against accuracy) all use these, so that every
table is built and timed one way.
"""
import platform
import statistics
import time

from .. import models
from ..autograd import Tensor, no_grad

__all__ = ["RECIPE", "split_preset", "build_zoo_model", "cpu_name", "median_eval_seconds",
           "inference_rate"]

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


def build_zoo_model(label, num_classes):
    """The model of a zoo row: ``MODEL`` at its registry default, or ``MODEL:PRESET``."""
    name, preset = split_preset(label)
    return models.create(name, preset=preset, num_classes=num_classes)


def cpu_name():
    """The CPU's ``model name`` from ``/proc/cpuinfo`` (else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass                                        # not Linux: fall back below
    return platform.processor() or platform.machine() or "unknown"


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
