"""Pictures of a training run: curves, predictions next to the ground truth, the confusion matrix;
several runs' curves side by side (``plot_compare``); several models' predictions next to their
mistakes (``plot_prediction_comparison``).

Each function returns a matplotlib ``Figure`` (shown inline in Jupyter) and, given ``path``,
writes it as a PNG. Figures are built with ``matplotlib.figure.Figure`` rather than ``pyplot``,
so they work headless (the Agg canvas) without changing the process's matplotlib backend.
"""
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ..metrics import boundary_band
from .palette import PALETTE, colorize

__all__ = ["plot_history", "plot_compare", "plot_predictions", "plot_prediction_comparison",
           "plot_confusion_matrix", "overlay", "plot_run", "loss_terms"]


def _save(fig, path):
    if path is not None:
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


def loss_terms(history):
    """Names of the loss terms a Trainer history logged (``train_<name>`` keys), in order.

    Parameters
    ----------
    history : list of dict
        :attr:`edu_seg.train.Trainer.history`.

    Returns
    -------
    list of str
        E.g. ``["ce", "aux"]``: every ``train_*`` key except the total ``train_loss`` and
        ``train_pixel_acc``.
    """
    names = {}
    for record in history:
        for key in record:
            if key.startswith("train_") and key not in ("train_loss", "train_pixel_acc"):
                names.setdefault(key[len("train_"):])
    return list(names)


def plot_history(history, path=None):
    """Losses, validation scores and the learning rate per epoch: three panels.

    Parameters
    ----------
    history : list of dict
        One dict per epoch, as :attr:`edu_seg.train.Trainer.history` keeps them: ``epoch``,
        ``lr``, ``train_loss`` (the total), ``train_<term>`` per loss term and, when there
        was a validation set, ``val_loss``, ``val_miou``, ``val_pixel_acc`` (an instance
        model: ``val_mask_ap``, ``val_mask_ap50``, ``val_box_ap``).
    path : str or Path, optional
        Where to write the PNG.

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    Each named loss term (``ce``, ``aux``, ...) is drawn dashed under the total when there
    is more than one; a model with one term would only repeat the total. The learning rate is
    the one of each epoch's first step, so a schedule's decay shows as falling points.
    """
    fig = Figure(figsize=(14, 3.8), layout="constrained")
    ax_loss, ax_score, ax_lr = fig.subplots(1, 3)
    epochs = [h["epoch"] for h in history]

    def draw(ax, key, label, **style):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax.plot(epochs, values, marker="o", label=label, **style)

    draw(ax_loss, "train_loss", "train (total)")
    terms = loss_terms(history)
    if len(terms) > 1:
        for name in terms:
            draw(ax_loss, f"train_{name}", f"train {name}", linestyle="--", alpha=0.8)
    draw(ax_loss, "val_loss", "validation (cross-entropy)")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    for key, label in (("val_miou", "val mIoU"), ("val_pixel_acc", "val pixel accuracy"),
                       ("train_pixel_acc", "train pixel accuracy"),
                       ("val_mask_ap", "val mask AP"), ("val_mask_ap50", "val mask AP50"),
                       ("val_box_ap", "val box AP")):
        draw(ax_score, key, label)
    ax_score.set(xlabel="epoch", ylim=(0, 1.01), title="scores")
    ax_score.grid(alpha=0.3)
    if ax_score.lines:
        ax_score.legend(loc="lower right")
    draw(ax_lr, "lr", "lr", color="tab:gray")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="learning rate (epoch start)")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax_lr.grid(alpha=0.3)
    for ax in (ax_loss, ax_score, ax_lr):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))     # epochs are whole numbers
    return _save(fig, path)


def plot_compare(runs, path=None):
    """Several runs' curves on shared axes: validation mIoU and training loss per epoch.

    Parameters
    ----------
    runs : dict of str to list of dict
        Label -> history (:attr:`edu_seg.train.Trainer.history`, or the ``history`` of a
        run's ``history.json``); one line per run.
    path : str or Path, optional
        Where to write the PNG.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_miou, ax_loss = fig.subplots(1, 2)
    for label, history in runs.items():
        epochs = [h["epoch"] for h in history]
        line, = ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o",
                             label=label)
        scored = [h for h in history if h.get("val_miou") is not None]
        if scored:                    # same colour in both panels: one run, one colour
            ax_miou.plot([h["epoch"] for h in scored], [h["val_miou"] for h in scored],
                         marker="o", color=line.get_color(), label=label)
    ax_miou.set(xlabel="epoch", ylabel="mIoU", ylim=(0, 1.01), title="validation mIoU")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training loss (total)")
    for ax in (ax_miou, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.legend(fontsize="small")
    return _save(fig, path)


def overlay(image, mask, alpha=0.6, palette=None):
    """Blend the class colours of ``mask`` over a grey copy of ``image``.

    The image is turned grey first so that an object's own colour does not mix with its
    class colour (a green square under a red "circle" label would read as brown).

    Parameters
    ----------
    image : array, shape (3, H, W) float in [0, 1], or (H, W, 3)
    mask : array of int, shape (H, W)
    alpha : float
        Weight of the mask colours.
    palette : array (K, 3) uint8, optional
        Class colours (default :data:`edu_seg.viz.palette.PALETTE`).

    Returns
    -------
    rgb : array of float, shape (H, W, 3) in [0, 1]
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.transpose(1, 2, 0)                   # (C, H, W) -> (H, W, C)
    grey = image.mean(axis=-1, keepdims=True) if image.ndim == 3 else image[..., None]
    colours = colorize(mask, palette).astype(np.float32) / 255
    return np.clip((1 - alpha) * grey + alpha * colours, 0, 1)


def plot_predictions(images, masks, preds, class_names=None, path=None, palette=None,
                     max_rows=6):
    """A grid: one row per sample with the image, ground truth and prediction overlaid.

    Parameters
    ----------
    images : array, shape (N, 3, H, W), float in [0, 1]
    masks, preds : arrays of int, shape (N, H, W)
    class_names : list of str, optional
        Names for the legend.
    path : str or Path, optional
    palette : array (K, 3) uint8, optional
        Class colours (default :data:`edu_seg.viz.palette.PALETTE`).
    max_rows : int

    Returns
    -------
    matplotlib.figure.Figure
    """
    n = min(len(images), max_rows)
    fig = Figure(figsize=(7.5, 2.5 * n + 0.5), layout="constrained")
    axes = np.asarray(fig.subplots(n, 3, squeeze=False))
    for i in range(n):
        image = np.asarray(images[i], dtype=np.float32)
        panels = (image.transpose(1, 2, 0), overlay(image, masks[i], palette=palette),
                  overlay(image, preds[i], palette=palette))
        for ax, panel, title in zip(axes[i], panels, ("image", "ground truth", "prediction")):
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title)
    if class_names is not None:
        colours = PALETTE if palette is None else np.asarray(palette)
        handles = [Patch(color=colours[k] / 255, label=name)
                   for k, name in enumerate(class_names)]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
                   frameon=False)
    return _save(fig, path)


def plot_prediction_comparison(images, masks, predictions, class_names=None, band=None,
                               path=None, palette=None, max_rows=6):
    """Several models' predictions on the same images, each next to a map of its mistakes.

    Parameters
    ----------
    images : array, shape (N, 3, H, W), float in [0, 1]
    masks : array of int, shape (N, H, W)
    predictions : dict of str to array of int, shape (N, H, W)
        One entry per model (name -> predicted class ids), drawn in this order.
    class_names : list of str, optional
        Names for the legend.
    band : int, optional
        Shade the pixels within ``band`` pixels of a true edge
        (:func:`edu_seg.metrics.boundary_band`) in the error maps, and say what share of
        each model's wrong pixels lies there: whether the mistakes sit on the boundaries.
    path : str or Path, optional
    palette : array (K, 3) uint8, optional
        Class colours (default :data:`edu_seg.viz.palette.PALETTE`).
    max_rows : int

    Returns
    -------
    matplotlib.figure.Figure
        One row per image: the image, the ground truth, then for every model its prediction
        and its errors (wrong pixels in red over the faded image; the band in light blue).
        The label under an error map gives the share of the image's pixels that are wrong
        (and, with ``band``, the share of those that lie in the band).
    """
    masks = np.asarray(masks)
    if not predictions:
        raise ValueError("plot_prediction_comparison: predictions is empty; pass "
                         "{model name: (N, H, W) predicted class ids}")
    predictions = {name: np.asarray(p) for name, p in predictions.items()}
    for name, p in predictions.items():
        if p.shape != masks.shape:
            raise ValueError(f"plot_prediction_comparison: predictions[{name!r}] has shape "
                             f"{p.shape} but masks have shape {masks.shape}")
    near_edge = None if band is None else boundary_band(masks, band)          # (N, H, W)
    n = min(len(images), max_rows)
    columns = 2 + 2 * len(predictions)
    fig = Figure(figsize=(1.8 * columns, 2.1 * n + 0.6), layout="constrained")
    axes = np.asarray(fig.subplots(n, columns, squeeze=False))
    for i in range(n):
        image = np.asarray(images[i], dtype=np.float32)
        faded = image.transpose(1, 2, 0) * 0.35 + 0.65                       # (H, W, 3)
        if near_edge is not None:
            faded[near_edge[i]] = faded[near_edge[i]] * 0.5 + np.array([0.55, 0.75, 1.0]) * 0.5
        panels = [("image", image.transpose(1, 2, 0), ""),
                  ("ground truth", overlay(image, masks[i], palette=palette), "")]
        for name, p in predictions.items():
            wrong = p[i] != masks[i]                                          # (H, W)
            errors = faded.copy()
            errors[wrong] = (0.85, 0.1, 0.1)
            label = f"{wrong.mean():.1%} wrong"
            if near_edge is not None and wrong.any():
                label += f", {(wrong & near_edge[i]).sum() / wrong.sum():.0%} in band"
            panels += [(name, overlay(image, p[i], palette=palette), ""),
                       (f"{name}: errors", errors, label)]
        for ax, (title, rgb, label) in zip(axes[i], panels):
            ax.imshow(rgb, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(label, fontsize=8)
            if i == 0:
                ax.set_title(title, fontsize=9)
    colours = PALETTE if palette is None else np.asarray(palette)
    names = class_names if class_names is not None else \
        [f"class {k}" for k in range(int(masks.max()) + 1)]
    handles = [Patch(color=colours[k] / 255, label=name) for k, name in enumerate(names)]
    handles.append(Patch(color=(0.85, 0.1, 0.1), label="wrong"))
    if band is not None:
        handles.append(Patch(color=(0.6, 0.78, 1.0), label=f"within {band} px of a true edge"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 7),
               frameon=False, fontsize=8)
    return _save(fig, path)


def plot_confusion_matrix(matrix, class_names=None, path=None):
    """The confusion matrix as a heat map, each row normalised to sum to 1.

    Row ``i`` shows where the pixels of ground-truth class ``i`` went: the diagonal is each
    class's recall, an off-diagonal cell a confusion worth looking at.

    Parameters
    ----------
    matrix : array of int, shape (C, C)
        Rows = ground truth, columns = prediction (:attr:`edu_seg.metrics.ConfusionMatrix.matrix`).
    class_names : list of str, optional
    path : str or Path, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    C = len(matrix)
    names = list(class_names) if class_names is not None else [str(k) for k in range(C)]
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    fig = Figure(figsize=(1.0 + 0.9 * C, 0.8 + 0.8 * C))
    ax = fig.subplots()
    image = ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
    for i in range(C):
        for j in range(C):
            ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(C), names, rotation=45, ha="right")
    ax.set_yticks(range(C), names)
    ax.set(xlabel="prediction", ylabel="ground truth", title="confusion matrix (row-normalised)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_run(trainer, out_dir=None, num_examples=6):
    """Write a training run's pictures: ``curves.png``, ``predictions.png``, ``confusion.png``.

    Also works as ``Trainer(..., on_epoch_end=plot_run)``, which redraws them after every
    epoch. For an instance model (``model.task == "instance"``) ``predictions.png`` shows
    its boxes and masks over the ground truth
    (:func:`edu_seg.viz.detection.show_detections`) and there is no confusion matrix.

    Parameters
    ----------
    trainer : edu_seg.train.Trainer
        After (or during) ``fit``: its history, model and validation data are drawn.
    out_dir : str or Path, optional
        Default: the trainer's ``out_dir``.
    num_examples : int
        Validation images in the prediction grid.

    Returns
    -------
    dict
        Name -> path of each file written.
    """
    from ..train import detect, predict

    out = Path(out_dir) if out_dir is not None else trainer.out_dir
    out.mkdir(parents=True, exist_ok=True)
    paths = {"curves": out / "curves.png"}
    plot_history(trainer.history, paths["curves"])
    data = trainer.val_data if trainer.val_data is not None else trainer.train_data
    samples = [data[i] for i in range(min(num_examples, len(data)))]
    images = np.stack([s["image"] for s in samples])
    paths["predictions"] = out / "predictions.png"
    if trainer.model.task == "instance":          # boxes and masks per object, over the truth
        from .detection import show_detections

        _save(show_detections(images, detect(trainer.model, images), trainer.class_names,
                              targets=samples), paths["predictions"])
        return paths
    masks = np.stack([s["mask"] for s in samples])
    # a FolderDataset's own class colours (class_dict.csv), as `edu-seg predict` paints them
    plot_predictions(images, masks, predict(trainer.model, images), trainer.class_names,
                     paths["predictions"], palette=getattr(data, "colours", None))
    if trainer.val_data is not None:
        if trainer.val_scores is None:
            trainer.val_scores = trainer.evaluate(trainer.val_data)
        paths["confusion"] = out / "confusion.png"
        plot_confusion_matrix(trainer.val_scores["confusion"].matrix, trainer.class_names,
                              paths["confusion"])
    return paths
