"""BiSeNet (Yu et al. 2018): the spatial path of strided convs, the context path with its
attention refinement modules and global context, the feature fusion module's attention, the
auxiliary heads of the context path (training only) and the ablations."""
import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor
from edu_seg.models.bisenet import BiSeNetConfig, FeatureFusion
from edu_seg.ops.loss import cross_entropy
from edu_seg.ops.resample import interpolate
from helpers import assert_same_network_trained_on_the_final_ce, random_images, record_forward


def _build(preset=None, seed=0, **config):
    nn.init.manual_seed(seed)
    return models.create("bisenet", num_classes=3, preset=preset, **config)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _bn_eval(bn, z):
    """BatchNorm2d in eval mode, by hand: z (N, C, h, w)."""
    shape = (1, -1, 1, 1)
    return ((z - bn.running_mean.reshape(shape)) / np.sqrt(bn.running_var.reshape(shape) + bn.eps)
            * bn.weight.data.reshape(shape) + bn.bias.data.reshape(shape))


def _randomise_batch_norms(model, seed=5):
    """Running statistics and affine parameters away from 0/1, so a BN that is skipped or
    misplaced changes the numbers."""
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.running_mean.shape[0]
            m.running_mean[...] = rng.normal(0, 0.5, c)
            m.running_var[...] = rng.uniform(0.5, 2.0, c)
            m.weight.data[...] = rng.uniform(0.5, 1.5, c)
            m.bias.data[...] = rng.normal(0, 0.5, c)


def _conv1x1(conv, v):
    """A 1x1 conv on pooled vectors v (N, C_in) -> (N, C_out), by hand."""
    out = v @ conv.weight.data[:, :, 0, 0].T
    return out if conv.bias is None else out + conv.bias.data


# -------------------------------------------------------------------------- spatial path
def test_spatial_path_is_exactly_two_strided_conv_bn_relu_layers_ending_at_stride_4():
    model = _build().eval()
    convs = [m for m in model.spatial.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and len(model.spatial) == 2
    assert all(c.stride == (2, 2) and c.kernel_size == (3, 3) for c in convs)
    assert [c.weight.shape[0] for c in convs] == list(model.config.spatial_widths)
    assert model.spatial_stride == 4
    _, seen = record_forward(model, {"spatial": model.spatial, "fuse": model.ffm.fuse},
                             random_images(1))
    x, y = seen["spatial"]
    assert x.shape == (1, 3, 64, 64)                       # the spatial path reads the image
    assert y.shape == (1, model.config.spatial_widths[-1], 16, 16)   # 64 / 4
    # The FFM's concatenation starts with the spatial path's map itself.
    np.testing.assert_array_equal(seen["fuse"][0][:, :y.shape[1]], y.data)


def test_paper_preset_has_three_strided_convs_ending_at_stride_8():
    assert models.presets("bisenet")["paper"]["spatial_widths"] == (64, 64, 64)
    model = _build("paper").eval()
    convs = [m for m in model.spatial.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 and all(c.stride == (2, 2) for c in convs)
    assert model.spatial_stride == 8
    _, seen = record_forward(model, {"spatial": model.spatial, "head": model.head},
                             random_images(1))
    assert seen["spatial"][1].shape == (1, 64, 8, 8)
    assert seen["head"][1].shape == (1, 3, 8, 8)           # the model predicts at 1/8


def test_the_context_is_upsampled_to_the_spatial_stride_and_the_scores_from_there():
    model = _build().eval()
    out, seen = record_forward(model, {"refine16": model.refine16, "head": model.head},
                               random_images(1))
    assert seen["refine16"][1].shape == (1, model.config.context_channels, 16, 16)
    scores = seen["head"][1]                                 # (1, 3, 16, 16)
    np.testing.assert_allclose(out.data, interpolate(scores, size=(64, 64), mode="bilinear",
                                                     align_corners=False).data,
                               rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------- context path
def test_arm_multiplies_by_a_per_channel_sigmoid_of_the_pooled_map():
    model = _build().eval()
    _randomise_batch_norms(model)
    arm = model.arm32
    _, seen = record_forward(model, {"project": arm.project, "arm": arm}, random_images(2))
    x, y = seen["project"][1].data, seen["arm"][1].data      # (2, C, 2, 2) each
    pooled = x.mean(axis=(2, 3))                             # GAP: (2, C)
    z = _conv1x1(arm.conv, pooled)[:, :, None, None]          # (2, C, 1, 1)
    weights = _sigmoid(_bn_eval(arm.bn, z))
    np.testing.assert_allclose(y, x * weights, rtol=1e-4, atol=1e-5)
    # One weight per channel and image, the same at every pixel, strictly between 0 and 1,
    # and different across channels (an attention, not a constant).
    assert weights.shape == (2, x.shape[1], 1, 1)
    assert (weights > 0).all() and (weights < 1).all() and np.ptp(weights) > 0.05


def test_context_path_reads_1_16_and_1_32_and_adds_the_global_context_to_1_32():
    model = _build()                                         # training: the aux heads run
    backbone = model.backbone
    keys = {"layer3": backbone.layer3, "layer4": backbone.layer4,
            "arm32": model.arm32, "gc": model.global_context, "arm16": model.arm16,
            "refine32": model.refine32, "aux32": model.aux32, "aux16": model.aux16}
    outputs, seen = record_forward(model, keys, random_images(2))
    np.testing.assert_array_equal(seen["arm32"][0], seen["layer4"][1].data)   # 1/32: 2x2
    np.testing.assert_array_equal(seen["gc"][0], seen["layer4"][1].data)
    np.testing.assert_array_equal(seen["arm16"][0], seen["layer3"][1].data)   # 1/16: 4x4
    assert seen["arm32"][0].shape[-1] == 2 and seen["arm16"][0].shape[-1] == 4
    gc = seen["gc"][1].data
    assert gc.shape == (2, model.config.context_channels, 1, 1)    # one vector per image
    np.testing.assert_allclose(seen["aux32"][0], seen["arm32"][1].data + gc,
                               rtol=1e-6, atol=1e-6)        # broadcast over the 2x2 map
    np.testing.assert_allclose(seen["aux16"][0],
                               seen["arm16"][1].data + seen["refine32"][1].data,
                               rtol=1e-6, atol=1e-6)
    # refine32 reads the 1/32 sum up-sampled to 1/16.
    up = interpolate(seen["aux32"][0], size=(4, 4), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(seen["refine32"][0], up.data, rtol=1e-6, atol=1e-6)
    assert set(outputs) == {"out", "aux16", "aux32"}
    assert outputs["aux16"].shape == (2, 3, 4, 4) and outputs["aux32"].shape == (2, 3, 2, 2)


# ----------------------------------------------------------------------- fusion module
def test_ffm_output_is_u_plus_u_times_its_channel_attention():
    model = _build().eval()
    _randomise_batch_norms(model)
    ffm = model.ffm
    _, seen = record_forward(model, {"fuse": ffm.fuse, "ffm": ffm}, random_images(2))
    u, y = seen["fuse"][1].data, seen["ffm"][1].data
    hidden = np.maximum(_conv1x1(ffm.squeeze, u.mean(axis=(2, 3))), 0)    # ReLU
    weights = _sigmoid(_conv1x1(ffm.excite, hidden))[:, :, None, None]    # (2, C, 1, 1)
    assert ffm.squeeze.weight.shape[0] == ffm.excite.weight.shape[1] == u.shape[1] // 4
    np.testing.assert_allclose(y, u + u * weights, rtol=1e-4, atol=1e-5)
    assert np.ptp(weights) > 0.05                            # it really reweights channels
    assert not np.allclose(y, u) and not np.allclose(y, 2 * u)


# ------------------------------------------------------------------- aux heads and loss
def test_aux_heads_exist_only_in_training_and_weigh_1_each_in_the_loss():
    model = _build()
    x = random_images(2)
    outputs, _ = record_forward(model, {}, x)
    mask = np.random.default_rng(1).integers(0, 3, (2, 64, 64))
    total, terms = model.loss(outputs, {"mask": mask})
    assert model.aux_weights == {"aux16": 1.0, "aux32": 1.0}
    assert set(terms) == {"ce", "aux16", "aux32"}
    expected = {k: cross_entropy(interpolate(outputs[k], size=(64, 64), mode="bilinear",
                                             align_corners=False), mask).item()
                for k in ("aux16", "aux32")}
    np.testing.assert_allclose([terms[k].item() for k in expected], list(expected.values()),
                               rtol=1e-6)
    np.testing.assert_allclose(total.item(), terms["ce"].item() + sum(expected.values()),
                               rtol=1e-6)
    model.eval()
    out, seen = record_forward(model, {"aux16": model.aux16, "aux32": model.aux32}, x)
    assert isinstance(out, Tensor) and not seen              # not even computed at test time


def test_no_deep_supervision_is_the_same_network_without_aux_heads_trained_on_the_final_ce():
    assert_same_network_trained_on_the_final_ce(_build(), _build("no_deep_supervision"),
                                                ["aux16", "aux32"], num_classes=3)


# --------------------------------------------------------------------------- ablations
def test_no_spatial_path_predicts_from_the_context_path_alone():
    model = _build("no_spatial_path").eval()
    assert not hasattr(model, "spatial") and not hasattr(model, "ffm")
    assert not any(isinstance(m, FeatureFusion) for m in model.modules())
    _, seen = record_forward(model, {"refine16": model.refine16, "head": model.head},
                             random_images(1))
    np.testing.assert_array_equal(seen["head"][0], seen["refine16"][1].data)
    full = _build().state_dict()
    assert all(k.startswith(("spatial.", "ffm.")) for k in set(full) - set(model.state_dict()))
    assert set(model.state_dict()) < set(full)
    assert model.head[0].conv.weight.shape[1] == model.config.context_channels


def test_no_attention_keeps_the_convs_and_sums_but_drops_every_sigmoid():
    model = _build("no_attention").eval()
    assert not any(isinstance(m, nn.Sigmoid) for m in model.modules())
    assert any(isinstance(m, nn.Sigmoid) for m in _build().modules())
    _, seen = record_forward(model, {"project": model.arm16.project, "arm": model.arm16,
                                     "fuse": model.ffm.fuse, "ffm": model.ffm},
                             random_images(1))
    np.testing.assert_array_equal(seen["arm"][1].data, seen["project"][1].data)
    np.testing.assert_array_equal(seen["ffm"][1].data, seen["fuse"][1].data)
    # Same convolutions, minus the attention's parameters: a subset of the default's keys.
    full = set(_build().state_dict())
    missing = full - set(model.state_dict())
    assert set(model.state_dict()) < full
    assert all(k.split(".")[1] in ("conv", "bn", "squeeze", "excite") for k in missing)


# ------------------------------------------------------------------------------ errors
def test_bad_configs_get_errors_that_say_what_to_change():
    with pytest.raises(ValueError, match=r"spatial_widths=\(\).*give 1 to 4 widths"):
        BiSeNetConfig(num_classes=3, spatial_widths=())
    with pytest.raises(ValueError, match="ffm_reduction=8 squeezes"):
        BiSeNetConfig(num_classes=3, fusion_channels=4, ffm_reduction=8)
    with pytest.raises(ValueError, match="give backbone_widths=None"):
        BiSeNetConfig(num_classes=3, backbone="xception_tiny")
    assert _build(backbone="xception_tiny", backbone_widths=None).backbone.name == "xception_tiny"
    with pytest.raises(ValueError, match="context_channels must be an int >= 1"):
        models.create("bisenet", num_classes=3, context_channels=0)
