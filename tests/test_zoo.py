"""A model with an auxiliary head through the Trainer, and ``edu-seg zoo``: the recipe's rows,
their columns, merging into an existing results.csv, and clear errors for bad choices."""
import csv
import dataclasses

import numpy as np
import pytest

from edu_seg import cli, models, nn
from edu_seg.bench import recipe, zoo
from edu_seg.data import Shapes
from edu_seg.models.base import SegmentationModel
from edu_seg.train import TrainConfig, Trainer, seed_everything
from edu_seg.viz.training import plot_history

NAME = "test-aux"                  # registered only while a test that needs it runs


@dataclasses.dataclass
class TinyAuxConfig:
    num_classes: int
    in_channels: int = 3
    width: int = 4


class TinyAux(SegmentationModel):
    """Two 3x3 convs and two 1x1 heads; in training mode also an auxiliary score map."""

    config_class = TinyAuxConfig
    aux_weights = {"aux": 0.4}

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.body = nn.Sequential(nn.Conv2d(c.in_channels, c.width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(c.width, c.width, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(c.width, c.num_classes, 1)
        self.aux_head = nn.Conv2d(c.width, c.num_classes, 1)

    def forward(self, x):
        self.check_input_size(x.shape)
        features = self.body(x)                            # (N, width, H, W)
        scores = self.head(features)                       # (N, K, H, W)
        if self.training:
            return {"out": scores, "aux": self.aux_head(features)}
        return scores


@pytest.fixture
def aux_model():
    models.register(NAME)(TinyAux)
    yield NAME
    del models._REGISTRY[NAME]


def test_a_model_with_an_aux_head_logs_both_terms_and_plots_them(aux_model):
    seed_everything(0)
    model = models.create(aux_model, num_classes=4)
    trainer = Trainer(model, Shapes(16, size=16, seed=0), Shapes(8, size=16, seed=1),
                      TrainConfig(epochs=2, batch_size=8, lr=1e-2, progress=False,
                                  verbose=False))
    history = trainer.fit()
    last = history[-1]
    assert {"train_loss", "train_ce", "train_aux", "train_pixel_acc", "val_miou"} <= set(last)
    # means over the epoch are linear, so the total's mean is the weighted sum of the terms'
    assert last["train_loss"] == pytest.approx(last["train_ce"] + 0.4 * last["train_aux"])
    assert "(ce " in trainer.epoch_line(last) and ", aux " in trainer.epoch_line(last)
    fig = plot_history(history)
    labels = [t.get_text() for ax in fig.axes if ax.get_legend()
              for t in ax.get_legend().get_texts()]
    assert {"train (total)", "train ce", "train aux"} <= set(labels)
    lr_panel = fig.axes[2]
    assert lr_panel.get_title().startswith("learning rate")
    assert list(lr_panel.lines[0].get_ydata()) == [h["lr"] for h in history]


def _rows(out):
    with open(out / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_zoo_writes_the_tables_and_later_runs_merge_their_rows(aux_model, tmp_path, capsys):
    out = tmp_path / "zoo"
    assert cli.main(["zoo", "--models", "unet", "--steps", "4", "--out", str(out),
                     "--no-progress"]) == 0
    assert "[1/1] unet on default: mIoU" in capsys.readouterr().out
    columns, rows = _rows(out)
    assert tuple(columns) == zoo.COLUMNS
    (unet,) = rows
    assert (unet["model"], unet["variant"], unet["supervision"], unet["steps"]) == \
        ("unet", "default", "masks", "4")
    assert unet["estimate_miou"] == ""
    assert 0 <= float(unet["miou"]) <= 1 and unet["class_iou"].startswith("background=")
    assert 0 <= float(unet["boundary_iou"]) <= 1
    assert int(unet["params"]) == models.create("unet", num_classes=4).num_parameters()
    assert int(unet["flops"]) > 0 and float(unet["step_ms"]) > 0
    assert float(unet["infer_img_s"]) > 0 and float(unet["wall_s"]) >= float(unet["train_s"])
    assert unet["cpu"] and int(unet["threads"]) >= 1 and len(unet["date"]) == 10

    # another model on two variants: rows are added, the unet row is kept as it was
    assert cli.main(["zoo", "--models", aux_model, "--variants", "default", "scale",
                     "--steps", "4", "--out", str(out), "--no-progress"]) == 0
    _, rows = _rows(out)
    assert [(r["model"], r["variant"]) for r in rows] == \
        [(aux_model, "default"), ("unet", "default"), (aux_model, "scale")]
    assert rows[1] == unet
    # the same key again replaces its row
    assert cli.main(["zoo", "--models", aux_model, "--steps", "2", "--out", str(out),
                     "--no-progress"]) == 0
    _, rows = _rows(out)
    assert len(rows) == 3 and rows[0]["steps"] == "2" and rows[2]["steps"] == "4"

    md = (out / "RESULTS.md").read_text()
    assert "Adam, lr 0.003, poly schedule" in md and "batch 16" in md and "256 held-out" in md
    assert md.count(f"| {aux_model} | ") == 4            # two rows + mIoU and boundary tables
    assert md.count("| model | default | scale |") == 2
    assert "## Boundary IoU by model and variant" in md
    assert f"**Measured on** {unet['cpu']}, " in md
    assert "](results.png)" in md and (out / "results.png").stat().st_size > 10_000


def test_rows_written_before_the_boundary_column_merge_and_show_it_blank(tmp_path):
    old_columns = [c for c in zoo.COLUMNS
                   if c not in ("boundary_iou", "supervision", "estimate_miou")]
    old = dict.fromkeys(old_columns, "1")
    old.update(model="fcn8s", variant="default", miou="0.8269")
    with open(tmp_path / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old_columns)
        writer.writeheader()
        writer.writerow(old)
    new = {**dict.fromkeys(zoo.COLUMNS, "1"), "model": "segnet", "variant": "default",
           "supervision": "masks", "miou": "0.7", "boundary_iou": "0.6"}
    zoo.write_results(zoo.merge_results(zoo.read_results(tmp_path / "results.csv"), [new]),
                      tmp_path)
    columns, rows = _rows(tmp_path)
    assert tuple(columns) == zoo.COLUMNS
    assert [(r["model"], r["miou"], r["boundary_iou"]) for r in rows] == \
        [("fcn8s", "0.8269", ""), ("segnet", "0.7", "0.6")]
    md = (tmp_path / "RESULTS.md").read_text()
    assert "| fcn8s | default | masks | 1 | 0.8269 |  | 1 |  | 1 |" in md
    assert md.rstrip().endswith("| fcn8s |  |\n| segnet | 0.6 |")


def test_box_supervised_rows_merge_beside_the_mask_row(aux_model, tmp_path, capsys):
    out = tmp_path / "zoo"
    assert cli.main(["zoo", "--models", aux_model, "--steps", "2", "--out", str(out),
                     "--supervision", "masks", "boxes", "filled-boxes", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"[2/3] {aux_model} on default from boxes: mIoU" in printed
    assert "training masks' mIoU by round" in printed
    _, rows = _rows(out)
    assert [r["supervision"] for r in rows] == ["masks", "boxes", "filled-boxes"]
    # 64 steps an epoch: two steps are one round, trained on one estimate
    estimates = [r["estimate_miou"] for r in rows]
    assert estimates[0] == "" and all(0 < float(e) < 1 for e in estimates[1:])
    md = (out / "RESULTS.md").read_text()
    assert f"| {aux_model} [boxes] | " in md and f"| {aux_model} [filled-boxes] | " in md
    assert "**Supervision.**" in md


def test_rows_without_a_supervision_column_read_as_masks(tmp_path):
    old_columns = [c for c in zoo.COLUMNS if c not in ("supervision", "estimate_miou")]
    with open(tmp_path / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old_columns)
        writer.writeheader()
        writer.writerow({**dict.fromkeys(old_columns, "1"), "model": "unet",
                         "variant": "default"})
    (row,) = zoo.read_results(tmp_path / "results.csv")
    assert row["supervision"] == "masks"
    boxes = {**row, "supervision": "boxes", "miou": "0.5"}
    merged = zoo.merge_results([row], [boxes, {**row, "miou": "0.9"}])
    assert [(r["supervision"], r["miou"]) for r in merged] == [("masks", "0.9"),
                                                               ("boxes", "0.5")]


def test_the_same_recipe_gives_the_same_row(aux_model):
    a = zoo.train_and_measure(aux_model, "default", 3)
    b = zoo.train_and_measure(aux_model, "default", 3)
    assert (a["miou"], a["class_iou"]) == (b["miou"], b["class_iou"])


@pytest.mark.parametrize("argv, message", [
    (["--models", "unet", "nosuchnet"], "--models got unknown model 'nosuchnet'; choose from "
                                        + ", ".join(zoo.semantic_models())),
    (["--variants", "stripes"], "--variants got unknown variant 'stripes'; choose from "
                                "default, scale, context, thin, boundary, nonconvex"),
    (["--supervision", "scribbles"], "--supervision got unknown supervision 'scribbles'; "
                                     "choose from masks, boxes, filled-boxes"),
    (["--models", "deeplabv3_resnet50"], "--models got 'deeplabv3_resnet50', a full-size model "
                                         "without a small version"),
    (["--models", "unet:huge"], "--models got unknown preset 'unet:huge'; unet's presets: "
                                "unet:paper"),
    (["--steps", "0"], "--steps must be a positive int, got 0"),
])
def test_zoo_rejects_bad_choices_with_the_choices(argv, message, tmp_path, capsys):
    assert cli.main(["zoo", *argv, "--out", str(tmp_path), "--no-progress"]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.csv").exists()


def test_a_preset_row_is_the_model_built_with_that_preset():
    default = recipe.build_zoo_model("unet", 4)
    paper = recipe.build_zoo_model("unet:paper", 4)
    assert (default.config.base_width, paper.config.base_width) == (16, 64)
    assert zoo.check_choices(["unet:paper", "unet"])[0] == ["unet:paper", "unet"]


def _zoo_row(model, variant, miou, step_ms, supervision="masks"):
    return {**dict.fromkeys(zoo.COLUMNS, "1"), "model": model, "variant": variant,
            "supervision": supervision, "miou": miou, "step_ms": step_ms, "cpu": "Test CPU",
            "date": "2026-01-02"}


def test_the_picture_compares_models_at_their_default_trained_on_masks(tmp_path):
    from edu_seg.viz.zoo import plot_zoo

    rows = [_zoo_row("unet", "default", "0.9", "80"), _zoo_row("unet", "thin", "0.5", "80"),
            _zoo_row("fcn8s", "default", "0.8", "20"),
            _zoo_row("fcn8s:no_skips", "default", "0.3", "20"),
            _zoo_row("unet", "default", "0.7", "80", supervision="boxes")]
    table, cost, _colorbar = plot_zoo(rows, ["default", "thin"]).axes
    cells = table.get_images()[0].get_array()
    assert [t.get_text() for t in table.get_yticklabels()] == ["fcn8s", "unet"]
    assert cells[0, 0] == 0.8 and cells[0, 1] is np.ma.masked and cells[1].tolist() == [0.9, 0.5]
    points = sorted(tuple(c.get_offsets()[0]) for c in cost.collections)
    assert points == [(20.0, 0.8), (80.0, 0.9)]         # default only: no preset, no boxes
    with pytest.raises(ValueError, match="no row of a model at its default"):
        plot_zoo(rows[3:])
    # a table of ablation rows only has no picture, and RESULTS.md does not link one
    zoo.write_results(rows[3:], tmp_path)
    assert not (tmp_path / "results.png").exists()
    assert "results.png" not in (tmp_path / "RESULTS.md").read_text()


def test_merge_keeps_other_rows_and_sorts_by_variant_then_model():
    old = [{"model": "b", "variant": "scale", "miou": "1"},
           {"model": "a", "variant": "default", "miou": "2"}]
    new = [{"model": "b", "variant": "scale", "miou": "3"},
           {"model": "c", "variant": "default", "miou": "4"}]
    merged = zoo.merge_results(old, new)
    assert [(r["model"], r["variant"], r["miou"]) for r in merged] == \
        [("a", "default", "2"), ("c", "default", "4"), ("b", "scale", "3")]


@pytest.fixture
def small_recipe(monkeypatch):
    """The zoo recipe on 32 training and 16 held-out images: the suite's fast mode."""
    from edu_seg.bench import zoo_instances

    for table in (recipe.RECIPE, zoo_instances.INSTANCE_RECIPE):
        monkeypatch.setitem(table, "train_samples", 32)
        monkeypatch.setitem(table, "val_samples", 16)


def test_instance_rows_get_their_own_table_scored_by_mask_ap(small_recipe, tmp_path, capsys):
    out = tmp_path / "zoo"
    assert cli.main(["zoo", "--instance-models", "mask_rcnn", "mask_rcnn:roi_pool",
                     "rcnn_regions", "--instance-steps", "2", "--out", str(out),
                     "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "[1/3] mask_rcnn (instances): mask AP" in text and "[2/3] mask_rcnn:roi_pool" in text
    assert "[3/3] rcnn_regions (instances): mask AP" in text
    assert not (out / "results.csv").read_text().strip().split("\n")[1:]   # no semantic row
    with open(out / "instance_results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["mask_rcnn", "mask_rcnn:roi_pool", "rcnn_regions"]
    for row in rows:
        assert row["steps"] == "2" and all(-1 <= float(row[k]) <= 1 for k in (
            "mask_ap", "mask_ap50", "mask_ap75", "box_ap", "box_ap50", "box_ap75"))
    md = (out / "RESULTS.md").read_text()
    assert "## Instance segmentation: Mask R-CNN with RoIAlign and with RoIPool, and " \
        "R-CNN's regions" in md
    assert "| mask_rcnn:roi_pool | 2 |" in md and "lr 0.001" in md
    # a semantic run later keeps the instance table in RESULTS.md
    assert cli.main(["zoo", "--models", "unet", "--steps", "2", "--out", str(out),
                     "--no-progress"]) == 0
    assert "| mask_rcnn:roi_pool | 2 |" in (out / "RESULTS.md").read_text()


def test_quick_runs_its_subset(small_recipe, tmp_path, capsys):
    out = tmp_path / "zoo"
    assert cli.main(["zoo", "--quick", "--steps", "1", "--out", str(out), "--no-progress"]) == 0
    _, rows = _rows(out)
    assert {(r["model"], r["variant"]) for r in rows} == {
        (m, v) for m in zoo.QUICK_MODELS for v in zoo.QUICK_VARIANTS}


MEASURED = ("model", "variant", "supervision", "steps", "miou", "boundary_iou", "class_iou",
            "params", "flops", "threads")


def test_rows_run_in_worker_processes_are_the_rows_of_one_process(small_recipe, tmp_path,
                                                                   capsys):
    """--jobs 2 --threads 2 trains two 1-thread rows at a time, in spawned processes that get
    the parent's recipe (here the suite's small one): the rows are those of a 1-thread run."""
    argv = ["zoo", "--models", "unet", "fcn8s", "--steps", "2", "--no-progress"]
    assert cli.main(argv + ["--threads", "1", "--out", str(tmp_path / "one")]) == 0
    assert cli.main(argv + ["--threads", "2", "--jobs", "2", "--out", str(tmp_path / "two")]) == 0
    assert "2 rows at a time with 1 thread(s) each" in capsys.readouterr().out
    (_, one), (_, two) = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [[r[k] for k in MEASURED] for r in two] == [[r[k] for k in MEASURED] for r in one]
    assert {r["threads"] for r in two} == {"1"}


def test_a_failing_row_in_a_worker_stops_the_run_with_its_error(small_recipe, monkeypatch,
                                                                 tmp_path):
    monkeypatch.setitem(recipe.RECIPE, "batch_size", 0)     # reaches the workers, which fail
    with pytest.raises(ValueError, match="batch_size"):
        zoo.run_zoo(["unet", "fcn8s"], steps=1, out=tmp_path, progress=False, jobs=2)
    assert zoo.read_results(tmp_path / "results.csv") == []
    with pytest.raises(ValueError, match="--jobs must be a positive int, got 0"):
        zoo.run_zoo(["unet"], jobs=0, out=tmp_path)


def test_all_means_every_semantic_model_every_variant_and_the_instance_rows(monkeypatch):
    seen = {}
    monkeypatch.setattr(zoo, "run_zoo", lambda *a, **k: seen.update(args=a, kwargs=k) or [])
    assert cli.main(["zoo", "--all", "--no-progress"]) == 0
    model_names, variants = seen["args"][:2]
    assert model_names is None                                # every semantic model
    assert variants == ["default", "scale", "context", "thin", "boundary"]
    assert seen["kwargs"]["instance_models"] == ["mask_rcnn", "mask_rcnn:roi_pool",
                                                 "rcnn_regions"]


@pytest.mark.parametrize("argv, message", [
    (["--all", "--models", "unet"], "--all chooses the models and variants itself; leave out "
                                    "--models"),
    (["--quick", "--variants", "scale"], "--quick chooses the models and variants itself; "
                                         "leave out --variants"),
    (["--all", "--quick"], "leave out --quick"),
    (["--instance-models", "unet"], "--instance-models got 'unet'; choose from mask_rcnn, "
                                    "rcnn_regions"),
    (["--instance-models", "mask_rcnn:nope"], "unknown preset 'mask_rcnn:nope'"),
    (["--instance-models", "mask_rcnn", "--instance-steps", "0"],
     "--instance-steps must be a positive int, got 0"),
])
def test_zoo_selections_refuse_contradictions(argv, message, tmp_path, capsys):
    assert cli.main(["zoo", *argv, "--out", str(tmp_path), "--no-progress"]) == 1
    assert message in capsys.readouterr().err
