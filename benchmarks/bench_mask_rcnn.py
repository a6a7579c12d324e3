"""Mask R-CNN on Shapes, RoIAlign against RoIPool: the same seed, data and recipe, one switch.

Both runs use the recipe ``edu-seg train --model mask_rcnn --data shapes`` runs by default
(1024 training images of 64x64, 10 epochs of batch 16 = 640 Adam steps at lr 1e-3 with the
poly schedule, seed 0) and are scored on the same 256 held-out images (the validation set of
that command). The only difference is ``roi_op``: the box head's 7x7 and the mask head's
14x14 RoI features are read by RoIAlign (``aligned=True``, 2x2 samples per bin) or by
RoIPool (Fast R-CNN's rounded boxes and bins). The table gives COCO-style AP for boxes and
masks, then mask AP at each IoU threshold: where in the 0.50..0.95 range the two differ.
"""
import time

import edu_seg  # first: sets OPENBLAS_CORETYPE before NumPy loads BLAS
import numpy as np

from common import md_table, set_threads
from edu_seg import models
from edu_seg.cli import make_data
from edu_seg.metrics import COCO_IOU_THRESHOLDS
from edu_seg.train import TrainConfig, Trainer, evaluate_instances, seed_everything

TITLE = "Mask R-CNN on Shapes: RoIAlign against RoIPool (same seed and recipe)"

THREADS = 2
NAMES = {"align": "RoIAlign", "pool": "RoIPool"}
RECIPE = dict(epochs=10, batch_size=16, lr=1e-3, optimizer="adam", schedule="poly", seed=0)


def train(roi_op):
    """Train with the default recipe; returns (model, seconds)."""
    train_set, val_set, _ = make_data("shapes")
    seed_everything(RECIPE["seed"])
    model = models.create("mask_rcnn", num_classes=len(train_set.class_names), roi_op=roi_op)
    trainer = Trainer(model, train_set, None, TrainConfig(progress=False, verbose=False,
                                                          **RECIPE))
    start = time.perf_counter()
    trainer.fit()
    return model, time.perf_counter() - start, val_set


def run():
    set_threads(THREADS)
    results = {}
    for roi_op in ("align", "pool"):
        model, seconds, val_set = train(roi_op)
        ap = evaluate_instances(model, val_set)
        results[roi_op] = (ap.summary(), ap.ap_by_threshold("mask"), seconds)
    rows = []
    for roi_op, (summary, _, seconds) in results.items():
        for task in ("mask", "box"):
            s = summary[task]
            rows.append([NAMES[roi_op], task] +
                        ["-" if s[k] < 0 else f"{s[k]:.3f}"       # -1: no object that size
                         for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")] +
                        [f"{seconds:.0f}"])
    text = md_table(["RoI op", "task", "AP", "AP50", "AP75", "APs", "APm", "APl", "train s"],
                    rows)
    header = ["mask AP at IoU"] + [f"{t:.2f}" for t in COCO_IOU_THRESHOLDS]
    rows = [[NAMES[op]] + [f"{v:.3f}" for v in per]
            for op, (_, per, _) in results.items()]
    diff = np.subtract(results["align"][1], results["pool"][1])
    rows.append(["align - pool"] + [f"{v:+.3f}" for v in diff])
    return (f"{THREADS} threads; {len(val_set)} held-out images of 64x64; object sizes "
            f"by the COCO ranges scaled to 64-pixel images (small < 10.2 px², medium < 92.2 "
            f"px²).\n\n" + text + "\n\n" + md_table(header, rows))
