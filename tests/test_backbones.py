"""Backbones: features by stride, dilation, torchvision-exact full-size presets and their loader.

The comparisons with torchvision's models run only where torch is installed; without it the
state-dict tables under tests/data/torchvision (written by make_tables.py there) stand in.
"""
import functools
import pathlib
import re
import sys


import numpy as np
import pytest

from edu_seg import nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.models.backbones import (VGG, Backbone, DenseNet, MobileNetV2, ResNet,
                                      SequentialBackbone, StrideSchedule,
                                      TorchvisionWeightsError, Xception, available_backbones,
                                      backbone_presets, create_backbone,
                                      load_torchvision_state_dict)

FULL = ["vgg16", "vgg16_bn", "resnet18", "resnet50", "mobilenet_v2", "densenet121"]
TINY = ["vgg_tiny", "vgg_bn_tiny", "resnet_tiny", "resnet_bottleneck_tiny", "densenet_tiny",
        "mobilenet_v2_tiny", "xception_tiny"]
# the set matched at ~200K parameters, one per family
SMALL = ["vgg_bn_small", "resnet_small", "densenet_small", "mobilenet_v2_small", "xception_small"]
DILATABLE = ["resnet_tiny", "resnet_bottleneck_tiny", "mobilenet_v2_tiny", "xception_tiny"]
# the torchvision state-dict tables and their reader (tests/data/torchvision/make_tables.py)
sys.path.insert(0, str(pathlib.Path(__file__).parent / "data" / "torchvision"))
from make_tables import read_table  # noqa: E402
from helpers import assert_state_dict_is_torchvisions  # noqa: E402


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def build(name, seed=0, **overrides):
    nn.init.manual_seed(seed)
    return create_backbone(name, **overrides)


@functools.lru_cache(maxsize=None)
def full(name):
    """Each full-size backbone is built once (VGG-16 has 138 M parameters)."""
    return build(name)


def eval_features(model, x):
    model.eval()
    with no_grad():
        return model.features(Tensor(x))


def assert_close(got, expected, rtol=1e-4):
    """Equal up to ``rtol`` of the largest magnitude (float32 sums of many terms)."""
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= rtol * scale, (np.abs(got - expected).max(), scale)


def convs(model):
    """(name, stride, padding, dilation) of every Conv2d, in order."""
    return [(name, m.stride, m.padding, m.dilation) for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d)]


# ------------------------------------------------------------------------------- registry
def test_registry_has_every_name():
    assert available_backbones() == sorted(FULL + TINY + SMALL)
    assert backbone_presets("resnet18")["layers"] == (2, 2, 2, 2)


def test_create_backbone_errors_name_the_choices():
    with pytest.raises(ValueError, match="available backbones: .*resnet_tiny"):
        create_backbone("resnet1000")
    with pytest.raises(ValueError, match="unknown config field.*depth.*ResNetConfig has: "):
        create_backbone("resnet_tiny", depth=3)
    with pytest.raises(ValueError, match="widths"):
        create_backbone("vgg_tiny", widths=(8, 8, 8))
    with pytest.raises(ValueError, match="output_stride"):
        create_backbone("xception_tiny", output_stride=4)
    with pytest.raises(ValueError, match="not both"):
        create_backbone("resnet_tiny", output_stride=16,
                        replace_stride_with_dilation=(False, False, True))


# -------------------------------------------------------------------- strides and channels
def check_features(model, x):
    features = eval_features(model, x)
    H, W = x.shape[-2:]
    assert list(features) == list(model.channels) == [2, 4, 8, 16, 32]
    assert model.output_stride == 32
    for s, f in features.items():
        assert f.shape == (x.shape[0], model.channels[s], H // s, W // s), s


@pytest.mark.parametrize("name", TINY)
def test_tiny_features_have_the_declared_strides_and_channels(name):
    model = build(name)
    assert isinstance(model, Backbone) and model.name == name
    check_features(model, rand(2, 3, 64, 64))
    assert model.num_parameters() < 250_000


@pytest.mark.parametrize("name", SMALL)
def test_small_presets_have_200k_parameters_and_the_declared_strides(name):
    model = build(name)
    assert 190_000 <= model.num_parameters() <= 210_000                # 200K +- 5%
    check_features(model, rand(1, 3, 64, 64))


def test_small_presets_are_one_per_family():
    assert [type(build(name)) for name in SMALL] == [VGG, ResNet, DenseNet, MobileNetV2,
                                                     Xception]


@pytest.mark.parametrize("name", FULL)
def test_full_size_features_have_the_declared_strides_and_channels(name):
    check_features(full(name), rand(1, 3, 64, 64))


def test_in_channels_is_a_field_of_every_family():
    for name in TINY:
        model = build(name, in_channels=1)
        assert eval_features(model, rand(1, 1, 32, 32))[32].shape[-2:] == (1, 1)


def test_sequential_backbones_keep_torchvisions_features_child():
    model = build("vgg_bn_tiny")
    assert isinstance(model, SequentialBackbone)
    assert isinstance(model.layers, nn.Sequential) and callable(model.features)
    assert dict(model.named_children())["features"] is model.layers
    # features[8] is FCN's pool3: the output of the third max-pool
    pools = [i for i, m in enumerate(model.layers) if isinstance(m, nn.MaxPool2d)]
    assert model.stage_ends == [str(i) for i in pools]


# -------------------------------------------------------------- torchvision's state dicts


@pytest.mark.parametrize("name", FULL)
def test_state_dict_keys_order_shapes_and_parameter_count_equal_torchvisions(name):
    assert_state_dict_is_torchvisions(full(name), name)


def test_num_classes_none_drops_only_the_classifier():
    params, entries = read_table("resnet18")
    model = build("resnet18", num_classes=None)
    assert list(model.state_dict()) == [k for k, _ in entries if not k.startswith("fc.")]
    with pytest.raises(ValueError, match="num_classes=None"):
        model.classify(Tensor(rand(1, 3, 32, 32)))


# ------------------------------------------------------------------ dilation (atrous) rules
def test_stride_schedule_keeps_the_previous_dilation_where_the_stride_was():
    s = StrideSchedule(output_stride=8)
    assert [s.step(2) for _ in range(5)] == [(2, 1), (2, 1), (2, 1), (1, 1), (1, 2)]
    assert (s.stride, s.dilation) == (8, 4)
    s = StrideSchedule()
    assert s.step(2, dilate=True) == (1, 1) and s.step(1) == (1, 2)


@pytest.mark.parametrize("output_stride, strides", [(16, [2, 4, 8, 16, 16]),
                                                    (8, [2, 4, 8, 8, 8])])
def test_resnet_dilation_is_where_torchvision_puts_it(output_stride, strides):
    model = build("resnet_bottleneck_tiny", layers=(2, 2, 2, 2), output_stride=output_stride)
    assert model.stage_strides == strides and model.output_stride == output_stride
    features = eval_features(model, rand(1, 3, 64, 64))
    assert {s: f.shape[-1] for s, f in features.items()} == {s: 64 // s for s in features}
    dilated = {16: {"layer4"}, 8: {"layer3", "layer4"}}[output_stride]
    dilation = 1
    for i in (2, 3, 4):
        layer = getattr(model, f"layer{i}")
        previous = dilation
        if f"layer{i}" in dilated:
            dilation *= 2
        for j, block in enumerate(layer):
            # the block that had the stride keeps the previous dilation, later ones the new
            d = previous if j == 0 else dilation
            stride = 2 if j == 0 and f"layer{i}" not in dilated else 1
            assert block.conv2.dilation == block.conv2.padding == (d, d), (i, j)
            assert block.conv2.stride == (stride, stride), (i, j)
            if j == 0:
                assert block.downsample[0].stride == (stride, stride)
    # torchvision's spelling of the same choice builds the same network
    flags = (False, output_stride == 8, True)
    assert convs(build("resnet_bottleneck_tiny", layers=(2, 2, 2, 2),
                       replace_stride_with_dilation=flags)) == convs(model)


def test_basic_block_dilates_its_second_conv_with_the_new_rate():
    model = build("resnet_tiny", layers=(1, 1, 2, 2), output_stride=8)
    first, second = model.layer4
    assert (first.conv1.dilation, first.conv2.dilation) == ((2, 2), (4, 4))
    assert (second.conv1.dilation, second.conv2.dilation) == ((4, 4), (4, 4))


def test_multi_grid_multiplies_the_last_stages_dilation():
    model = build("resnet_bottleneck_tiny", layers=(1, 1, 1, 3), output_stride=16,
                  multi_grid=(1, 2, 4))
    assert [b.conv2.dilation[0] for b in model.layer4] == [2, 4, 8]      # DeepLabV3's rates
    assert [b.conv2.dilation[0] for b in model.layer3] == [1]
    assert eval_features(model, rand(1, 3, 64, 64))[16].shape == (1, 64, 4, 4)
    with pytest.raises(ValueError, match="one rate per block of layer4, which has 1"):
        create_backbone("resnet_tiny", multi_grid=(1, 2, 4))


@pytest.mark.parametrize("name", DILATABLE)
def test_dilated_network_computes_the_strided_one_at_more_positions(name):
    """The atrous trick, exactly: with the SAME weights, the output-stride-16 (8) network's
    map sampled every 2nd (4th) pixel is the output-stride-32 map. This holds because the
    layer that had the stride keeps the previous dilation and every later one is dilated."""
    extra = {"layers": (1, 1, 2, 2)} if name.startswith("resnet") else {}
    x = rand(2, 3, 64, 64)
    reference = build(name, **extra)
    expected = eval_features(reference, x)[32].numpy()
    for output_stride in (16, 8):
        model = build(name, seed=1, output_stride=output_stride, **extra)
        state = reference.state_dict()
        assert [(k, v.shape) for k, v in model.state_dict().items()] == \
            [(k, v.shape) for k, v in state.items()]           # same weights at every stride
        model.load_state_dict(state)
        got = eval_features(model, x)[output_stride].numpy()
        step = 32 // output_stride
        assert_close(got[..., ::step, ::step], expected)


@pytest.mark.parametrize("name", ["mobilenet_v2_tiny", "xception_tiny", "densenet_tiny"])
def test_output_stride_of_the_other_dilatable_families(name):
    model = build(name, output_stride=8)
    assert model.stage_strides == [2, 4, 8, 8, 8]
    features = eval_features(model, rand(1, 3, 64, 64))
    assert {s: f.shape[-2:] for s, f in features.items()} == {2: (32, 32), 4: (16, 16),
                                                              8: (8, 8)}
    assert model.channels[8] == model.stage_channels[-1]        # the deepest stage wins


@pytest.mark.parametrize("output_stride, strides, dilations, strided_pools", [
    (16, [2, 4, 8, 16, 16], [1, 1, 1, 2], [True, True, False]),
    (8, [2, 4, 8, 8, 8], [1, 1, 2, 4], [True, False, False])])
def test_densenet_output_stride_turns_transition_pools_into_identities_and_dilates_after(
        output_stride, strides, dilations, strided_pools):
    """DenseNet has no strided conv to dilate: the transitions' 2x2 avg-pools lose their
    stride (an identity, as VGG's max-pools), so it cannot compute the stride-32 network at
    more positions; what it keeps is the rule of where the dilation goes, and the weights."""
    model = build("densenet_tiny", output_stride=output_stride)
    assert model.stage_strides == strides and model.output_stride == output_stride
    pools = [getattr(model.layers, f"transition{i}").pool for i in (1, 2, 3)]
    assert [isinstance(p, nn.AvgPool2d) for p in pools] == strided_pools
    assert [isinstance(p, nn.Identity) for p in pools] == [not s for s in strided_pools]
    # every dense layer's 3x3 conv reads the grid of its block: dilated by the strides that
    # the pools BEFORE the block gave up (the pool itself has no taps to dilate)
    for i, d in enumerate(dilations):
        block = getattr(model.layers, f"denseblock{i + 1}")
        got = [(layer.conv2.dilation, layer.conv2.padding) for layer in block.children()]
        assert got == [((d, d), (d, d))] * len(got), i + 1
    features = eval_features(model, rand(2, 3, 64, 64))
    assert list(features) == sorted(set(strides))
    assert {s: f.shape for s, f in features.items()} == \
        {s: (2, model.channels[s], 64 // s, 64 // s) for s in features}
    # the same parameters as the stride-32 network, under the same keys: its weights load
    plain = build("densenet_tiny", seed=1)
    assert plain.stage_strides == [2, 4, 8, 16, 32]
    assert all(isinstance(getattr(plain.layers, f"transition{i}").pool, nn.AvgPool2d)
               for i in (1, 2, 3))
    assert [(k, v.shape) for k, v in model.state_dict().items()] == \
        [(k, v.shape) for k, v in plain.state_dict().items()]
    load_torchvision_state_dict(model, plain.state_dict())
    np.testing.assert_array_equal(model.layers.denseblock4.denselayer1.conv2.weight.data,
                                  plain.layers.denseblock4.denselayer1.conv2.weight.data)


def test_dilated_densenet_backward_reaches_every_parameter():
    model = build("densenet_tiny", output_stride=8)
    feats = model.stage_features(Tensor(rand(2, 3, 64, 64)))
    assert feats[-1].shape == (2, model.stage_channels[-1], 8, 8)
    (feats[-1] * feats[-1]).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    dilated = model.layers.denseblock4.denselayer1.conv2           # dilation 4
    assert np.abs(dilated.weight.grad).sum() > 0
    assert np.abs(model.layers.conv0.weight.grad).sum() > 0


def test_dilated_densenet121_keeps_torchvisions_state_dict():
    model = build("densenet121", output_stride=8)
    assert model.stage_strides == [2, 4, 8, 8, 8]
    assert_state_dict_is_torchvisions(model, "densenet121")          # ImageNet weights load


# ----------------------------------------------------------------------- tiny: train them
@pytest.mark.parametrize("name", TINY)
def test_tiny_backward_reaches_every_parameter_and_the_first_conv(name):
    model = build(name)
    feats = model.stage_features(Tensor(rand(4, 3, 64, 64)))
    assert len(feats) == len(model.stage_strides) == len(model.stage_channels)
    (feats[-1] * feats[-1]).mean().backward()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.grad is not None and np.abs(first.weight.grad).sum() > 0
    assert all(p.grad is not None for p in model.parameters())


# -------------------------------------------------------------------- the loader, no torch
class FakeTorchTensor:
    """What the loader needs from a torch tensor: detach().cpu().numpy()."""

    def __init__(self, array):
        self.array = array

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.array


def test_loader_reads_an_npz_file(tmp_path):
    source, target = build("vgg_bn_tiny", seed=0), build("vgg_bn_tiny", seed=1)
    np.savez(tmp_path / "weights.npz", **source.state_dict())
    load_torchvision_state_dict(target, np.load(tmp_path / "weights.npz"))
    x = rand(2, 3, 32, 32)
    np.testing.assert_array_equal(eval_features(target, x)[32].numpy(),
                                  eval_features(source, x)[32].numpy())


def test_loader_converts_tensors_casts_and_copies():
    source, target = build("resnet_tiny", seed=0), build("resnet_tiny", seed=1)
    state = {k: FakeTorchTensor(v.astype(np.float64) if v.dtype == np.float32 else v)
             for k, v in source.state_dict().items()}
    assert load_torchvision_state_dict(target, state) is target
    for (k, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert b.dtype == a.dtype and np.array_equal(a, b), k
    target.to_dtype(np.float64)
    load_torchvision_state_dict(target, source.state_dict())
    assert target.conv1.weight.dtype == np.float64


def test_loader_reads_old_densenet_keys_and_fills_num_batches_tracked():
    source, target = build("densenet_tiny", seed=0), build("densenet_tiny", seed=1)
    old = {re.sub(r"(denselayer\d+\.(norm|conv))([12])\.", r"\1.\3.", k): v
           for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    load_torchvision_state_dict(target, old)
    np.testing.assert_array_equal(target.layers.denseblock1.denselayer1.norm1.weight.data,
                                  source.layers.denseblock1.denselayer1.norm1.weight.data)
    assert target.layers.norm0.num_batches_tracked == 0


def test_a_full_models_state_dict_loads_into_a_backbone_without_classifier():
    source = build("mobilenet_v2_tiny", num_classes=10)
    target = build("mobilenet_v2_tiny", seed=1)
    assert "classifier.1.weight" in source.state_dict()
    load_torchvision_state_dict(target, source.state_dict())
    np.testing.assert_array_equal(target.layers[0][0].weight.data,
                                  source.layers[0][0].weight.data)


def test_loader_errors_name_missing_unexpected_and_misshaped_keys():
    model = build("resnet_tiny")
    before = model.conv1.weight.data.copy()
    state = model.state_dict()
    del state["layer1.0.bn1.running_var"]
    state["layer9.weight"] = np.zeros(3, np.float32)
    state["conv1.weight"] = np.zeros((8, 1, 7, 7), np.float32)
    with pytest.raises(TorchvisionWeightsError) as info:
        load_torchvision_state_dict(model, state)
    message = str(info.value)
    assert "missing keys: layer1.0.bn1.running_var" in message
    assert "unexpected keys: layer9.weight" in message
    assert "conv1.weight: checkpoint has shape (8, 1, 7, 7), model has (8, 3, 7, 7)" in message
    assert isinstance(info.value, (nn.StateDictError, KeyError, ValueError))
    np.testing.assert_array_equal(model.conv1.weight.data, before)       # nothing loaded
    # a classifier of another size is a shape mismatch, not something to skip
    with pytest.raises(TorchvisionWeightsError, match="fc.weight: checkpoint has shape"):
        load_torchvision_state_dict(build("resnet_tiny", num_classes=3),
                                    build("resnet_tiny", num_classes=5).state_dict())


# ------------------------------------------------------------------ torchvision, if present
def randomised_torchvision(name, seed=0, **kwargs):
    """torchvision's model in eval mode with random weights AND random batch-norm statistics
    (fresh ones are mean 0, variance 1, which would leave eval-mode BN untested)."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(**kwargs).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            C = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(C))
            m.running_var.copy_(0.5 + torch.rand(C))
            m.weight.data.copy_(0.5 + torch.rand(C))
            m.bias.data.copy_(0.1 * torch.randn(C))
            assert m.running_mean.abs().sum() > 0 and (m.running_var - 1).abs().sum() > 0
    return model


def torchvision_stages(model, x):
    """torchvision's feature extractor: ``features(x)``, or ResNet's layers up to layer4."""
    if not hasattr(model, "layer4"):
        return model.features(x)
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


@pytest.mark.parametrize("name", FULL)
def test_full_size_features_and_logits_equal_torchvisions(name):
    torch = pytest.importorskip("torch")
    reference = randomised_torchvision(name)
    model = load_torchvision_state_dict(full(name), reference.state_dict()).eval()
    x = torch.from_numpy(rand(1, 3, 64, 64, seed=1))
    with torch.no_grad():
        expected, logits = torchvision_stages(reference, x).numpy(), reference(x).numpy()
    with no_grad():
        assert_close(model.features(Tensor(x.numpy()))[32].numpy(), expected)
        assert_close(model.classify(Tensor(x.numpy())).numpy(), logits)


@pytest.mark.parametrize("flags", [(False, False, True), (False, True, True)])
def test_dilated_resnet50_equals_torchvisions(flags):
    torch = pytest.importorskip("torch")
    reference = randomised_torchvision("resnet50", replace_stride_with_dilation=list(flags))
    model = build("resnet50", replace_stride_with_dilation=flags)
    expected = [(name, m.stride, m.padding, m.dilation) for name, m in reference.named_modules()
                if isinstance(m, torch.nn.Conv2d)]
    assert convs(model) == expected
    load_torchvision_state_dict(model, reference.state_dict())
    x = torch.from_numpy(rand(1, 3, 64, 64, seed=2))
    with torch.no_grad():
        expected = torchvision_stages(reference, x).numpy()
    output_stride = 8 if flags[1] else 16
    got = eval_features(model, x.numpy())[output_stride].numpy()
    assert got.shape == (1, 2048, 64 // output_stride, 64 // output_stride)
    assert_close(got, expected)
