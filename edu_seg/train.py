"""The training loop, evaluation and checkpoints.

One epoch is the loop every segmentation paper runs::

    for batch in loader:                      # images (N, 3, H, W), masks (N, H, W)
        scores = model(images)                # (N, C, H, W) class scores (logits)
        loss = cross_entropy(scores, masks)   # mean over pixels of -log softmax(scores)[mask]
        optimizer.zero_grad()
        loss.backward()                       # fills p.grad of every parameter
        optimizer.step()                      # p -= lr * (update rule)(p.grad)
        scheduler.step()                      # next learning rate

followed by an evaluation pass over the whole validation set, whose pixels are accumulated in
one confusion matrix (:class:`edu_seg.metrics.ConfusionMatrix`) to give the mIoU.

Reproducibility: everything random is a pure function of ``TrainConfig.seed``: weight
initialisation and dropout draw from the library's generator (seed it with
:func:`seed_everything` before building the model), and the shuffling and augmentation of epoch
``e`` are a pure function of ``(seed, e)`` (:class:`edu_seg.data.DataLoader`). A checkpoint
stores the model, the optimiser's and the scheduler's state, the generator's state and the
history, so a run that is stopped and resumed ends bit for bit where an uninterrupted run
ends.

Checkpoint format: ONE ``.npz`` file (a zip of ``.npy`` arrays): ``model/<name>`` holds each
entry of the model's state dict, ``optimizer/...`` the optimiser's arrays, and ``meta.json``
(stored as bytes) a JSON document with the model name and config and the training state.
One file can be replaced atomically (written to a temporary file, then ``os.replace``d), so a
crash while saving never leaves a half-written checkpoint; and it loads without pickle.
"""
import dataclasses
import json
import math
import os
import time
import zipfile
from pathlib import Path

import numpy as np

from . import models as _models
from .autograd import Tensor, no_grad
from .data import DataLoader
from .metrics import ConfusionMatrix
from .ops.loss import cross_entropy
from .ops.misc import default_generator, manual_seed
from .optim import SGD, Adam, AdamW, CosineLR, PolyLR

__all__ = ["TrainConfig", "Trainer", "seed_everything", "evaluate", "predict", "save_checkpoint",
           "load_checkpoint", "CheckpointError"]

CHECKPOINT_FORMAT = "edu_seg-checkpoint"
CHECKPOINT_VERSION = 1


def seed_everything(seed):
    """Seed the library's generator (weight initialisation, dropout). Call before building."""
    manual_seed(seed)


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of a training run.

    Attributes
    ----------
    epochs : int
    batch_size : int
    lr : float
        Peak learning rate.
    optimizer : {"adam", "adamw", "sgd"}
        Adam converges fastest on small CPU runs; SGD with momentum is the papers' choice.
    momentum : float
        For SGD.
    weight_decay : float
    schedule : {"poly", "cosine", "constant"}
        "poly" is DeepLab's ``lr * (1 - step / total) ** 0.9``.
    seed : int
        Seeds the data loader: shuffling and augmentation of epoch ``e`` depend on
        ``(seed, e)`` only.
    ignore_index : int
        Mask value that contributes to neither loss nor metrics.
    progress : bool
        Show a tqdm progress bar per epoch.
    """

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "poly"
    seed: int = 0
    ignore_index: int = -100
    progress: bool = True

    def __post_init__(self):
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"TrainConfig: optimizer must be 'adam', 'adamw' or 'sgd', "
                             f"got {self.optimizer!r}")
        if self.schedule not in ("poly", "cosine", "constant"):
            raise ValueError(f"TrainConfig: schedule must be 'poly', 'cosine' or 'constant', "
                             f"got {self.schedule!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig: {name} must be a positive int, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig: lr must be positive, got {self.lr!r}")


class Trainer:
    """Fits a segmentation model and evaluates it with dataset-wide mIoU.

    Parameters
    ----------
    model : SegmentationModel
        A model of :mod:`edu_seg.models` (its name and config go into checkpoints).
    train_data : dataset
        Items are dicts with ``image`` (3, H, W) float32 and ``mask`` (H, W) int.
    val_data : dataset, optional
        Evaluated after every epoch; the best epoch by mIoU is saved as ``best.npz``.
    config : TrainConfig
    out_dir : str or Path, optional
        Where checkpoints (``last.npz``, ``best.npz``) go, and where
        :func:`edu_seg.viz.training.plot_run` writes its plots (``curves.png``,
        ``predictions.png``, ``confusion.png``). Nothing is written without it.
    class_names : list of str, optional
        For tables and plots; default ``train_data.class_names`` if it has them.
    transform : callable, optional
        Joint image/mask augmentation for the training loader, ``transform(sample, rng)``.
    data_info : dict, optional
        JSON-able description of the data (e.g. ``{"spec": "shapes"}``), kept in checkpoints
        so ``edu-seg eval`` can rebuild the validation set.

    Attributes
    ----------
    history : list of dict
        One dict per finished epoch: ``epoch``, ``lr``, ``train_loss``, ``train_pixel_acc``,
        ``images_per_s``, ``seconds``, and with validation ``val_loss``, ``val_pixel_acc``,
        ``val_miou``.
    epoch : int
        Epochs finished so far.
    best_miou : float
        The best validation mIoU so far (``best.npz`` holds that epoch's model).
    val_scores : dict or None
        What :func:`evaluate` returned on the validation set after the latest epoch.

    Examples
    --------
    >>> from edu_seg import models
    >>> from edu_seg.data import Shapes
    >>> seed_everything(0)
    >>> model = models.create("unet", num_classes=4, depth=3, base_width=16)
    >>> trainer = Trainer(model, Shapes(512, seed=0), Shapes(128, seed=1),
    ...                   TrainConfig(epochs=5), out_dir="runs/demo")
    >>> trainer.fit()                                                       # doctest: +SKIP
    """

    def __init__(self, model, train_data, val_data=None, config=None, out_dir=None,
                 class_names=None, transform=None, data_info=None):
        self.model = model
        self.train_data = train_data
        self.val_data = val_data
        self.config = config if config is not None else TrainConfig()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.class_names = list(class_names if class_names is not None
                                else getattr(train_data, "class_names", None)
                                or [str(k) for k in range(model.config.num_classes)])
        self.data_info = data_info or {}
        self.history = []
        self.epoch = 0
        self.best_miou = -math.inf
        self.val_scores = None      # what evaluate() gave after the latest epoch

        c = self.config
        params = list(model.parameters())
        if c.optimizer == "sgd":
            self.optimizer = SGD(params, lr=c.lr, momentum=c.momentum,
                                 weight_decay=c.weight_decay)
        elif c.optimizer == "adam":
            self.optimizer = Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        else:
            self.optimizer = AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        # Shuffling and augmentation of epoch e are a pure function of (seed, e): a resumed
        # run only has to tell the loader which epoch comes next (set_epoch). drop_last: a
        # final batch of one image would give batch norm a meaningless variance.
        self.loader = DataLoader(train_data, batch_size=c.batch_size, shuffle=True, seed=c.seed,
                                 transform=transform, drop_last=True)
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise ValueError(f"Trainer: train_data has {len(train_data)} samples, fewer than "
                             f"one batch (batch_size={c.batch_size})")
        total = c.epochs * self.steps_per_epoch
        if c.schedule == "poly":
            self.scheduler = PolyLR(self.optimizer, total_steps=total, power=0.9)
        elif c.schedule == "cosine":
            self.scheduler = CosineLR(self.optimizer, total_steps=total)
        else:
            self.scheduler = None

    # ------------------------------------------------------------------------------ training
    def fit(self, epochs=None):
        """Train until ``config.epochs`` epochs are done (or ``epochs`` more), evaluating each.

        Returns
        -------
        list of dict
            :attr:`history`.
        """
        last = self.config.epochs if epochs is None else min(self.epoch + epochs,
                                                              self.config.epochs)
        while self.epoch < last:
            record = self.train_one_epoch()
            if self.val_data is not None:
                scores = self.val_scores = self.evaluate(self.val_data)
                record.update(val_loss=scores["loss"], val_pixel_acc=scores["pixel_acc"],
                              val_miou=scores["miou"])
            self.history.append(record)
            if self.out_dir is not None:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                if self.val_data is not None and record["val_miou"] > self.best_miou:
                    self.best_miou = record["val_miou"]
                    self.save(self.out_dir / "best.npz")
                self.save(self.out_dir / "last.npz")
        return self.history

    def train_one_epoch(self):
        """One pass over the training data; returns that epoch's history record."""
        from tqdm.auto import tqdm

        model, c = self.model, self.config
        model.train()
        self.loader.set_epoch(self.epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        loss_sum = correct = counted = seen = 0
        start = time.perf_counter()
        bar = tqdm(self.loader, desc=f"epoch {self.epoch + 1}/{c.epochs}", disable=not c.progress,
                   leave=True, dynamic_ncols=True)
        for batch in bar:
            images, masks = batch["image"], batch["mask"]
            scores = model(Tensor(images))                          # (N, C, OH, OW)
            masks = _crop_target(masks, scores.shape[-2:])          # (N, OH, OW)
            loss = cross_entropy(scores, masks, ignore_index=c.ignore_index)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()

            valid = masks != c.ignore_index
            loss_sum += loss.item() * len(images)
            correct += int(((scores.data.argmax(axis=1) == masks) & valid).sum())
            counted += int(valid.sum())
            seen += len(images)
            rate = seen / (time.perf_counter() - start)
            bar.set_postfix({"loss": f"{loss_sum / seen:.4f}",
                             "acc": f"{correct / max(counted, 1):.3f}", "img/s": f"{rate:.1f}"})
        bar.close()
        self.epoch += 1
        seconds = time.perf_counter() - start
        return {"epoch": self.epoch, "lr": lr, "train_loss": loss_sum / max(seen, 1),
                "train_pixel_acc": correct / max(counted, 1), "images_per_s": seen / seconds,
                "seconds": seconds}

    def evaluate(self, data):
        """:func:`evaluate` the trainer's model on ``data`` with its batch size and ignore_index."""
        return evaluate(self.model, data, self.config.batch_size, self.config.ignore_index)

    # -------------------------------------------------------------------------- checkpoints
    def state(self):
        """The training state (JSON-able, with arrays) that :meth:`resume` restores."""
        return {
            "epoch": self.epoch,
            "config": dataclasses.asdict(self.config),
            "history": self.history,
            "best_miou": None if self.best_miou == -math.inf else self.best_miou,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": default_generator().bit_generator.state,
            "class_names": self.class_names,
            "data": self.data_info,
        }

    def save(self, path):
        """Write a checkpoint of the model and the training state to ``path`` (atomically)."""
        save_checkpoint(path, self.model, self.state())

    def resume(self, path):
        """Load a checkpoint written by :meth:`save` and continue from where it stopped.

        The model must have the checkpoint's name and config (build it with
        ``load_checkpoint(path).model`` or the same ``create`` call) and the trainer the same
        ``TrainConfig``; a training run resumed this way reproduces an uninterrupted one bit
        for bit.
        """
        ckpt = load_checkpoint(path, self.model)
        state = ckpt.train_state
        if state is None:
            raise CheckpointError(f"{path}: holds a model but no training state to resume "
                                  f"(it was saved without one)")
        saved = {k: v for k, v in state["config"].items() if k != "progress"}
        current = {k: v for k, v in dataclasses.asdict(self.config).items() if k != "progress"}
        if saved != current:
            diff = {k: (saved.get(k), current.get(k)) for k in current
                    if saved.get(k) != current.get(k)}
            raise CheckpointError(f"{path}: was trained with a different TrainConfig; "
                                  f"(checkpoint, now) differ in {diff}")
        self.epoch = state["epoch"]
        self.history = state["history"]
        self.best_miou = -math.inf if state["best_miou"] is None else state["best_miou"]
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        default_generator().bit_generator.state = state["rng"]
        return self


# ----------------------------------------------------------------------- evaluation, predictions
@no_grad()
def evaluate(model, data, batch_size=16, ignore_index=-100):
    """Loss, pixel accuracy and mIoU over ALL pixels of ``data`` (one confusion matrix).

    The model runs in eval mode (batch norm uses its running statistics); its mode is
    restored afterwards.

    Parameters
    ----------
    model : SegmentationModel
    data : dataset
        Items with ``image`` (3, H, W) and ``mask`` (H, W).
    batch_size : int
    ignore_index : int
        Mask value that counts for neither the loss nor the metrics.

    Returns
    -------
    dict
        ``loss`` (mean cross-entropy per counted pixel), ``pixel_acc``, ``miou``, ``iou`` (per
        class, NaN for classes absent from both ground truth and prediction) and
        ``confusion`` (the :class:`~edu_seg.metrics.ConfusionMatrix`).
    """
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(model.config.num_classes, ignore_index=ignore_index)
    loss_sum = pixels = 0
    for batch in DataLoader(data, batch_size=batch_size, shuffle=False):
        scores = model(Tensor(batch["image"]))                   # (N, C, OH, OW)
        masks = _crop_target(batch["mask"], scores.shape[-2:])   # (N, OH, OW)
        n_valid = int((masks != ignore_index).sum())
        if n_valid:
            loss_sum += cross_entropy(scores, masks, ignore_index=ignore_index,
                                      reduction="sum").item()
            pixels += n_valid
        cm.update(scores.data.argmax(axis=1), masks)
    model.train(was_training)
    return {"loss": loss_sum / max(pixels, 1), "pixel_acc": cm.pixel_accuracy(),
            "miou": cm.miou(), "iou": cm.iou(), "confusion": cm}


@no_grad()
def predict(model, images, batch_size=16):
    """Class map for images of any size: pads them to a size the model accepts, then crops.

    Parameters
    ----------
    model : SegmentationModel
    images : array, shape (N, C, H, W) float32
    batch_size : int

    Returns
    -------
    array of int64, shape (N, H, W)

    Notes
    -----
    Padding is a mirror reflection (the U-Net paper's overlap-tile idea): the border pixels
    then see plausible context instead of a black frame. For a model whose output is smaller
    than its input (U-Net with "valid" convolutions) the input is padded so that the output
    covers the whole image.
    """
    images = np.asarray(images)
    N, _, H, W = images.shape
    in_h, in_w = model.input_size_for(H), model.input_size_for(W)
    out_h, out_w = model.output_size(in_h), model.output_size(in_w)
    top, left = (in_h - out_h) // 2, (in_w - out_w) // 2       # context the output lacks
    widths = ((0, 0), (0, 0), (top, in_h - H - top), (left, in_w - W - left))
    was_training = model.training
    model.eval()
    preds = []
    for i in range(0, N, batch_size):
        x = np.pad(images[i:i + batch_size], widths, mode="symmetric")
        scores = model(Tensor(np.ascontiguousarray(x, dtype=np.float32)))  # (n, C, oh, ow)
        preds.append(scores.data.argmax(axis=1)[:, :H, :W])
    model.train(was_training)
    return np.concatenate(preds).astype(np.int64)


def _crop_target(masks, size):
    """Centre-crop masks (N, H, W) to the score map's ``size`` (valid-mode models)."""
    H, W = masks.shape[-2:]
    h, w = size
    if (h, w) == (H, W):
        return masks
    top, left = (H - h) // 2, (W - w) // 2
    return np.ascontiguousarray(masks[..., top:top + h, left:left + w])


# ------------------------------------------------------------------------------ checkpoints
class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupted, or does not fit the model it is loaded into."""


@dataclasses.dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns.

    Attributes
    ----------
    model : SegmentationModel
        With the saved weights loaded.
    model_name : str
    model_config : dict
    train_state : dict or None
        The saved training state (epoch, history, optimiser, ...), with its arrays restored.
    """

    model: object
    model_name: str
    model_config: dict
    train_state: dict


def _split_arrays(tree, prefix, arrays):
    """Replace every ndarray in a nested dict/list by a reference; collect the arrays.

    JSON has no arrays, no tuples and only string keys, so those are tagged and restored
    exactly by :func:`_join_arrays`.
    """
    if isinstance(tree, np.ndarray):
        arrays[prefix] = tree
        return {"__array__": prefix}
    if isinstance(tree, np.generic):
        return tree.item()
    if isinstance(tree, dict):
        if all(isinstance(k, str) for k in tree):
            return {k: _split_arrays(v, f"{prefix}/{k}", arrays) for k, v in tree.items()}
        return {"__dict__": [[_split_arrays(k, f"{prefix}/key{i}", arrays),
                              _split_arrays(v, f"{prefix}/{i}", arrays)]
                             for i, (k, v) in enumerate(tree.items())]}
    if isinstance(tree, tuple):
        return {"__tuple__": [_split_arrays(v, f"{prefix}/{i}", arrays)
                              for i, v in enumerate(tree)]}
    if isinstance(tree, list):
        return [_split_arrays(v, f"{prefix}/{i}", arrays) for i, v in enumerate(tree)]
    if isinstance(tree, Tensor):
        return _split_arrays(tree.data, prefix, arrays)
    return tree


def _join_arrays(tree, arrays):
    """The inverse of :func:`_split_arrays`."""
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return arrays[tree["__array__"]]
        if set(tree) == {"__tuple__"}:
            return tuple(_join_arrays(v, arrays) for v in tree["__tuple__"])
        if set(tree) == {"__dict__"}:
            return {_join_arrays(k, arrays): _join_arrays(v, arrays) for k, v in tree["__dict__"]}
        return {k: _join_arrays(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join_arrays(v, arrays) for v in tree]
    return tree


def save_checkpoint(path, model, train_state=None):
    """Save ``model`` (and optionally the training state) to one ``.npz`` file, atomically.

    Parameters
    ----------
    path : str or Path
        Usually ``something.npz``.
    model : SegmentationModel
        Its ``name`` and ``config`` are saved so :func:`load_checkpoint` can rebuild it.
    train_state : dict, optional
        Anything JSON-able plus NumPy arrays (see :meth:`Trainer.state`).

    Notes
    -----
    The file is written next to ``path`` under a temporary name and moved over ``path`` with
    ``os.replace``, which is atomic: readers see the old checkpoint or the new one, never a
    torn file, even if the process dies mid-write.
    """
    path = Path(path)
    arrays = {f"model/{k}": np.asarray(v.data if isinstance(v, Tensor) else v)
              for k, v in model.state_dict().items()}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": {"name": model.name, "config": dataclasses.asdict(model.config)},
        "train": _split_arrays(train_state, "train", arrays),
    }
    arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_npz(path):
    """All arrays of the checkpoint and its parsed ``meta.json``; CheckpointError if damaged."""
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):      # an .npz is a zip archive; a truncated one is not
        raise CheckpointError(f"checkpoint {path} is corrupted or not an .npz file (no zip "
                              f"archive found: truncated or overwritten?)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}   # reading every member checks its CRC
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupted or not an .npz file "
                              f"({type(exc).__name__}: {exc})") from None
    if "meta.json" not in arrays:
        raise CheckpointError(f"checkpoint {path} has no meta.json entry: not an edu_seg "
                              f"checkpoint")
    try:
        meta = json.loads(arrays.pop("meta.json").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path}: meta.json is corrupted ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise CheckpointError(f"checkpoint {path} is not an edu_seg checkpoint (format "
                              f"{found!r})")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {meta.get('version')}; "
                              f"this edu_seg reads version {CHECKPOINT_VERSION}")
    return arrays, meta


def load_checkpoint(path, model=None):
    """Read a checkpoint written by :func:`save_checkpoint` and load its weights.

    Parameters
    ----------
    path : str or Path
    model : SegmentationModel, optional
        Load into this model (it must have the saved name and parameter shapes). Without it
        the model is rebuilt from the saved name and config through the registry.

    Returns
    -------
    Checkpoint

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    CheckpointError
        (a ``ValueError``) The file is truncated or corrupted, is not an edu_seg checkpoint,
        or holds a different model (name, or any parameter's shape; the message names it).
    """
    path = Path(path)
    arrays, meta = _read_npz(path)
    name, config = meta["model"]["name"], meta["model"]["config"]
    if model is None:
        model = _models.create(name, **config)
    elif model.name != name:
        raise CheckpointError(f"checkpoint {path} holds a {name!r} model, but the model to load "
                              f"it into is a {model.name!r}")
    state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: {tuple(state[k].shape)} in the checkpoint, {tuple(_shape(expected[k]))} "
             f"in the model" for k in expected if k in state
             and tuple(state[k].shape) != tuple(_shape(expected[k]))]
    if missing or unexpected or wrong:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) \
            + ([f"unexpected {', '.join(unexpected)}"] if unexpected else []) + wrong
        raise CheckpointError(
            f"checkpoint {path} does not fit this {model.name} (checkpoint config {config}, "
            f"model config {dataclasses.asdict(model.config)}): " + "; ".join(problems[:5])
            + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""))
    model.load_state_dict(state)
    train = _join_arrays(meta["train"], arrays)
    return Checkpoint(model=model, model_name=name, model_config=config, train_state=train)


def _shape(v):
    return v.shape if hasattr(v, "shape") else np.shape(v)
