"""Bad input gets a ValueError/TypeError naming the argument (or, in the CLI, one
``edu-seg CMD: error: ...`` line and exit status 1), never a deep traceback or a silently
wrong result."""
import numpy as np
import pytest

from edu_seg import backend, cli, nn
from edu_seg import functional as F
from edu_seg.ops.loss import (binary_cross_entropy_with_logits, bootstrapped_cross_entropy,
                              cross_entropy, dice_loss, focal_loss, smooth_l1_loss)
from edu_seg.ops.norm import batch_norm, group_norm


# ------------------------------------------------------------------ 1. strings as booleans
_X = np.zeros((1, 1, 4, 4), np.float32)


@pytest.mark.parametrize("make, name", [
    (lambda v: nn.MaxPool2d(2, ceil_mode=v), "ceil_mode"),
    (lambda v: nn.MaxPool2d(2, return_indices=v), "return_indices"),
    (lambda v: nn.AvgPool2d(2, ceil_mode=v), "ceil_mode"),
    (lambda v: nn.AvgPool2d(2, count_include_pad=v), "count_include_pad"),
    (lambda v: nn.AdaptiveMaxPool2d(2, return_indices=v), "return_indices"),
    (lambda v: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=v), "align_corners"),
    (lambda v: nn.Conv2d(3, 4, 3, bias=v), "bias"),
    (lambda v: nn.ConvTranspose2d(3, 4, 3, bias=v), "bias"),
    (lambda v: nn.Linear(3, 4, bias=v), "bias"),
    # the functional ops check the same flags, so F.* cannot take 'False' as True either
    (lambda v: F.max_pool2d(_X, 2, ceil_mode=v), "ceil_mode"),
    (lambda v: F.max_pool2d(_X, 2, return_indices=v), "return_indices"),
    (lambda v: F.avg_pool2d(_X, 2, ceil_mode=v), "ceil_mode"),
    (lambda v: F.avg_pool2d(_X, 2, count_include_pad=v), "count_include_pad"),
    (lambda v: F.adaptive_max_pool2d(_X, 2, return_indices=v), "return_indices"),
    (lambda v: F.interpolate(_X, scale_factor=2, align_corners=v), "align_corners"),
])
@pytest.mark.parametrize("value", ["False", "True", 0, 1])
def test_layer_flags_must_be_real_bools(make, name, value):
    with pytest.raises(TypeError, match=f"{name} must be True.*got {type(value).__name__}"):
        make(value)


def test_layer_flags_accept_bools_and_none_where_meaningful():
    assert nn.MaxPool2d(2, ceil_mode=True).ceil_mode is True
    assert nn.AvgPool2d(2, count_include_pad=np.bool_(False)).count_include_pad is False
    assert nn.Upsample(scale_factor=2, align_corners=None).align_corners is None
    with pytest.raises(TypeError, match="ceil_mode must be True or False"):
        nn.MaxPool2d(2, ceil_mode=None)
    assert nn.Conv2d(3, 4, 3, bias=np.bool_(False)).bias is None
    assert F.interpolate(_X, size=8, align_corners=True).shape == (1, 1, 8, 8)


# ------------------------------------------------------------------------ 2. float16 norms
def test_batch_norm_refuses_float16_with_a_cast_hint():
    x = np.zeros((2, 3, 4, 4), np.float16)
    with pytest.raises(TypeError, match=r"batch_norm: x must be float32 or float64.*float16"
                                        r".*astype\(np\.float32\)"):
        batch_norm(x, None, None, training=True)


def test_batch_norm_refuses_float16_on_every_available_backend():
    x = np.zeros((2, 3, 4, 4), np.float16)
    previous = backend.get_backend()
    for name in ("numpy", "cython"):
        try:
            backend.set_backend(name)
        except Exception:       # that backend is not built here
            continue
        try:
            with pytest.raises(TypeError, match="astype"):
                batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32))
        finally:
            backend.set_backend(previous)


def test_group_norm_refuses_float16_with_a_cast_hint():
    with pytest.raises(TypeError, match=r"group_norm: x must be float32 or float64.*astype"):
        group_norm(np.zeros((2, 4, 4, 4), np.float16), 2)


# ---------------------------------------------------------------------- 3. empty losses
def _empty_cases():
    z, t = np.zeros((0, 3, 4, 4)), np.zeros((0, 4, 4), np.int64)
    return [
        (lambda: cross_entropy(z, t), "batch axis 0"),
        (lambda: cross_entropy(np.zeros((2, 0, 4, 4)), np.zeros((2, 4, 4), np.int64)),
         "class axis 1"),
        (lambda: cross_entropy(np.zeros((0, 3)), np.zeros(0, np.int64), reduction="sum"),
         "batch axis 0"),
        (lambda: dice_loss(z, t), "batch axis 0"),
        (lambda: focal_loss(z, t), "batch axis 0"),
        (lambda: focal_loss(np.zeros((2, 3, 0, 4)), np.zeros((2, 0, 4), np.int64)),
         "spatial axis 2"),
        (lambda: bootstrapped_cross_entropy(z, t, 2), "batch axis 0"),
        (lambda: binary_cross_entropy_with_logits(np.zeros((0, 1, 4, 4)),
                                                  np.zeros((0, 1, 4, 4))), "axis 0"),
        (lambda: smooth_l1_loss(np.zeros((0, 4)), np.zeros((0, 4))), "axis 0"),
    ]


@pytest.mark.parametrize("call, axis", _empty_cases())
def test_every_loss_names_the_empty_axis(call, axis):
    with pytest.raises(ValueError, match=f"empty along .*{axis}"):
        call()


# --------------------------------------------------------------------- 4. conv hyper-params
@pytest.mark.parametrize("cls", [nn.Conv2d, nn.ConvTranspose2d])
@pytest.mark.parametrize("kwargs, name", [
    (dict(kernel_size=0), "kernel_size"), (dict(kernel_size=(3, 0)), "kernel_size"),
    (dict(kernel_size=3, stride=0), "stride"), (dict(kernel_size=3, dilation=0), "dilation"),
    (dict(kernel_size=3, padding=-1), "padding"),
])
def test_conv_window_arguments_are_validated(cls, kwargs, name):
    with pytest.raises(ValueError, match=f"{cls.__name__}: {name} must be"):
        cls(3, 4, **kwargs)


# --------------------------------------------------------------------------------- 5. CLI
TINY = ["train", "--data", "shapes", "--epochs", "1", "--train-samples", "16",
        "--val-samples", "8", "--size", "32", "--batch-size", "8", "--model-config",
        "depth=1", "base_width=4", "--no-progress"]


def _fails(capsys, argv, *fragments):
    """main(argv) exits 1 with one `edu-seg train: error:` line holding every fragment."""
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("edu-seg train: error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_cli_runtime_error_is_one_line(capsys, tmp_path, monkeypatch):
    def no_gpu(name):
        raise RuntimeError(f"set_backend({name!r}): CuPy is not installed")
    monkeypatch.setattr(backend, "set_backend", no_gpu)
    _fails(capsys, TINY + ["--backend", "cupy", "--out", str(tmp_path / "r")], "CuPy")


def test_cli_refuses_num_classes_in_model_config(capsys, tmp_path):
    argv = TINY[:-1] + ["num_classes=5", "--no-progress"]
    _fails(capsys, argv + ["--out", str(tmp_path / "r")],
           "num_classes", "--num-classes", "data")


def test_cli_refuses_a_file_shaped_out_before_training(capsys, tmp_path):
    path = tmp_path / "a_file"
    path.write_text("x")
    err = _fails(capsys, TINY + ["--out", str(path)], str(path))
    assert "is an existing file" in err


def test_cli_refuses_an_out_it_cannot_create(capsys, tmp_path):
    path = tmp_path / "a_file"
    path.write_text("x")
    _fails(capsys, TINY + ["--out", str(path / "sub")], str(path / "sub"), "cannot be created")


def test_cli_creates_the_out_folder_up_front(capsys, tmp_path, monkeypatch):
    from edu_seg import train

    seen = {}

    def fit(self):
        seen["exists"] = self.out_dir.is_dir()
        raise ValueError("stop here")
    monkeypatch.setattr(train.Trainer, "fit", fit)
    _fails(capsys, TINY + ["--out", str(tmp_path / "new" / "run")], "stop here")
    assert seen == {"exists": True}


def test_cli_refuses_zero_val_samples(capsys, tmp_path):
    argv = [a if a != "8" or i != TINY.index("--val-samples") + 1 else "0"
            for i, a in enumerate(TINY)]
    _fails(capsys, argv + ["--out", str(tmp_path / "r")], "--val-samples", "got 0")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("threads", ["0", "-1"])
def test_cli_threads_must_be_positive(capsys, tmp_path, threads):
    _fails(capsys, TINY + ["--threads", threads, "--out", str(tmp_path / "r")],
           "--threads", f"got {threads}")


def test_cli_seed_error_reports_the_users_value(capsys, tmp_path):
    err = _fails(capsys, TINY + ["--seed", "-1", "--out", str(tmp_path / "r")],
                 "--seed", "got -1")
    assert "-2" not in err


def test_cli_too_small_folder_names_batch_size(capsys, tmp_path):
    from PIL import Image

    root = tmp_path / "camvid"
    (root / "train").mkdir(parents=True)
    (root / "train_labels").mkdir()
    (root / "class_dict.csv").write_text("name,r,g,b\nvoid,0,0,0\nthing,255,255,255\n")
    for i in range(2):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "train" / f"i{i}.png")
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(
            root / "train_labels" / f"i{i}_L.png")
    _fails(capsys, ["train", "--data", str(root), "--epochs", "1", "--batch-size", "8",
                    "--model-config", "depth=1", "base_width=4", "--no-progress",
                    "--out", str(tmp_path / "r")], "--batch-size 8", "2 images")


def test_cli_tiny_run_still_works(capsys, tmp_path):
    assert cli.main(TINY + ["--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "last.npz").is_file()
