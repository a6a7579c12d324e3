"""Backbone pretraining: the classification targets, the classifier, a deterministic recipe,
the backbone's file (round trip into a segmentation model, every refusal), and the commands
``edu-seg pretrain`` and ``edu-seg train --backbone-weights``."""
import io
import json
import zipfile

import numpy as np
import pytest

from edu_seg import cli, models
from edu_seg.autograd import Tensor
from edu_seg.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from edu_seg.data import Shapes
from edu_seg.models.backbones import create_backbone
from edu_seg.optim import Adam
from edu_seg.pretrain import (BackboneClassifier, ShapesClassification, _loss,
                              evaluate_classifier, load_pretrained_backbone, majority_baseline,
                              pretrain_backbone, save_backbone)
from edu_seg.train import seed_everything
from test_checkpoint import members, meta_of, npy, with_meta, write_zip

TINY = dict(steps=4, batch_size=8, train_samples=16, val_samples=8, val_every=2, size=32)
WIDE = {"widths": (16, 32, 64, 128), "stem_width": 16}      # PSPNet's resnet_tiny


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A resnet_tiny pretrained for a few steps and saved: (classifier, history, path)."""
    classifier, history = pretrain_backbone("resnet_tiny", **TINY)
    path = tmp_path_factory.mktemp("pretrain") / "resnet_tiny.npz"
    save_backbone(path, classifier, history)
    return classifier, history, path


def deeplab():
    return models.create("deeplabv3plus", num_classes=4, backbone="resnet_tiny")


def parameters(module):
    return {k: v.data.copy() for k, v in module.named_parameters()}


# ------------------------------------------------------------------------------- the targets
@pytest.mark.parametrize("variant, num_classes", [("default", 5), ("context", 4),
                                                  ("nonconvex", 4)])
def test_presence_targets_are_the_foreground_classes_of_the_mask(variant, num_classes):
    shapes = Shapes(12, size=32, num_classes=num_classes, variant=variant, seed=3,
                    max_objects=6)
    view = ShapesClassification(shapes)
    assert len(view) == 12 and view.class_names == shapes.class_names[1:]
    for i in range(len(view)):
        item = view[i]
        present = np.isin(np.arange(1, num_classes), shapes[i]["mask"])
        assert item["target"].dtype == np.float32
        np.testing.assert_array_equal(item["target"], present.astype(np.float32))
        np.testing.assert_array_equal(item["image"], shapes[i]["image"])


def test_count_targets_count_the_visible_instances_of_each_class():
    shapes = Shapes(12, size=32, num_classes=4, seed=5, max_objects=6)
    view = ShapesClassification(shapes, task="count")
    for i in range(len(view)):
        sample = shapes[i]
        counts = [sum(int(c) == k for c in sample["labels"]) for k in (1, 2, 3)]
        np.testing.assert_array_equal(view[i]["target"], counts)
        # every counted instance is visible in the mask under its class
        for mask, label in zip(sample["instance_masks"], sample["labels"]):
            assert mask.any() and (sample["mask"][mask] == label).all()
    assert max(view[i]["target"].max() for i in range(len(view))) >= 2   # counts, not flags


def test_an_unknown_task_is_refused():
    with pytest.raises(ValueError, match="task must be one of .*'presence', 'count'.*'colour'"):
        ShapesClassification(Shapes(2), task="colour")
    with pytest.raises(ValueError, match="pretrain_backbone: task must be one of"):
        pretrain_backbone("resnet_tiny", task="colour", **TINY)


def test_majority_baseline_is_the_best_constant_answer():
    targets = np.array([[1, 0, 2], [1, 1, 2], [0, 0, 1], [1, 0, 0]], np.float32)
    # the majority answer (1, 0, 2) is right on 3, 3 and 2 of the 4 images per label, and
    # entirely right on image 0 only
    assert majority_baseline(targets) == {"label_acc": 8 / 12, "exact_match": 1 / 4}


# ---------------------------------------------------------------------------- the classifier
@pytest.mark.parametrize("name", ["resnet_tiny", "vgg_bn_tiny", "mobilenet_v2_tiny",
                                  "xception_tiny", "densenet_tiny"])
def test_classifier_gives_one_score_per_target(name):
    classifier = BackboneClassifier(name, 3)
    scores = classifier(Tensor(np.random.default_rng(0).random((2, 3, 32, 32), np.float32)))
    assert scores.shape == (2, 3)
    assert classifier.fc.in_features == classifier.backbone.stage_channels[-1]


def test_a_full_size_preset_is_built_without_its_imagenet_classifier():
    classifier = BackboneClassifier("resnet18", 3)
    assert classifier.backbone.config.num_classes is None
    assert not any(k.startswith("fc.") for k in classifier.backbone.state_dict())
    # ... so its weights fit the backbone a segmentation model builds from the same preset
    model = models.create("deeplabv3plus", num_classes=4, backbone="resnet18")
    assert {k: v.shape for k, v in model.backbone.state_dict().items()} == \
        {k: v.shape for k, v in classifier.backbone.state_dict().items()}


@pytest.mark.parametrize("task", ["presence", "count"])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(task):
    data = ShapesClassification(Shapes(8, size=32, seed=1), task)
    x = Tensor(np.stack([data[i]["image"] for i in range(8)]))
    target = np.stack([data[i]["target"] for i in range(8)])
    classifier = BackboneClassifier("resnet_tiny", 3)
    optimizer = Adam(classifier.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = _loss(task, classifier(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_evaluate_scores_answers_against_targets_and_restores_the_mode():
    data = ShapesClassification(Shapes(6, size=32, seed=2), "count")
    classifier = BackboneClassifier("resnet_tiny", 3)
    scores = evaluate_classifier(classifier, data, batch_size=4)
    assert set(scores) == {"loss", "label_acc", "exact_match"}
    assert 0 <= scores["exact_match"] <= scores["label_acc"] <= 1
    assert classifier.training


# -------------------------------------------------------------------------------- the recipe
def test_the_history_records_every_validation_and_the_recipe(pretrained):
    _, history, _ = pretrained
    assert [r["step"] for r in history["records"]] == [2, 4]          # val_every=2
    assert history["records"][1]["lr"] < history["records"][0]["lr"] == 3e-3   # poly decay
    for record in history["records"]:
        assert {"train_loss", "val_loss", "val_label_acc", "val_exact_match",
                "seconds"} <= set(record)
        assert 0 <= record["val_exact_match"] <= record["val_label_acc"] <= 1
    assert history["recipe"]["steps"] == 4 and history["recipe"]["task"] == "presence"
    assert history["class_names"] == ["circle", "square", "triangle"]
    assert 0 < history["baseline"]["label_acc"] <= 1
    # the pretraining scenes are none of the scenes edu-seg train reads with small seeds
    assert min(history["recipe"]["data_seeds"]) >= 1000
    json.dumps(history)                                                # JSON-able as it is


def test_new_scenes_for_every_image_by_default_and_a_record_after_the_last_step():
    _, history = pretrain_backbone("resnet_tiny", steps=5, batch_size=4, val_samples=4,
                                   val_every=2, size=32)
    assert history["recipe"]["train_samples"] == 5 * 4
    assert [r["step"] for r in history["records"]] == [2, 4, 5]


def test_pretraining_is_deterministic_given_the_seed(pretrained):
    classifier, history, _ = pretrained
    again, history_again = pretrain_backbone("resnet_tiny", **TINY)
    for key, value in classifier.state_dict().items():
        np.testing.assert_array_equal(value, again.state_dict()[key], err_msg=key)
    assert [r["train_loss"] for r in history["records"]] == \
        [r["train_loss"] for r in history_again["records"]]
    other, _ = pretrain_backbone("resnet_tiny", **{**TINY, "seed": 1})
    assert not np.array_equal(other.fc.weight.data, classifier.fc.weight.data)


def test_the_count_task_trains_and_is_scored_by_rounded_counts():
    classifier, history = pretrain_backbone("resnet_tiny", task="count", **TINY)
    assert history["recipe"]["task"] == "count" and len(history["records"]) == 2
    assert np.isfinite(history["records"][-1]["val_loss"])


@pytest.mark.parametrize("change, match", [
    ({"steps": 0}, "steps must be an int >= 1, got 0"),
    ({"val_every": 0}, "val_every must be an int >= 1, got 0"),
    ({"batch_size": 32}, r"train_samples \(16\) is fewer than one batch \(batch_size 32\)"),
    ({"lr": -1.0}, "lr must be a positive number"),
    ({"seed": -1}, "seed must be an int >= 0"),
    ({"overrides": {"depth": 3}}, "unknown config field"),
])
def test_bad_arguments_are_refused_by_name(change, match):
    with pytest.raises(ValueError, match=match):
        pretrain_backbone("resnet_tiny", **{**TINY, **change})


# -------------------------------------------------------------------------------- the file
def test_round_trip_into_a_segmentation_models_backbone(pretrained):
    classifier, history, path = pretrained
    model = deeplab()          # builds resnet_tiny at output stride 8: dilated, same shapes
    assert model.backbone.config.output_stride == 8
    rest = {k: v for k, v in parameters(model).items() if not k.startswith("backbone.")}
    loaded = load_pretrained_backbone(model, path)
    for key, value in classifier.backbone.state_dict().items():      # buffers too
        np.testing.assert_array_equal(model.backbone.state_dict()[key], value, err_msg=key)
    for key, value in rest.items():                                   # the head is untouched
        np.testing.assert_array_equal(parameters(model)[key], value, err_msg=key)
    assert loaded["backbone"] == "resnet_tiny" and loaded["overrides"] == {}
    assert loaded["history"]["records"] == history["records"]
    with zipfile.ZipFile(path) as z:                                  # no head in the file
        assert not any(n.startswith("model/fc.") for n in z.namelist())


def test_overrides_that_shape_parameters_travel_with_the_weights(tmp_path):
    classifier, history = pretrain_backbone("resnet_tiny", overrides=WIDE, **TINY)
    save_backbone(tmp_path / "wide.npz", classifier, history)
    assert meta_of(members(tmp_path / "wide.npz"))["overrides"] == \
        {"widths": [16, 32, 64, 128], "stem_width": 16}
    model = models.create("pspnet", num_classes=4)                  # widens its resnet_tiny
    load_pretrained_backbone(model, tmp_path / "wide.npz")
    np.testing.assert_array_equal(model.backbone.conv1.weight.data,
                                  classifier.backbone.conv1.weight.data)


def test_a_backbone_or_a_trained_models_encoder_can_be_saved_too(tmp_path):
    source = deeplab()
    save_backbone(tmp_path / "encoder.npz", source)                  # its backbone only
    target = models.create("refinenet", num_classes=4)               # resnet_tiny at stride 32
    assert load_pretrained_backbone(target, tmp_path / "encoder.npz")["history"] is None
    np.testing.assert_array_equal(target.backbone.layer4[0].conv1.weight.data,
                                  source.backbone.layer4[0].conv1.weight.data)
    backbone = create_backbone("resnet_tiny")
    save_backbone(tmp_path / "plain.npz", backbone)
    load_pretrained_backbone(create_backbone("resnet_tiny"), tmp_path / "plain.npz")


def test_what_has_no_backbone_is_refused():
    with pytest.raises(ValueError, match="save_backbone: unet has no backbone attribute"):
        save_backbone("x.npz", models.create("unet", num_classes=4))
    backbone = create_backbone("resnet_tiny")
    backbone.name = None
    with pytest.raises(ValueError, match="has no registry name"):
        save_backbone("x.npz", backbone)


def test_a_model_without_a_backbone_is_refused(pretrained):
    _, _, path = pretrained
    for name in ("unet", "icnet"):     # icnet splits its ResNet among its branches
        with pytest.raises(ValueError, match=f"load_pretrained_backbone: {name} has no "
                                             f"backbone attribute"):
            load_pretrained_backbone(models.create(name, num_classes=4), path)


def test_another_backbone_is_refused_naming_both(pretrained):
    _, _, path = pretrained
    model = models.create("fcn8s", num_classes=4)                   # vgg_bn_tiny
    before = parameters(model)
    with pytest.raises(CheckpointError, match="pretrained 'resnet_tiny' backbone, but the "
                                              "backbone of fcn8s is 'vgg_bn_tiny'"):
        load_pretrained_backbone(model, path)
    for key, value in before.items():
        np.testing.assert_array_equal(parameters(model)[key], value)


def test_other_parameter_shapes_are_refused_naming_settings_and_parameters(pretrained):
    _, _, path = pretrained
    model = models.create("pspnet", num_classes=4)                  # widths (16, 32, 64, 128)
    before = parameters(model)
    with pytest.raises(CheckpointError, match=r"built with the preset's settings, and the "
                       r"backbone of pspnet is built with widths=\[16,32,64,128\] "
                       r"stem_width=16 output_stride=8; their parameters differ: "
                       r"conv1.weight: \(8, 3, 7, 7\) in the checkpoint, \(16, 3, 7, 7\)"):
        load_pretrained_backbone(model, path)
    for key, value in before.items():
        np.testing.assert_array_equal(parameters(model)[key], value)
    grey = models.create("deeplabv3plus", num_classes=4, backbone="resnet_tiny", in_channels=1)
    with pytest.raises(CheckpointError, match=r"in_channels=1 output_stride=8.*conv1.weight: "
                                              r"\(8, 3, 7, 7\) in the checkpoint, "
                                              r"\(8, 1, 7, 7\) in the model"):
        load_pretrained_backbone(grey, path)


def test_each_loader_refuses_the_others_files(pretrained, tmp_path):
    _, _, path = pretrained
    with pytest.raises(CheckpointError, match="is not an edu_seg checkpoint .format "
                                              "'edu_seg-backbone'"):
        load_checkpoint(path)
    save_checkpoint(tmp_path / "seg.npz", deeplab())
    with pytest.raises(CheckpointError, match="is not a pretrained backbone of edu-seg "
                                              "pretrain or save_backbone .format "
                                              "'edu_seg-checkpoint'"):
        load_pretrained_backbone(deeplab(), tmp_path / "seg.npz")


def test_corrupted_and_crafted_files_are_refused_before_loading(pretrained, tmp_path):
    _, _, path = pretrained
    entries = members(path)
    model = deeplab()
    before = parameters(model)
    conv1 = "model/conv1.weight.npy"

    def refused(name, entries, match):
        write_zip(tmp_path / name, entries)
        with pytest.raises(CheckpointError, match=match):
            load_pretrained_backbone(model, tmp_path / name)

    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupted or not an .npz"):
        load_pretrained_backbone(model, tmp_path / "cut.npz")
    with pytest.raises(FileNotFoundError):
        load_pretrained_backbone(model, tmp_path / "missing.npz")
    header = io.BytesIO()                      # the header of a 40 GB array, and no data
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (100_000, 100_000)})
    refused("lie.npz", {**entries, conv1: header.getvalue()}, r"declares shape \(100000, 100000\)")
    buffer = io.BytesIO()                      # an object array: pickle, never unpickled
    np.lib.format.write_array(buffer, np.array([None, 1], dtype=object), allow_pickle=True)
    refused("pickle.npz", {**entries, conv1: buffer.getvalue()}, "holds Python objects")
    refused("bigger.npz", {**entries, conv1: npy(np.zeros((64, 3, 7, 7), np.float32))},
            r"conv1.weight: \(64, 3, 7, 7\) in the checkpoint")
    refused("extra.npz", {**entries, "junk.npy": npy(np.zeros(3))}, "nothing refers to")
    meta = meta_of(entries)
    meta["format"] = "edu_seg-checkpoint"
    refused("tag.npz", with_meta(entries, meta), "is not a pretrained backbone")
    meta = meta_of(entries)
    meta["model"]["name"] = "resnet18"
    refused("name.npz", with_meta(entries, meta), "pretrained 'resnet18' backbone")
    for key, value in before.items():                                 # nothing was loaded
        np.testing.assert_array_equal(parameters(model)[key], value, err_msg=key)


# ---------------------------------------------------------------------------- the commands
TINY_CLI = ["--steps", "4", "--batch-size", "8", "--train-samples", "16", "--val-samples",
            "8", "--val-every", "2", "--size", "32"]


def test_cli_pretrain_writes_the_weights_and_the_history(tmp_path, capsys):
    assert cli.main(["pretrain", "--backbone", "resnet_tiny", *TINY_CLI,
                     "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "step 2/4  loss " in out and "step 4/4  loss " in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("pretrained resnet_tiny in ") and "majority baseline" in last
    assert str(tmp_path / "resnet_tiny.npz") in last
    history = json.loads((tmp_path / "resnet_tiny_history.json").read_text())
    assert len(history["records"]) == 2 and history["backbone"] == "resnet_tiny"
    load_pretrained_backbone(deeplab(), tmp_path / "resnet_tiny.npz")
    assert cli.main(["pretrain", "--backbone", "resnet_tiny", "--task", "count", *TINY_CLI,
                     "--backbone-config", "widths=[16,32,64,128]", "stem_width=16",
                     "--out", str(tmp_path / "wide")]) == 0
    load_pretrained_backbone(models.create("pspnet", num_classes=4),
                             tmp_path / "wide" / "resnet_tiny.npz")


def test_cli_pretrain_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["pretrain", "--backbone", "resnet_huge", *TINY_CLI,
                     "--out", str(tmp_path)]) == 1
    assert "edu-seg pretrain: error: unknown backbone 'resnet_huge'" in capsys.readouterr().err
    assert cli.main(["pretrain", "--backbone", "resnet_tiny", "--steps", "0",
                     "--out", str(tmp_path)]) == 1
    assert "steps must be an int >= 1, got 0" in capsys.readouterr().err
    assert cli.main(["pretrain", "--backbone", "resnet_tiny", "--task", "colour",
                     "--out", str(tmp_path)]) == 1
    assert "task must be one of ('presence', 'count'), got 'colour'" in capsys.readouterr().err


def test_cli_train_starts_the_backbone_from_the_weights(pretrained, tmp_path, capsys):
    classifier, _, path = pretrained
    # A learning rate so small that one step moves no weight visibly: the trained backbone
    # must still be the pretrained one.
    argv = ["train", "--model", "deeplabv3plus", "--model-config", "backbone=resnet_tiny",
            "--steps", "1", "--batch-size", "8", "--train-samples", "8", "--val-samples", "4",
            "--size", "32", "--lr", "1e-9", "--no-progress", "--backbone-weights", str(path)]
    assert cli.main(argv + ["--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"backbone resnet_tiny: pretrained weights from {path} (presence, 4 steps" in out
    trained = load_checkpoint(tmp_path / "run" / "last.npz").model
    pretrained_weights = parameters(classifier.backbone)
    seed_everything(0)                         # the backbone the run would have started from
    scratch = parameters(deeplab().backbone)
    assert max(np.abs(scratch[k] - pretrained_weights[k]).max() for k in scratch) > 1e-3
    for key, value in parameters(trained.backbone).items():
        np.testing.assert_allclose(value, pretrained_weights[key], atol=1e-6, err_msg=key)
    assert cli.main(argv + ["--out", str(tmp_path / "again"), "--resume",
                            str(tmp_path / "run" / "last.npz")]) == 1
    assert "--backbone-weights cannot be combined with --resume" in capsys.readouterr().err
    assert cli.main([a for a in argv if a != "backbone=resnet_tiny" and a != "--model-config"]
                    + ["--out", str(tmp_path / "r18")]) == 1
    assert "the backbone of deeplabv3plus is 'resnet18'" in capsys.readouterr().err
