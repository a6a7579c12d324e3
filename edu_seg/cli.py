"""The ``edu-seg`` command (also ``python -m edu_seg.cli``).

    edu-seg demo                       train a small U-Net on synthetic Shapes (about 2 minutes)
    edu-seg train --model unet --data shapes[:VARIANT] | PATH --epochs N --out DIR
    edu-seg train ... --resume DIR/last.npz   continue a stopped run (Ctrl-C prints this line)
    edu-seg train ... --supervision boxes      train from boxes and classes only (BoxSup)
    edu-seg pretrain --backbone resnet_tiny --out DIR   a backbone learns which shapes a scene
                                       shows: DIR/resnet_tiny.npz, DIR/resnet_tiny_history.json
    edu-seg train ... --backbone-weights DIR/resnet_tiny.npz   start the backbone from them
    edu-seg eval --checkpoint DIR/best.npz
    edu-seg predict --checkpoint DIR/best.npz --image in.png --out mask.png [--crf]
    edu-seg models                     list the models that can be trained
    edu-seg zoo --models unet fcn8s --variants default scale --steps 300 --out zoo
                                       every model, one recipe: zoo/RESULTS.md, results.csv
    edu-seg zoo --plot                 speed (ms per image) against mIoU: zoo/speed_accuracy.png
    edu-seg key-points --studies backbones supervision resolution pretraining --out zoo
                                       the course's key points measured: zoo/KEY_POINTS.md
    edu-seg compare DIR DIR ...        final metrics of runs side by side, compare.png
    edu-seg info                       what edu_seg runs on (backend, threads, BLAS, GPU)

``--data shapes`` generates the synthetic data set (:class:`edu_seg.data.Shapes`; a variant
after a colon: ``shapes:thin``); any other value is a folder in the CamVid layout
(:class:`edu_seg.data.FolderDataset`: ``train/``, ``train_labels/``, ``val/``, ... and
``class_dict.csv``).
"""
import argparse
import dataclasses
import json
import shlex
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


class Interrupted(Exception):
    """Ctrl-C stopped a command; the message says what was saved and how to go on."""


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


def _parse_model_config(pairs, flag="--model-config"):
    """``["depth=3", "padding=valid"]`` -> ``{"depth": 3, "padding": "valid"}``."""
    config = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"edu-seg: {flag} expects KEY=VALUE, got {pair!r}")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


def _setup(args):
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be a positive integer (the number of threads), "
                             f"got {threads}; leave it out to use the default")
        backend.set_num_threads(threads)
    if getattr(args, "backend", None):
        backend.set_backend(args.backend)


def _check_out_dir(out):
    """Create the output folder now, or fail naming it, rather than after a whole epoch."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file, not a folder; give a folder path "
                         f"for the checkpoints and plots")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".edu-seg-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"--out {out} cannot be created or written to ({exc.strerror or exc}); "
                         f"choose a folder you can write to") from None


def _check_train_args(args):
    """Refuse bad ``edu-seg train`` settings before any data is built or any epoch is run."""
    config = _parse_model_config(args.model_config)
    if "num_classes" in config:
        raise ValueError("--model-config num_classes=... is not allowed: the number of "
                         "classes comes from the data (for Shapes set it with --num-classes; "
                         "a folder data set takes it from its class_dict.csv)")
    if args.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {args.seed}")
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"{flag} must be a positive integer, got {value}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {args.steps}")
    from .weak import SUPERVISIONS
    if args.supervision not in SUPERVISIONS:
        raise ValueError(f"--supervision must be one of {', '.join(SUPERVISIONS)}, got "
                         f"{args.supervision!r}")
    if args.supervision != "masks" and args.resume:
        raise ValueError(f"--resume cannot continue a --supervision {args.supervision} run: "
                         f"its estimated masks are not saved; start the run again")
    if args.backbone_weights and args.resume:
        raise ValueError("--backbone-weights cannot be combined with --resume: the checkpoint "
                         "already holds every weight of the run, the backbone's included; "
                         "leave out --backbone-weights")
    if args.data == "shapes" or args.data.startswith("shapes:"):
        for flag, value in (("--train-samples", args.train_samples),
                            ("--val-samples", args.val_samples), ("--size", args.size)):
            if value < 1:
                raise ValueError(f"{flag} must be a positive integer, got {value}")
    return config


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
        print(f"{name}: {summary}")
        print(f"    config: {fields}")
        for preset, values in cls.presets.items():
            print(f"    preset {preset}: " + ", ".join(f"{k}={v!r}" for k, v in values.items()))
    return 0


def run_training(model_name, model_config, data, epochs, batch_size, lr, out, optimizer="adam",
                 weight_decay=0.0, schedule="poly", seed=0, train_samples=1024,
                 val_samples=256, size=64, num_classes=4, resume=None, progress=True,
                 steps=None, supervision="masks", device="cpu", backbone_weights=None):
    """Build data, model and :class:`~edu_seg.train.Trainer`, train, and report; returns it.

    The Trainer prints one line per epoch, and its ``on_epoch_end`` redraws the plots
    (:func:`edu_seg.viz.training.plot_run`), so ``OUT/curves.png`` follows the run.

    ``supervision``: ``"masks"`` trains on the data's masks; ``"boxes"`` on its boxes and
    classes only, by BoxSup (:class:`edu_seg.weak.BoxSup`, a line per round and
    ``OUT/boxsup_rounds.json``); ``"filled-boxes"`` on the filled boxes, never re-estimated
    (the baseline BoxSup improves on). The true masks then serve only to validate.

    ``device``: ``"cuda"`` moves the model to the GPU (CuPy) and each batch with it; the
    checkpoints are written from host copies, so they load anywhere.

    ``backbone_weights``: a file of ``edu-seg pretrain`` (:func:`edu_seg.pretrain.save_backbone`)
    loaded into ``model.backbone`` before the first step; the rest of the model starts from
    its usual initialisation.

    Raises
    ------
    Interrupted
        On Ctrl-C; the message names the last saved epoch and the exact ``edu-seg train``
        command that resumes from it (also for the demo, whose settings it spells out).
    """
    from . import models
    from .metrics import format_instance_ap
    from .train import TrainConfig, Trainer, seed_everything
    from .viz.training import plot_run
    from .weak import BoxSup, BoxSupConfig

    backend.check_device("--device", device)
    if device == "cuda" and supervision != "masks":
        raise ValueError(f"--supervision {supervision} runs on the CPU only (BoxSup's "
                         f"candidate segments and mask estimates are NumPy code); leave out "
                         f"--device cuda")
    _check_out_dir(out)
    if supervision != "masks" and not data.startswith("shapes"):
        raise ValueError(f"--supervision {supervision} needs boxes and classes per object, "
                         f"which a folder data set does not have; use --data shapes[:variant]")
    train_set, val_set, info = make_data(data, train_samples, val_samples, size, num_classes,
                                         seed)
    if len(train_set) < batch_size:
        what = ("--train-samples" if data.startswith("shapes")
                else f"the training split of --data {data}")
        raise ValueError(f"{what} has {len(train_set)} images, fewer than one batch of "
                         f"--batch-size {batch_size}; lower --batch-size to at most "
                         f"{max(len(train_set), 1)} or use more training images")
    n_classes = len(train_set.class_names)
    info["class_colors"] = _class_colours(train_set)
    seed_everything(seed)
    model = models.create(model_name, num_classes=n_classes, **model_config).to(device)
    if backbone_weights:
        from .pretrain import load_pretrained_backbone

        loaded = load_pretrained_backbone(model, backbone_weights)
        print(f"backbone {loaded['backbone']}: pretrained weights from {backbone_weights}"
              f"{_pretraining_summary(loaded['history'])}")
    config = TrainConfig(epochs=epochs, steps=steps, batch_size=batch_size, lr=lr,
                         optimizer=optimizer, weight_decay=weight_decay, schedule=schedule,
                         seed=seed, progress=progress)
    options = dict(out_dir=out, data_info=info, on_epoch_end=plot_run)
    boxsup = None
    if supervision == "masks":
        trainer = Trainer(model, train_set, val_set, config, **options)
    else:
        if model.task != "semantic":
            raise ValueError(f"--supervision {supervision} trains a semantic model from boxes; "
                             f"{model_name} is an instance model, which needs masks: use "
                             f"--supervision masks")
        if supervision == "boxes":
            print(f"boxsup: candidate segments of {len(train_set)} images by selective search "
                  f"(about {len(train_set) * 0.013:.0f} s), then a mask estimate per round",
                  flush=True)
        boxsup = BoxSup(model, train_set, val_set,
                        BoxSupConfig(init="segment" if supervision == "boxes" else "box",
                                     refine=supervision == "boxes"),
                        config, truth=train_set, **options)
        trainer = boxsup.trainer
    # The command that rebuilds this exact run: resuming needs the same model, data and
    # TrainConfig, so every setting is spelled out (the demo's included).
    argv = ["edu-seg", "train", "--model", model_name, "--data", data,
            "--epochs", str(epochs), "--batch-size", str(batch_size), "--lr", repr(lr),
            "--optimizer", optimizer, "--weight-decay", repr(weight_decay),
            "--schedule", schedule, "--seed", str(seed), "--out", str(out)]
    if steps is not None:
        argv += ["--steps", str(steps)]
    if model_config:
        argv += ["--model-config"] + [f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                                      for k, v in model_config.items()]
    if data.startswith("shapes"):
        argv += ["--train-samples", str(train_samples), "--val-samples", str(val_samples),
                 "--size", str(size), "--num-classes", str(num_classes)]
    if supervision != "masks":
        argv += ["--supervision", supervision]
    if device != "cpu":
        argv += ["--device", device]
    if not progress:
        argv.append("--no-progress")

    print(f"model {model_name} {dataclasses.asdict(model.config)}: "
          f"{model.num_parameters():,} parameters")
    print(f"data  {data}: {len(train_set)} training / "
          f"{len(val_set) if val_set is not None else 0} validation images; "
          f"{trainer.total_steps} steps in {trainer.total_epochs} epochs")
    if resume:
        trainer.resume(resume)
        print(f"resumed from {resume} after epoch {trainer.epoch}")
    start = time.perf_counter()
    try:
        if boxsup is None:
            trainer.fit()
        else:
            boxsup.fit()
    except KeyboardInterrupt:
        if boxsup is not None:
            raise Interrupted(f"edu-seg: interrupted in epoch {trainer.epoch + 1}; a "
                              f"--supervision {supervision} run cannot be resumed (its "
                              f"estimated masks are not saved): run the command again") \
                from None
        if trainer.last_checkpoint is None:
            raise Interrupted(f"edu-seg: interrupted in epoch {trainer.epoch + 1} before any "
                              f"epoch was saved: nothing to resume, run the command again") \
                from None
        raise Interrupted(f"edu-seg: interrupted; the last saved epoch is "
                          f"{trainer.last_checkpoint_epoch}/{trainer.total_epochs} in "
                          f"{trainer.last_checkpoint}\nresume with: "
                          + shlex.join(argv + ["--resume", str(trainer.last_checkpoint)])) \
            from None
    seconds = time.perf_counter() - start
    print(f"training, validation and plots took {seconds:.0f} s")
    if boxsup is not None:
        (Path(out) / "boxsup_rounds.json").write_text(json.dumps(boxsup.rounds, indent=1))
        quality = " -> ".join(f"{r['estimate_miou']:.3f}" for r in boxsup.rounds)
        print(f"{supervision}: the training masks' mIoU against the true masks, round by "
              f"round: {quality}")
    semantic = model.task == "semantic"
    if val_set is not None:
        if trainer.val_scores is None:                    # resumed after the last epoch
            trainer.val_scores = trainer.evaluate(val_set)
        scores = trainer.val_scores
        if semantic:
            print(f"\nvalidation after epoch {trainer.epoch}: mIoU {scores['miou']:.4f}, "
                  f"pixel accuracy {scores['pixel_acc']:.4f}")
            print(scores["confusion"].table(trainer.class_names))
        else:
            print(f"\nvalidation after epoch {trainer.epoch} ({len(val_set)} images):")
            print(format_instance_ap(scores.summary()))
    out = Path(out)
    best = "mIoU" if semantic else "mask AP"
    print("\ncheckpoints: " + (f"{out / 'best.npz'} (best validation {best}), "
                                if val_set is not None else "") + f"{out / 'last.npz'}")
    print(f"history    : {out / 'history.json'} (compare runs: edu-seg compare DIR DIR ...)"
          + (f", {out / 'boxsup_rounds.json'}" if boxsup is not None else ""))
    print(f"plots      : {out / 'curves.png'}, {out / 'predictions.png'}"
          + (f", {out / 'confusion.png'}" if val_set is not None and semantic else ""))
    return trainer


def cmd_train(args):
    model_config = _check_train_args(args)
    _setup(args)
    run_training(args.model, model_config, args.data, args.epochs,
                 args.batch_size, args.lr, args.out, optimizer=args.optimizer,
                 weight_decay=args.weight_decay, schedule=args.schedule, seed=args.seed,
                 train_samples=args.train_samples, val_samples=args.val_samples,
                 size=args.size, num_classes=args.num_classes, resume=args.resume,
                 progress=not args.no_progress, steps=args.steps,
                 supervision=args.supervision, device=args.device,
                 backbone_weights=args.backbone_weights)
    return 0


def _pretraining_summary(history):
    """`` (presence, 300 steps: validation label accuracy ..)`` from a pretraining history,
    or ``""`` for a file without one (its history is whatever the file holds: read with care)."""
    try:
        recipe, last = history["recipe"], history["records"][-1]
        return (f" ({recipe['task']}, {recipe['steps']} steps on Shapes {recipe['variant']}: "
                f"validation label accuracy {last['val_label_acc']:.3f}, exact match "
                f"{last['val_exact_match']:.3f})")
    except (TypeError, KeyError, IndexError, ValueError):
        return ""


def cmd_pretrain(args):
    from .checkpoint import write_atomically
    from .pretrain import pretrain_backbone, save_backbone

    overrides = _parse_model_config(args.backbone_config, "--backbone-config")
    _setup(args)
    _check_out_dir(args.out)
    scenes = ("a new scene for every image" if args.train_samples is None
              else f"{args.train_samples} training scenes")
    print(f"pretrain {args.backbone}{' ' + str(overrides) if overrides else ''}: {args.task} "
          f"of the {args.num_classes - 1} shape classes in Shapes {args.variant} scenes of "
          f"{args.size}x{args.size}, {args.steps} steps of {args.batch_size} images ({scenes}; "
          f"{args.val_samples} validation scenes)", flush=True)
    classifier, history = pretrain_backbone(
        args.backbone, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, variant=args.variant, size=args.size, num_classes=args.num_classes,
        task=args.task, train_samples=args.train_samples, val_samples=args.val_samples,
        val_every=args.val_every, overrides=overrides, verbose=True)
    out = Path(args.out)
    weights, history_path = out / f"{args.backbone}.npz", out / f"{args.backbone}_history.json"
    save_backbone(weights, classifier, history)
    write_atomically(history_path, lambda f: f.write(json.dumps(history, indent=1).encode()))
    last, baseline = history["records"][-1], history["baseline"]
    print(f"\npretrained {args.backbone} in {history['seconds']:.0f} s: validation label "
          f"accuracy {last['val_label_acc']:.3f} (majority baseline {baseline['label_acc']:.3f}), "
          f"exact match {last['val_exact_match']:.3f} ({baseline['exact_match']:.3f}); "
          f"weights {weights}, history {history_path}")
    return 0


def cmd_demo(args):
    _setup(args)
    d = DEMO
    start = time.perf_counter()
    print("edu-seg demo: a small U-Net learns to segment synthetic shapes "
          f"({d['train_samples']} images of {d['size']}x{d['size']}, {d['epochs']} epochs)\n")
    run_training(d["model"], d["model_config"], d["data"], d["epochs"], d["batch_size"],
                 d["lr"], d["out"], optimizer=d["optimizer"], train_samples=d["train_samples"],
                 val_samples=d["val_samples"], size=d["size"], progress=not args.no_progress,
                 device=args.device)
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0


def cmd_key_points(args):
    from .bench.key_points import STUDIES, run_key_points

    _setup(args)
    studies = args.studies or list(STUDIES)
    unknown = [s for s in studies if s not in STUDIES]
    if unknown:
        raise ValueError(f"key-points: --studies got unknown {', '.join(map(repr, unknown))}; "
                         f"choose from {', '.join(STUDIES)}")
    try:
        run_key_points(studies, args.steps, args.out, quick=args.quick,
                       pretrain_dir=args.pretrain_dir, pretrain_steps=args.pretrain_steps)
    except KeyboardInterrupt:
        raise Interrupted(f"edu-seg key-points: interrupted; the rows finished so far are in "
                          f"{Path(args.out) / 'key_points.csv'} (a rerun merges its rows into "
                          f"it)") from None
    print(f"wrote {Path(args.out) / 'KEY_POINTS.md'} and {Path(args.out) / 'key_points.csv'}")
    return 0


def cmd_zoo(args):
    from .bench.zoo import ALL_VARIANTS, QUICK_MODELS, QUICK_VARIANTS, run_zoo
    from .bench.zoo_instances import INSTANCE_MODELS

    _setup(args)
    models_, variants, instances = args.models, args.variants, args.instance_models or []
    if args.all or args.quick:
        chosen = [o for o in ("--models", "--variants", "--instance-models", "--plot")
                  if getattr(args, o[2:].replace("-", "_")) not in (None, False)]
        if args.all and args.quick:
            chosen.insert(0, "--quick")
        if chosen:
            raise ValueError(f"zoo: --{'all' if args.all else 'quick'} chooses the models and "
                             f"variants itself; leave out {', '.join(chosen)}")
        if args.all:
            models_, variants, instances = None, list(ALL_VARIANTS), list(INSTANCE_MODELS)
        else:
            models_, variants = list(QUICK_MODELS), list(QUICK_VARIANTS)
    elif instances and models_ is None:
        models_ = []                      # --instance-models alone: only the instance rows
    variants = variants or ["default"]
    if args.plot:
        from .bench.speed import run_speed

        csv_path, png_path = run_speed(args.models, args.out)
        print(f"wrote {csv_path} and {png_path}")
        return 0
    try:
        run_zoo(models_, variants, args.steps, args.out, progress=not args.no_progress,
                supervisions=args.supervision, instance_models=instances,
                instance_steps=args.instance_steps, jobs=args.jobs)
    except KeyboardInterrupt:
        raise Interrupted(f"edu-seg zoo: interrupted; the rows finished so far are in "
                          f"{Path(args.out) / 'results.csv'} and RESULTS.md (a rerun merges "
                          f"its rows into them)") from None
    print(f"wrote {Path(args.out) / 'RESULTS.md'} and {Path(args.out) / 'results.csv'}"
          + (f" and {Path(args.out) / 'instance_results.csv'}" if instances else ""))
    return 0


def _text_table(header, rows):
    """Rows of cells as aligned text columns under a header and a rule."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [header, *rows]]
    return "\n".join([lines[0], "-" * len(lines[0])] + lines[1:])


def _number(record, key):
    """``record[key]`` with 4 decimals, or "-" for a run without it (no validation set)."""
    return "-" if record.get(key) is None else f"{record[key]:.4f}"


def cmd_compare(args):
    from .viz.training import plot_compare

    runs, rows = {}, []
    for folder in dict.fromkeys(args.runs):
        path = Path(folder) / "history.json"
        if not path.is_file():
            raise ValueError(f"compare: {path} does not exist; each RUN must be a folder that "
                             f"`edu-seg train --out RUN` wrote (history.json is written after "
                             f"every epoch)")
        doc = json.loads(path.read_text())
        history = doc["history"]
        if not history:
            raise ValueError(f"compare: {path} holds no finished epoch yet")
        runs[folder] = history
        last = history[-1]
        scored = [h for h in history if h.get("val_miou") is not None]
        best = max(scored, key=lambda h: h["val_miou"]) if scored else None
        rows.append([folder, doc["model"], f"{last['epoch']}/{doc['total_epochs']}",
                     "-" if best is None else f"{best['val_miou']:.4f} (epoch {best['epoch']})",
                     _number(last, "val_miou"), _number(last, "val_loss"),
                     _number(last, "train_loss"), f"{sum(h['seconds'] for h in history):.0f}"])
    print(_text_table(["run", "model", "epochs", "best val mIoU", "last val mIoU",
                       "last val loss", "last train loss", "train s"], rows))
    plot_compare(runs, args.out)
    print(f"\nwrote {args.out} (validation mIoU and training loss per epoch)")
    return 0


def cmd_eval(args):
    from .metrics import format_instance_ap
    from .train import evaluate, evaluate_instances, load_checkpoint

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
    trained_on, data_names = state.get("class_names"), getattr(dataset, "class_names", None)
    if trained_on and data_names and list(trained_on) != list(data_names):
        raise SystemExit(f"edu-seg eval: the checkpoint was trained on the classes "
                         f"{list(trained_on)} but {spec} has {list(data_names)}; its class ids "
                         f"would be scored against the wrong names. Evaluate on data with the "
                         f"same class_dict.csv (same names, same order)")
    class_names = trained_on or data_names
    print(f"{args.checkpoint}: {ckpt.model_name} {ckpt.model_config}, "
          f"epoch {state.get('epoch', '?')}")
    if ckpt.model.task == "instance":
        if len(dataset) and "instance_masks" not in dataset[0]:
            raise SystemExit(f"edu-seg eval: {ckpt.model_name} finds objects, and {spec} has no "
                             f"per-object masks to score them against (a folder data set holds "
                             f"class maps only); evaluate it on shapes data")
        print(f"{len(dataset)} images:")
        print(format_instance_ap(evaluate_instances(ckpt.model, dataset).summary()))
        return 0
    scores = evaluate(ckpt.model, dataset)
    print(f"{len(dataset)} images: mIoU {scores['miou']:.4f}, "
          f"pixel accuracy {scores['pixel_acc']:.4f}")
    print(scores["confusion"].table(class_names))
    return 0


def cmd_predict(args):
    from PIL import Image

    from .data.folder import read_rgb
    from .train import load_checkpoint, predict, predict_probabilities
    from .viz.palette import colorize
    from .viz.training import overlay

    _setup(args)
    ckpt = load_checkpoint(args.checkpoint)
    try:
        rgb = read_rgb(args.image).astype(np.float32) / 255               # (H, W, 3)
    except ValueError as exc:
        raise SystemExit(f"edu-seg predict: {exc}")
    image = rgb.transpose(2, 0, 1)[None]                                   # (1, 3, H, W)
    if ckpt.model.task == "instance":
        return _predict_instances(args, ckpt, image)
    if args.crf:
        from .crf import dense_crf

        probs = predict_probabilities(ckpt.model, image)[0]                # (C, H, W)
        mask = dense_crf(image[0], probs).argmax(axis=0)                   # (H, W)
    else:
        mask = predict(ckpt.model, image)[0]                               # (H, W)
    colours = ((ckpt.train_state or {}).get("data") or {}).get("class_colors")
    Image.fromarray(colorize(mask, colours)).save(args.out)
    written = [str(args.out)]
    if args.overlay:                    # the labels blended over a grey copy of the image
        blend = overlay(rgb, mask, palette=None if colours is None else np.asarray(colours))
        Image.fromarray((blend * 255).round().astype(np.uint8)).save(args.overlay)
        written.append(str(args.overlay))
    if args.ids:                        # the class ids themselves, for programs, not eyes
        Image.fromarray(mask.astype(np.uint8 if mask.max() < 256 else np.uint16)).save(args.ids)
        written.append(str(args.ids))
    names = (ckpt.train_state or {}).get("class_names") or []
    counts = np.bincount(mask.ravel(), minlength=ckpt.model.config.num_classes)
    shares = ", ".join(f"{names[k] if k < len(names) else k}: {c / mask.size:.1%}"
                       for k, c in enumerate(counts) if c)
    print(f"wrote {', '.join(written)} ({mask.shape[1]}x{mask.shape[0]}; {shares})")
    return 0


def _predict_instances(args, ckpt, image):
    """``edu-seg predict`` for an instance model: a drawing of its objects, and optionally
    their ids (one grey level per object, 0 = none) with ``--ids``."""
    from PIL import Image

    from .train import detect
    from .viz.detection import render_detections

    for flag in ("overlay", "crf"):
        if getattr(args, flag):
            raise SystemExit(f"edu-seg predict: --{flag} is for semantic models; "
                             f"{ckpt.model_name} finds objects, and --out already draws their "
                             f"masks over the image")
    (found,) = detect(ckpt.model, image)
    names = (ckpt.train_state or {}).get("class_names")
    Image.fromarray(render_detections(image[0], found, names)).save(args.out)
    written = [str(args.out)]
    kept = np.flatnonzero(found["scores"] >= 0.5)        # what the drawing shows
    if args.ids:           # later (less confident) objects never paint over earlier ones
        ids = np.zeros(image.shape[-2:], np.uint8 if len(kept) < 256 else np.uint16)
        for n, k in reversed(list(enumerate(kept, start=1))):
            ids[found["masks"][k] >= 0.5] = n
        Image.fromarray(ids).save(args.ids)
        written.append(str(args.ids))
    label = (lambda c: names[c] if names and c < len(names) else str(c))
    objects = ", ".join(f"{label(found['labels'][k])} {found['scores'][k]:.2f}" for k in kept)
    print(f"wrote {', '.join(written)} ({image.shape[3]}x{image.shape[2]}; {len(kept)} objects "
          f"with score >= 0.5{': ' + objects if objects else ''})")
    return 0


# ------------------------------------------------------------------------------------ parser
def build_parser():
    parser = argparse.ArgumentParser(prog="edu-seg", description="Semantic segmentation "
                                     "built from scratch, for learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_runtime(p):
        p.add_argument("--threads", type=int, help="threads for the kernels (BLAS gets them too "
                       "under --backend numpy, one thread otherwise)")
        p.add_argument("--backend", choices=backend.BACKENDS, help="kernels to run on")

    sub.add_parser("info", help="show the configuration").set_defaults(func=cmd_info)
    sub.add_parser("models", help="list the available models").set_defaults(func=cmd_models)

    p = sub.add_parser("demo", help="train a small U-Net on Shapes (about 2 minutes)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--device", choices=backend.DEVICES, default="cpu",
                   help="where the model trains: cpu, or cuda (a GPU, through CuPy)")
    add_runtime(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model")
    p.add_argument("--model", default="unet", help="a name from `edu-seg models`")
    p.add_argument("--model-config", nargs="*", metavar="KEY=VALUE",
                   help="model hyper-parameters, e.g. depth=3 base_width=16 padding=valid")
    p.add_argument("--data", default="shapes", help="shapes[:variant] or a CamVid-style folder")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps", type=int, help="a step budget instead of --epochs (the last "
                   "epoch stops when it is spent; the lr schedule spans exactly these steps)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", choices=("poly", "cosine", "constant"), default="poly")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/train", help="directory for checkpoints and plots")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from this last.npz (with "
                   "the settings it was trained with; Ctrl-C prints the command)")
    p.add_argument("--supervision", default="masks",
                   help="what training reads: masks (the default); or only the boxes and "
                   "classes, with BoxSup's mask estimation (boxes) or the filled boxes as "
                   "masks (filled-boxes); Shapes data only")
    p.add_argument("--backbone-weights", metavar="NPZ", help="start the model's backbone from "
                   "these pretrained weights (written by edu-seg pretrain; the backbone's name "
                   "and parameter shapes must match); not with --resume")
    p.add_argument("--train-samples", type=int, default=1024, help="Shapes only")
    p.add_argument("--val-samples", type=int, default=256, help="Shapes only")
    p.add_argument("--size", type=int, default=64, help="Shapes only: image size")
    p.add_argument("--num-classes", type=int, default=4, help="Shapes only, incl. background")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--device", choices=backend.DEVICES, default="cpu",
                   help="where the model trains: cpu, or cuda (a GPU, through CuPy)")
    add_runtime(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pretrain", help="pretrain a backbone to classify Shapes scenes (which "
                       "shape classes each shows), for train --backbone-weights")
    p.add_argument("--backbone", required=True, help="a backbone name, e.g. resnet_tiny "
                   "(edu_seg.models.available_backbones())")
    p.add_argument("--backbone-config", nargs="*", metavar="KEY=VALUE",
                   help="backbone config fields, e.g. widths=[16,32,64,128] stem_width=16 (to "
                   "match a model that widens its backbone)")
    p.add_argument("--task", default="presence",
                   help="presence: which classes a scene shows (multi-label); count: how many "
                   "objects of each (harder)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", default="default", help="the Shapes variant")
    p.add_argument("--train-samples", type=int, help="training scenes, reused epoch after "
                   "epoch (default: steps x batch size, a new scene for every image)")
    p.add_argument("--val-samples", type=int, default=256)
    p.add_argument("--val-every", type=int, default=250, help="validate and print a line "
                   "every N steps (and after the last)")
    p.add_argument("--size", type=int, default=64, help="image size")
    p.add_argument("--num-classes", type=int, default=4, help="Shapes classes, incl. background")
    p.add_argument("--out", default="runs/pretrain", help="folder of NAME.npz and "
                   "NAME_history.json")
    add_runtime(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("zoo", help="train models with one recipe on Shapes variants; write "
                       "RESULTS.md and results.csv")
    p.add_argument("--models", nargs="+", metavar="MODEL",
                   help="registered semantic models, MODEL:PRESET for a preset such as an "
                   "ablation (default: every model at its default)")
    p.add_argument("--variants", nargs="+", metavar="VARIANT",
                   help="Shapes variants: default, scale, context, thin, boundary, nonconvex "
                   "(default: default)")
    p.add_argument("--supervision", nargs="+", default=["masks"], metavar="SUPERVISION",
                   help="what each row trains from: masks (default), boxes (BoxSup), "
                   "filled-boxes; one row per model, variant and supervision")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps per model and variant")
    p.add_argument("--instance-models", nargs="+", metavar="MODEL",
                   help="models that find objects (mask_rcnn, mask_rcnn:roi_pool, "
                   "rcnn_regions), one row each scored by mask AP; alone, only these rows are "
                   "trained")
    p.add_argument("--instance-steps", type=int, help="optimiser steps per instance row "
                   "(default: 640, the recipe edu-seg train uses for Mask R-CNN)")
    p.add_argument("--all", action="store_true", help="the whole table: every semantic model "
                   "on default, scale, context, thin and boundary, then Mask R-CNN with "
                   "RoIAlign and RoIPool and R-CNN's regions scored by mask AP (1 h 51 min on "
                   "2 cores of an AMD EPYC)")
    p.add_argument("--quick", action="store_true", help="a subset in minutes: unet, fcn8s, "
                   "bisenet, icnet, deeplabv3, denseaspp on default and context")
    p.add_argument("--out", default="zoo", help="folder of RESULTS.md and results.csv; rows "
                   "merge into an existing results.csv by (model, variant, supervision)")
    p.add_argument("--jobs", type=int, default=1, help="rows trained at once, each in its "
                   "own process with THREADS/JOBS threads (each row records its thread count; "
                   "--quick --jobs 2 on 2 cores took 0.9x the time of one 2-thread row at a "
                   "time)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--plot", action="store_true", help="train nothing: time each model's "
                   "inference on one 64x64 and one 256x256 image (--models, default: every "
                   "model with a default row in results.csv), merge speed.csv and draw "
                   "speed_accuracy.png (ms per image against mIoU) in --out")
    add_runtime(p)
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("key-points", help="measure the course's key points with the zoo's "
                       "recipe: backbone families, deep supervision, low resolution first, "
                       "pretraining; write KEY_POINTS.md and key_points.csv")
    p.add_argument("--studies", nargs="+", metavar="STUDY", help="backbones, supervision, "
                   "resolution, pretraining (default: all four, about 45 minutes on 2 cores)")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps per row")
    p.add_argument("--quick", action="store_true", help="only the first two rows of each study")
    p.add_argument("--pretrain-dir", default="runs/pretrain", help="where the pretraining "
                   "study keeps its pretrained backbones (NAME.npz, reused when present)")
    p.add_argument("--pretrain-steps", type=int, default=3000, help="steps of each backbone's "
                   "pretraining")
    p.add_argument("--out", default="zoo", help="folder of KEY_POINTS.md, key_points.csv and "
                   "the plots; rows merge into an existing key_points.csv")
    add_runtime(p)
    p.set_defaults(func=cmd_key_points)

    p = sub.add_parser("compare", help="final metrics and curves of several training runs")
    p.add_argument("runs", nargs="+", metavar="RUN", help="folders written by `edu-seg train "
                   "--out` (each holds history.json)")
    p.add_argument("--out", default="compare.png", help="where to write the plot")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("eval", help="evaluate a checkpoint (per-class IoU table)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", help="default: the validation data the checkpoint was trained with")
    p.add_argument("--split", default="val", help="folder data sets: the split to evaluate")
    add_runtime(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="segment one image into a colour-coded label PNG")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--image", required=True, help="input image (PNG, JPEG, ...)")
    p.add_argument("--out", required=True, help="output label PNG, painted in the class colours "
                   "(an instance model: the image with its objects' boxes, classes, scores "
                   "and masks)")
    p.add_argument("--overlay", metavar="PNG", help="also write the labels blended over the "
                   "image")
    p.add_argument("--ids", metavar="PNG", help="also write the raw class ids (one grey level "
                   "per class: 0, 1, 2, ...; an instance model: one per object, 0 = none)")
    p.add_argument("--crf", action="store_true", help="refine the model's probabilities with "
                   "the fully connected CRF (edu_seg.crf.dense_crf, default parameters) "
                   "before taking the argmax")
    add_runtime(p)
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv=None):
    """Entry point of the ``edu-seg`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Interrupted as exc:
        # Ctrl-C is an answer, not a crash: say what is saved instead of a traceback; 130 is
        # the shell's exit status for a command stopped by SIGINT.
        print(exc, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"edu-seg {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:
        # Bad input (a corrupted checkpoint, an unknown model, a wrong size) is reported by
        # the library with a message that says what to change: show it without a traceback.
        print(f"edu-seg {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        # An environment problem (e.g. --backend cupy without CuPy or a GPU): one line too.
        # NotImplementedError and RecursionError are bugs, not input: keep their traceback.
        if isinstance(exc, (NotImplementedError, RecursionError)):
            raise
        print(f"edu-seg {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
