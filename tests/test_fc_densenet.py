"""FC-DenseNet (the one hundred layers Tiramisu): dense layers concatenate, transitions down
pool with a 1x1 conv, transitions up read only the new maps of the block below and meet the
down path's skip, and the paper's networks have the paper's sizes."""
import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.data import Shapes
from edu_seg.models.fc_densenet import peak_training_memory, transition_up_memory
from edu_seg.ops.pool import max_pool2d
from helpers import random_images


def _build(preset=None, **config):
    nn.init.manual_seed(0)
    return models.create("fc_densenet", num_classes=3, preset=preset, **config)


def _record(modules, with_input=True):
    """Forward hooks on ``modules`` that keep (input array, output array) per call."""
    seen = {id(m): [] for m in modules}

    def hook(m, args, y):
        seen[id(m)].append((args[0].data if with_input else None, y.data))

    handles = [m.register_forward_hook(hook) for m in modules]
    return seen, handles


def _forward_recording(model, modules, x):
    seen, handles = _record(modules)
    try:
        with no_grad():
            model(Tensor(x))
    finally:
        for h in handles:
            h.remove()
    return [seen[id(m)][0] for m in modules]


# ------------------------------------------------------------------------------ dense blocks
def test_each_dense_layer_reads_the_block_input_and_every_earlier_layers_maps():
    model = _build().eval()
    k = model.config.growth_rate
    block = model.down_blocks[1]
    calls = _forward_recording(model, [block, *block.layers], random_images(2))
    (block_in, block_out), layers = calls[0], calls[1:]
    stack = block_in
    for i, (layer_in, layer_out) in enumerate(layers):
        assert layer_in.shape[1] == block_in.shape[1] + i * k          # grows by k per layer
        np.testing.assert_array_equal(layer_in, stack)                  # ... by concatenation
        assert layer_out.shape[1] == k
        stack = np.concatenate([stack, layer_out], axis=1)
    np.testing.assert_array_equal(block_out, stack)


def test_a_dense_layer_is_bn_relu_conv3x3_dropout():
    layer = _build().bottleneck.layers[0]
    assert [type(m).__name__ for m in layer] == ["BatchNorm2d", "ReLU", "Conv2d", "Dropout"]
    assert layer.conv.kernel_size == (3, 3) and layer.conv.out_channels == 8


# ------------------------------------------------------------------------ transitions down
def test_transition_down_is_a_1x1_conv_then_a_2x2_max_pool_that_halves_h_and_w():
    model = _build().eval()
    td = model.transitions_down[0]
    assert td.conv.kernel_size == (1, 1) and td.conv.in_channels == td.conv.out_channels
    ((x, y),) = _forward_recording(model, [td], random_images(2))
    assert y.shape == (2, x.shape[1], 32, 32) and x.shape[2:] == (64, 64)
    with no_grad():
        h = td.conv(td.relu(td.norm(Tensor(x))))                       # dropout: eval identity
        np.testing.assert_allclose(y, max_pool2d(h, 2).data, rtol=1e-6)


# -------------------------------------------------------------------------- transitions up
#: Different depths at every level, so that a transition up sized by the wrong block fails.
UNEVEN = {"layers_per_block": (2, 3, 4, 5), "growth_rate": 4}


def test_transitions_up_read_only_the_new_maps_of_the_block_below():
    model = _build(**UNEVEN).eval()
    k = model.config.growth_rate
    below = [model.bottleneck, *model.up_blocks[:-1]]
    calls = _forward_recording(model, [*model.transitions_up, *below], random_images(2))
    ups, blocks = calls[:len(below)], calls[len(below):]
    for up, (up_in, up_out), block, (_, block_out), layers in zip(
            model.transitions_up, ups, below, blocks, model.config.layers_per_block[::-1]):
        assert up.kernel_size == (3, 3) and up.stride == (2, 2)
        assert up_in.shape[1] == layers * k == block.new_channels
        np.testing.assert_array_equal(up_in, block_out[:, -layers * k:])   # the NEW maps
        assert up_out.shape[1] == layers * k
        assert up_out.shape[2:] == tuple(2 * s for s in up_in.shape[2:])


def test_transition_up_output_is_concatenated_with_the_skip_of_the_same_resolution():
    model = _build(**UNEVEN).eval()
    n = len(model.down_blocks)
    calls = _forward_recording(
        model, [*model.transitions_up, *model.up_blocks, *model.down_blocks], random_images(2))
    ups, up_blocks, skips = calls[:n], calls[n:2 * n], calls[2 * n:][::-1]
    for (_, up_out), (block_in, _), (_, skip) in zip(ups, up_blocks, skips):
        c = up_out.shape[1]
        assert block_in.shape[1] == c + skip.shape[1]
        np.testing.assert_array_equal(block_in[:, :c], up_out)
        np.testing.assert_array_equal(block_in[:, c:], skip)           # the down path's stack


def test_upsample_all_reads_the_whole_stack_of_the_block_below():
    model = _build("upsample_all", **UNEVEN).eval()
    k, layers = model.config.growth_rate, model.config.layers_per_block
    below = [model.bottleneck, *model.up_blocks[:-1]]
    calls = _forward_recording(model, [*model.transitions_up, *below], random_images(1))
    n = len(below)
    for (up_in, _), (block_in, block_out), count in zip(calls[:n], calls[n:], layers[::-1]):
        assert up_in.shape[1] == block_in.shape[1] + count * k > count * k
        np.testing.assert_array_equal(up_in, block_out)                 # input + new maps


def test_upsampling_all_the_maps_costs_more_weights_and_memory():
    new, every = _build(), _build("upsample_all")
    x = random_images(1)
    assert every.num_parameters() > 5 * new.num_parameters()
    assert transition_up_memory(every, x)["bytes"] > 5 * transition_up_memory(new, x)["bytes"]
    data = Shapes(2, size=64, num_classes=3, seed=0)
    batch = {"image": np.stack([data[i]["image"] for i in range(2)]),
             "mask": np.stack([data[i]["mask"] for i in range(2)])}
    assert peak_training_memory(every, batch) > 2 * peak_training_memory(new, batch)


def test_transition_up_memory_counts_the_inputs_and_outputs():
    model = _build()
    k = model.config.growth_rate * 3                      # 3 layers per block, new maps only
    levels = transition_up_memory(model, random_images(1))["per_level"]
    assert [(a, b) for a, b, _ in levels] == [((1, k, 8, 8), (1, k, 16, 16)),
                                              ((1, k, 16, 16), (1, k, 32, 32)),
                                              ((1, k, 32, 32), (1, k, 64, 64))]
    assert [n for *_, n in levels] == [4 * k * (s * s + 4 * s * s) for s in (8, 16, 32)]


def test_peak_training_memory_sees_the_activations_a_larger_batch_keeps():
    model = _build()
    data = Shapes(4, size=64, num_classes=3, seed=0)
    batch = {"image": np.stack([data[i]["image"] for i in range(4)]),
             "mask": np.stack([data[i]["mask"] for i in range(4)])}
    half = {key: value[:2] for key, value in batch.items()}
    small, large = peak_training_memory(model, half), peak_training_memory(model, batch)
    # The stacks of the finest level alone: first conv (16) + 3 layers of 8, input + block.
    assert small > 2 * 64 * 64 * 4 * (16 + 40)
    assert 1.7 < large / small < 2.3
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------- the paper's networks
@pytest.mark.parametrize("preset, millions", [("fc_densenet56", 1.5), ("fc_densenet67", 3.5),
                                              ("fc_densenet103", 9.4)])
def test_the_paper_presets_have_the_papers_parameter_counts(preset, millions):
    model = models.create("fc_densenet", num_classes=11, preset=preset)   # CamVid's 11
    # The paper's Table 1 rounds (FC-DenseNet56 comes out at 1.38M, 67 at 3.46M, 103 at 9.32M).
    assert abs(model.num_parameters() / 1e6 - millions) / millions < 0.1
    assert model.output_stride == 32


def test_fc_densenet103_has_the_channels_of_the_papers_table():
    model = models.create("fc_densenet", num_classes=11, preset="fc_densenet103")
    assert [b.out_channels for b in model.down_blocks] == [112, 192, 304, 464, 656]
    assert model.bottleneck.new_channels == 240
    assert [b.out_channels for b in model.up_blocks] == [1088, 816, 576, 384, 256]
    assert model.classifier.in_channels == 256
    conv_layers = 1 + sum(len(b.layers) for b in [*model.down_blocks, model.bottleneck,
                                                   *model.up_blocks])
    assert conv_layers + len(model.transitions_down) + len(model.transitions_up) + 1 == 103


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="layers_per_block needs at least 2 entries"):
        models.create("fc_densenet", num_classes=3, layers_per_block=(4,))
    with pytest.raises(ValueError, match="upsample must be one of 'new', 'all'"):
        models.create("fc_densenet", num_classes=3, upsample="some")
    with pytest.raises(ValueError, match="growth_rate must be an int >= 1, got 0"):
        models.create("fc_densenet", num_classes=3, growth_rate=0)
