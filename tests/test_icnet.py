"""ICNet (Zhao et al. 2018): the image cascade (the three branches read the image at 1/4, 1/2
and full resolution; the medium branch IS the heavy branch's first stages), the cascade
feature fusion unit, cascade label guidance (0.4, 0.4, 1 on labels shrunk by nearest
sampling) and the two ablations."""
import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.models.blocks import PyramidPooling
from edu_seg.models.icnet import ICNetConfig, shrink_labels
from edu_seg.ops.loss import cross_entropy
from edu_seg.ops.resample import interpolate
from helpers import random_images, record_forward

# A small model with the paper's strides (high branch at 1/8, three strided convs).
PAPER_STRIDES = {"cascade_stride": 8, "high_widths": (8, 8, 16)}


def _build(preset=None, seed=0, **config):
    nn.init.manual_seed(seed)
    return models.create("icnet", num_classes=3, preset=preset, **config)


def _shrink(x, factor):
    return interpolate(Tensor(x), scale_factor=1 / factor, mode="bilinear",
                       align_corners=False).data


# ------------------------------------------------------------------------ the image cascade
@pytest.mark.parametrize("config,strides", [({}, (16, 8, 4)), (PAPER_STRIDES, (32, 16, 8))])
def test_the_branches_read_the_image_at_a_quarter_a_half_and_full_resolution(config, strides):
    model = _build(**config).eval()
    x = random_images(2)
    _, seen = record_forward(model, {"low": model.low, "medium": model.medium,
                                     "high": model.high}, x)
    np.testing.assert_allclose(seen["low"][0], _shrink(x, 4), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(seen["medium"][0], _shrink(x, 2), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(seen["high"][0], x)
    assert [seen[k][0].shape[-1] for k in ("low", "medium", "high")] == [16, 32, 64]
    # ... and end 2x apart: at 4f, 2f and f of the input (f = cascade_stride).
    assert [64 // seen[k][1].shape[-1] for k in ("low", "medium", "high")] == list(strides)
    convs = [m for m in model.high.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == int(np.log2(strides[-1])) and all(c.stride == (2, 2) for c in convs)


def test_the_medium_branch_is_the_heavy_branch_first_stages_not_a_copy():
    model = _build()
    shared = list(model.low.shared)
    assert len(model.medium) == len(shared) > 0
    assert all(a is b for a, b in zip(model.medium, shared))          # the same objects
    # One set of weights: the state dict holds them once, under the heavy branch, and the
    # medium branch adds no parameter to the model.
    assert not any(k.startswith("medium.") for k in model.state_dict())
    lone = _build("no_cascade")
    extra = sum(p.size for m in (model.high, model.cff_medium, model.cff_high, model.classifier)
                for p in m.parameters())
    assert model.num_parameters() == lone.num_parameters() - lone.classifier.weight.size \
        - lone.classifier.bias.size + extra
    # Changing a shared weight changes what the medium branch computes.
    model.eval()
    half = Tensor(_shrink(random_images(1), 2))
    with no_grad():
        before = model.medium(half).data
        model.low.shared[0].weight.data[...] *= -1                    # the stem conv
        after = model.medium(half).data
    assert not np.allclose(before, after)


def test_the_heavy_branch_is_dilated_and_ends_with_pyramid_pooling():
    model = _build().eval()
    assert all(c.stride == (1, 1) for c in model.low.deep.modules() if isinstance(c, nn.Conv2d))
    assert isinstance(model.low.pyramid, PyramidPooling) and model.low.pyramid.bins == (1, 2, 3, 6)
    _, seen = record_forward(model, {"deep": model.low.deep, "pyramid": model.low.pyramid},
                             random_images(1))
    np.testing.assert_array_equal(seen["pyramid"][0], seen["deep"][1].data)
    assert seen["deep"][1].shape[-1] == 4                             # 16 px image, stride 4


# ------------------------------------------------------------------ cascade feature fusion
def test_cff_refines_the_upsampled_low_map_with_a_dilation_2_conv_and_adds_the_high_map():
    model = _build().eval()
    cff = model.cff_medium
    assert cff.low_conv.kernel_size == (3, 3) and cff.low_conv.dilation == (2, 2)
    assert cff.low_conv.padding == (2, 2) and cff.high_conv.kernel_size == (1, 1)
    keys = {"low": model.low, "medium": model.medium, "high": model.high,
            "low_conv": cff.low_conv, "high_conv": cff.high_conv, "cff_medium": cff,
            "cff_high_conv": model.cff_high.low_conv, "cff_high_1x1": model.cff_high.high_conv}
    _, seen = record_forward(model, keys, random_images(2))
    low = seen["low"][1]                                              # (2, C, 4, 4)
    up = interpolate(low, scale_factor=2, mode="bilinear", align_corners=False).data
    np.testing.assert_allclose(seen["low_conv"][0], up, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(seen["high_conv"][0], seen["medium"][1].data)
    fused, _ = seen["cff_medium"][1]                                  # (fused, up)
    with no_grad():
        ref = np.maximum(cff.low_bn(seen["low_conv"][1]).data
                         + cff.high_bn(seen["high_conv"][1]).data, 0)
    np.testing.assert_allclose(fused.data, ref, rtol=1e-5, atol=1e-6)
    # The second CFF takes the first one's output as its low map and the high branch's.
    up2 = interpolate(fused, scale_factor=2, mode="bilinear", align_corners=False).data
    np.testing.assert_allclose(seen["cff_high_conv"][0], up2, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(seen["cff_high_1x1"][0], seen["high"][1].data)


# --------------------------------------------------------------- cascade label guidance
def test_shrink_labels_takes_the_pixel_nearest_each_cell_centre():
    masks = np.arange(2 * 8 * 8).reshape(2, 8, 8)
    np.testing.assert_array_equal(shrink_labels(masks, (2, 2)), masks[:, 2::4, 2::4])
    np.testing.assert_array_equal(shrink_labels(masks, (8, 8)), masks)
    with pytest.raises(ValueError, match="cannot be shrunk to 3x3"):
        shrink_labels(masks, (3, 3))


@pytest.mark.parametrize("config,keys", [({}, ("aux8", "aux4")),
                                         (PAPER_STRIDES, ("aux16", "aux8"))])
def test_label_guidance_weighs_0_4_0_4_and_1_on_labels_shrunk_to_each_map(config, keys):
    model = _build(**config)
    x = random_images(2)
    outputs, seen = record_forward(model, {"aux_coarse": model.cff_medium.classifier,
                                           "aux_fine": model.cff_high.classifier,
                                           "low": model.low}, x)
    coarse, fine = keys
    assert set(outputs) == {"out", coarse, fine}
    assert model.aux_weights == {coarse: 0.4, fine: 0.4}
    s_coarse, s_fine = int(coarse[3:]), int(fine[3:])
    assert outputs[coarse].shape == (2, 3, 64 // s_coarse, 64 // s_coarse)
    assert outputs[fine].shape == (2, 3, 64 // s_fine, 64 // s_fine)
    assert outputs["out"].shape == (2, 3, 64, 64)
    # The coarse auxiliary classifier reads the heavy branch's map up-sampled x2.
    up = interpolate(seen["low"][1], scale_factor=2, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(seen["aux_coarse"][0], up.data, rtol=1e-6, atol=1e-6)

    mask = np.random.default_rng(1).integers(0, 3, (2, 64, 64))
    total, terms = model.loss(outputs, {"mask": mask})
    assert set(terms) == {"ce", coarse, fine}
    targets = {k: mask[:, s // 2::s, s // 2::s] for k, s in ((coarse, s_coarse), (fine, s_fine))}
    assert targets[coarse].shape == (2, 64 // s_coarse, 64 // s_coarse)
    expected = {k: cross_entropy(outputs[k], targets[k]).item() for k in targets}
    expected["ce"] = cross_entropy(outputs["out"], mask).item()
    np.testing.assert_allclose([terms[k].item() for k in expected], list(expected.values()),
                               rtol=1e-6)
    np.testing.assert_allclose(total.item(), expected["ce"] + 0.4 * expected[coarse]
                               + 0.4 * expected[fine], rtol=1e-6)


def test_auxiliary_classifiers_run_only_in_training():
    model = _build().eval()
    out, seen = record_forward(model, {"a": model.cff_medium.classifier,
                                       "b": model.cff_high.classifier}, random_images(1))
    assert isinstance(out, Tensor) and not seen


def test_ignored_pixels_stay_ignored_at_every_scale():
    model = _build()
    x = random_images(2)
    outputs, _ = record_forward(model, {}, x)
    mask = np.random.default_rng(2).integers(0, 3, (2, 64, 64))
    mask[:, :32] = -100                                               # top half ignored
    _, terms = model.loss(outputs, {"mask": mask})
    bottom = {k: Tensor(v.data[:, :, v.shape[2] // 2:]) for k, v in outputs.items()}
    _, ref = model.loss(bottom, {"mask": mask[:, 32:]})
    np.testing.assert_allclose([terms[k].item() for k in ref], [ref[k].item() for k in ref],
                               rtol=1e-5)


# ------------------------------------------------------------------------------ ablations
def test_no_cascade_is_the_heavy_branch_alone_upsampled_x16():
    model = _build("no_cascade").eval()
    for name in ("medium", "high", "cff_medium", "cff_high"):
        assert not hasattr(model, name)
    assert model.aux_weights == {}
    x = random_images(1)
    out, seen = record_forward(model, {"low": model.low, "classifier": model.classifier}, x)
    np.testing.assert_allclose(seen["low"][0], _shrink(x, 4), rtol=1e-6, atol=1e-6)
    scores = seen["classifier"][1]
    assert scores.shape == (1, 3, 4, 4)
    np.testing.assert_allclose(out.data, interpolate(scores, scale_factor=16, mode="bilinear",
                                                     align_corners=False).data,
                               rtol=1e-6, atol=1e-6)
    model.train()
    outputs = model(Tensor(random_images(2)))
    assert isinstance(outputs, Tensor)                                # no auxiliary outputs
    assert set(model.loss(outputs, {"mask": np.zeros((2, 64, 64), int)})[1]) == {"ce"}


def test_no_label_guidance_is_the_same_network_trained_on_the_final_loss_only():
    guided, plain = _build(), _build("no_label_guidance")
    assert list(plain.state_dict()) == list(guided.state_dict())
    assert plain.aux_weights == {}
    x = random_images(2)
    outputs = plain(Tensor(x))
    assert isinstance(outputs, Tensor)
    _, terms = plain.loss(outputs, {"mask": np.zeros((2, 64, 64), int)})
    assert set(terms) == {"ce"}
    plain.load_state_dict(guided.state_dict())
    plain.eval(), guided.eval()
    with no_grad():
        np.testing.assert_array_equal(plain(Tensor(x)).data, guided(Tensor(x)).data)


# -------------------------------------------------------------------------- paper, errors
def test_paper_preset_has_the_paper_strides_widths_and_resnet50():
    assert models.presets("icnet")["paper"] == {
        "cascade_stride": 8, "backbone": "resnet50", "backbone_widths": None,
        "bins": (1, 2, 3, 6), "low_channels": 256, "high_widths": (32, 32, 64),
        "fusion_channels": 128}
    model = _build("paper")
    assert model.output_stride == 32 and model.aux_weights == {"aux16": 0.4, "aux8": 0.4}
    assert model.cff_medium.high_conv.weight.shape == (128, 512, 1, 1)   # layer2 of ResNet-50
    assert model.cff_high.high_conv.weight.shape == (128, 64, 1, 1)


def test_bad_configs_and_inputs_get_errors_that_say_what_to_change():
    with pytest.raises(ValueError, match=r"high_widths=\(16, 32\) gives 2 strided convs.*"
                                         r"cascade_stride=8 needs 3"):
        ICNetConfig(num_classes=3, cascade_stride=8)
    with pytest.raises(ValueError, match="cascade_stride must be one of 4, 8"):
        ICNetConfig(num_classes=3, cascade_stride=2)
    with pytest.raises(ValueError, match=r"bins=\(\)"):
        ICNetConfig(num_classes=3, bins=())
    with pytest.raises(ValueError, match="pad to 80x64"):
        _build()(Tensor(np.zeros((1, 3, 72, 64), np.float32)))
