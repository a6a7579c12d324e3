"""Backbone pretraining: a backbone learns to CLASSIFY Shapes scenes before it segments them.

The encoder of a segmentation network is "a pre-trained classification network": FCN, DeepLab
and PSPNet start from weights learned on ImageNet, where every image carries one cheap tag
instead of a class per pixel. Those weights cannot be downloaded here, so this module makes
the same situation from the synthetic data: a classification task on :class:`Shapes` scenes,
whose labels cost nothing to state ("this image shows a circle and a triangle"), learned by
a backbone of :func:`edu_seg.models.create_backbone` with a small head on top; the backbone's
weights are then saved and loaded into a segmentation model, which fine-tunes them on masks.
That makes "pretrained then fine-tuned" against "from scratch" a measurement one can run.

The task (``task=``)
    ``"presence"``: the target is the multi-hot vector of the foreground classes present, one
    0/1 entry per class 1 .. num_classes - 1 (the background is always there). An image may
    hold several classes, so each entry is its own yes/no question: a sigmoid per class and
    the binary cross-entropy, not a softmax, which would pick exactly one class.
    ``"count"``: the target is how many visible instances of each class the scene holds, a
    regression with the smooth-L1 loss, read back by rounding. It is harder: the network
    must find every instance, not one of each, which is closer to what segmentation needs.
    Both are scored per label (the fraction of (image, class) pairs answered exactly) and per
    image (exact match: every class right), next to the best constant answer (the majority
    value of each label), which a classifier must beat to have learned anything.

The data
    The pretraining scenes come from Shapes seeds ``DATA_SEED_OFFSET + 2 seed`` (training) and
    ``DATA_SEED_OFFSET + 2 seed + 1`` (validation), never the seeds ``edu-seg train`` reads
    (``2 seed`` and ``2 seed + 1``). So a backbone pretrained here has seen none of the scenes
    a segmentation run is validated on, and a fine-tuned model's score measures the
    pretraining, not a peek at the validation set.

The file
    :func:`save_backbone` writes the backbone's state dict in the checkpoint layout of
    :mod:`edu_seg.checkpoint` under the format tag ``edu_seg-backbone``, with the backbone's
    name, config and overrides and the pretraining history in ``meta.json``;
    :func:`load_pretrained_backbone` reads it with the checkpoint's checked reader (no pickle;
    the zip directory, ``meta.json`` and every array header are checked, and the shapes
    compared with the model's, before any array is read) into a model's ``backbone``.

>>> from edu_seg import models
>>> classifier, history = pretrain_backbone("resnet_tiny")                   # doctest: +SKIP
>>> save_backbone("resnet_tiny.npz", classifier, history)                   # doctest: +SKIP
>>> model = models.create("deeplabv3plus", num_classes=4, backbone="resnet_tiny")
>>> load_pretrained_backbone(model, "resnet_tiny.npz")["backbone"]          # doctest: +SKIP
'resnet_tiny'
"""
import dataclasses
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np

from . import nn
from .autograd import Tensor, no_grad
from .checkpoint import CheckedArchive, CheckpointError, write_state_file
from .data import DataLoader, Shapes
from .models.backbones import Backbone, backbone_presets, create_backbone
from .ops.loss import binary_cross_entropy_with_logits, smooth_l1_loss
from .ops.pool import adaptive_avg_pool2d
from .optim import Adam, PolyLR
from .train import NonFiniteLossError, seed_everything

__all__ = ["TASKS", "DATA_SEED_OFFSET", "BACKBONE_FORMAT", "BACKBONE_VERSION",
           "ShapesClassification", "BackboneClassifier", "pretrain_backbone",
           "evaluate_classifier", "majority_baseline", "save_backbone",
           "load_pretrained_backbone"]

#: The classification tasks (see the module docstring).
TASKS = ("presence", "count")
#: Added to the Shapes seeds of pretraining, so its scenes are never a segmentation run's.
DATA_SEED_OFFSET = 1_000_000
#: The format tag and version of a pretrained backbone's file.
BACKBONE_FORMAT = "edu_seg-backbone"
BACKBONE_VERSION = 1
_WHAT = "a pretrained backbone of edu-seg pretrain or save_backbone"


class ShapesClassification:
    """A classification view of a Shapes data set: each image with the classes it shows.

    Parameters
    ----------
    dataset : Shapes
        Or any data set whose items hold ``image`` and ``labels`` (the class of each visible
        instance) and that has ``class_names``.
    task : {"presence", "count"}
        See the module docstring.

    Attributes
    ----------
    class_names : list of str
        The K = num_classes - 1 foreground classes, in target order: ``target[c - 1]`` is
        about class ``c``.

    Notes
    -----
    ``view[i]`` is ``{"image": (3, H, W) float32, "target": (K,) float32}``: for
    ``"presence"`` 1.0 where the scene shows at least one instance of the class, else 0.0;
    for ``"count"`` the number of visible instances. An instance hidden entirely by later
    ones is no longer in ``labels`` (Shapes drops it), so the presence target is exactly the
    set of foreground classes of the mask.

    Examples
    --------
    >>> view = ShapesClassification(Shapes(8, num_classes=4, seed=0))
    >>> view[0]["target"].shape, view.class_names
    ((3,), ['circle', 'square', 'triangle'])
    """

    def __init__(self, dataset, task="presence"):
        if task not in TASKS:
            raise ValueError(f"ShapesClassification: task must be one of {TASKS}, got {task!r}")
        self.dataset, self.task = dataset, task
        self._num_classes = len(dataset.class_names)
        self.class_names = list(dataset.class_names[1:])

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        sample = self.dataset[index]
        counts = np.bincount(sample["labels"], minlength=self._num_classes)[1:]   # (K,)
        target = counts if self.task == "count" else counts > 0
        return {"image": sample["image"], "target": target.astype(np.float32)}


class BackboneClassifier(nn.Module):
    """A backbone, global average pooling of its deepest map, and one Linear layer.

    The classifier of torchvision's ResNet (``avgpool`` + ``fc``) over any backbone of
    :func:`edu_seg.models.create_backbone`. The head is deliberately thin: whatever the task
    needs must be learned by the backbone, which is the part that is kept.

    Parameters
    ----------
    backbone : str
        A name of :func:`edu_seg.models.available_backbones`. A full-size preset is built
        without its ImageNet classifier (``num_classes=None``), as the segmentation models
        build it, so the saved weights fit theirs.
    num_outputs : int
        K, one score per target entry.
    **overrides
        Config fields of the backbone (``widths=...``, ``in_channels=...``): those that
        shape parameters must match the segmentation model's backbone.

    Attributes
    ----------
    backbone : Backbone
    fc : Linear (stage_channels[-1] -> K)

    Shapes
    ------
    ``x: (N, in_channels, H, W) -> scores: (N, K)`` (logits for ``"presence"``, counts for
    ``"count"``).

    Examples
    --------
    >>> import numpy as np
    >>> classifier = BackboneClassifier("resnet_tiny", 3)
    >>> classifier(Tensor(np.zeros((2, 3, 32, 32), np.float32))).shape
    (2, 3)
    """

    def __init__(self, backbone, num_outputs, **overrides):
        super().__init__()
        drop_classifier = {"num_classes": None} if "num_classes" in backbone_presets(
            backbone) else {}
        self.backbone = create_backbone(backbone, **{**drop_classifier, **overrides})
        self.fc = nn.Linear(self.backbone.stage_channels[-1], num_outputs)

    def forward(self, x):
        deepest = self.backbone.stage_features(x)[-1]      # (N, C, H/s, W/s), s = 32 or less
        pooled = adaptive_avg_pool2d(deepest, 1).flatten(1)  # (N, C)
        return self.fc(pooled)                             # (N, K)


def _loss(task, scores, target):
    """The task's loss of scores (N, K) against target (N, K): a scalar Tensor."""
    if task == "count":
        return smooth_l1_loss(scores, target)
    return binary_cross_entropy_with_logits(scores, target)


def _answers(task, scores):
    """The classifier's answers (N, K) from its scores (N, K) array: what is scored."""
    if task == "count":
        return np.rint(np.maximum(scores, 0))
    return (scores > 0).astype(np.float32)       # a logit above 0: probability above 1/2


def _label_scores(answers, target):
    """Per-label accuracy and exact match of answers against target, both (N, K)."""
    right = answers == target
    return {"label_acc": float(right.mean()), "exact_match": float(right.all(axis=1).mean())}


def majority_baseline(targets):
    """The scores of the best constant answer: each label's most frequent value.

    Parameters
    ----------
    targets : (N, K) array
        The targets of a data set (non-negative whole numbers: 0/1 or counts).

    Returns
    -------
    dict
        ``label_acc`` and ``exact_match`` of answering every image with the majority value
        of each label, taken on ``targets`` themselves: no constant answer does better on
        them, so a classifier that does not beat it has learned nothing about the images.

    Examples
    --------
    >>> majority_baseline(np.array([[1, 0], [1, 1], [0, 0]]))
    {'label_acc': 0.6666666666666666, 'exact_match': 0.3333333333333333}
    """
    targets = np.asarray(targets)
    majority = np.array([np.bincount(column.astype(np.int64)).argmax() for column in targets.T])
    return _label_scores(np.broadcast_to(majority, targets.shape), targets)


@no_grad()
def evaluate_classifier(classifier, data, batch_size=64):
    """Loss, per-label accuracy and exact match of ``classifier`` on ``data``, in eval mode.

    Parameters
    ----------
    classifier : BackboneClassifier
    data : ShapesClassification
        Its ``task`` decides the loss and how scores are read.
    batch_size : int

    Returns
    -------
    dict
        ``loss`` (mean over images), ``label_acc`` (fraction of (image, class) pairs answered
        exactly) and ``exact_match`` (fraction of images with every class right).
    """
    was_training = classifier.training
    classifier.eval()
    loss_sum, answers, targets = 0.0, [], []
    for batch in DataLoader(data, batch_size=batch_size):
        target = np.stack(batch["target"])                        # (n, K)
        scores = classifier(Tensor(batch["image"]))               # (n, K)
        loss_sum += _loss(data.task, scores, target).item() * len(target)
        answers.append(_answers(data.task, scores.data))
        targets.append(target)
    classifier.train(was_training)
    return {"loss": loss_sum / len(data),
            **_label_scores(np.concatenate(answers), np.concatenate(targets))}


def _check_int(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"pretrain_backbone: {name} must be an int >= {low}, got {value!r}")


def _endless(loader):
    """The loader's batches epoch after epoch (each ``iter(loader)`` is the next epoch)."""
    while True:
        yield from loader


def pretrain_backbone(name, steps=3000, batch_size=16, lr=3e-3, seed=0, variant="default",
                      size=64, num_classes=4, task="presence", train_samples=None,
                      val_samples=256, val_every=250, overrides=None, verbose=False):
    """Train a :class:`BackboneClassifier` on a Shapes classification task.

    The recipe is the zoo's: Adam, the poly schedule (``lr (1 - step / steps) ** 0.9``),
    shuffled batches of ``batch_size``, no augmentation; only longer, because a small backbone
    learns to tell shapes apart from their pooled features only after several hundred steps,
    and because pretraining on scenes is cheap. By default every image of every step is a new
    scene: scenes cost nothing to make, while a thousand reused ones are memorised (the
    training loss falls towards 0 as the validation loss rises). Every random choice
    follows ``seed`` (weights through :func:`edu_seg.train.seed_everything`, batches through
    :class:`edu_seg.data.DataLoader`), so the same call gives the same weights bit for bit.

    Parameters
    ----------
    name : str
        The backbone, a name of :func:`edu_seg.models.available_backbones`.
    steps : int
        Optimiser steps.
    batch_size : int
    lr : float
        Peak learning rate.
    seed : int
        Seeds the weights, the batches and the data (see the module docstring).
    variant : str
        The Shapes variant (:data:`edu_seg.data.VARIANTS`).
    size : int
        Image height and width.
    num_classes : int
        Shapes classes including the background: K = num_classes - 1 targets.
    task : {"presence", "count"}
    train_samples : int, optional
        Training scenes, visited epoch after epoch in a new order; default ``steps *
        batch_size``, one pass over new scenes.
    val_samples : int
        Scenes of the held-out validation set.
    val_every : int
        Validate (and record, and print) after every ``val_every`` steps and after the last.
    overrides : dict, optional
        Config fields of the backbone (see :class:`BackboneClassifier`).
    verbose : bool
        Print one line per validation.

    Returns
    -------
    classifier : BackboneClassifier
        Trained, in training mode.
    history : dict
        JSON-able: ``backbone``, ``overrides``, ``recipe`` (every argument above and the
        Shapes seeds), ``class_names`` (the targets'), ``baseline`` (:func:`majority_baseline`
        on the validation set), ``seconds``, and ``records``, one dict per validation:
        ``step`` (steps done), ``lr`` (at the first step since the previous record),
        ``train_loss`` (mean over the steps since then), ``seconds`` (their training time),
        ``val_loss``, ``val_label_acc``, ``val_exact_match``.

    Raises
    ------
    ValueError
        An argument out of range (named), an unknown backbone or config field, or fewer
        training samples than one batch.
    """
    train_samples = steps * batch_size if train_samples is None else train_samples
    for key, value in (("steps", steps), ("batch_size", batch_size),
                       ("train_samples", train_samples), ("val_samples", val_samples),
                       ("val_every", val_every)):
        _check_int(key, value)
    _check_int("seed", seed, 0)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ValueError(f"pretrain_backbone: lr must be a positive number, got {lr!r}")
    if task not in TASKS:
        raise ValueError(f"pretrain_backbone: task must be one of {TASKS}, got {task!r}")
    if train_samples < batch_size:
        raise ValueError(f"pretrain_backbone: train_samples ({train_samples}) is fewer than "
                         f"one batch (batch_size {batch_size}); lower batch_size or use more "
                         f"samples")
    overrides = dict(overrides or {})
    seeds = (DATA_SEED_OFFSET + 2 * seed, DATA_SEED_OFFSET + 2 * seed + 1)
    common = dict(size=size, num_classes=num_classes, variant=variant)
    train = ShapesClassification(Shapes(train_samples, seed=seeds[0], **common), task)
    val = ShapesClassification(Shapes(val_samples, seed=seeds[1], **common), task)

    seed_everything(seed)
    classifier = BackboneClassifier(name, len(train.class_names), **overrides)
    optimizer = Adam(classifier.parameters(), lr=lr)
    scheduler = PolyLR(optimizer, total_steps=steps, power=0.9)
    # drop_last: a final batch of one image would give batch norm a meaningless variance
    batches = _endless(DataLoader(train, batch_size=batch_size, shuffle=True, seed=seed,
                                  drop_last=True))
    history = {
        "backbone": name, "overrides": overrides,
        "recipe": {"task": task, "steps": steps, "batch_size": batch_size, "lr": lr,
                   "optimizer": "adam", "schedule": "poly", "seed": seed, "variant": variant,
                   "size": size, "num_classes": num_classes, "train_samples": train_samples,
                   "val_samples": val_samples, "val_every": val_every,
                   "data_seeds": list(seeds)},
        "class_names": train.class_names,
        "baseline": majority_baseline(np.stack([val[i]["target"] for i in range(len(val))])),
        "records": [],
    }
    step, begin = 0, time.perf_counter()
    while step < steps:
        classifier.train()
        n_steps = min(val_every, steps - step)
        lr_now, loss_sum, start = optimizer.param_groups[0]["lr"], 0.0, time.perf_counter()
        for batch in itertools.islice(batches, n_steps):
            scores = classifier(Tensor(batch["image"]))                   # (N, K)
            loss = _loss(task, scores, np.stack(batch["target"]))
            value = loss.item()
            if not math.isfinite(value):          # before backward: the weights stay usable
                raise NonFiniteLossError(f"pretrain_backbone: the loss is {value} at step "
                                         f"{step + 1}; lower lr (now {lr_now:g})")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += value
            step += 1
        record = {"step": step, "lr": lr_now, "train_loss": loss_sum / n_steps,
                  "seconds": time.perf_counter() - start}
        record.update({f"val_{k}": v for k, v in evaluate_classifier(classifier, val).items()})
        history["records"].append(record)
        if verbose:
            print(f"step {step}/{steps}  loss {record['train_loss']:.4f}  val loss "
                  f"{record['val_loss']:.4f}  val label acc {record['val_label_acc']:.3f}  "
                  f"val exact match {record['val_exact_match']:.3f}  lr {lr_now:.1e}  "
                  f"{record['seconds']:.0f} s", flush=True)
    history["seconds"] = time.perf_counter() - begin
    return classifier, history


# ------------------------------------------------------------------------------------- files
def _backbone_of(model, op):
    """``model`` if it is a Backbone, else its ``backbone`` attribute; a clear error if none."""
    if isinstance(model, Backbone):
        return model
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, Backbone):
        what = getattr(model, "name", None) or type(model).__name__
        raise ValueError(f"{op}: {what} has no backbone attribute (a Backbone of "
                         f"edu_seg.models.create_backbone) to hold pretrained weights; only "
                         f"models that build their encoder with create_backbone and keep it as "
                         f"model.backbone (deeplabv3plus, pspnet, fcn8s, ...) can take one")
    return backbone


def _overrides(backbone):
    """The config fields in which ``backbone`` differs from its preset: ``{field: value}``."""
    preset = dataclasses.asdict(type(backbone.config)(**backbone_presets(backbone.name)))
    return {k: v for k, v in dataclasses.asdict(backbone.config).items() if v != preset[k]}


def _as_flags(overrides):
    """``{"widths": (16, 32)}`` -> ``"widths=[16,32]"``: the ``--backbone-config`` spelling."""
    if not isinstance(overrides, dict):
        return "unknown settings"
    return " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}"
                    for k, v in overrides.items()) or "the preset's settings"


def save_backbone(path, model, history=None):
    """Save the weights of a backbone to one ``.npz`` file, atomically, to pretrain a model.

    Parameters
    ----------
    path : str or Path
        Usually ``NAME.npz``.
    model : BackboneClassifier, Backbone, or a model with a ``backbone`` (e.g. a trained
        segmentation model, whose encoder is then passed on)
        Only the backbone is saved: a classifier's head is specific to its task.
    history : dict, optional
        JSON-able, e.g. the history of :func:`pretrain_backbone`; kept in the file and
        returned by :func:`load_pretrained_backbone`.

    Notes
    -----
    ``meta.json`` holds the format tag :data:`BACKBONE_FORMAT`, the backbone's registry name
    and full config, ``overrides`` (the config fields that differ from the preset: what was
    passed to ``create_backbone``), and ``history``.
    """
    backbone = _backbone_of(model, "save_backbone")
    if backbone.name is None:
        raise ValueError("save_backbone: the backbone has no registry name; build it with "
                         "edu_seg.models.create_backbone(name, ...) so a loader can check it")
    write_state_file(path, backbone, history, BACKBONE_FORMAT, BACKBONE_VERSION,
                     overrides=_overrides(backbone))


def load_pretrained_backbone(model, path):
    """Load the weights of :func:`save_backbone` into ``model.backbone``, in place.

    Parameters
    ----------
    model : SegmentationModel (or Backbone)
        A model whose ``backbone`` is a :class:`~edu_seg.models.backbones.Backbone` (most
        encoder-decoder models: ``models.create("deeplabv3plus", num_classes=4,
        backbone="resnet_tiny")``). The rest of the model is untouched.
    path : str or Path

    Returns
    -------
    dict
        ``backbone`` (the name), ``overrides`` and ``history`` (what :func:`save_backbone`
        was given).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        The model has no backbone.
    CheckpointError
        (a ``ValueError``) The file is truncated, corrupted or crafted, is not a pretrained
        backbone, holds another backbone (both names are given), or one whose parameters
        have other names or shapes (both settings and the first misfits are given). Settings
        that shape no parameter, such as ``output_stride`` or dilation, may differ: the same
        weights then run dilated. Nothing is loaded then, and nothing large is read before
        the file has been checked.
    """
    backbone = _backbone_of(model, "load_pretrained_backbone")
    owner = getattr(model, "name", None) or type(model).__name__
    path = Path(path)
    archive = CheckedArchive(path, BACKBONE_FORMAT, BACKBONE_VERSION, what=_WHAT)
    try:
        meta = archive.meta
        name = meta["model"]["name"]
        if name != backbone.name:
            raise CheckpointError(f"{path} holds a pretrained {name!r} backbone, but the "
                                  f"backbone of {owner} is {backbone.name!r}: pretrain that one "
                                  f"(edu-seg pretrain --backbone {backbone.name}) or build the "
                                  f"model with backbone={name!r} (edu-seg train --model-config "
                                  f"backbone={name})")
        misfit = archive.misfit(backbone)
        if misfit:
            raise CheckpointError(
                f"{path} holds a {name} backbone built with {_as_flags(meta.get('overrides'))}, "
                f"and the backbone of {owner} is built with {_as_flags(_overrides(backbone))}; "
                f"their parameters differ: {misfit}. Pretrain it with the settings that shape "
                f"the parameters (in_channels, widths, ...: edu-seg pretrain --backbone-config "
                f"KEY=VALUE); output_stride and dilation may differ")
        archive.load_into(backbone)
        history = archive.train_state()
    finally:
        archive.close()
    return {"backbone": name, "overrides": meta.get("overrides"), "history": history}
