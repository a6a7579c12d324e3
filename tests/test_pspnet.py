"""PSPNet: the dilated backbone at output stride 8, the pyramid pooling module (bins 1, 2, 3,
6 of average pooling, C/4 channels per level, concatenated with the map), its ablations
(no pyramid, max pooling) and the auxiliary head that exists only in training, weighted 0.4
(and not at all in the ``"no_deep_supervision"`` ablation).
"""
import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.models.blocks import PyramidPooling
from edu_seg.models.pspnet import PSPNetConfig
from edu_seg.ops.loss import cross_entropy
from edu_seg.ops.resample import interpolate
from edu_seg.reference.pool import adaptive_pool_bins
from helpers import assert_same_network_trained_on_the_final_ce, random_images


def _build(preset=None, seed=0, **config):
    nn.init.manual_seed(seed)
    return models.create("pspnet", num_classes=3, preset=preset, **config)


def _record(modules):
    """Forward hooks that store each module's (first) input and output under its key."""
    seen, handles = {}, []
    for key, module in modules.items():
        def hook(m, args, y, key=key):
            seen[key] = (args[0].data, y.data)
        handles.append(module.register_forward_hook(hook))
    return seen, handles


def _run(model, modules, x):
    seen, handles = _record(modules)
    with no_grad():
        out = model(Tensor(x))
    for h in handles:
        h.remove()
    return out, seen


def _manual_adaptive_pool(x, b, reduce):
    """Adaptive pooling of x (N, C, H, W) to b x b bins, bin by bin with NumPy."""
    (r0, r1), (c0, c1) = adaptive_pool_bins(x.shape[2], b), adaptive_pool_bins(x.shape[3], b)
    return np.stack([np.stack([reduce(x[:, :, r0[i]:r1[i], c0[j]:c1[j]], axis=(2, 3))
                               for j in range(b)], -1) for i in range(b)], -2)


# ------------------------------------------------------------------ backbone at stride 8
def test_backbone_runs_at_output_stride_8_with_layer3_and_layer4_dilated():
    model = _build()
    backbone = model.backbone
    assert max(backbone.stage_strides) == 8 and backbone.stage_strides == [2, 4, 8, 8, 8]
    for stage, dilations in (("layer3", (1, 2)), ("layer4", (2, 4))):
        block = getattr(backbone, stage)[0]
        # The conv that had the stride keeps the previous dilation; the next reads the grid
        # that used to be 2x coarser, so it is dilated by the stride it lost.
        assert (block.conv1.dilation[0], block.conv2.dilation[0]) == dilations
        convs = [m for m in getattr(backbone, stage).modules() if isinstance(m, nn.Conv2d)]
        assert all(c.stride == (1, 1) for c in convs)
    _, seen = _run(model.eval(), {"layer4": backbone.layer4, "pyramid": model.pyramid},
                   random_images(1))
    assert seen["layer4"][1].shape == (1, 128, 8, 8)       # 64 / 8
    np.testing.assert_array_equal(seen["pyramid"][0], seen["layer4"][1])


def test_paper_preset_is_a_dilated_resnet50_with_a_512_channel_head_and_bins_1_2_3_6():
    assert models.presets("pspnet")["paper"] == {"backbone": "resnet50", "backbone_widths": None,
                                                 "bins": (1, 2, 3, 6), "head_width": 512,
                                                 "aux_width": 256, "dropout": 0.1}
    model = _build("paper")
    assert model.backbone.stage_strides == [2, 4, 8, 8, 8]
    assert model.backbone.layer4[-1].conv2.dilation == (4, 4)
    # 2048 layer4 channels + 4 levels of 2048 / 4 = 512: the paper's 4096-channel concat.
    assert model.pyramid.out_channels == 4096
    assert model.head[0].conv.weight.shape == (512, 4096, 3, 3)
    assert model.aux_head[0].conv.weight.shape == (256, 1024, 3, 3)     # on layer3


# ----------------------------------------------------------------------- pyramid pooling
def test_pyramid_pools_to_bins_1_2_3_6_reduces_to_a_quarter_and_concats_with_the_map():
    model = _build().eval()
    pyramid = model.pyramid
    assert isinstance(pyramid, PyramidPooling)
    branches = {f"pool{b}": branch[0] for b, branch in zip((1, 2, 3, 6), pyramid.branches)}
    convs = {f"conv{b}": branch[1] for b, branch in zip((1, 2, 3, 6), pyramid.branches)}
    _, seen = _run(model, {**branches, **convs, "pyramid": pyramid}, random_images(2))
    x, y = seen["pyramid"]                                           # (2, 128, 8, 8) in
    assert x.shape == (2, 128, 8, 8)
    for b in (1, 2, 3, 6):
        pool_in, pooled = seen[f"pool{b}"]
        np.testing.assert_array_equal(pool_in, x)                    # every level reads the map
        assert pooled.shape == (2, 128, b, b)
        np.testing.assert_allclose(pooled, _manual_adaptive_pool(x, b, np.mean),
                                   rtol=1e-5, atol=1e-6)             # AVERAGE pooling
        assert seen[f"conv{b}"][1].shape == (2, 32, b, b)            # C/4 channels
    assert y.shape == (2, 128 + 4 * 32, 8, 8) and pyramid.out_channels == 256
    np.testing.assert_array_equal(y[:, :128], x)                     # the map itself first
    for i, b in enumerate((1, 2, 3, 6)):                             # then each level, resized
        level = interpolate(seen[f"conv{b}"][1], size=(8, 8), mode="bilinear",
                            align_corners=False).data
        np.testing.assert_allclose(y[:, 128 + 32 * i: 160 + 32 * i], level, rtol=1e-6,
                                   atol=1e-6)
    # The 1x1 level is the global context: one value per channel, the same at every pixel.
    assert np.ptp(y[:, 128:160], axis=(2, 3)).max() == 0
    assert model.head[0].conv.weight.shape == (64, 256, 3, 3)


def test_max_pool_preset_pools_with_max_and_computes_another_function_of_the_same_weights():
    avg, mx = _build(), _build("max_pool")
    assert list(mx.state_dict()) == list(avg.state_dict())
    assert all(isinstance(b[0], nn.AdaptiveMaxPool2d) for b in mx.pyramid.branches)
    assert all(isinstance(b[0], nn.AdaptiveAvgPool2d) for b in avg.pyramid.branches)
    mx.load_state_dict(avg.state_dict())
    mx.eval(), avg.eval()
    x = random_images(2)
    out, seen = _run(mx, {f"pool{b}": branch[0] for b, branch
                          in zip((1, 2, 3, 6), mx.pyramid.branches)}, x)
    for b in (1, 2, 3, 6):
        pool_in, pooled = seen[f"pool{b}"]
        np.testing.assert_array_equal(pooled, _manual_adaptive_pool(pool_in, b, np.max))
    with no_grad():
        assert not np.allclose(out.data, avg(Tensor(x)).data, atol=1e-4)


def test_no_pyramid_preset_feeds_the_backbone_map_straight_to_the_head():
    model = _build("no_pyramid").eval()
    assert not any(isinstance(m, PyramidPooling) for m in model.modules())
    assert not any(isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))
                   for m in model.modules())
    assert model.head[0].conv.weight.shape == (64, 128, 3, 3)
    _, seen = _run(model, {"layer4": model.backbone.layer4, "head": model.head}, random_images(1))
    np.testing.assert_array_equal(seen["head"][0], seen["layer4"][1])
    assert _build().num_parameters() - model.num_parameters() == \
        4 * (128 * 32 + 2 * 32) + 64 * 128 * 9      # the four 1x1 convs + BNs; head input 2x


# ----------------------------------------------------------------- head, output, aux loss
def test_scores_are_the_head_output_upsampled_bilinearly_x8():
    model = _build().eval()
    out, seen = _run(model, {"head": model.head}, random_images(1))
    assert seen["head"][1].shape == (1, 3, 8, 8)
    ref = interpolate(seen["head"][1], scale_factor=8, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(out.data, ref.data, rtol=1e-6, atol=1e-6)


def test_aux_head_reads_layer3_only_in_training_and_weighs_0_4_in_the_loss():
    model = _build()
    x = random_images(2)
    outputs, seen = _run(model, {"layer3": model.backbone.layer3,
                                 "aux_head": model.aux_head}, x)
    assert set(outputs) == {"out", "aux"}
    np.testing.assert_array_equal(seen["aux_head"][0], seen["layer3"][1])   # layer3, not 4
    np.testing.assert_array_equal(outputs["aux"].data, seen["aux_head"][1])
    assert outputs["aux"].shape == (2, 3, 8, 8) and outputs["out"].shape == (2, 3, 64, 64)

    mask = np.random.default_rng(1).integers(0, 3, (2, 64, 64))
    total, terms = model.loss(outputs, {"mask": mask})
    assert model.aux_weights == {"aux": 0.4} and set(terms) == {"ce", "aux"}
    aux = cross_entropy(interpolate(outputs["aux"], size=(64, 64), mode="bilinear",
                                    align_corners=False), mask)
    np.testing.assert_allclose(terms["aux"].item(), aux.item(), rtol=1e-6)
    np.testing.assert_allclose(total.item(), terms["ce"].item() + 0.4 * aux.item(), rtol=1e-6)

    model.eval()
    _, seen = _run(model, {"aux_head": model.aux_head}, x)
    assert "aux_head" not in seen                      # not even computed at test time


def test_no_deep_supervision_is_the_same_network_without_aux_head_trained_on_the_final_ce():
    assert_same_network_trained_on_the_final_ce(_build(), _build("no_deep_supervision"),
                                                ["aux_head"], num_classes=3)


# -------------------------------------------------------------------------------- errors
def test_bad_pyramid_settings_get_errors_that_say_what_to_change():
    with pytest.raises(ValueError, match="pool='median'.*'avg' or 'max'"):
        PyramidPooling(8, pool="median")
    with pytest.raises(ValueError, match="give branch_channels >= 1"):
        PyramidPooling(3, bins=(1, 2, 3, 6))
    with pytest.raises(ValueError, match=r"bins=\(\)"):
        PSPNetConfig(num_classes=3, bins=())
    with pytest.raises(ValueError, match="pool"):
        models.create("pspnet", num_classes=3, pool="median")
