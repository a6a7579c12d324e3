"""SegNet, Yu & Koltun's dilated network and DeepLab-LargeFOV: unpooling by indices, the memory
the decoder keeps, the VGG front-end at output stride 8, identity-initialised context modules
and dilations as documented."""
import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.models import create_backbone
from edu_seg.models.dilatednet import ContextModule, context_receptive_field
from edu_seg.models.segnet import decoder_memory
from edu_seg.ops.resample import interpolate
from edu_seg.viz.receptive_field import layer_arithmetic
from helpers import random_images


def _window_argmax(x):
    """Flat h*W + w of each 2x2 window's maximum of x (N, C, H, W), first in row-major order."""
    N, C, H, W = x.shape
    windows = x.reshape(N, C, H // 2, 2, W // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    k = windows.reshape(N, C, H // 2, W // 2, 4).argmax(axis=-1)      # 0..3 in the window
    rows = 2 * np.arange(H // 2)[:, None] + k // 2
    cols = 2 * np.arange(W // 2)[None, :] + k % 2
    return rows * W + cols


# ------------------------------------------------------------------------------------ SegNet
def test_segnet_unpooling_puts_each_pooled_value_at_its_argmax_and_zeros_elsewhere():
    nn.init.manual_seed(0)
    model = models.create("segnet", num_classes=3).eval()
    with no_grad():
        before = model.encoder[0](Tensor(random_images(2)))                 # (2, 16, 64, 64)
        pooled, where = model.pool(before)                            # (2, 16, 32, 32) x2
        up = model.unpool(pooled, where).data                         # (2, 16, 64, 64)
    np.testing.assert_array_equal(where.data, _window_argmax(before.data))
    flat_up, flat_before = up.reshape(2, 16, -1), before.data.reshape(2, 16, -1)
    at = where.data.reshape(2, 16, -1)
    np.testing.assert_array_equal(np.take_along_axis(flat_up, at, -1),
                                  np.take_along_axis(flat_before, at, -1))
    assert np.count_nonzero(up) <= up.size // 4                       # one per 2x2 window
    mask = np.zeros(flat_up.shape, bool)
    np.put_along_axis(mask, at, True, -1)
    assert not flat_up[~mask].any()


def test_segnet_decoder_unpools_exactly_where_the_encoder_found_its_maxima():
    """Fails if the decoder ignored the indices (e.g. nearest or fixed-position upsampling)."""
    nn.init.manual_seed(0)
    model = models.create("segnet", num_classes=3).eval()
    seen = {}
    hooks = [model.encoder[-1].register_forward_hook(
                 lambda m, args, y: seen.setdefault("before_last_pool", y.data)),
             model.unpool.register_forward_hook(
                 lambda m, args, y: seen.setdefault("first_unpool", y.data))]
    with no_grad():
        model(Tensor(random_images(2)))
    for h in hooks:
        h.remove()
    before, up = seen["before_last_pool"], seen["first_unpool"]       # (2, 64, 8, 8) each
    assert up.shape == before.shape == (2, 64, 8, 8)
    expected = np.zeros(before.shape, bool).reshape(2, 64, -1)
    np.put_along_axis(expected, _window_argmax(before).reshape(2, 64, -1), True, -1)
    # The stage ends in a ReLU, so a maximum may be exactly 0: compare where the maxima are
    # positive (all non-zeros must be at maxima, every positive maximum must appear).
    positive = (before > 0).reshape(2, 64, -1)
    nonzero = (up != 0).reshape(2, 64, -1)
    np.testing.assert_array_equal(nonzero, expected & positive)
    assert nonzero.any()


def test_decoder_memory_counts_indices_for_segnet_and_skip_features_for_unet():
    x = np.zeros((2, 3, 64, 64), np.float32)
    nn.init.manual_seed(0)
    segnet = models.create("segnet", num_classes=3, widths=(16, 32, 64, 128))
    unet = models.create("unet", num_classes=3, depth=4, base_width=16)  # the same widths
    widths, sizes = (16, 32, 64, 128), (64, 32, 16, 8)
    s, u = decoder_memory(segnet, x), decoder_memory(unet, x)
    # SegNet: int64 indices at the POOLED size; U-Net: float32 maps at the pre-pool size.
    assert s["bytes"] == sum(2 * w * (n // 2) ** 2 * 8 for w, n in zip(widths, sizes))
    assert u["bytes"] == sum(2 * w * n ** 2 * 4 for w, n in zip(widths, sizes))
    assert [d for _, d, _ in s["per_level"]] == ["int64"] * 4
    assert [d for _, d, _ in u["per_level"]] == ["float32"] * 4
    assert s["bytes"] * 2 == u["bytes"]               # a quarter of the pixels, twice the bytes
    assert s["two_bit_bytes"] * 32 == s["bytes"]      # the paper's 2 bits per pooled value
    with pytest.raises(TypeError, match="expected a SegNet or a UNet"):
        decoder_memory(models.create("fcn8s", num_classes=3), x)


# ------------------------------------------------------------------- VGG at output stride 8
def test_vgg_at_output_stride_8_drops_the_last_two_pool_strides_and_dilates_after_them():
    backbone = create_backbone("vgg_bn_tiny", output_stride=8)
    assert backbone.stage_strides == [2, 4, 8, 8, 8]
    convs = [m for m in backbone.layers if isinstance(m, nn.Conv2d)]
    # depths (1, 1, 2, 2, 2): conv1-4 read the grid they always read; conv5 comes after pool4,
    # whose stride is gone, so it is dilated by 2; pool5's lost stride would dilate whatever
    # follows by 4 (the models' fc6).
    assert [c.dilation[0] for c in convs] == [1, 1, 1, 1, 1, 1, 2, 2]
    assert [c.padding[0] for c in convs] == [1, 1, 1, 1, 1, 1, 2, 2]
    with no_grad():
        feats = backbone.features(Tensor(random_images(1)))
    assert {s: f.shape for s, f in feats.items()} == \
        {2: (1, 16, 32, 32), 4: (1, 32, 16, 16), 8: (1, 64, 8, 8)}
    plain = create_backbone("vgg_bn_tiny")
    assert plain.stage_strides == [2, 4, 8, 16, 32]
    assert not any(isinstance(m, nn.Identity) for m in plain.layers)
    assert list(plain.state_dict()) == list(backbone.state_dict())   # the same keys


# --------------------------------------------------------------- dilated convolutions (Yu)
def test_identity_initialised_context_module_passes_non_negative_scores_through():
    module = ContextModule(4, (1, 1, 2, 4, 1))
    x = np.abs(np.random.default_rng(0).standard_normal((2, 4, 8, 8))).astype(np.float32)
    with no_grad():
        np.testing.assert_array_equal(module(Tensor(x)).data, x)
    convs = [m for m in module.layers if isinstance(m, nn.Conv2d)]
    centre = convs[0].weight.data[:, :, 1, 1]
    np.testing.assert_array_equal(centre, np.eye(4))
    assert convs[0].weight.data.sum() == 4 and not convs[0].bias.data.any()


def test_dilatednet_context_dilations_and_receptive_field_are_as_documented():
    nn.init.manual_seed(0)
    model = models.create("dilatednet", num_classes=3)
    layers = list(model.context.layers)
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert [c.dilation[0] for c in convs] == [1, 1, 2, 4, 1, 1]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 5 + [(1, 1)]
    assert [type(m).__name__ for m in layers] == ["Conv2d", "ReLU"] * 5 + ["Conv2d"]
    assert model.fc6[0].dilation == (4, 4)
    assert layer_arithmetic(model.context.layers)[0] == (19, 19) \
        == (context_receptive_field(model.config.context_rates),) * 2
    paper_rates = models.presets("dilatednet")["paper"]["context_rates"]
    assert paper_rates == (1, 1, 2, 4, 8, 16, 1)
    assert layer_arithmetic(ContextModule(2, paper_rates).layers)[0] == (67, 67)  # Table 1


def test_dilatednet_output_is_the_context_module_output_upsampled_x8():
    nn.init.manual_seed(0)
    model = models.create("dilatednet", num_classes=3).eval()
    seen = {}
    model.context.register_forward_hook(lambda m, args, y: seen.setdefault("ctx", y))
    with no_grad():
        out = model(Tensor(random_images(1))).data
    assert seen["ctx"].shape == (1, 3, 8, 8)
    ref = interpolate(seen["ctx"], scale_factor=8, mode="bilinear", align_corners=False).data
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------- DeepLab-LargeFOV
def test_deeplab_largefov_fc6_dilation_and_bilinear_x8_of_the_scores():
    nn.init.manual_seed(0)
    model = models.create("deeplab_largefov", num_classes=3).eval()
    assert model.backbone.output_stride == 8
    assert model.fc6[0].dilation == (4, 4) and model.fc6[0].padding == (4, 4)
    assert models.presets("deeplab_largefov")["paper"] == {
        "backbone": "vgg16", "head_width": 1024, "fc6_dilation": 12, "dropout": 0.5}
    seen = {}
    model.score.register_forward_hook(lambda m, args, y: seen.setdefault("score", y))
    with no_grad():
        out = model(Tensor(random_images(1))).data
    assert seen["score"].shape == (1, 3, 8, 8)
    ref = interpolate(seen["score"], scale_factor=8, mode="bilinear", align_corners=False).data
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
