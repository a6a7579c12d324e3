"""Trainer (loss terms, step budget, per-epoch output, Ctrl-C), checkpoints, resume, predict."""
import dataclasses
import json
import os
import zipfile

import numpy as np
import pytest

import edu_seg
from edu_seg import models
from edu_seg.autograd import Tensor
from edu_seg.data import DataLoader, Shapes
from edu_seg.metrics import BoundaryConfusion
from edu_seg.models.base import InstanceSegmentationModel
from edu_seg.ops.loss import cross_entropy
from edu_seg.ops.misc import default_generator
from edu_seg.optim import Adam
from edu_seg.train import (CheckpointError, NonFiniteLossError, TrainConfig, Trainer, evaluate,
                           load_checkpoint, predict, predict_probabilities, save_checkpoint,
                           seed_everything)
from edu_seg.viz.training import plot_run


def tiny(depth=1, width=4, padding="same", seed=0):
    seed_everything(seed)
    return models.create("unet", num_classes=4, depth=depth, base_width=width, padding=padding)


def params_of(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------- training
class _Poisoned:
    """Shapes whose every image holds one NaN pixel."""

    def __init__(self, n):
        self.data = Shapes(n, size=32, seed=0)
        self.class_names = self.data.class_names

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        sample = self.data[i]
        sample["image"][0, 3, 5] = np.nan
        return sample


def test_a_nan_input_stops_training_at_its_batch_before_the_parameters_change():
    model = tiny()
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    config = TrainConfig(steps=4, batch_size=4, progress=False, verbose=False)
    trainer = Trainer(model, _Poisoned(16), None, config)
    with pytest.raises(NonFiniteLossError, match=r"step 1 \(epoch 1, batch 1 of the epoch\).*"
                                                 r"4 of its 12288 input values are NaN"):
        trainer.fit()
    assert trainer.step == 0
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, before[name])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")      # NumPy's overflow on the way there
def test_a_diverging_model_is_told_to_lower_the_learning_rate():
    model = tiny()
    config = TrainConfig(steps=4, batch_size=4, lr=1e30, optimizer="sgd", progress=False,
                         verbose=False)
    with pytest.raises(NonFiniteLossError, match="inputs are finite.*lower the learning rate"):
        Trainer(model, Shapes(8, size=32, seed=0), None, config).fit()


def test_loss_falls_over_a_few_steps_on_shapes():
    edu_seg.set_num_threads(1)     # small ops: 1 thread is as fast and immune to a busy machine
    model = tiny(depth=2, width=8)
    opt = Adam(list(model.parameters()), lr=1e-2)
    losses = []
    for batch in DataLoader(Shapes(96, size=32, seed=0), batch_size=8, shuffle=True, seed=0):
        loss = cross_entropy(model(Tensor(batch["image"])), batch["mask"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


def test_fit_writes_history_checkpoints_and_plots(tmp_path):
    model = tiny()
    trainer = Trainer(model, Shapes(16, size=16, seed=0), Shapes(8, size=16, seed=1),
                      TrainConfig(epochs=2, batch_size=8, progress=False), out_dir=tmp_path)
    history = trainer.fit()
    plot_run(trainer)
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        assert 0 <= h["val_miou"] <= 1 and h["val_loss"] > 0 and h["train_loss"] > 0
        assert h["images_per_s"] > 0
    for name in ("best.npz", "last.npz", "history.json", "curves.png", "predictions.png",
                 "confusion.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    best = max(h["val_miou"] for h in history)
    assert trainer.best_score == best and trainer.score_key == "val_miou"
    doc = json.loads((tmp_path / "history.json").read_text())
    assert doc["model"] == "unet" and doc["total_epochs"] == 2 and doc["history"] == history


def test_each_epoch_prints_its_line_and_writes_history_json_before_the_callback(tmp_path,
                                                                                 capsys):
    seen = []

    def on_epoch_end(trainer):
        doc = json.loads((tmp_path / "history.json").read_text())
        seen.append((trainer.epoch, len(doc["history"]), capsys.readouterr().out))

    trainer = Trainer(tiny(), Shapes(16, size=16, seed=0), Shapes(8, size=16, seed=1),
                      TrainConfig(epochs=2, batch_size=8, progress=False), out_dir=tmp_path,
                      on_epoch_end=on_epoch_end)
    trainer.fit()
    assert [(epoch, n) for epoch, n, _ in seen] == [(1, 1), (2, 2)]
    for epoch, _, out in seen:            # printed as the epoch ends, not at the end of fit
        assert out.startswith(f"epoch {epoch}/2  loss ") and "val mIoU" in out \
            and "lr " in out and out.count("\n") == 1
    quiet = Trainer(tiny(), Shapes(8, size=16), None,
                    TrainConfig(epochs=1, batch_size=8, progress=False, verbose=False))
    quiet.fit()
    assert capsys.readouterr().out == ""


def test_on_step_gets_each_unweighted_loss_term_and_they_average_to_the_history():
    seen = []
    model = models.create("pspnet", num_classes=4)                 # ce + 0.4 aux
    trainer = Trainer(model, Shapes(16, size=32, seed=0), None,
                      TrainConfig(steps=2, batch_size=8, progress=False, verbose=False),
                      on_step=lambda t, info: seen.append(info))
    history = trainer.fit()
    for info in seen:
        assert set(info["terms"]) == {"ce", "aux"}
        assert info["loss"] == pytest.approx(info["terms"]["ce"] + 0.4 * info["terms"]["aux"])
    for name in ("ce", "aux"):
        mean = sum(info["terms"][name] for info in seen) / len(seen)
        assert history[0][f"train_{name}"] == pytest.approx(mean)


def test_a_step_budget_cuts_the_last_epoch_and_sets_the_schedule_length():
    steps = []
    trainer = Trainer(tiny(), Shapes(32, size=16, seed=0), None,
                      TrainConfig(steps=6, epochs=99, batch_size=8, lr=1e-2, progress=False,
                                  verbose=False),
                      on_step=lambda t, info: steps.append((info["step"], info["epoch"])))
    assert (trainer.steps_per_epoch, trainer.total_steps, trainer.total_epochs) == (4, 6, 2)
    assert trainer.scheduler.total_steps == 6
    history = trainer.fit()
    assert steps == [(1, 0), (2, 0), (3, 0), (4, 0), (5, 1), (6, 1)]
    assert [(h["epoch"], h["step"]) for h in history] == [(1, 4), (2, 6)]
    assert trainer.optimizer.param_groups[0]["lr"] == 0      # poly reached 0 at the budget


def test_ctrl_c_in_a_step_keeps_the_last_finished_epoch_on_disk(tmp_path):
    def interrupt(trainer, info):
        if info["step"] == 3:                                 # the first step of epoch 2
            raise KeyboardInterrupt

    config = TrainConfig(epochs=3, batch_size=8, progress=False, verbose=False)
    trainer = Trainer(tiny(), Shapes(16, size=16, seed=0), Shapes(8, size=16, seed=1), config,
                      out_dir=tmp_path, on_step=interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert trainer.last_checkpoint == tmp_path / "last.npz"
    assert trainer.last_checkpoint_epoch == 1
    assert load_checkpoint(tmp_path / "last.npz").train_state["epoch"] == 1
    assert len(json.loads((tmp_path / "history.json").read_text())["history"]) == 1
    resumed = Trainer(tiny(), Shapes(16, size=16, seed=0), Shapes(8, size=16, seed=1), config,
                      out_dir=tmp_path).resume(tmp_path / "last.npz")
    assert [h["epoch"] for h in resumed.fit()] == [1, 2, 3]


@dataclasses.dataclass
class _NumClasses:
    num_classes: int


class _TwoLossInstanceModel(InstanceSegmentationModel):
    """A stand-in instance model: training forward returns a dict of named losses."""

    config_class = _NumClasses
    name = "test-instance"

    def __init__(self, config):
        super().__init__(config)
        self.conv = edu_seg.nn.Conv2d(3, 1, 1)

    def forward_train(self, batch):
        return self(Tensor(batch["image"]))

    def forward(self, x):
        y = self.conv(x)
        return {"loss_objectness": (y * y).mean(), "loss_mask": y.relu().mean()}


def test_an_instance_model_trains_through_the_same_loop(tmp_path):
    model = _TwoLossInstanceModel(_NumClasses(num_classes=4))
    trainer = Trainer(model, Shapes(16, size=16), None,
                      TrainConfig(epochs=2, batch_size=8, progress=False, verbose=False))
    history = trainer.fit()
    assert {"train_loss", "train_loss_objectness", "train_loss_mask"} <= set(history[-1])
    assert not {"val_miou", "train_pixel_acc"} & set(history[-1])
    assert history[-1]["train_loss"] == pytest.approx(
        history[-1]["train_loss_objectness"] + history[-1]["train_loss_mask"])
    assert trainer.val_scores is None


def test_an_instance_model_is_validated_by_box_and_mask_ap(tmp_path):
    edu_seg.nn.init.manual_seed(0)
    model = models.create("mask_rcnn", num_classes=4)
    trainer = Trainer(model, Shapes(8, seed=0), Shapes(4, seed=1),
                      TrainConfig(steps=2, batch_size=4, progress=False), out_dir=tmp_path)
    history = trainer.fit()
    assert trainer.score_key == "val_mask_ap"
    for task in ("box", "mask"):
        for name in ("AP", "AP50", "AP75"):
            assert history[-1][f"val_{task}_{name.lower()}"] == \
                trainer.val_scores.summary()[task][name]
    assert trainer.best_score == max(h["val_mask_ap"] for h in history)
    assert (tmp_path / "best.npz").exists()
    assert "val mask AP" in trainer.epoch_line(history[-1])
    with pytest.raises(ValueError, match="score it with evaluate_instances"):
        evaluate(model, Shapes(4, seed=1))


def test_evaluate_scores_the_boundary_band_in_the_same_pass():
    model = tiny()
    data = Shapes(10, size=16, seed=2)
    scores = evaluate(model, data, batch_size=3, boundary_band=1)
    assert "boundary_miou" not in evaluate(model, data, batch_size=3)
    preds = predict(model, np.stack([data[i]["image"] for i in range(10)]))
    masks = np.stack([data[i]["mask"] for i in range(10)])
    band = BoundaryConfusion(model.config.num_classes, band=1)
    band.update(preds, masks)
    assert scores["boundary_miou"] == pytest.approx(band.miou(), rel=1e-12)
    assert 0 < band.matrix.sum() < 10 * 16 * 16              # the band, not every pixel


def test_evaluate_uses_one_confusion_matrix_over_the_whole_set():
    model = tiny()
    data = Shapes(10, size=16, seed=2)
    trainer = Trainer(model, data, None, TrainConfig(batch_size=3, progress=False))
    scores = trainer.evaluate(data)
    cm = scores["confusion"]
    assert cm.matrix.sum() == 10 * 16 * 16            # every pixel, across uneven batches
    preds = predict(model, np.stack([data[i]["image"] for i in range(10)]))
    masks = np.stack([data[i]["mask"] for i in range(10)])
    assert scores["pixel_acc"] == pytest.approx((preds == masks).mean())


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trips_exactly(tmp_path):
    model = tiny(depth=2)
    # make the batch-norm buffers non-trivial
    Trainer(model, Shapes(8, size=16), None, TrainConfig(batch_size=4, progress=False)) \
        .train_one_epoch()
    save_checkpoint(tmp_path / "m.npz", model)
    rebuilt = load_checkpoint(tmp_path / "m.npz")
    assert rebuilt.model_name == "unet" and rebuilt.model is not model
    assert rebuilt.model.config == model.config
    a, b = model.state_dict(), rebuilt.model.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    # into an existing model, too
    other = tiny(depth=2, seed=1)
    load_checkpoint(tmp_path / "m.npz", other)
    for k, v in other.state_dict().items():
        assert np.array_equal(v, a[k]), k


def test_state_dict_round_trips_through_load_state_dict():
    a, b = tiny(depth=2, seed=0), tiny(depth=2, seed=1)
    b.load_state_dict(a.state_dict())
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and np.array_equal(va, vb)


def test_corrupted_checkpoint_raises_a_clear_error(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, tiny())
    data = path.read_bytes()
    # truncated (a crash while copying it)
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.npz is corrupted"):
        load_checkpoint(tmp_path / "cut.npz")
    # bytes flipped inside an array: the zip's CRC catches it
    flipped = bytearray(data)
    for i in range(len(data) // 3, len(data) // 3 + 16):
        flipped[i] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="flip.npz"):
        load_checkpoint(tmp_path / "flip.npz")
    # not a checkpoint at all
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CheckpointError, match="not an .npz file"):
        load_checkpoint(tmp_path / "text.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="no meta.json"):
        load_checkpoint(tmp_path / "plain.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz does not exist"):
        load_checkpoint(tmp_path / "missing.npz")


def test_mismatched_checkpoint_raises_a_clear_error(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, tiny(width=4))
    with pytest.raises(CheckpointError, match=r"does not fit this unet.*encoder\.0\.0\.conv"
                                              r"\.weight: \(4, 3, 3, 3\) in the checkpoint, "
                                              r"\(8, 3, 3, 3\) in the model"):
        load_checkpoint(path, tiny(width=8))
    with pytest.raises(CheckpointError, match="missing .*encoder.1"):
        load_checkpoint(path, tiny(depth=2, width=4))
    other = tiny()
    other.name = "fcn"
    with pytest.raises(CheckpointError, match="holds a 'unet' model, but the model to load it "
                                              "into is a 'fcn'"):
        load_checkpoint(path, other)


def test_save_is_atomic(tmp_path, monkeypatch):
    """A crash while writing leaves the previous checkpoint intact and no temporary file."""
    path = tmp_path / "m.npz"
    model = tiny()
    save_checkpoint(path, model)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, tiny(seed=3))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]
    assert zipfile.is_zipfile(path)


# ----------------------------------------------------------------------------------- resume
def _run(tmp_path, stop_after=None, resume_from=None):
    """Train a tiny model for 2 epochs, or for ``stop_after`` epochs, or resume and finish."""
    edu_seg.set_num_threads(1)
    model = tiny(depth=1, width=4, seed=0)
    config = TrainConfig(epochs=2, batch_size=4, lr=5e-3, optimizer="adam", seed=7,
                         progress=False)
    trainer = Trainer(model, Shapes(12, size=16, seed=0), Shapes(4, size=16, seed=1), config,
                      out_dir=tmp_path)
    if resume_from is not None:
        default_generator().random(5)          # a different generator state: resume must fix it
        trainer.resume(resume_from)
    trainer.fit(epochs=stop_after)
    return trainer


def test_resume_continues_identically(tmp_path):
    full = _run(tmp_path / "full")
    full_rng = default_generator().random(3)

    first = _run(tmp_path / "half", stop_after=1)
    assert first.epoch == 1
    resumed = _run(tmp_path / "resumed", resume_from=tmp_path / "half" / "last.npz")
    resumed_rng = default_generator().random(3)
    assert resumed.epoch == 2

    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k} differs after resume"
    sa, sb = full.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert repr(_strip(sa)) == repr(_strip(sb))
    for ra, rb in zip(full.history, resumed.history):
        for key in ("epoch", "lr", "train_loss", "train_pixel_acc", "val_loss", "val_miou"):
            assert ra[key] == rb[key], key
    assert np.array_equal(full_rng, resumed_rng)


def _strip(tree):
    """Arrays -> bytes, for an exact comparison of nested optimiser states."""
    if isinstance(tree, dict):
        return {k: _strip(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_strip(v) for v in tree]
    if isinstance(tree, np.ndarray):
        return (tree.dtype.str, tree.shape, tree.tobytes())
    return tree


def test_resume_refuses_a_different_train_config(tmp_path):
    model = tiny()
    t = Trainer(model, Shapes(4, size=16), None, TrainConfig(epochs=1, batch_size=4,
                                                             progress=False), out_dir=tmp_path)
    t.fit()
    t.save(tmp_path / "state.npz")
    other = Trainer(tiny(), Shapes(4, size=16), None,
                    TrainConfig(epochs=1, batch_size=2, progress=False))
    with pytest.raises(CheckpointError, match="different TrainConfig.*batch_size"):
        other.resume(tmp_path / "state.npz")
    quiet = Trainer(tiny(), Shapes(4, size=16), None,        # what is shown may change
                    TrainConfig(epochs=1, batch_size=4, progress=True, verbose=False))
    assert quiet.resume(tmp_path / "state.npz").epoch == 1


# ---------------------------------------------------------------------------------- predict
@pytest.mark.parametrize("padding, depth", [("same", 2), ("valid", 1)])
def test_predict_any_image_size(padding, depth):
    model = tiny(depth=depth, padding=padding)
    images = np.random.default_rng(0).random((2, 3, 21, 30)).astype(np.float32)
    pred = predict(model, images)
    assert pred.shape == (2, 21, 30) and pred.dtype == np.int64
    assert pred.min() >= 0 and pred.max() < 4
    assert model.training                         # mode restored


def test_valid_mode_trains_with_cropped_targets():
    model = tiny(depth=1, padding="valid")
    size = model.input_size_for(20)               # an input whose output covers 20 pixels
    data = Shapes(4, size=16, seed=0)

    class Padded:                                 # Shapes images mirror-padded to `size`
        class_names = data.class_names

        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            s = data[i]
            p = (size - 16) // 2, size - 16 - (size - 16) // 2
            return {"image": np.pad(s["image"], ((0, 0), p, p), mode="symmetric"),
                    "mask": np.pad(s["mask"], (p, p), mode="symmetric")}

    trainer = Trainer(model, Padded(), Padded(), TrainConfig(epochs=1, batch_size=2,
                                                             progress=False))
    history = trainer.fit()
    assert np.isfinite(history[0]["train_loss"]) and 0 <= history[0]["val_miou"] <= 1
    assert trainer.evaluate(Padded())["confusion"].matrix.sum() == \
        4 * model.output_size(size) ** 2


def test_train_config_validation():
    with pytest.raises(ValueError, match="optimizer must be"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr must be positive"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="steps must be a positive int or None, got 0"):
        TrainConfig(steps=0)
    assert dataclasses.asdict(TrainConfig())["optimizer"] == "adam"


def test_large_images_are_predicted_tile_by_tile_with_the_same_result():
    # A small fully convolutional U-Net reaches about 10 px to each side: with 16 px of margin
    # the tiles see all the context the whole image gives each kept pixel.
    seed_everything(0)
    model = models.create("unet", num_classes=4, depth=1, base_width=4)
    images = np.random.default_rng(0).random((2, 3, 70, 91), dtype=np.float32)
    whole = predict_probabilities(model, images)                     # 91 <= 512: one pass
    tiled = predict_probabilities(model, images, tile=48, margin=16)  # 16-px tiles: 30 of them
    assert tiled.shape == (2, 4, 70, 91)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)
    # without the margin the tiles' edges see mirrored context instead of their neighbours
    blind = predict_probabilities(model, images, tile=48, margin=0)
    assert np.abs(blind - whole).max() > 1e-3
    assert model.training                                              # the mode is restored
    with pytest.raises(ValueError, match="tile must be an int >= 1, got 0"):
        predict_probabilities(model, images, tile=0)
    with pytest.raises(ValueError, match="margin must be an int >= 0, got -1"):
        predict_probabilities(model, images, margin=-1)
