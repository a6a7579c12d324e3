"""The ``edu-seg`` command: train one tiny epoch, evaluate and predict, in subprocesses;
Ctrl-C and resume, and ``compare``, in process."""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edu_seg import cli
from edu_seg.optim import Adam
from edu_seg.train import load_checkpoint
from edu_seg.viz.palette import PALETTE
from helpers import CAMVID_COLOURS, make_camvid_folder

ROOT = Path(__file__).resolve().parents[1]


def edu_seg_cmd(*args, cwd):
    """Run ``python -m edu_seg.cli ARGS`` like a user would; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDU_SEG_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "edu_seg.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny epoch of `edu-seg train` on Shapes: the run directory and its output."""
    tmp = tmp_path_factory.mktemp("cli")
    out = tmp / "run"
    result = edu_seg_cmd("train", "--model", "unet", "--data", "shapes", "--epochs", "1",
                         "--batch-size", "8", "--lr", "0.01", "--out", str(out),
                         "--train-samples", "16", "--val-samples", "8", "--size", "32",
                         "--model-config", "depth=1", "base_width=4", "--no-progress",
                         cwd=tmp)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_train_one_tiny_epoch(trained):
    out, stdout = trained
    assert "epoch 1/1  loss " in stdout and "val mIoU" in stdout
    assert "circle" in stdout                         # the per-class IoU table
    for name in ("best.npz", "last.npz", "history.json", "curves.png", "predictions.png",
                 "confusion.png"):
        assert (out / name).is_file(), name


def test_predict_writes_a_label_png(trained, tmp_path):
    from PIL import Image

    from edu_seg.data import Shapes

    image = (Shapes(1, size=40, seed=9)[0]["image"].transpose(1, 2, 0) * 255).astype(np.uint8)
    Image.fromarray(image[:, :37]).save(tmp_path / "in.png")   # 40x37: not a multiple of 2
    out, _ = trained
    result = edu_seg_cmd("predict", "--checkpoint", str(out / "best.npz"), "--image",
                         str(tmp_path / "in.png"), "--out", str(tmp_path / "mask.png"),
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    mask = np.asarray(Image.open(tmp_path / "mask.png"))
    assert mask.shape == (40, 37, 3)
    colours = {tuple(c) for c in mask.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in PALETTE[:4]}


def test_eval_prints_the_table(trained):
    out, _ = trained
    result = edu_seg_cmd("eval", "--checkpoint", str(out / "best.npz"), cwd=out)
    assert result.returncode == 0, result.stderr
    assert "8 images: mIoU" in result.stdout and "background" in result.stdout


@pytest.fixture(scope="module")
def trained_instances(tmp_path_factory):
    """Two steps of `edu-seg train --model mask_rcnn` on Shapes: the run directory, output."""
    tmp = tmp_path_factory.mktemp("cli_instances")
    out = tmp / "run"
    result = edu_seg_cmd("train", "--model", "mask_rcnn", "--data", "shapes", "--steps", "2",
                         "--batch-size", "4", "--out", str(out), "--train-samples", "8",
                         "--val-samples", "4", "--no-progress", cwd=tmp)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_train_an_instance_model_reports_box_and_mask_ap(trained_instances):
    out, stdout = trained_instances
    assert "val box AP" in stdout and "val mask AP" in stdout          # the epoch line
    for task in ("mask", "box"):                                        # the final report
        assert re.search(rf"^{task} AP (-|\d\.\d{{3}}) AP50 (-|\d\.\d{{3}}) AP75 "
                         rf"(-|\d\.\d{{3}})$", stdout, re.M), stdout
    assert "best validation mask AP" in stdout
    for name in ("best.npz", "last.npz", "history.json", "curves.png", "predictions.png"):
        assert (out / name).is_file(), name
    assert not (out / "confusion.png").exists()


def test_eval_an_instance_checkpoint_prints_one_line_per_task(trained_instances):
    out, _ = trained_instances
    result = edu_seg_cmd("eval", "--checkpoint", str(out / "last.npz"), cwd=out)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "4 images:" in lines
    assert [line.split()[:2] for line in lines[-2:]] == [["box", "AP"], ["mask", "AP"]]


def test_predict_with_an_instance_model_draws_its_objects(trained_instances, tmp_path):
    from PIL import Image

    from edu_seg.data import Shapes

    image = (Shapes(1, size=40, seed=9)[0]["image"].transpose(1, 2, 0) * 255).astype(np.uint8)
    Image.fromarray(image[:, :37]).save(tmp_path / "in.png")   # 40x37: padded to 64x64
    out, _ = trained_instances
    result = edu_seg_cmd("predict", "--checkpoint", str(out / "last.npz"), "--image",
                         str(tmp_path / "in.png"), "--out", str(tmp_path / "objects.png"),
                         "--ids", str(tmp_path / "ids.png"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "objects with score >= 0.5" in result.stdout
    drawing = np.asarray(Image.open(tmp_path / "objects.png"))
    assert drawing.shape == (4 * 40, 4 * 37, 3)                 # drawn 4x for readable tags
    assert np.asarray(Image.open(tmp_path / "ids.png")).shape == (40, 37)
    result = edu_seg_cmd("predict", "--checkpoint", str(out / "last.npz"), "--image",
                         str(tmp_path / "in.png"), "--out", str(tmp_path / "x.png"), "--crf",
                         cwd=tmp_path)
    assert result.returncode != 0 and "--crf is for semantic models" in result.stderr


def test_predict_with_a_corrupted_checkpoint_fails_cleanly(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a checkpoint")
    result = edu_seg_cmd("predict", "--checkpoint", str(tmp_path / "bad.npz"), "--image",
                         "x.png", "--out", "y.png", cwd=tmp_path)
    assert result.returncode != 0
    assert "bad.npz is corrupted" in result.stderr


def test_models_lists_unet(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    # other registered models (fcn8s, ...) may come first: the list is sorted by name
    assert any(line.startswith("unet: ") for line in out.splitlines())
    assert "U-Net" in out and "base_width=64" in out


def test_bad_data_argument(tmp_path):
    with pytest.raises(SystemExit, match="neither 'shapes"):
        cli.make_data(str(tmp_path / "nowhere"))


def test_parse_model_config():
    assert cli._parse_model_config(["depth=3", "padding=valid", "base_width=8"]) == \
        {"depth": 3, "padding": "valid", "base_width": 8}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        cli._parse_model_config(["depth"])


def test_train_and_predict_on_a_camvid_style_folder(tmp_path, capsys):
    """`--data PATH` reads a CamVid-layout folder; predictions are painted in its colours."""
    from PIL import Image

    colours = CAMVID_COLOURS
    root = make_camvid_folder(tmp_path / "camvid", n_train=4, n_val=2)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(root), "--epochs", "1", "--batch-size", "2",
                     "--model-config", "depth=1", "base_width=4", "--out", str(out),
                     "--no-progress"]) == 0
    assert "void" in capsys.readouterr().out
    assert cli.main(["predict", "--checkpoint", str(out / "last.npz"), "--image",
                     str(root / "val" / "img4.png"), "--out", str(tmp_path / "p.png"),
                     "--overlay", str(tmp_path / "o.png"), "--ids", str(tmp_path / "i.png")]) == 0
    painted = np.asarray(Image.open(tmp_path / "p.png"))
    assert {tuple(c) for c in painted.reshape(-1, 3)} <= set(colours)
    ids = np.asarray(Image.open(tmp_path / "i.png"))                    # the raw class ids
    np.testing.assert_array_equal(np.array(colours, np.uint8)[ids], painted)
    assert np.asarray(Image.open(tmp_path / "o.png")).shape == (32, 32, 3)
    # predictions.png of the run uses the folder's colours too
    grid = np.asarray(Image.open(out / "predictions.png").convert("RGB")).reshape(-1, 3)
    assert {(200, 30, 30), (30, 200, 30), (30, 30, 200)} & {tuple(c) for c in grid}
    # the same folder with other class names: eval refuses instead of mislabelling the rows
    (root / "class_dict.csv").write_text("name,r,g,b\n" + "".join(
        f"{name},{r},{g},{b}\n" for name, (r, g, b) in zip(("void", "red", "b", "c"), colours)))
    with pytest.raises(SystemExit, match=r"trained on the classes \['void', 'a', 'b', 'c'\] "
                                         r"but .* has \['void', 'red', 'b', 'c'\]"):
        cli.main(["eval", "--checkpoint", str(out / "last.npz"), "--data", str(root)])


TINY_RUN = ["train", "--data", "shapes", "--train-samples", "16", "--val-samples", "8",
            "--size", "16", "--batch-size", "8", "--lr", "0.01", "--model-config", "depth=1",
            "base_width=4", "--no-progress"]


def test_ctrl_c_prints_the_resume_command_and_it_finishes_the_run(tmp_path, capsys,
                                                                  monkeypatch):
    """Ctrl-C in epoch 2: no traceback, status 130, and the printed command resumes."""
    out = tmp_path / "run"
    calls = []
    step = Adam.step

    def interrupted_step(self):
        calls.append(1)
        if len(calls) == 3:                          # 2 steps per epoch: epoch 2's first
            raise KeyboardInterrupt
        step(self)
    monkeypatch.setattr(Adam, "step", interrupted_step)
    assert cli.main(TINY_RUN + ["--epochs", "3", "--out", str(out)]) == 130
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert f"the last saved epoch is 1/3 in {out / 'last.npz'}" in captured.err
    command = captured.err.split("resume with: ")[1].strip()
    assert command.startswith("edu-seg train ") and \
        command.endswith(f"--resume {shlex.quote(str(out / 'last.npz'))}")
    assert load_checkpoint(out / "last.npz").train_state["epoch"] == 1

    argv = shlex.split(command)[1:]                 # what a user pastes, minus the program
    assert cli.main(argv) == 0
    assert load_checkpoint(out / "last.npz").train_state["epoch"] == 3
    assert "resumed from" in capsys.readouterr().out


def test_compare_prints_a_table_and_writes_a_plot(trained, tmp_path, capsys):
    other = tmp_path / "other"
    assert cli.main(TINY_RUN + ["--epochs", "2", "--out", str(other)]) == 0
    capsys.readouterr()
    first, _ = trained
    assert cli.main(["compare", str(first), str(other), "--out",
                     str(tmp_path / "cmp.png")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["run", "model", "epochs"]
    rows = {line.split()[0]: line for line in table[2:4]}
    history = json.loads((other / "history.json").read_text())["history"]
    assert f"{history[-1]['val_miou']:.4f}" in rows[str(other)]
    assert " 2/2 " in rows[str(other)] and " 1/1 " in rows[str(first)]
    assert (tmp_path / "cmp.png").stat().st_size > 0


def test_compare_names_a_folder_without_history(tmp_path, capsys):
    assert cli.main(["compare", str(tmp_path)]) == 1
    assert f"{tmp_path / 'history.json'} does not exist" in capsys.readouterr().err


def test_supervision_boxes_trains_by_boxsup_and_reports_each_round(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(TINY_RUN + ["--epochs", "2", "--out", str(out), "--supervision",
                                "boxes"]) == 0
    stdout = capsys.readouterr().out
    assert "candidate segments of 16 images" in stdout
    assert "round 1 (epochs up to 1), its masks' mIoU against the truth" in stdout
    assert "round 2 (epochs up to 2)" in stdout and "of the boxes chose anew" in stdout
    rounds = json.loads((out / "boxsup_rounds.json").read_text())
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(0 < r["estimate_miou"] <= 1 and 0 <= r["val_miou"] <= 1 for r in rounds)
    assert "round by round: " + " -> ".join(f"{r['estimate_miou']:.3f}" for r in rounds) \
        in stdout
    assert (out / "best.npz").is_file() and (out / "curves.png").is_file()
    # the checkpoint is an ordinary semantic model: eval reads it
    assert cli.main(["eval", "--checkpoint", str(out / "best.npz")]) == 0


def test_supervision_filled_boxes_trains_one_round_on_the_boxes(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(TINY_RUN + ["--epochs", "2", "--out", str(out), "--supervision",
                                "filled-boxes"]) == 0
    assert "candidate segments" not in capsys.readouterr().out
    rounds = json.loads((out / "boxsup_rounds.json").read_text())
    assert len(rounds) == 1 and rounds[0]["epoch"] == 2


@pytest.mark.parametrize("extra, match", [
    (["--supervision", "scribbles"], "--supervision must be one of masks, boxes, "
                                     "filled-boxes, got 'scribbles'"),
    (["--supervision", "boxes", "--resume", "x/last.npz"], "--resume cannot continue"),
    (["--supervision", "boxes", "--model", "mask_rcnn"], "mask_rcnn is an instance model"),
])
def test_bad_supervision_is_refused(tmp_path, capsys, extra, match):
    run = [a for a in TINY_RUN if a not in ("--model-config", "depth=1", "base_width=4")]
    assert cli.main(run + ["--epochs", "1", "--out", str(tmp_path / "run")] + extra) == 1
    assert match in capsys.readouterr().err


def test_supervision_boxes_needs_shapes_data(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="a folder data set does not have"):
        cli.run_training("unet", {}, str(tmp_path / "data"), 1, 2, 0.01, tmp_path / "run",
                         supervision="boxes")
