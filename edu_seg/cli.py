"""The ``edu-seg`` command (also ``python -m edu_seg.cli``).

    edu-seg demo                       train a small U-Net on synthetic Shapes (about 2 minutes)
    edu-seg train --model unet --data shapes[:VARIANT] | PATH --epochs N --out DIR
    edu-seg eval --checkpoint DIR/best.npz
    edu-seg predict --checkpoint DIR/best.npz --image in.png --out mask.png
    edu-seg models                     list the models that can be trained
    edu-seg info                       what edu_seg runs on (backend, threads, BLAS, GPU)

``--data shapes`` generates the synthetic data set (:class:`edu_seg.data.Shapes`; a variant
after a colon: ``shapes:thin``); any other value is a folder in the CamVid layout
(:class:`edu_seg.data.FolderDataset`: ``train/``, ``train_labels/``, ``val/``, ... and
``class_dict.csv``).
"""
import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import backend

#: What ``edu-seg demo`` (``make demo``) runs; tuned to reach validation mIoU >= 0.9 on Shapes
#: in about two minutes on 2 CPU cores.
DEMO = {
    "model": "unet", "model_config": {"depth": 3, "base_width": 16},
    "data": "shapes", "train_samples": 1024, "val_samples": 256, "size": 64,
    "epochs": 5, "batch_size": 16, "lr": 3e-3, "optimizer": "adam", "out": "runs/demo",
}



# ------------------------------------------------------------------------------------- data
def make_data(spec, train_samples=1024, val_samples=256, size=64, num_classes=4, seed=0):
    """Build ``(train_set, val_set, info)`` from a ``--data`` value.

    ``info`` is JSON-able: what a checkpoint keeps to rebuild the validation set later.
    The Shapes training and validation sets use different seeds (``2 seed`` and
    ``2 seed + 1``), so validation is always on held-out scenes.
    """
    from .data import FolderDataset, Shapes

    if spec == "shapes" or spec.startswith("shapes:"):
        variant = spec.partition(":")[2] or "default"
        common = dict(size=size, num_classes=num_classes, variant=variant)
        train = Shapes(train_samples, seed=2 * seed, **common)
        val = Shapes(val_samples, seed=2 * seed + 1, **common)
        info = {"spec": spec, "train_samples": train_samples, "val_samples": val_samples,
                "seed": seed, **common}
        return train, val, info
    root = Path(spec)
    if not root.is_dir():
        raise SystemExit(f"edu-seg: --data {spec!r} is neither 'shapes[:variant]' nor a folder")
    train = FolderDataset(root, "train")
    val = FolderDataset(root, "val") if (root / "val").is_dir() else None
    return train, val, {"spec": str(root)}


def _class_colours(dataset):
    """The data set's own label colours (FolderDataset's class_dict.csv), else None."""
    colours = getattr(dataset, "colours", None)
    return None if colours is None else np.asarray(colours, dtype=np.uint8).tolist()


def _parse_model_config(pairs):
    """``["depth=3", "padding=valid"]`` -> ``{"depth": 3, "padding": "valid"}``."""
    config = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"edu-seg: --model-config expects KEY=VALUE, got {pair!r}")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


def _setup(args):
    if getattr(args, "threads", None):
        backend.set_num_threads(args.threads)
    if getattr(args, "backend", None):
        backend.set_backend(args.backend)


# ---------------------------------------------------------------------------------- commands
def cmd_info(args):
    backend.show_config()
    return 0


def cmd_models(args):
    from . import models

    for name in models.available():
        cls = models.get_model_class(name)
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        fields = ", ".join(f"{f.name}={f.default!r}" if f.default is not dataclasses.MISSING
                           else f.name for f in dataclasses.fields(cls.config_class))
        print(f"{name:10s} {summary}")
        print(f"{'':10s} config: {fields}")
        for preset, values in cls.presets.items():
            print(f"{'':10s} preset {preset}: "
                  + ", ".join(f"{k}={v!r}" for k, v in values.items()))
    return 0


def run_training(model_name, model_config, data, epochs, batch_size, lr, out, optimizer="adam",
                 weight_decay=0.0, schedule="poly", seed=0, train_samples=1024,
                 val_samples=256, size=64, num_classes=4, resume=None, progress=True):
    """Build data, model and :class:`~edu_seg.train.Trainer`, train, and report; returns it."""
    from . import models
    from .train import TrainConfig, Trainer, seed_everything
    from .viz.training import plot_run

    train_set, val_set, info = make_data(data, train_samples, val_samples, size, num_classes,
                                         seed)
    n_classes = len(train_set.class_names)
    info["class_colors"] = _class_colours(train_set)
    seed_everything(seed)
    model = models.create(model_name, num_classes=n_classes, **model_config)
    trainer = Trainer(model, train_set, val_set,
                      TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr,
                                  optimizer=optimizer, weight_decay=weight_decay,
                                  schedule=schedule, seed=seed, progress=progress),
                      out_dir=out, data_info=info)
    n_params = sum(p.size for p in model.parameters())
    print(f"model {model_name} {dataclasses.asdict(model.config)}: {n_params:,} parameters")
    print(f"data  {data}: {len(train_set)} training / "
          f"{len(val_set) if val_set is not None else 0} validation images")
    if resume:
        trainer.resume(resume)
        print(f"resumed from {resume} after epoch {trainer.epoch}")
    start = time.perf_counter()
    trainer.fit()
    plot_run(trainer)
    seconds = time.perf_counter() - start
    for h in trainer.history:
        line = f"epoch {h['epoch']:3d}  loss {h['train_loss']:.4f}  acc {h['train_pixel_acc']:.3f}"
        if "val_miou" in h:
            line += f"  val loss {h['val_loss']:.4f}  val mIoU {h['val_miou']:.4f}"
        print(line)
    print(f"training, validation and plots took {seconds:.0f} s")
    if val_set is not None:
        if trainer.val_scores is None:                    # resumed after the last epoch
            trainer.val_scores = trainer.evaluate(val_set)
        scores = trainer.val_scores
        print(f"\nvalidation after epoch {trainer.epoch}: mIoU {scores['miou']:.4f}, "
              f"pixel accuracy {scores['pixel_acc']:.4f}")
        print(scores["confusion"].table(trainer.class_names))
    out = Path(out)
    print("\ncheckpoints: " + (f"{out / 'best.npz'} (best validation mIoU), "
                                if val_set is not None else "") + f"{out / 'last.npz'}")
    print(f"plots      : {out / 'curves.png'}, {out / 'predictions.png'}"
          + (f", {out / 'confusion.png'}" if val_set is not None else ""))
    return trainer


def cmd_train(args):
    _setup(args)
    run_training(args.model, _parse_model_config(args.model_config), args.data, args.epochs,
                 args.batch_size, args.lr, args.out, optimizer=args.optimizer,
                 weight_decay=args.weight_decay, schedule=args.schedule, seed=args.seed,
                 train_samples=args.train_samples, val_samples=args.val_samples,
                 size=args.size, num_classes=args.num_classes, resume=args.resume,
                 progress=not args.no_progress)
    return 0


def cmd_demo(args):
    _setup(args)
    d = DEMO
    start = time.perf_counter()
    print("edu-seg demo: a small U-Net learns to segment synthetic shapes "
          f"({d['train_samples']} images of {d['size']}x{d['size']}, {d['epochs']} epochs)\n")
    run_training(d["model"], d["model_config"], d["data"], d["epochs"], d["batch_size"],
                 d["lr"], d["out"], optimizer=d["optimizer"], train_samples=d["train_samples"],
                 val_samples=d["val_samples"], size=d["size"], progress=not args.no_progress)
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0


def cmd_eval(args):
    from .train import evaluate, load_checkpoint

    _setup(args)
    ckpt = load_checkpoint(args.checkpoint)
    state = ckpt.train_state or {}
    info = state.get("data") or {}
    spec = args.data or info.get("spec")
    if spec is None:
        raise SystemExit("edu-seg eval: the checkpoint does not say what data it was trained "
                         "on; pass --data")
    if spec.startswith("shapes"):
        _, dataset, _ = make_data(spec, 1, info.get("val_samples", 256), info.get("size", 64),
                                  info.get("num_classes", ckpt.model.config.num_classes),
                                  info.get("seed", 0))
    else:
        from .data import FolderDataset

        dataset = FolderDataset(spec, args.split)
    class_names = state.get("class_names") or getattr(dataset, "class_names", None)
    scores = evaluate(ckpt.model, dataset)
    print(f"{args.checkpoint}: {ckpt.model_name} {ckpt.model_config}, "
          f"epoch {state.get('epoch', '?')}")
    print(f"{len(dataset)} images: mIoU {scores['miou']:.4f}, "
          f"pixel accuracy {scores['pixel_acc']:.4f}")
    print(scores["confusion"].table(class_names))
    return 0


def cmd_predict(args):
    from PIL import Image

    from .train import load_checkpoint, predict
    from .viz.palette import colorize

    _setup(args)
    ckpt = load_checkpoint(args.checkpoint)
    try:
        with Image.open(args.image) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255   # (H, W, 3)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"edu-seg predict: cannot read image {args.image}: {exc}")
    image = rgb.transpose(2, 0, 1)[None]                                   # (1, 3, H, W)
    mask = predict(ckpt.model, image)[0]                                   # (H, W)
    colours = ((ckpt.train_state or {}).get("data") or {}).get("class_colors")
    Image.fromarray(colorize(mask, colours)).save(args.out)
    names = (ckpt.train_state or {}).get("class_names") or []
    counts = np.bincount(mask.ravel(), minlength=ckpt.model.config.num_classes)
    shares = ", ".join(f"{names[k] if k < len(names) else k}: {c / mask.size:.1%}"
                       for k, c in enumerate(counts) if c)
    print(f"wrote {args.out} ({mask.shape[1]}x{mask.shape[0]}; {shares})")
    return 0


# ------------------------------------------------------------------------------------ parser
def build_parser():
    parser = argparse.ArgumentParser(prog="edu-seg", description="Semantic segmentation "
                                     "built from scratch, for learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_runtime(p):
        p.add_argument("--threads", type=int, help="threads for the kernels and BLAS")
        p.add_argument("--backend", choices=backend.BACKENDS, help="kernels to run on")

    sub.add_parser("info", help="show the configuration").set_defaults(func=cmd_info)
    sub.add_parser("models", help="list the available models").set_defaults(func=cmd_models)

    p = sub.add_parser("demo", help="train a small U-Net on Shapes (about 2 minutes)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_runtime(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model")
    p.add_argument("--model", default="unet", help="a name from `edu-seg models`")
    p.add_argument("--model-config", nargs="*", metavar="KEY=VALUE",
                   help="model hyper-parameters, e.g. depth=3 base_width=16 padding=valid")
    p.add_argument("--data", default="shapes", help="shapes[:variant] or a CamVid-style folder")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", choices=("poly", "cosine", "constant"), default="poly")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/train", help="directory for checkpoints and plots")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from this last.npz")
    p.add_argument("--train-samples", type=int, default=1024, help="Shapes only")
    p.add_argument("--val-samples", type=int, default=256, help="Shapes only")
    p.add_argument("--size", type=int, default=64, help="Shapes only: image size")
    p.add_argument("--num-classes", type=int, default=4, help="Shapes only, incl. background")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_runtime(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint (per-class IoU table)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", help="default: the validation data the checkpoint was trained with")
    p.add_argument("--split", default="val", help="folder data sets: the split to evaluate")
    add_runtime(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="segment one image into a colour-coded label PNG")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--image", required=True, help="input image (PNG, JPEG, ...)")
    p.add_argument("--out", required=True, help="output label PNG")
    add_runtime(p)
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv=None):
    """Entry point of the ``edu-seg`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        # Bad input (a corrupted checkpoint, an unknown model, a wrong size) is reported by
        # the library with a message that says what to change: show it without a traceback.
        print(f"edu-seg {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
