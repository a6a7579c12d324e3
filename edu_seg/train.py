"""The training loop, evaluation and checkpoints.

One step is the same two calls for every model, because each model owns its loss
(:mod:`edu_seg.models.base`)::

    for batch in loader:                                # image (N, 3, H, W), mask (N, H, W)
        outputs = model.forward_train(batch)            # scores, or {"out": scores, "aux": ...}
        total, terms = model.loss(outputs, batch)       # total: scalar; terms: {"ce": ..., ...}
        optimizer.zero_grad()
        total.backward()                                # fills p.grad of every parameter
        optimizer.step()                                # p -= lr * (update rule)(p.grad)
        scheduler.step()                                # next learning rate

The Trainer never looks inside ``outputs`` except to score the main class map for the running
pixel accuracy; it logs every named term of the loss. Each epoch ends with an evaluation pass
over the whole validation set: a semantic model's pixels are accumulated in one confusion
matrix (:class:`edu_seg.metrics.ConfusionMatrix`) to give the mIoU; an instance model's
detections are matched to the objects for COCO-style box and mask AP
(:class:`edu_seg.metrics.InstanceAP`).

Reproducibility: everything random is a pure function of ``TrainConfig.seed``: weight
initialisation and dropout draw from the library's generator (seed it with
:func:`seed_everything` before building the model), and the shuffling and augmentation of epoch
``e`` are a pure function of ``(seed, e)`` (:class:`edu_seg.data.DataLoader`). A checkpoint
stores the model, the optimiser's and the scheduler's state, the generator's state and the
history, so a run that is stopped and resumed ends bit for bit where an uninterrupted run
ends.

Checkpoints (:mod:`edu_seg.checkpoint`, re-exported here): ONE ``.npz`` file with the model's
state dict, the training state and a JSON document describing them, saved atomically and
read without pickle, every part checked before anything large is allocated.
"""
import dataclasses
import itertools
import json
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .backend import to_device, to_host
from .autograd import Tensor, no_grad
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_atomically
from .data import DataLoader
from .metrics import BoundaryConfusion, ConfusionMatrix, InstanceAP
from .models.base import crop_target
from .ops.loss import cross_entropy
from .ops.misc import default_generator, manual_seed
from .optim import SGD, Adam, AdamW, CosineLR, PolyLR

__all__ = ["TrainConfig", "Trainer", "seed_everything", "evaluate", "evaluate_instances",
           "predict", "detect",
           "predict_probabilities", "save_checkpoint",
           "load_checkpoint", "CheckpointError", "NonFiniteLossError"]

#: TrainConfig fields that change what is shown, not what is computed: a run may be resumed
#: with other values.
PRESENTATION_FIELDS = ("progress", "verbose")


def seed_everything(seed):
    """Seed the library's generator (weight initialisation, dropout). Call before building."""
    manual_seed(seed)


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of a training run.

    Attributes
    ----------
    epochs : int
        Passes over the training data (ignored when ``steps`` is set).
    steps : int, optional
        A step budget: exactly this many optimiser steps (batches) instead of ``epochs``
        epochs. With ``steps_per_epoch = len(train_data) // batch_size`` the run lasts
        ``ceil(steps / steps_per_epoch)`` epochs in the loader's usual order, and the last
        epoch stops once the budget is spent (e.g. 300 steps of 64 per epoch: 4 full epochs
        and 44 steps of a fifth). The learning-rate schedule decays over exactly ``steps``.
        Comparing models at one budget is fairer than at one epoch count when they are
        trained on data sets of different sizes.
    batch_size : int
    lr : float
        Peak learning rate.
    optimizer : {"adam", "adamw", "sgd"}
        Adam converges fastest on small CPU runs; SGD with momentum is the papers' choice.
    momentum : float
        For SGD.
    weight_decay : float
    schedule : {"poly", "cosine", "constant"}
        "poly" is DeepLab's ``lr * (1 - step / total) ** 0.9`` with ``total`` the run's real
        number of steps.
    seed : int
        Seeds the data loader: shuffling and augmentation of epoch ``e`` depend on
        ``(seed, e)`` only.
    ignore_index : int
        Mask value that contributes to neither loss nor metrics.
    progress : bool
        Show a tqdm progress bar per epoch.
    verbose : bool
        Print one line per finished epoch (losses, validation loss and mIoU, lr, time), also
        when ``progress`` is off: the bar is for watching, the line is the record a learner
        scrolls back to. ``False`` for silent runs (the model zoo shows its own progress).
    """

    epochs: int = 10
    steps: Optional[int] = None
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "poly"
    seed: int = 0
    ignore_index: int = -100
    progress: bool = True
    verbose: bool = True

    def __post_init__(self):
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"TrainConfig: optimizer must be 'adam', 'adamw' or 'sgd', "
                             f"got {self.optimizer!r}")
        if self.schedule not in ("poly", "cosine", "constant"):
            raise ValueError(f"TrainConfig: schedule must be 'poly', 'cosine' or 'constant', "
                             f"got {self.schedule!r}")
        for name in ("epochs", "batch_size", "steps"):
            value = getattr(self, name)
            if name == "steps" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig: {name} must be a positive int"
                                 + (" or None" if name == "steps" else "") + f", got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig: lr must be positive, got {self.lr!r}")


class Trainer:
    """Fits a segmentation model and evaluates it with dataset-wide mIoU.

    Parameters
    ----------
    model : SegmentationModel
        A model of :mod:`edu_seg.models` (its name and config go into checkpoints). Semantic
        and instance models (``model.task``) train through the same loop.
    train_data : dataset
        Items are dicts with ``image`` (3, H, W) float32 and ``mask`` (H, W) int (plus what
        the model's ``forward_train`` reads, e.g. boxes for an instance model).
    val_data : dataset, optional
        Evaluated after every epoch; the best epoch by :attr:`score_key` (mIoU, or mask AP
        for an instance model) is saved as ``best.npz``.
    config : TrainConfig
    out_dir : str or Path, optional
        Where ``last.npz``, ``best.npz`` and ``history.json`` go, rewritten after every
        epoch. Nothing is written without it.
    class_names : list of str, optional
        For tables and plots; default ``train_data.class_names`` if it has them.
    transform : callable, optional
        Joint image/mask augmentation for the training loader, ``transform(sample, rng)``.
    data_info : dict, optional
        JSON-able description of the data (e.g. ``{"spec": "shapes"}``), kept in checkpoints
        so ``edu-seg eval`` can rebuild the validation set.
    on_epoch_end : callable, optional
        ``on_epoch_end(trainer)``, called after every epoch once its record, checkpoints and
        ``history.json`` are written. This is how a caller adds per-epoch work the training
        layer cannot import, e.g. ``edu_seg.viz.training.plot_run`` (what ``edu-seg train``
        passes, so the curves on disk are never more than one epoch old).
    on_step : callable, optional
        ``on_step(trainer, info)``, called after every optimiser step with ``info = {"step":
        steps done in the run, "epoch": the 0-based epoch it belongs to, "loss": the total
        loss of the batch, "terms": its unweighted terms as floats (``{"ce": ..., "aux":
        ...}``, what ``model.loss`` returns), "seconds": wall time of forward, loss, backward
        and update}``
        (data loading excluded). For progress over a whole run and step timings.

    Attributes
    ----------
    history : list of dict
        One dict per finished epoch: ``epoch``, ``step`` (steps done at its end), ``lr`` (at
        its first step), ``train_loss`` (the total that was backpropagated) and
        ``train_<name>`` for every term ``name`` of ``model.loss`` (``train_ce``,
        ``train_aux``, ...), all means over the epoch's images; ``train_pixel_acc`` (semantic
        models), ``images_per_s``, ``seconds`` (the training pass); with validation
        ``val_loss`` (cross-entropy of the main scores), ``val_pixel_acc``, ``val_miou`` for a
        semantic model, ``val_box_ap``, ``val_box_ap50``, ``val_box_ap75``, ``val_mask_ap``,
        ``val_mask_ap50``, ``val_mask_ap75`` for an instance model.
    epoch : int
        Epochs finished so far.
    step : int
        Optimiser steps done so far.
    steps_per_epoch, total_steps, total_epochs : int
        Batches in one full epoch; steps and epochs of the whole run (see
        ``TrainConfig.steps``).
    score_key : str
        The history key that picks the best epoch: ``"val_miou"``, or ``"val_mask_ap"`` for
        an instance model.
    best_score : float
        Its best value so far (``best.npz`` holds that epoch's model).
    val_scores : dict or InstanceAP or None
        What :meth:`evaluate` returned on the validation set after the latest epoch.
    last_checkpoint : Path or None
        The newest checkpoint a resume can start from (``out_dir/last.npz``, or the file
        :meth:`resume` read), and ``last_checkpoint_epoch`` the epoch it holds: what to tell
        a user who stopped the run with Ctrl-C.

    Examples
    --------
    >>> from edu_seg import models
    >>> from edu_seg.data import Shapes
    >>> seed_everything(0)
    >>> model = models.create("unet", num_classes=4)
    >>> trainer = Trainer(model, Shapes(512, seed=0), Shapes(128, seed=1),
    ...                   TrainConfig(epochs=5), out_dir="runs/demo")
    >>> trainer.fit()                                                       # doctest: +SKIP
    epoch 1/5  loss 0.8123  acc 0.712  val loss 0.5012  val mIoU 0.5521  lr 1.0e-03  9 s
    ...
    """

    def __init__(self, model, train_data, val_data=None, config=None, out_dir=None,
                 class_names=None, transform=None, data_info=None, on_epoch_end=None,
                 on_step=None):
        if model.device == "cuda" and model.task != "semantic":
            raise ValueError(f"Trainer: {model.name} is an {model.task} model; those train on "
                             f"the CPU only (their box matching and sampling are NumPy code): "
                             f"keep it there with model.to('cpu')")
        self.model = model
        self.train_data = train_data
        self.val_data = val_data
        self.config = config if config is not None else TrainConfig()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.class_names = list(class_names if class_names is not None
                                else getattr(train_data, "class_names", None)
                                or [str(k) for k in range(model.config.num_classes)])
        self.data_info = data_info or {}
        self.on_epoch_end = on_epoch_end
        self.on_step = on_step
        self.history = []
        self.epoch = 0
        self.step = 0
        self.score_key = "val_miou" if model.task == "semantic" else "val_mask_ap"
        self.best_score = -math.inf
        self.val_scores = None      # what evaluate() gave after the latest epoch
        self.last_checkpoint = None
        self.last_checkpoint_epoch = 0

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
        if c.steps is None:
            self.total_steps = c.epochs * self.steps_per_epoch
        else:
            self.total_steps = c.steps
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        if c.schedule == "poly":
            self.scheduler = PolyLR(self.optimizer, total_steps=self.total_steps, power=0.9)
        elif c.schedule == "cosine":
            self.scheduler = CosineLR(self.optimizer, total_steps=self.total_steps)
        else:
            self.scheduler = None

    # ------------------------------------------------------------------------------ training
    def fit(self, epochs=None):
        """Train until the run's last epoch (or ``epochs`` more), evaluating after each.

        After every epoch, in this order: validation (if there is ``val_data``), the history
        record, ``best.npz``/``last.npz``/``history.json`` in ``out_dir``, the epoch's line
        (if ``config.verbose``), then ``on_epoch_end``.

        Returns
        -------
        list of dict
            :attr:`history`.

        Raises
        ------
        KeyboardInterrupt
            Ctrl-C is passed on (the progress bar is closed first). The files on disk stay
            consistent, because every save is atomic: :attr:`last_checkpoint` holds the last
            finished epoch, and :meth:`resume` continues from it exactly.
        """
        last = self.total_epochs if epochs is None else min(self.epoch + epochs,
                                                             self.total_epochs)
        validate = self.val_data is not None
        while self.epoch < last:
            record = self.train_one_epoch()
            if validate:
                self.val_scores = self.evaluate(self.val_data)
                record.update(self.validation_record(self.val_scores))
            self.history.append(record)
            if self.out_dir is not None:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                if validate and record[self.score_key] > self.best_score:
                    self.best_score = record[self.score_key]
                    self.save(self.out_dir / "best.npz")
                self.save(self.out_dir / "last.npz")
                self.last_checkpoint = self.out_dir / "last.npz"
                self.last_checkpoint_epoch = self.epoch
                self.write_history(self.out_dir / "history.json")
            if self.config.verbose:
                print(self.epoch_line(record), flush=True)
            if self.on_epoch_end is not None:
                self.on_epoch_end(self)
        return self.history

    def _non_finite_message(self, loss, index, batch):
        """What to tell the user when a batch's loss is NaN or infinite, and what to check."""
        images = np.asarray(to_host(batch["image"]))
        bad = int((~np.isfinite(images)).sum())
        where = (f"step {self.step + 1} (epoch {self.epoch + 1}, batch {index + 1} of the "
                 f"epoch)")
        if bad:
            cause = (f"{bad} of its {images.size} input values are NaN or infinite: check the "
                     f"data (images must be finite numbers)")
        else:
            cause = (f"its inputs are finite (values {images.min():.3g} .. {images.max():.3g}), "
                     f"so the model diverged: lower the learning rate (now "
                     f"{self.optimizer.param_groups[0]['lr']:g}) or check the input scaling")
        return (f"training stopped at {where}: the loss is {loss}; {cause}. The parameters "
                f"were not updated with this batch (batch-norm running statistics may hold its "
                f"values: resume from the last checkpoint).")

    def train_one_epoch(self):
        """One pass over the training data (shorter if the step budget ends in it).

        Returns
        -------
        dict
            That epoch's history record (see :attr:`history`), without validation scores.
        """
        from tqdm.auto import tqdm

        model, c = self.model, self.config
        semantic = model.task == "semantic"
        model.train()
        self.loader.set_epoch(self.epoch)
        n_steps = min(self.steps_per_epoch, self.total_steps - self.step)
        lr = self.optimizer.param_groups[0]["lr"]
        sums = {}                      # "loss" and each term name -> sum over images
        correct = counted = seen = 0
        start = time.perf_counter()
        bar = tqdm(total=n_steps, desc=f"epoch {self.epoch + 1}/{self.total_epochs}",
                   disable=not c.progress, leave=True, dynamic_ncols=True)
        try:
            for index, batch in enumerate(itertools.islice(self.loader, n_steps)):
                begin = time.perf_counter()
                batch = batch_to_device(batch, model.device)
                outputs = model.forward_train(batch)
                total, terms = model.loss(outputs, batch, ignore_index=c.ignore_index)
                loss = total.item()
                if not math.isfinite(loss):     # before backward: the weights stay usable
                    raise NonFiniteLossError(self._non_finite_message(loss, index, batch))
                self.optimizer.zero_grad()
                total.backward()
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                self.step += 1
                seconds = time.perf_counter() - begin

                n = len(batch["image"])
                seen += n
                sums["loss"] = sums.get("loss", 0.0) + loss * n
                term_values = {}
                for name, term in terms.items():
                    if name in ("loss", "pixel_acc"):
                        raise ValueError(f"{model.name}.loss: a loss term may not be named "
                                         f"{name!r} (history key train_{name} is the "
                                         f"Trainer's own); rename it")
                    term_values[name] = term.item()
                    sums[name] = sums.get(name, 0.0) + term_values[name] * n
                postfix = {"loss": f"{sums['loss'] / seen:.4f}"}
                if semantic:
                    scores = outputs["out"] if isinstance(outputs, dict) else outputs
                    masks = crop_target(batch["mask"], scores.shape[-2:])   # (N, OH, OW)
                    valid = masks != c.ignore_index
                    correct += int(((scores.data.argmax(axis=1) == masks) & valid).sum())
                    counted += int(valid.sum())
                    postfix["acc"] = f"{correct / max(counted, 1):.3f}"
                postfix["img/s"] = f"{seen / (time.perf_counter() - start):.1f}"
                bar.update(1)
                bar.set_postfix(postfix)
                if self.on_step is not None:
                    self.on_step(self, {"step": self.step, "epoch": self.epoch, "loss": loss,
                                        "terms": term_values, "seconds": seconds})
        finally:
            bar.close()        # also on Ctrl-C, so the terminal is left on a clean line
        self.epoch += 1
        seconds = time.perf_counter() - start
        record = {"epoch": self.epoch, "step": self.step, "lr": lr}
        record.update({f"train_{name}": s / max(seen, 1) for name, s in sums.items()})
        if semantic:
            record["train_pixel_acc"] = correct / max(counted, 1)
        record.update(images_per_s=seen / seconds, seconds=seconds)
        return record

    def epoch_line(self, record):
        """The one-line summary of a history record that :meth:`fit` prints.

        E.g. ``epoch 3/5  loss 0.2345 (ce 0.2100, aux 0.0612)  acc 0.934  val loss 0.2012
        val mIoU 0.8876  lr 1.8e-03  12 s``; the terms are listed when there are several.
        """
        terms = {k[len("train_"):]: v for k, v in record.items()
                 if k.startswith("train_") and k not in ("train_loss", "train_pixel_acc")}
        line = f"epoch {record['epoch']}/{self.total_epochs}  loss {record['train_loss']:.4f}"
        if len(terms) > 1:
            line += " (" + ", ".join(f"{k} {v:.4f}" for k, v in terms.items()) + ")"
        if "train_pixel_acc" in record:
            line += f"  acc {record['train_pixel_acc']:.3f}"
        if "val_miou" in record:
            line += f"  val loss {record['val_loss']:.4f}  val mIoU {record['val_miou']:.4f}"
        if "val_mask_ap" in record:
            line += (f"  val box AP {record['val_box_ap']:.3f}  val mask AP "
                     f"{record['val_mask_ap']:.3f} (AP50 {record['val_mask_ap50']:.3f})")
        return line + f"  lr {record['lr']:.1e}  {record['seconds']:.0f} s"

    def evaluate(self, data):
        """:func:`evaluate` (or :func:`evaluate_instances` for an instance model) the
        trainer's model on ``data`` with its batch size."""
        if self.model.task == "instance":
            return evaluate_instances(self.model, data, self.config.batch_size)
        return evaluate(self.model, data, self.config.batch_size, self.config.ignore_index)

    def validation_record(self, scores):
        """The history entries of one validation pass (see :attr:`history`)."""
        if self.model.task == "instance":
            summary = scores.summary()
            return {f"val_{task}_{name.lower()}": summary[task][name]
                    for task in ("box", "mask") for name in ("AP", "AP50", "AP75")}
        return {"val_loss": scores["loss"], "val_pixel_acc": scores["pixel_acc"],
                "val_miou": scores["miou"]}

    # -------------------------------------------------------------------------- checkpoints
    def state(self):
        """The training state (JSON-able, with arrays) that :meth:`resume` restores."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "config": dataclasses.asdict(self.config),
            "history": self.history,
            "best_score": None if self.best_score == -math.inf else self.best_score,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": default_generator().bit_generator.state,
            "class_names": self.class_names,
            "data": self.data_info,
        }

    def save(self, path):
        """Write a checkpoint of the model and the training state to ``path`` (atomically)."""
        save_checkpoint(path, self.model, self.state())

    def write_history(self, path):
        """Write :attr:`history` with the model and the recipe as JSON to ``path`` (atomically).

        The document is ``{"model": name, "model_config": {...}, "train_config": {...},
        "data": {...}, "class_names": [...], "total_epochs": int, "history": [...]}``: what
        ``edu-seg compare`` reads, without loading a checkpoint.
        """
        doc = {"model": self.model.name, "model_config": dataclasses.asdict(self.model.config),
               "train_config": dataclasses.asdict(self.config), "data": self.data_info,
               "class_names": self.class_names, "total_epochs": self.total_epochs,
               "history": self.history}
        write_atomically(path, lambda f: f.write(json.dumps(doc, indent=1).encode()))

    def resume(self, path):
        """Load a checkpoint written by :meth:`save` and continue from where it stopped.

        The model must have the checkpoint's name and config (build it with
        ``load_checkpoint(path).model`` or the same ``create`` call) and the trainer the same
        ``TrainConfig`` (up to ``progress`` and ``verbose``); a training run resumed this way
        reproduces an uninterrupted one bit for bit.
        """
        ckpt = load_checkpoint(path, self.model)
        state = ckpt.train_state
        if state is None:
            raise CheckpointError(f"{path}: holds a model but no training state to resume "
                                  f"(it was saved without one)")
        kinds = {"config": dict, "epoch": int, "history": list, "optimizer": dict, "rng": dict}
        bad = list(kinds) if not isinstance(state, dict) else [
            k for k, kind in kinds.items()
            if not isinstance(state.get(k), kind) or isinstance(state.get(k), bool)]
        if bad:
            raise CheckpointError(f"{path}: its training state lacks or mistypes "
                                  f"{', '.join(bad) or 'everything'}: damaged, or not written "
                                  f"by Trainer.save")
        saved = state["config"]
        current = {k: v for k, v in dataclasses.asdict(self.config).items()
                   if k not in PRESENTATION_FIELDS}
        # .get: a checkpoint older than a field (the step budget) reads it as None, its default
        diff = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
        if diff:
            raise CheckpointError(f"{path}: was trained with a different TrainConfig; "
                                  f"(checkpoint, now) differ in {diff}")
        self.epoch = state["epoch"]
        # checkpoints from before the step budget ran whole epochs only
        self.step = state.get("step", self.epoch * self.steps_per_epoch)
        self.history = state["history"]
        # checkpoints written before instance models had their best mIoU under this name
        best = state.get("best_score", state.get("best_miou"))
        self.best_score = -math.inf if best is None else best
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            default_generator().bit_generator.state = state["rng"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path}: its optimiser, scheduler or generator state is "
                                  f"damaged ({type(exc).__name__}: {exc}); start the run "
                                  f"again") from None
        self.last_checkpoint, self.last_checkpoint_epoch = Path(path), self.epoch
        return self


# ----------------------------------------------------------------------- evaluation, predictions
@no_grad()
def batch_to_device(batch, device):
    """The batch with its arrays (image, mask, ...) on ``device``, the model's: a no-op on the
    CPU. Lists (an instance batch's per-image boxes) stay where they are."""
    if device == "cpu":
        return batch
    return {k: to_device(v, device) if isinstance(v, np.ndarray) else v for k, v in batch.items()}


def evaluate(model, data, batch_size=16, ignore_index=-100, boundary_band=None):
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
    boundary_band : int, optional
        Also score, in the same pass, only the pixels within this many pixels of a true edge
        (:class:`~edu_seg.metrics.BoundaryConfusion`): how well the boundaries are placed.

    Returns
    -------
    dict
        ``loss`` (mean cross-entropy per counted pixel), ``pixel_acc``, ``miou``, ``iou`` (per
        class, NaN for classes absent from both ground truth and prediction) and
        ``confusion`` (the :class:`~edu_seg.metrics.ConfusionMatrix`); with
        ``boundary_band``, also ``boundary_miou``, the mIoU over the band's pixels.
    """
    if model.task != "semantic":
        raise ValueError(f"evaluate: {model.name} is an {model.task} model (one mask per "
                         f"object, no class map); score it with evaluate_instances")
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(model.config.num_classes, ignore_index=ignore_index)
    band = (None if boundary_band is None else
            BoundaryConfusion(model.config.num_classes, band=boundary_band,
                              ignore_index=ignore_index))
    loss_sum = pixels = 0
    for batch in DataLoader(data, batch_size=batch_size, shuffle=False):
        batch = batch_to_device(batch, model.device)
        scores = model(Tensor(batch["image"]))                   # (N, C, OH, OW)
        masks = crop_target(batch["mask"], scores.shape[-2:])    # (N, OH, OW)
        n_valid = int((masks != ignore_index).sum())
        if n_valid:
            loss_sum += cross_entropy(scores, masks, ignore_index=ignore_index,
                                      reduction="sum").item()
            pixels += n_valid
        predicted = scores.data.argmax(axis=1)                   # (N, OH, OW)
        cm.update(predicted, masks)
        if band is not None:
            band.update(predicted, masks)
    model.train(was_training)
    out = {"loss": loss_sum / max(pixels, 1), "pixel_acc": cm.pixel_accuracy(),
           "miou": cm.miou(), "iou": cm.iou(), "confusion": cm}
    if band is not None:
        out["boundary_miou"] = band.miou()
    return out


@no_grad()
def evaluate_instances(model, data, batch_size=16):
    """COCO-style box and mask AP of an instance model over ``data``.

    The model runs in eval mode; its mode is restored afterwards.

    Parameters
    ----------
    model : InstanceSegmentationModel, or a semantic model that lists objects
        An instance model's forward in eval mode gives its objects; a semantic model that
        can list objects too has ``detect_objects(x)`` returning the same dicts
        (:meth:`edu_seg.models.rcnn_regions.RCNNRegions.detect_objects`).
    data : dataset
        Items with ``image`` (3, H, W), ``boxes`` (G, 4), ``labels`` (G,) and
        ``instance_masks`` (G, H, W), e.g. :class:`edu_seg.data.Shapes`.
    batch_size : int

    Returns
    -------
    InstanceAP
        The filled accumulator (as :func:`evaluate` returns its confusion matrix):
        ``.summary()`` gives ``{"box": {"AP", "AP50", "AP75", "APs", "APm", "APl"}, "mask":
        {...}}`` (-1 where undefined), ``.precision("mask")`` the full precision table.
    """
    find_objects = model if model.task == "instance" else getattr(model, "detect_objects",
                                                                  None)
    if find_objects is None:
        raise ValueError(f"evaluate_instances: {model.name} is a semantic model that cannot "
                         f"list objects (no detect_objects method); score it with evaluate, "
                         f"or use an instance model such as mask_rcnn")
    was_training = model.training
    model.eval()
    ap = InstanceAP()
    for batch in DataLoader(data, batch_size=batch_size, shuffle=False):
        detections = find_objects(Tensor(batch["image"]))   # one dict per image
        ap.update(detections, [{"boxes": b, "labels": c, "masks": m} for b, c, m in
                               zip(batch["boxes"], batch["labels"], batch["instance_masks"])])
    model.train(was_training)
    return ap


#: Images with a side longer than this are predicted tile by tile (:func:`predict_probabilities`).
PREDICT_TILE = 512
#: Context in pixels around each tile's kept centre: predicted, then thrown away.
PREDICT_MARGIN = 64


@no_grad()
def predict_probabilities(model, images, batch_size=16, tile=PREDICT_TILE,
                          margin=PREDICT_MARGIN):
    """Class probabilities for images of any size: pads them to a size the model accepts,
    runs it in eval mode, crops, and takes the softmax over the classes.

    Parameters
    ----------
    model : SegmentationModel
    images : array, shape (N, C, H, W) float32
    batch_size : int
    tile : int
        Images with a side longer than ``tile`` are predicted in tiles of about ``tile`` x
        ``tile`` pixels, one at a time, so that memory follows the tile, not the image (a
        2048x2048 photo through the default U-Net needs some 2 GB at once).
    margin : int
        Pixels of real image context predicted around each tile's kept centre and then
        thrown away (rounded up to a multiple of the model's output stride).

    Returns
    -------
    array of float32, shape (N, num_classes, H, W)
        Sums to 1 over the class axis (what a CRF or a calibration plot needs).

    Notes
    -----
    Padding is a mirror reflection (the U-Net paper's overlap-tile idea): the border pixels
    then see plausible context instead of a black frame. For a model whose output is smaller
    than its input (U-Net with "valid" convolutions) the input is padded so that the output
    covers the whole image.

    Tiling is the same idea inside the image: every tile starts at a multiple of the output
    stride (so pooling windows fall where they fall for the whole image) and is predicted with
    ``margin`` pixels of its neighbours around it. For a fully convolutional model whose
    receptive field reaches at most ``margin`` pixels to each side, the tiles give the
    whole-image result exactly; models that pool the whole image (PSPNet's pyramid, DeepLabV3's
    image pooling) see one tile's context instead.
    """
    images = np.asarray(images)
    for name, value, low in (("tile", tile, 1), ("margin", margin, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"predict_probabilities: {name} must be an int >= {low}, got "
                             f"{value!r}")
    N, _, H, W = images.shape
    was_training = model.training
    model.eval()
    try:
        if max(H, W) <= tile:
            probs = np.concatenate([_probabilities(model, images[i:i + batch_size])
                                    for i in range(0, N, batch_size)])
        else:
            probs = np.stack([_tiled_probabilities(model, image, tile, margin)
                              for image in images])
    finally:
        model.train(was_training)
    return probs


def _probabilities(model, images):
    """Softmax of the model's scores for a batch of equal-size images (N, C, H, W), padded to
    a size the model accepts and cropped back."""
    H, W = images.shape[-2:]
    in_h, in_w = model.input_size_for(H), model.input_size_for(W)
    out_h, out_w = model.output_size(in_h), model.output_size(in_w)
    top, left = (in_h - out_h) // 2, (in_w - out_w) // 2       # context the output lacks
    widths = ((0, 0), (0, 0), (top, in_h - H - top), (left, in_w - W - left))
    x = np.pad(images, widths, mode="symmetric")
    x = to_device(np.ascontiguousarray(x, dtype=np.float32), model.device)
    scores = to_host(model(Tensor(x)).data)
    scores = scores[:, :, :H, :W]                                  # (n, C, H, W)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))         # a stable softmax
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)


def _tiled_probabilities(model, image, tile, margin):
    """(C, H, W) probabilities of one large image (C, H, W), tile by tile."""
    s = model.output_stride
    margin = -(-margin // s) * s                     # whole strides of context
    core = max(s, (tile - 2 * margin) // s * s)      # the kept centre: whole strides too
    _, H, W = image.shape
    out = None
    for y in range(0, H, core):
        for x in range(0, W, core):
            y0, x0 = max(y - margin, 0), max(x - margin, 0)
            y1, x1 = min(y + core + margin, H), min(x + core + margin, W)
            p = _probabilities(model, image[None, :, y0:y1, x0:x1])[0]   # (C, y1-y0, x1-x0)
            if out is None:
                out = np.empty((p.shape[0], H, W), np.float32)
            out[:, y:y + core, x:x + core] = p[:, y - y0:y - y0 + core, x - x0:x - x0 + core]
    return out


def predict(model, images, batch_size=16):
    """Class map for images of any size: the argmax of :func:`predict_probabilities`.

    Returns
    -------
    array of int64, shape (N, H, W)
    """
    return predict_probabilities(model, images, batch_size).argmax(axis=1).astype(np.int64)


@no_grad()
def detect(model, images, batch_size=16):
    """An instance model's objects in images of any size, in eval mode.

    Each image is zero-padded at the bottom and right to a size the model accepts (a
    multiple of its output stride), so the objects keep their coordinates; the masks are
    cropped back and the boxes clipped to the image.

    Parameters
    ----------
    model : InstanceSegmentationModel
    images : array, shape (N, C, H, W) float32
    batch_size : int

    Returns
    -------
    list of N dicts
        ``boxes`` (D, 4), ``labels`` (D,), ``scores`` (D,), ``masks`` (D, H, W) in [0, 1],
        best first (see :class:`edu_seg.models.InstanceSegmentationModel`).
    """
    images = np.asarray(images)
    N, _, H, W = images.shape
    widths = ((0, 0), (0, 0), (0, model.input_size_for(H) - H), (0, model.input_size_for(W) - W))
    was_training = model.training
    model.eval()
    found = []
    for i in range(0, N, batch_size):
        x = np.pad(images[i:i + batch_size], widths)
        for d in model(Tensor(np.ascontiguousarray(x, dtype=np.float32))):
            d["masks"] = np.ascontiguousarray(d["masks"][:, :H, :W])
            d["boxes"] = np.minimum(d["boxes"], np.array([W, H, W, H], d["boxes"].dtype))
            found.append(d)
    model.train(was_training)
    return found


# ------------------------------------------------------------------------------ checkpoints
class NonFiniteLossError(ValueError):
    """A training batch gave a NaN or infinite loss; the message says which and what to check."""


