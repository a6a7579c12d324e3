"""DDSC (Bilinski & Prisacariu 2018): every decoder level concatenates the up-sampled outputs of
ALL coarser levels with its adapted encoder map; a context block with global pooling at every
level; the ``no_dense_shortcuts`` ablation is a plain cascade."""
import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.models.ddsc import STRIDES, ContextBlock, DecoderLevel
from edu_seg.ops.resample import interpolate
from helpers import random_images, record_forward


def _build(preset=None, seed=0, **config):
    nn.init.manual_seed(seed)
    return models.create("ddsc", num_classes=4, preset=preset, **config)


def _record_levels(model, n=2):
    """Hook every level's adaptation unit, fusion conv and output; run on ``n`` images."""
    modules = {}
    for j, level in enumerate(model.levels):
        modules["adapt", j] = level.adapt
        modules["fuse", j] = level.fuse
        modules["out", j] = level
    return record_forward(model.eval(), modules, random_images(n))


def _up(s, like):
    return interpolate(s, size=like.shape[-2:], mode="bilinear", align_corners=False).data


# ------------------------------------------------------------------ the dense shortcuts
def test_level_j_fuses_its_adapted_map_and_the_upsampled_outputs_of_all_coarser_levels():
    model = _build()
    _, seen = _record_levels(model)
    width = model.config.width
    for j, s in enumerate(STRIDES):
        fused_input = seen["fuse", j][0]
        adapted = seen["adapt", j][1]
        assert adapted.shape == (2, width, 64 // s, 64 // s)
        assert fused_input.shape == (2, (1 + j) * width, 64 // s, 64 // s)
        parts = np.split(fused_input, 1 + j, axis=1)
        np.testing.assert_array_equal(parts[0], adapted.data)
        for i in range(j):                    # part 1 + i is level i's output, up-sampled
            np.testing.assert_array_equal(parts[1 + i], _up(seen["out", i][1], adapted))


def test_the_ablation_gives_level_j_only_the_level_directly_above_it():
    model = _build("no_dense_shortcuts")
    assert [lv.num_shortcuts for lv in model.levels] == [0, 1, 1, 1]
    _, seen = _record_levels(model)
    width = model.config.width
    for j in range(len(STRIDES)):
        fused_input = seen["fuse", j][0]
        adapted = seen["adapt", j][1]
        expected = [adapted.data] + ([_up(seen["out", j - 1][1], adapted)] if j else [])
        assert fused_input.shape[1] == len(expected) * width
        np.testing.assert_array_equal(fused_input, np.concatenate(expected, axis=1))


def test_the_ablation_keeps_every_width_and_block():
    dense, cascade = _build(), _build("no_dense_shortcuts")
    w = dense.config.width
    assert cascade.config.width == w
    assert [lv.fuse.conv.in_channels for lv in dense.levels] == [w, 2 * w, 3 * w, 4 * w]
    assert [lv.fuse.conv.in_channels for lv in cascade.levels] == [w, 2 * w, 2 * w, 2 * w]
    assert [lv.fuse.conv.out_channels for lv in dense.levels] == [w] * 4
    assert [lv.fuse.conv.out_channels for lv in cascade.levels] == [w] * 4
    # the only difference: the 3x3 fusion convs of levels 2 and 3 read w and 2w more
    # channels with the dense shortcuts, each of them into w output channels
    assert dense.num_parameters() - cascade.num_parameters() == 9 * w * (w + 2 * w)


def test_a_level_refuses_the_wrong_number_of_coarser_inputs():
    level = DecoderLevel(8, 4, num_shortcuts=2)
    x = Tensor(np.zeros((1, 8, 4, 4), np.float32))
    with pytest.raises(ValueError, match="built for 2 coarser input"):
        level(x, [Tensor(np.zeros((1, 4, 2, 2), np.float32))])


# ------------------------------------------------------------------------- context capture
def test_every_level_has_a_context_block_with_global_average_pooling():
    model = _build()
    pools = {}
    for j, level in enumerate(model.levels):
        assert isinstance(level.context, ContextBlock)
        pool = level.context.image_pool[0]
        assert isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1))
        pools["ctx", j] = level.context
        pools["pool", j] = pool
    _, seen = record_forward(model.eval(), pools, random_images(2))
    for j in range(len(STRIDES)):
        context_input = seen["ctx", j][0]                        # (N, width, h, w)
        pooled = seen["pool", j][1].data                         # (N, width, 1, 1)
        np.testing.assert_allclose(pooled, context_input.mean(axis=(2, 3), keepdims=True),
                                   rtol=1e-5, atol=1e-6)


def test_the_context_block_makes_a_corner_pixel_depend_on_the_opposite_corner():
    """A 3x3 conv and 1x1 convs alone see a 3x3 window; the global pooling branch lets the
    output at (0, 0) of a 16x16 map depend on the input at (15, 15)."""
    nn.init.manual_seed(0)
    block = ContextBlock(4)
    block.eval()                                       # batch-norm statistics of one image
    x = Tensor(np.random.default_rng(1).standard_normal((1, 4, 16, 16)).astype(np.float32),
               requires_grad=True)
    block(x)[:, :, 0, 0].sum().backward()
    assert np.abs(x.grad[0, :, 15, 15]).max() > 0
    nn.init.manual_seed(0)
    local_only = ContextBlock(4).local.eval()
    y = Tensor(x.data, requires_grad=True)
    local_only(y)[:, :, 0, 0].sum().backward()
    assert np.abs(y.grad[0, :, 15, 15]).max() == 0     # what the global branch adds


# ---------------------------------------------------------------------------- the network
def test_each_adaptation_unit_reads_its_encoder_stage():
    model = _build().eval()
    x = random_images(2)
    with no_grad():
        features = model.backbone.features(Tensor(x))
    modules = {j: level.adapt for j, level in enumerate(model.levels)}
    _, seen = record_forward(model, modules, x)
    for j, s in enumerate(STRIDES):
        np.testing.assert_array_equal(seen[j][0], features[s].data)


def test_scores_come_from_the_stride_4_level_upsampled_bilinearly():
    model = _build()
    out, seen = record_forward(model.eval(), {"cls": model.classifier}, random_images(2))
    assert seen["cls"][0].shape == (2, model.config.width, 16, 16)  # level 3, stride 4
    np.testing.assert_array_equal(
        out.data, interpolate(seen["cls"][1], size=(64, 64), mode="bilinear",
                              align_corners=False).data)


@pytest.mark.parametrize("preset", [None, "no_dense_shortcuts"])
def test_shapes_in_both_modes_and_eval_returns_a_tensor(preset):
    model = _build(preset)
    x = Tensor(random_images(2, size=96))
    assert model(x).shape == (2, 4, 96, 96)
    model.eval()
    with no_grad():
        y = model(x)
    assert isinstance(y, Tensor) and y.shape == (2, 4, 96, 96)


def test_presets_and_config_errors():
    assert models.presets("ddsc")["paper"] == {"backbone": "resnet50", "width": 256}
    assert models.create("ddsc", num_classes=3, preset="paper").levels[0].adapt.conv \
        .in_channels == 2048
    with pytest.raises(ValueError, match="width"):
        _build(width=0)
    with pytest.raises(ValueError, match="backbone"):
        _build(backbone="vgg_bn_tiny")
