"""DenseASPP (Yang et al. 2018): atrous layers whose inputs are the concatenation of the
backbone map and every earlier layer's output, their rates, the offsets a stack of atrous
layers can reach (every one a multiple of 3 for rates 3, 6, 12, 18, 24), the receptive field
formula, the cascade ablation and the stride-4 backbone."""
import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor
from edu_seg.models.denseaspp import (AtrousLayer, DenseASPP, reachable_offsets,
                                      receptive_field)
from edu_seg.ops.resample import interpolate
from helpers import random_images, record_forward

PAPER_RATES = (3, 6, 12, 18, 24)


def _build(preset=None, seed=0, **config):
    nn.init.manual_seed(seed)
    return models.create("denseaspp", num_classes=4, preset=preset, **config)


def _layers(model):
    return {f"layer{i}": layer for i, layer in enumerate(model.aspp.layers)}


# ------------------------------------------------------------------- dense connectivity
def test_layer_i_reads_the_backbone_map_concatenated_with_every_earlier_output():
    model = _build().eval()
    modules = {"backbone": model.backbone.layer4, "aspp": model.aspp,
               "classifier": model.classifier, **_layers(model)}
    _, seen = record_forward(model, modules, random_images(2))
    x = seen["backbone"][1].data                              # (2, 128, 16, 16): stride 4
    assert x.shape == (2, 128, 16, 16)
    outputs = [seen[f"layer{i}"][1].data for i in range(5)]
    for i in range(5):
        expected = np.concatenate([x] + outputs[:i], axis=1)  # x, y_0, ..., y_{i-1}
        assert seen[f"layer{i}"][0].shape == (2, 128 + 32 * i, 16, 16)
        np.testing.assert_array_equal(seen[f"layer{i}"][0], expected)
    everything = np.concatenate([x] + outputs, axis=1)        # (2, 128 + 5 * 32, 16, 16)
    np.testing.assert_array_equal(seen["aspp"][1].data, everything)
    np.testing.assert_array_equal(seen["classifier"][0], everything)


def test_the_no_dense_ablation_is_a_cascade_with_the_same_final_concatenation():
    model = _build("no_dense").eval()
    modules = {"backbone": model.backbone.layer4, "classifier": model.classifier,
               **_layers(model)}
    _, seen = record_forward(model, modules, random_images(2))
    x = seen["backbone"][1].data
    outputs = [seen[f"layer{i}"][1].data for i in range(5)]
    np.testing.assert_array_equal(seen["layer0"][0], x)
    for i in range(1, 5):                                     # only the previous output
        np.testing.assert_array_equal(seen[f"layer{i}"][0], outputs[i - 1])
    np.testing.assert_array_equal(seen["classifier"][0], np.concatenate([x] + outputs, 1))
    # The same layers, rates and classifier; only the 1x1 convs (and the BNs before them)
    # read fewer channels: 128 + 32 i in DenseASPP, 32 in the cascade (layer 0: 128 both).
    dense = _build()
    assert [l.conv.dilation for l in model.aspp.layers] == \
        [l.conv.dilation for l in dense.aspp.layers]
    saved = sum((128 + 32 * i - 32) * (64 + 2) for i in range(1, 5))
    assert dense.num_parameters() - model.num_parameters() == saved


def test_each_layer_is_bn_relu_1x1_then_bn_relu_3x3_atrous():
    layer = _build().aspp.layers[2]
    assert isinstance(layer, AtrousLayer)
    assert layer.norm1.num_features == 128 + 2 * 32
    assert layer.reduce.weight.shape == (64, 128 + 2 * 32, 1, 1)
    assert layer.norm2.num_features == 64
    assert layer.conv.weight.shape == (32, 64, 3, 3)
    x = Tensor(np.random.default_rng(0).standard_normal((1, 192, 9, 9)).astype(np.float32))
    layer.eval()
    # The layer's output is the 3x3 conv of the BN-ReLU of the 1x1 conv of the BN-ReLU of x.
    h = layer.reduce(layer.relu1(layer.norm1(x)))
    ref = layer.conv(layer.relu2(layer.norm2(h)))
    np.testing.assert_array_equal(layer(x).data, ref.data)


# -------------------------------------------------------------------------------- rates
@pytest.mark.parametrize("preset, rates", [(None, (1, 2, 4, 6, 8)), ("paper", PAPER_RATES)])
def test_rates_are_the_configured_dilations_with_size_keeping_padding(preset, rates):
    model = _build(preset)
    assert [l.conv.dilation for l in model.aspp.layers] == [(r, r) for r in rates]
    assert [l.conv.padding for l in model.aspp.layers] == [(r, r) for r in rates]
    custom = _build(rates=(2, 5))
    assert [l.conv.dilation[0] for l in custom.aspp.layers] == [2, 5]
    assert custom.aspp.out_channels == 128 + 2 * 32


def test_default_rates_keep_the_papers_ratios_with_base_rate_1():
    default, paper = _build().config.rates, models.presets("denseaspp")["paper"]["rates"]
    assert paper == PAPER_RATES
    assert tuple(3 * r for r in default) == paper


# ------------------------------------------------------------- offsets and receptive field
def test_reachable_offsets_are_the_signed_sums_of_the_rates():
    assert reachable_offsets((3,)) == [-3, 0, 3]
    assert reachable_offsets((3, 6)) == [-9, -6, -3, 0, 3, 6, 9]
    assert reachable_offsets((1, 2, 4, 6, 8)) == list(range(-21, 22))   # no gaps
    paper = reachable_offsets(PAPER_RATES)
    assert all(o % 3 == 0 for o in paper)                               # the 1-in-3 grid
    assert paper == list(range(-63, 64, 3))
    assert reachable_offsets((1, 2), kernel_size=5) == list(range(-6, 7))


def _pixel_gradient_offsets(aspp, rates):
    """The 2-D offsets (input minus output position) at which the gradient of one output
    value, a channel of the deepest layer at the centre, is nonzero."""
    half = sum(rates)                                    # farthest offset: all taps outward
    side = 2 * half + 1
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((1, 4, side, side)).astype(np.float32), requires_grad=True)
    y = aspp(x)                                          # (1, 4 + 8 L, side, side)
    one_hot = np.zeros(y.shape, np.float32)
    one_hot[0, -1, half, half] = 1
    y.backward(one_hot)
    rows, cols = np.nonzero(np.abs(x.grad).sum(axis=(0, 1)))
    return set(zip((rows - half).tolist(), (cols - half).tolist())), side


@pytest.mark.parametrize("rates", [PAPER_RATES, (1, 2, 4)])
def test_one_output_pixel_has_a_gradient_exactly_at_the_reachable_offsets(rates):
    nn.init.manual_seed(0)
    aspp = DenseASPP(4, rates, reduce_channels=16, growth=8).eval()   # eval: BN per pixel
    reach = reachable_offsets(rates)
    grid = {(a, b) for a in reach for b in reach}        # 2-D: rows and columns independently
    measured, side = _pixel_gradient_offsets(aspp, rates)
    assert measured <= grid                              # never outside the reachable set
    assert len(measured) > len(grid) // 2                # (ReLUs close some paths)
    # With every ReLU opened the module is linear: a zero gradient then means that no path
    # reaches the offset, and the measured set is exactly the combinatorial one.
    for layer in aspp.layers:
        layer.relu1, layer.relu2 = nn.Identity(), nn.Identity()
    measured, side = _pixel_gradient_offsets(aspp, rates)
    assert measured == grid
    assert max(reach) - min(reach) + 1 == receptive_field(rates)
    if all(r % 3 == 0 for r in rates):                   # dense connections do not fill
        assert all(a % 3 == 0 and b % 3 == 0 for a, b in measured)   # the 1-in-3 grid
        assert len(measured) == ((side + 2) // 3) ** 2
    else:
        assert len(measured) == side * side              # a rate-1 layer fills it


def test_receptive_field_is_the_papers_stacking_formula():
    def paper_formula(rates, k):
        sizes = [(d - 1) * (k - 1) + k for d in rates]   # R_{K,d} of each layer
        return sum(sizes) - (len(sizes) - 1)             # stacking: R1 + R2 - 1
    assert receptive_field(PAPER_RATES) == paper_formula(PAPER_RATES, 3) == 127
    assert receptive_field((1, 2, 4, 6, 8)) == paper_formula((1, 2, 4, 6, 8), 3) == 43
    assert receptive_field((2, 7), kernel_size=5) == paper_formula((2, 7), 5) == 37
    assert receptive_field((24,)) == 49                  # ASPP's largest branch alone


# ------------------------------------------------------------------- backbone and output
def test_backbone_runs_at_stride_4_and_scores_are_the_classifier_upsampled_x4():
    model = _build().eval()
    assert model.output_stride == 4 and model.backbone.stage_strides == [2, 4, 4, 4, 4]
    assert [model.backbone.layer4[0].conv1.dilation, model.backbone.layer4[0].conv2.dilation] \
        == [(4, 4), (8, 8)]
    out, seen = record_forward(model, {"classifier": model.classifier}, random_images(1))
    scores = seen["classifier"][1]
    assert scores.shape == (1, 4, 16, 16)
    ref = interpolate(scores, scale_factor=4, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(out.data, ref.data, rtol=1e-6, atol=1e-6)


def test_paper_preset_is_a_stride_8_resnet50_with_the_authors_widths():
    assert models.presets("denseaspp")["paper"] == {
        "backbone": "resnet50", "backbone_widths": None, "output_stride": 8,
        "rates": PAPER_RATES, "reduce_channels": 128, "growth": 64}
    model = _build("paper")
    assert model.output_stride == 8 and model.backbone.stage_strides == [2, 4, 8, 8, 8]
    assert model.aspp.layers[4].reduce.weight.shape == (128, 2048 + 4 * 64, 1, 1)
    assert model.classifier[1].weight.shape == (4, 2048 + 5 * 64, 1, 1)


def test_invalid_configs_name_the_field():
    with pytest.raises(ValueError, match="rates=()"):
        _build(rates=())
    with pytest.raises(ValueError, match="output_stride must be one of 4, 8"):
        _build(output_stride=16)
    with pytest.raises(ValueError, match="rates must be"):
        _build(rates=(0, 2))
