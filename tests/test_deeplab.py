"""DeepLabV3 and DeepLabV3+: ASPP's branches and image pooling, rates and dilations at output
stride 16 and 8, the decoder on stride-4 features and the depthwise separable convolutions."""
import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.models.blocks import ASPP, ImagePooling
from edu_seg.ops.resample import interpolate
from helpers import random_images


def _build(name, seed=0, **config):
    nn.init.manual_seed(seed)
    return models.create(name, num_classes=3, **config)


def _record(module, store, key, what="output"):
    """Keep the module's first output (or first input) of the next forward in store[key]."""
    def hook(m, args, y):
        store.setdefault(key, (y if what == "output" else args[0]).data.copy())
    return module.register_forward_hook(hook)


# -------------------------------------------------------------------------------------- ASPP
def test_aspp_has_a_1x1_branch_a_3x3_branch_per_rate_and_an_image_pooling_branch():
    aspp = ASPP(8, (1, 2, 3), out_channels=4)
    convs = [branch[0] for branch in aspp.convs[:4]]
    assert [c.kernel_size for c in convs] == [(1, 1)] + [(3, 3)] * 3
    assert [c.dilation for c in convs] == [(1, 1), (1, 1), (2, 2), (3, 3)]
    assert [c.padding for c in convs] == [(0, 0), (1, 1), (2, 2), (3, 3)]  # size kept
    pooling = aspp.convs[4]
    assert isinstance(pooling, ImagePooling) and isinstance(pooling[0], nn.AdaptiveAvgPool2d)
    assert aspp.project[0].weight.shape == (4, 5 * 4, 1, 1)          # concat of 5 branches
    no_pool = ASPP(8, (1, 2, 3), out_channels=4, image_pooling=False)
    assert len(no_pool.convs) == 4 and not any(isinstance(b, ImagePooling) for b in no_pool.convs)
    assert no_pool.project[0].weight.shape == (4, 4 * 4, 1, 1)


def test_image_pooling_branch_is_one_vector_per_image_spread_over_the_map():
    nn.init.manual_seed(0)
    aspp = ASPP(8, (1,), out_channels=4).eval()
    x = np.random.default_rng(0).standard_normal((2, 8, 6, 5)).astype(np.float32)
    seen = {}
    hooks = [_record(aspp.convs[2][3], seen, "pooled"),               # the branch's ReLU
             _record(aspp.project, seen, "concat", what="input")]
    with no_grad():
        aspp(Tensor(x))
    for h in hooks:
        h.remove()
    assert seen["pooled"].shape == (2, 4, 1, 1)                         # before up-sampling
    pooled_part = seen["concat"][:, 8:12]                               # the third branch
    np.testing.assert_allclose(pooled_part, np.broadcast_to(seen["pooled"], (2, 4, 6, 5)),
                               rtol=1e-6, atol=1e-7)
    # and the vector is the branch applied to the image's channel means
    branch = aspp.convs[2]
    mean = Tensor(x.mean(axis=(2, 3), keepdims=True))
    with no_grad():
        expected = branch[3](branch[2](branch[1](mean))).data
    np.testing.assert_allclose(seen["pooled"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("image_pooling", [True, False])
def test_only_image_pooling_lets_a_far_pixel_change_the_output(image_pooling):
    """With rate 1 and a 16x16 map, corner (0, 0) is outside every 3x3 window around (15, 15):
    only the global pool carries it there."""
    nn.init.manual_seed(0)
    aspp = ASPP(4, (1,), out_channels=4, image_pooling=image_pooling).eval()
    x = np.random.default_rng(1).standard_normal((1, 4, 16, 16)).astype(np.float32)
    far = x.copy()
    far[..., 0, 0] += 10.0
    with no_grad():
        a, b = aspp(Tensor(x)).data, aspp(Tensor(far)).data
    changed = not np.allclose(a[..., 15, 15], b[..., 15, 15], rtol=0, atol=1e-6)
    assert changed == image_pooling


def test_separable_aspp_branches_are_depthwise_then_pointwise():
    aspp = ASPP(8, (1, 2, 3), out_channels=4, separable=True)
    for branch, rate in zip(aspp.convs[1:4], (1, 2, 3)):
        depthwise, pointwise = branch[0].conv, branch[1].conv
        assert depthwise.groups == 8 and depthwise.weight.shape == (8, 1, 3, 3)
        assert depthwise.dilation == (rate, rate) and depthwise.padding == (rate, rate)
        assert pointwise.weight.shape == (4, 8, 1, 1) and pointwise.groups == 1
    assert aspp.convs[0][0].weight.shape == (4, 8, 1, 1)               # 1x1 branch unchanged


# --------------------------------------------------------------------------------- DeepLabV3
@pytest.mark.parametrize("preset, stride, rates", [(None, 16, (1, 2, 3)), ("os8", 8, (2, 4, 6))])
def test_deeplabv3_rates_double_at_output_stride_8_and_the_backbone_dilates(preset, stride,
                                                                             rates):
    model = _build("deeplabv3", preset=preset).eval()
    assert model.output_stride == stride and model.aspp.atrous_rates == rates
    assert [b[0].dilation[0] for b in model.aspp.convs[1:4]] == list(rates)
    backbone = model.backbone
    assert backbone.stage_strides == ([2, 4, 8, 16, 16] if stride == 16 else [2, 4, 8, 8, 8])
    # layer3 and layer4 of the (one-block) ResNet: (stride, dilation) of conv1 and conv2. The
    # conv that had the stride keeps the previous dilation; the one after it is dilated.
    blocks = [backbone.layer3[0], backbone.layer4[0]]
    got = [(b.conv1.stride[0], b.conv1.dilation[0], b.conv2.dilation[0]) for b in blocks]
    assert got == ([(2, 1, 1), (1, 1, 2)] if stride == 16 else [(1, 1, 2), (1, 2, 4)])
    seen = {}
    _record(model.aspp, seen, "aspp_in", what="input")
    _record(model.classifier, seen, "scores")
    with no_grad():
        out = model(Tensor(random_images(1))).data
    assert seen["aspp_in"].shape == (1, 64, 64 // stride, 64 // stride)
    ref = interpolate(seen["scores"], size=(64, 64), mode="bilinear", align_corners=False).data
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


def test_deeplabv3_no_image_pool_preset_drops_only_the_pooling_branch():
    with_pool, without = _build("deeplabv3"), _build("deeplabv3", preset="no_image_pool")
    assert isinstance(with_pool.aspp.convs[-1], ImagePooling)
    assert not any(isinstance(b, ImagePooling) for b in without.aspp.convs)
    keys, kept = set(with_pool.state_dict()), set(without.state_dict())
    assert kept < keys and keys - kept == {k for k in keys if k.startswith("aspp.convs.4.")}
    assert without.aspp.project[0].weight.shape[1] == 4 * 64


def test_deeplabv3_presets_and_multi_grid():
    assert models.presets("deeplabv3")["paper"] == {
        "backbone": "resnet50", "multi_grid": (1, 2, 4), "atrous_rates": (6, 12, 18),
        "aspp_channels": 256}
    model = _build("deeplabv3", backbone="resnet_bottleneck_tiny", multi_grid=(2,))
    assert model.backbone.layer4[0].conv2.dilation == (4, 4)           # 2 (stride 16) x 2
    with pytest.raises(ValueError, match="multi_grid"):
        _build("deeplabv3", multi_grid=(1, 2, 4))                       # layer4 has 1 block
    with pytest.raises(ValueError, match="output_stride must be one of 8, 16, got 32"):
        _build("deeplabv3", output_stride=32)


# -------------------------------------------------------------------------------- DeepLabV3+
def test_deeplabv3plus_decoder_concatenates_reduced_stride4_features_with_aspp_upsampled():
    model = _build("deeplabv3plus", low_level_channels=5).eval()
    seen = {}
    hooks = [_record(model.backbone.layer1, seen, "stride4"),
             _record(model.reduce, seen, "reduce_in", what="input"),
             _record(model.reduce, seen, "low"),
             _record(model.aspp, seen, "aspp"),
             _record(model.fuse, seen, "concat", what="input"),
             _record(model.classifier, seen, "scores")]
    with no_grad():
        out = model(Tensor(random_images(2))).data
    for h in hooks:
        h.remove()
    assert seen["stride4"].shape == (2, 64, 16, 16)                     # resnet18, H/4
    np.testing.assert_array_equal(seen["reduce_in"], seen["stride4"])   # reads stride 4
    assert seen["aspp"].shape == (2, 64, 8, 8)                          # H/8
    assert seen["concat"].shape == (2, 64 + 5, 16, 16)
    up = interpolate(seen["aspp"], size=(16, 16), mode="bilinear", align_corners=False).data
    np.testing.assert_allclose(seen["concat"][:, :64], up, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(seen["concat"][:, 64:], seen["low"])
    assert seen["scores"].shape == (2, 3, 16, 16)
    ref = interpolate(seen["scores"], size=(64, 64), mode="bilinear", align_corners=False).data
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


def test_deeplabv3plus_3x3_convs_are_depthwise_separable():
    model = _build("deeplabv3plus")
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d)
                 and m.kernel_size == (3, 3) and m not in set(model.backbone.modules())]
    assert len(depthwise) == 3 + 2                                      # ASPP rates, decoder
    assert all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert [m.dilation[0] for m in depthwise] == [2, 4, 6, 1, 1]       # rates at stride 8
    full = _build("deeplabv3plus", separable=False)
    assert not any(m.groups > 1 for m in full.modules() if isinstance(m, nn.Conv2d)
                   and m not in set(full.backbone.modules()))


@pytest.mark.parametrize("output_stride", [8, 16])
def test_deeplabv3plus_without_decoder_upsamples_aspp_scores_by_the_output_stride(output_stride):
    model = _build("deeplabv3plus", preset="no_decoder", output_stride=output_stride).eval()
    assert not hasattr(model, "fuse") and not hasattr(model, "reduce")
    seen = {}
    _record(model.classifier, seen, "scores")
    with no_grad():
        out = model(Tensor(random_images(1))).data
    assert seen["scores"].shape == (1, 3, 64 // output_stride, 64 // output_stride)
    ref = interpolate(seen["scores"], size=(64, 64), mode="bilinear", align_corners=False).data
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("config", [{"output_stride": 16}, {"preset": "xception"},
                                    {"backbone": "resnet_tiny"}, {"preset": "resnet_tiny"}])
def test_deeplabv3plus_other_strides_and_backbones_still_decode_at_stride_4(config):
    model = _build("deeplabv3plus", **config).eval()
    seen = {}
    _record(model.fuse, seen, "concat", what="input")
    with no_grad():
        out = model(Tensor(random_images(1)))
    assert out.shape == (1, 3, 64, 64) and seen["concat"].shape[-2:] == (16, 16)
    assert model.aspp.atrous_rates == ((1, 2, 3) if model.output_stride == 16 else (2, 4, 6))


# ------------------------------------------------------------ DeepLabV3+ on every family
def _forward_backward(model, x):
    """Train-mode forward and backward; returns the inputs that ASPP and the decoder's 1x1
    reduction read, and the backbone's own features of x."""
    seen = {}
    hooks = [_record(model.aspp, seen, "aspp_in", what="input"),
             _record(model.reduce, seen, "reduce_in", what="input")]
    out = model(x)
    for h in hooks:
        h.remove()
    assert out.shape == (2, 3, 64, 64)
    (out * out).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    first = next(m for m in model.backbone.modules() if isinstance(m, nn.Conv2d))
    assert np.abs(first.weight.grad).sum() > 0                  # reaches the first conv
    with no_grad():                      # train-mode BN: the same batch, the same features
        features = {s: f.data for s, f in model.backbone.features(x).items()}
    return seen, features


@pytest.mark.parametrize("backbone", ["vgg_bn_small", "resnet_small", "densenet_small",
                                      "mobilenet_v2_small", "xception_small", "densenet_tiny"])
def test_deeplabv3plus_runs_on_every_backbone_family_at_output_stride_8(backbone):
    model = _build("deeplabv3plus", backbone=backbone)
    assert model.backbone.name == backbone and model.backbone.stage_strides == [2, 4, 8, 8, 8]
    seen, features = _forward_backward(model, Tensor(random_images(2)))
    channels = model.backbone.channels
    assert seen["aspp_in"].shape == (2, channels[8], 8, 8)
    np.testing.assert_array_equal(seen["aspp_in"], features[8])
    assert seen["reduce_in"].shape == (2, channels[4], 16, 16)
    np.testing.assert_array_equal(seen["reduce_in"], features[4])   # the stride-4 stage


def test_deeplabv3plus_at_output_stride_32_keeps_every_stride_and_rates_of_at_least_1():
    """The "work at low resolution" setting: ASPP on the 2x2 map of a 64x64 image. The rates
    (1, 2, 3), halved, would be (0, 1, 1); they are clamped to 1 (rates_at)."""
    model = _build("deeplabv3plus", backbone="resnet_tiny", output_stride=32)
    assert model.backbone.stage_strides == [2, 4, 8, 16, 32]
    assert model.aspp.atrous_rates == (1, 1, 1)
    assert [b[0].conv.dilation for b in model.aspp.convs[1:4]] == [(1, 1)] * 3
    seen, features = _forward_backward(model, Tensor(random_images(2)))
    assert seen["aspp_in"].shape == (2, 64, 2, 2)
    np.testing.assert_array_equal(seen["reduce_in"], features[4])
    assert seen["reduce_in"].shape == (2, 8, 16, 16)
    assert models.create("deeplabv3plus", num_classes=3, output_stride=16).aspp.atrous_rates \
        == (1, 2, 3)                                          # 16 and 8 are unchanged
