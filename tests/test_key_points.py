"""``edu-seg key-points``: the studies' runs, their rows, the tables and plots, and reuse of
pretrained backbones."""
import csv

import numpy as np
import pytest

from edu_seg import cli, models
from edu_seg.bench import key_points as kp
from edu_seg.bench import recipe


@pytest.fixture
def small_recipe(monkeypatch):
    """The zoo recipe on 32 training and 16 held-out images: the suite's fast mode."""
    monkeypatch.setitem(recipe.RECIPE, "train_samples", 32)
    monkeypatch.setitem(recipe.RECIPE, "val_samples", 16)


def _rows(out):
    with open(out / "key_points.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_backbone_study_puts_one_decoder_on_five_families_matched_in_parameters():
    runs = kp.study_runs("backbones")
    assert [r.setting for r in runs] == ["VGG", "ResNet", "DenseNet", "MobileNetV2", "Xception"]
    assert {r.model for r in runs} == {"deeplabv3plus"}
    counts = [models.summary(models.create_backbone(r.backbone), (1, 3, 64, 64)).total_params
              for r in runs]
    assert max(counts) / min(counts) < 1.1, counts        # matched: within 10%


def test_supervision_study_switches_the_auxiliary_losses_off_for_three_seeds():
    runs = kp.study_runs("supervision")
    assert len(runs) == 4 * 2 * 3
    for name in ("pspnet", "bisenet", "dfn", "icnet"):
        on = [r for r in runs if r.model == name]
        off = [r for r in runs if r.model.startswith(f"{name}:")]
        assert [r.seed for r in on] == [r.seed for r in off] == [0, 1, 2]
        aux_on = recipe.build_zoo_model(on[0].model, 4).aux_weights
        aux_off = recipe.build_zoo_model(off[0].model, 4).aux_weights
        assert aux_on and aux_off == {}


def test_resolution_study_moves_the_heavy_part_to_lower_resolutions():
    runs = kp.study_runs("resolution")
    assert [dict(r.overrides)["output_stride"] for r in runs] == [8, 16, 32]
    flops = [models.summary(recipe.build_zoo_model(r.model, 4, dict(r.overrides)),
                            (1, 3, 64, 64)).total_flops for r in runs]
    assert flops[0] > flops[1] > flops[2]


def test_pretraining_study_pairs_scratch_and_pretrained_at_two_amounts_of_labels():
    runs = kp.study_runs("pretraining")
    assert len(runs) == 5 * 2 * 2 and all(r.curve for r in runs)
    pairs = {(r.backbone, r.train_samples, r.pretrained) for r in runs}
    assert len(pairs) == len(runs)
    assert {r.train_samples for r in runs} == {64, 1024}


def test_unknown_study_and_bad_steps_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown study 'speed'.*backbones"):
        kp.study_runs("speed")
    assert cli.main(["key-points", "--studies", "speed", "--out", str(tmp_path)]) != 0
    assert "choose from backbones, supervision, resolution, pretraining" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--steps must be a positive int, got 0"):
        kp.run_key_points(["resolution"], steps=0, out=tmp_path)


def test_quick_run_writes_every_study_and_a_rerun_merges(small_recipe, tmp_path, capsys):
    out = tmp_path / "zoo"
    argv = ["key-points", "--quick", "--steps", "2", "--pretrain-steps", "2",
            "--pretrain-dir", str(tmp_path / "pretrain"), "--out", str(out)]
    assert cli.main(argv) == 0
    rows = _rows(out)
    assert [r["study"] for r in rows] == [s for s in kp.STUDIES for _ in range(2)]
    for row in rows:
        assert 0 <= float(row["miou"]) <= 1 and row["steps"] == "2" and row["cpu"]
        assert len(row["ce_curve"].split(";")) == 2            # one point per step here
    pretrained = [r for r in rows if r["setting"].endswith("pretrained")]
    assert len(pretrained) == 1 and 0 <= float(pretrained[0]["pretrain_label_acc"]) <= 1
    assert (tmp_path / "pretrain" / "vgg_bn_small.npz").exists()
    curves = [r["miou_curve"] for r in rows if r["study"] == "pretraining"]
    assert all(c.split()[-1].startswith("2:") for c in curves)   # measured at the last step
    md = (out / "KEY_POINTS.md").read_text()
    for study in kp.STUDIES:
        assert f"![{study}](key_points_{study}.png)" in md
        assert (out / f"key_points_{study}.png").stat().st_size > 0
    # a rerun of one study replaces its rows and keeps the others
    assert cli.main(["key-points", "--studies", "resolution", "--quick", "--steps", "1",
                     "--out", str(out)]) == 0
    again = _rows(out)
    assert len(again) == len(rows)
    assert [r["steps"] for r in again if r["study"] == "resolution"] == ["1", "1"]
    assert [r["steps"] for r in again if r["study"] != "resolution"] == ["2"] * 6


def test_a_pretrained_backbone_is_reused_only_when_pretrained_with_the_same_steps(tmp_path):
    path, history = kp.pretrained_backbone_file("resnet_tiny", tmp_path, steps=2)
    stamp = path.stat().st_mtime_ns
    again, _ = kp.pretrained_backbone_file("resnet_tiny", tmp_path, steps=2)
    assert again == path and path.stat().st_mtime_ns == stamp and history["recipe"]["steps"] == 2
    _, longer = kp.pretrained_backbone_file("resnet_tiny", tmp_path, steps=3)
    assert longer["recipe"]["steps"] == 3 and path.stat().st_mtime_ns != stamp


def test_a_pretrained_run_starts_from_the_pretrained_backbone(small_recipe, tmp_path,
                                                              monkeypatch):
    from edu_seg import pretrain

    path, _ = kp.pretrained_backbone_file("resnet_tiny", tmp_path, steps=2)
    loaded = {}
    real = pretrain.load_pretrained_backbone

    def spy(model, file):
        result = real(model, file)
        if isinstance(model, models.SegmentationModel):    # not the check of the file's steps
            loaded.update(model.backbone.state_dict())
        return result

    monkeypatch.setattr(pretrain, "load_pretrained_backbone", spy)
    run = kp.Run("pretraining", "deeplabv3plus", "ResNet, pretrained",
                 (("backbone", "resnet_tiny"),), train_samples=32, pretrained=True)
    row = kp.train_and_measure_run(run, steps=1, pretrain_dir=tmp_path, pretrain_steps=2)
    saved = models.create_backbone("resnet_tiny")
    pretrain.load_pretrained_backbone(saved, path)
    for key, value in saved.state_dict().items():
        np.testing.assert_array_equal(loaded[key], value)
    assert row["pretrain_label_acc"] != ""
