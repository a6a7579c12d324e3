"""The model zoo's floor: one shared test every registered model passes, the registry, config
validation, the loss contract and the layer declarations that summary and receptive fields use.
"""
import dataclasses
import subprocess
import sys
from typing import Literal, Optional

import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.data import Shapes
from edu_seg.models.base import SegmentationModel, crop_target
from edu_seg.models.config import validate_config
from edu_seg.optim import Adam
from helpers import random_images

# every semantic model that has a small version (the full-size-only ones, which load
# torchvision's weights, are tested in test_torchvision_segmentation.py)
SEMANTIC = [n for n in models.available() if models.get_model_class(n).task == "semantic"
            and models.get_model_class(n).small_version]


# every instance model (one mask per object): the same floor in the instance form
INSTANCE = [n for n in models.available() if models.get_model_class(n).task == "instance"]


def _build(name, seed=0):
    nn.init.manual_seed(seed)
    return models.create(name, num_classes=3)


def _main(outputs):
    return outputs["out"] if isinstance(outputs, dict) else outputs


# ------------------------------------------------------------ the shared, parametrised test
@pytest.mark.parametrize("name", SEMANTIC)
def test_output_shape_in_both_modes(name):
    model = _build(name)
    x = Tensor(random_images(2))
    train_out = model(x)
    assert _main(train_out).shape == (2, 3, 64, 64)
    if isinstance(train_out, dict):
        # extra heads are named and have one row per image: class scores at any stride, a
        # border logit map (DFN), the classes present (EncNet)
        assert all(v.shape[0] == 2 for v in train_out.values())
    model.eval()
    with no_grad():
        y = model(x)
    assert isinstance(y, Tensor) and y.shape == (2, 3, 64, 64)   # eval: plain scores only


@pytest.mark.parametrize("name", SEMANTIC)
def test_inputs_it_does_not_accept_get_a_clear_error(name):
    model = _build(name)
    with pytest.raises(ValueError, match="in_channels=3"):
        model(Tensor(np.zeros((1, 2, 64, 64), np.float32)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model(Tensor(np.zeros((3, 64, 64), np.float32)))
    if model.output_stride > 1:
        odd = 64 + model.output_stride // 2
        with pytest.raises(ValueError, match=f"pad to {model.input_size_for(odd)}"):
            model(Tensor(np.zeros((1, 3, odd, 64), np.float32)))


@pytest.mark.parametrize("name", SEMANTIC)
def test_loss_falls_over_a_few_steps_on_shapes(name):
    model = _build(name)
    data = Shapes(8, size=64, num_classes=3, seed=0)
    batch = {"image": np.stack([data[i]["image"] for i in range(8)]),
             "mask": np.stack([data[i]["mask"] for i in range(8)])}
    opt = Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        total, terms = model.loss(model.forward_train(batch), batch)
        assert "ce" in terms and total.shape == ()
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses


@pytest.mark.parametrize("name", SEMANTIC)
def test_state_dict_round_trip(name):
    model = _build(name, seed=0)
    x = Tensor(random_images(2))
    model(x)                                          # move the batch-norm statistics
    copy = _build(name, seed=1)
    copy.load_state_dict(model.state_dict())
    model.eval(), copy.eval()
    with no_grad():
        np.testing.assert_array_equal(model(x).data, copy(x).data)


@pytest.mark.parametrize("name", SEMANTIC)
def test_eval_output_does_not_depend_on_batch_composition(name):
    model = _build(name).eval()
    x = random_images(4)
    with no_grad():
        alone = model(Tensor(x[:1])).data
        together = model(Tensor(x)).data[:1]
    np.testing.assert_allclose(alone, together, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------ the instance form of the contract
def _instance_batch(n):
    data = Shapes(n, size=64, num_classes=3, seed=0)
    samples = [data[i] for i in range(n)]
    batch = {"image": np.stack([s["image"] for s in samples]),
             "mask": np.stack([s["mask"] for s in samples])}
    for key in ("boxes", "labels", "instance_masks"):
        batch[key] = [s[key] for s in samples]
    return batch


@pytest.mark.parametrize("name", INSTANCE)
def test_instance_model_trains_on_a_loss_dict_and_detects_in_eval(name):
    model = _build(name)
    batch = _instance_batch(2)
    losses = model.forward_train(batch)
    assert isinstance(losses, dict) and losses
    assert all(v.shape == () and np.isfinite(v.item()) for v in losses.values())
    total, terms = model.loss(losses, batch)
    assert terms.keys() == losses.keys() and total.shape == ()
    total.backward()
    assert all(p.grad is not None for p in model.parameters())   # every head is trained
    model.eval()
    with no_grad():
        detections = model(Tensor(batch["image"]))
    assert len(detections) == 2
    for d in detections:
        D = len(d["boxes"])
        assert d["boxes"].shape == (D, 4) and d["labels"].shape == (D,)
        assert d["scores"].shape == (D,) and d["masks"].shape == (D, 64, 64)
        assert ((d["labels"] >= 1) & (d["labels"] < 3)).all()
        assert ((d["boxes"] >= 0) & (d["boxes"] <= 64)).all()
        assert ((d["masks"] >= 0) & (d["masks"] <= 1)).all()
        assert (np.diff(d["scores"]) <= 0).all()                   # best first


@pytest.mark.parametrize("name", INSTANCE)
def test_instance_model_state_dict_round_trip(name):
    model = _build(name, seed=0)
    model.forward_train(_instance_batch(2))          # move the batch-norm statistics
    copy = _build(name, seed=1)
    copy.load_state_dict(model.state_dict())
    model.eval(), copy.eval()
    x = Tensor(_instance_batch(2)["image"])
    with no_grad():
        for a, b in zip(model(x), copy(x)):
            for key in ("boxes", "labels", "scores", "masks"):
                np.testing.assert_array_equal(a[key], b[key])


# -------------------------------------------------------------------------------- registry
def test_create_without_config_gives_the_small_model_and_presets_the_paper_size():
    small = models.create("unet", num_classes=4)
    assert small.num_parameters() < 1_000_000
    assert models.presets("unet")["paper"] == {"depth": 4, "base_width": 64}
    paper = models.get_model_class("unet").presets["paper"]
    assert models.create("unet", num_classes=4, preset="paper", depth=2).config.depth == 2
    assert paper["base_width"] == 64                 # overriding a preset field leaves it be
    with pytest.raises(ValueError, match="unknown preset 'huge'; unet has 'paper'"):
        models.create("unet", num_classes=4, preset="huge")


def test_registering_twice_is_refused_and_a_config_must_be_a_dataclass():
    with pytest.raises(ValueError, match="already registered"):
        models.register("unet")(type("Other", (SegmentationModel,), {}))
    with pytest.raises(TypeError, match="config_class must be a dataclass"):
        models.register("no_config_model")(type("NoConfig", (SegmentationModel,), {}))


def test_plain_import_reaches_the_subpackages():
    code = ("import edu_seg; m = edu_seg.models.create('unet', num_classes=2); "
            "print(type(m).__name__, edu_seg.data.Shapes.__name__, edu_seg.nn.Linear.__name__, "
            "edu_seg.optim.Adam.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["UNet", "Shapes", "Linear", "Adam"]


# --------------------------------------------------------------------- config validation
@dataclasses.dataclass
class _Config:
    num_classes: int
    mode: Literal["a", "b"] = "a"
    dropout: float = dataclasses.field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    offset: int = dataclasses.field(default=0, metadata={"min": 0})
    rates: tuple[int, ...] = (1, 2)
    pretrained: bool = False
    note: Optional[str] = None


@pytest.mark.parametrize("field,value,message", [
    ("num_classes", 0, "num_classes must be an int >= 1, got 0"),
    ("num_classes", True, "num_classes must be an int >= 1, got True"),
    ("num_classes", 2.0, "num_classes must be an int >= 1, got 2.0"),
    ("mode", "c", "mode must be one of 'a', 'b', got 'c'"),
    ("dropout", 1.5, r"dropout must be a finite number in \[0.0, 1.0\], got 1.5"),
    ("dropout", float("nan"), "dropout must be a finite number"),
    ("offset", -1, "offset must be an int >= 0, got -1"),
    ("rates", (1, 0), "rates must be an int >= 1, got 0"),
    ("rates", 3, "rates must be a tuple"),
    ("pretrained", "False", "pretrained must be True or False, got 'False'"),
    ("note", 3, "note must be a string, got 3"),
])
def test_config_validation_names_the_field_the_value_and_the_need(field, value, message):
    config = _Config(num_classes=2)
    setattr(config, field, value)
    with pytest.raises(ValueError, match=f"_Config: {message}"):
        validate_config(config)


def test_config_validation_accepts_lists_for_tuples_and_none_for_optional():
    config = _Config(num_classes=2, rates=[3, 4], offset=0, note=None)
    validate_config(config)
    assert config.rates == (3, 4)


# ------------------------------------------------------------------ the loss contract
class _TwoHeads(SegmentationModel):
    """A 1x1-conv model with an auxiliary head, to test the default loss."""

    @dataclasses.dataclass
    class Config:
        num_classes: int

    config_class = Config
    name = "two_heads"
    aux_weights = {"aux": 0.5}

    def __init__(self, config):
        super().__init__(config)
        self.head = nn.Conv2d(3, config.num_classes, 1)
        self.aux = nn.Conv2d(3, config.num_classes, 1)

    def forward(self, x):
        out = self.head(x)
        if not self.training:
            return out
        return {"out": out, "aux": self.aux(x)[:, :, ::2, ::2]}   # a coarser auxiliary map


def test_default_loss_weights_and_resizes_the_extra_heads():
    from edu_seg.ops.loss import cross_entropy
    from edu_seg.ops.resample import interpolate
    model = _TwoHeads(_TwoHeads.Config(num_classes=3))
    batch = {"image": random_images(2, size=8), "mask": np.random.default_rng(1).integers(0, 3, (2, 8, 8))}
    outputs = model.forward_train(batch)
    total, terms = model.loss(outputs, batch)
    ce = cross_entropy(outputs["out"], batch["mask"]).item()
    aux = cross_entropy(interpolate(outputs["aux"], size=(8, 8), mode="bilinear",
                                    align_corners=False), batch["mask"]).item()
    assert set(terms) == {"ce", "aux"}
    np.testing.assert_allclose([terms["ce"].item(), terms["aux"].item()], [ce, aux], rtol=1e-6)
    np.testing.assert_allclose(total.item(), ce + 0.5 * aux, rtol=1e-6)
    model.aux_weights = {}
    with pytest.raises(ValueError, match="output 'aux' has no weight"):
        model.loss(outputs, batch)


def test_crop_target_takes_the_centre():
    masks = np.arange(2 * 6 * 6).reshape(2, 6, 6)
    np.testing.assert_array_equal(crop_target(masks, (2, 4)), masks[:, 2:4, 1:5])
    assert crop_target(masks, (6, 6)) is masks


# ------------------------------------------------------- layer declarations and hooks
class _Doubler(nn.Module):
    """A layer the library has never heard of: it declares its own FLOPs and window."""

    def forward(self, x):
        return x * 2.0

    def flops(self, x, y):
        return y.size

    def window(self):
        return (1, 1), (1, 1), (0, 0), (1, 1)


def test_summary_counts_a_new_layer_by_its_own_declaration():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _Doubler())
    s = models.summary(model, (1, 3, 8, 8))
    assert [r["type"] for r in s.rows] == ["Conv2d", "_Doubler"]
    assert s.rows[1]["flops"] == 4 * 8 * 8
    assert s.total_flops == 2 * 4 * 8 * 8 * 27 + 4 * 8 * 8 + 4 * 8 * 8


def test_receptive_field_uses_the_declared_windows():
    from edu_seg.viz.receptive_field import layer_arithmetic
    chain = [nn.Conv2d(1, 1, 3, padding=1), _Doubler(), nn.MaxPool2d(2),
             nn.Conv2d(1, 1, 3, dilation=2, padding=2)]
    assert layer_arithmetic(chain)[0] == (3 + 1 + 2 * 4, 3 + 1 + 2 * 4)
    assert layer_arithmetic([nn.ConvTranspose2d(1, 1, 2, stride=2)]) == (None, None, None)


def test_forward_hooks_see_every_call_and_can_be_removed():
    layer = nn.ReLU()
    seen = []
    handle = layer.register_forward_hook(lambda m, args, y: seen.append(y.shape))
    layer(Tensor(np.zeros((2, 3))))
    handle.remove()
    layer(Tensor(np.zeros((1, 3))))
    assert seen == [(2, 3)]
