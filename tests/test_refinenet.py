"""RefineNet: the cascade from the coarsest map, two RCUs in series per path, fusion at the
finest resolution by summation, and chained residual pooling (each pooling block pools the
previous block's output) with 5x5 stride-1 max-pools; the ``unchained`` ablation."""
import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.models.refinenet import (ChainedResidualPooling, MultiResolutionFusion, PoolBlock,
                                      ResidualConvUnit)
from edu_seg.ops.resample import interpolate
from helpers import random_images


def _build(preset=None, **config):
    nn.init.manual_seed(0)
    return models.create("refinenet", num_classes=3, preset=preset, **config).eval()


def _record(modules):
    """Hook each ``name -> module``; returns (seen, handles): seen[name] = (args, output)."""
    seen = {}

    def hook(name):
        return lambda m, args, y: seen.setdefault(name, (args, y))
    return seen, [m.register_forward_hook(hook(n)) for n, m in modules.items()]


def _run(model, modules, x=None):
    seen, handles = _record(modules)
    with no_grad():
        model(Tensor(random_images(2) if x is None else x))
    for h in handles:
        h.remove()
    return seen


BLOCKS = ("refinenet4", "refinenet3", "refinenet2", "refinenet1")


# ------------------------------------------------------------------------------- the cascade
def test_the_cascade_starts_from_layer4_alone_and_each_block_adds_the_next_finer_map():
    model = _build()
    watched = {f"layer{i}": getattr(model.backbone, f"layer{i}") for i in range(1, 5)}
    watched.update({name: getattr(model, name) for name in BLOCKS})
    watched["final_rcus"] = model.final_rcus
    seen = _run(model, watched)
    args4, out4 = seen["refinenet4"]
    assert len(args4) == 1                                        # layer4 and nothing else
    np.testing.assert_array_equal(args4[0].data, seen["layer4"][1].data)
    previous = out4
    for name, layer in (("refinenet3", "layer3"), ("refinenet2", "layer2"),
                        ("refinenet1", "layer1")):
        args, out = seen[name]
        assert len(args) == 2
        np.testing.assert_array_equal(args[0].data, seen[layer][1].data)   # backbone map
        assert args[1] is previous                                # the coarser block's output
        assert out.shape[-2:] == seen[layer][1].shape[-2:]        # at the backbone map's size
        previous = out
    assert seen["final_rcus"][0][0] is previous
    sizes = [seen[name][1].shape[-1] for name in BLOCKS]
    assert sizes == [2, 4, 8, 16]                                 # strides 32, 16, 8, 4 at 64 px


def test_the_block_widths_follow_the_config_and_the_paper_preset():
    model = _build(widths=(24, 16, 8, 8))
    seen = _run(model, {name: getattr(model, name) for name in BLOCKS})
    assert [seen[name][1].shape[1] for name in BLOCKS] == [24, 16, 8, 8]
    paper = models.presets("refinenet")["paper"]
    assert paper["backbone"] == "resnet50" and paper["widths"] == (512, 256, 256, 256)
    assert paper["pool_blocks"] == 2 and "chained" not in paper   # the paper chains
    assert paper["batch_norm"] is False                           # the paper's RCU has none


@pytest.mark.parametrize("batch_norm", [True, False])
def test_batch_norm_follows_every_block_conv_only_when_asked(batch_norm):
    model = _build(batch_norm=batch_norm)
    decoder = [m for name in BLOCKS + ("final_rcus",) for m in getattr(model, name).modules()]
    convs = [m for m in decoder if isinstance(m, nn.Conv2d)]
    norms = [m for m in decoder if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == (len(convs) if batch_norm else 0)
    assert all((c.bias is None) == batch_norm for c in convs)     # BN's shift replaces the bias


# --------------------------------------------------------------------------- the RCU and paths
def test_each_path_has_exactly_two_rcus_in_series():
    model = _build()
    for name in BLOCKS[1:]:
        block = getattr(model, name)
        assert len(block.rcus) == 2                               # two paths
        for i, rcus in enumerate(block.rcus):
            assert len(rcus) == 2 and all(isinstance(r, ResidualConvUnit) for r in rcus)
            seen = _run(model, {"reduce": block.reduce[i], "first": rcus[0],
                                "second": rcus[1]})
            assert seen["first"][0][0] is seen["reduce"][1]       # the reduction conv's output
            assert seen["second"][0][0] is seen["first"][1]       # the first RCU's output
    assert len(model.refinenet4.rcus) == 1 and len(model.refinenet4.rcus[0]) == 2


def test_an_rcu_adds_its_two_convolutions_onto_the_identity():
    nn.init.manual_seed(0)
    rcu = ResidualConvUnit(4)
    x = np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)
    nn.init.zeros_(rcu.conv2.weight)
    nn.init.zeros_(rcu.conv2.bias)
    with no_grad():
        np.testing.assert_array_equal(rcu(Tensor(x)).data, x)    # F = 0: the identity
        rcu.conv2.weight.copy_(np.eye(4, dtype=np.float32)[:, :, None, None]
                               * np.pad(np.ones((1, 1), np.float32), 1))   # centre tap only
        inner = np.maximum(rcu.conv1(Tensor(np.maximum(x, 0))).data, 0)
        np.testing.assert_allclose(rcu(Tensor(x)).data, x + inner, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------ fusion
def _identity_conv(conv):
    w = np.zeros(conv.weight.shape, np.float32)
    w[np.arange(w.shape[0]), np.arange(w.shape[1]), 1, 1] = 1
    conv.weight.copy_(w)
    nn.init.zeros_(conv.bias)


def test_fusion_upsamples_every_path_to_the_finest_one_and_sums():
    fusion = MultiResolutionFusion(4, 2)
    for conv in fusion.convs:
        _identity_conv(conv)
    rng = np.random.default_rng(0)
    fine = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    coarse = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
    up = interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)
    with no_grad():
        for paths in ([fine, coarse], [coarse, fine]):            # the finest size, either order
            fused = fusion([Tensor(p) for p in paths]).data
            assert fused.shape == (2, 4, 8, 8)
            np.testing.assert_allclose(fused, fine + up.data, rtol=1e-6, atol=1e-6)


def test_in_the_model_the_fusion_is_at_the_backbone_maps_resolution():
    model = _build()
    seen = _run(model, {"fusion3": model.refinenet3.fusion, "layer3": model.backbone.layer3})
    assert seen["fusion3"][1].shape == (2, 32, 4, 4)              # layer3 is 4x4, layer4 2x2
    assert seen["layer3"][1].shape[-2:] == (4, 4)
    assert model.refinenet4.fusion is None                        # one path: nothing to fuse


# ---------------------------------------------------------------------- chained residual pooling
@pytest.mark.parametrize("preset,chained", [(None, True), ("unchained", False)])
def test_the_second_pooling_block_pools_the_first_blocks_output_only_when_chained(preset,
                                                                                  chained):
    model = _build(preset)
    assert model.config.chained is chained
    for name in BLOCKS:
        crp = getattr(model, name).crp
        seen = _run(model, {"relu": crp.relu, "first": crp.blocks[0], "second": crp.blocks[1]})
        x, first_out = seen["relu"][1], seen["first"][1]
        second_in = seen["second"][0][0]
        assert seen["first"][0][0] is x                           # block 1 pools relu(fused)
        assert not np.allclose(first_out.data, x.data)
        expected = first_out if chained else x
        np.testing.assert_array_equal(second_in.data, expected.data, err_msg=name)


def test_chained_pooling_sums_every_blocks_output_onto_its_input():
    nn.init.manual_seed(0)
    crp = ChainedResidualPooling(3, 2)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with no_grad():
        relu_x = np.maximum(x, 0)
        p1 = crp.blocks[0](Tensor(relu_x)).data
        p2 = crp.blocks[1](Tensor(p1)).data
        np.testing.assert_allclose(crp(Tensor(x)).data, relu_x + p1 + p2, rtol=1e-5, atol=1e-6)


def _reach(chained):
    """How far (pixels) an input spike travels to the centre of a CRP with 2 blocks and
    all-positive convs: the context that chained residual pooling gathers."""
    crp = ChainedResidualPooling(1, 2, chained=chained)
    for block in crp.blocks:
        block.conv.weight.copy_(np.ones((1, 1, 3, 3), np.float32))
        nn.init.zeros_(block.conv.bias)
    reach = 0
    for d in range(1, 12):
        x = np.zeros((1, 1, 32, 32), np.float32)
        x[0, 0, 16, 16 + d] = 1
        with no_grad():
            if crp(Tensor(x)).data[0, 0, 16, 16] > 0:
                reach = d
    return reach


def test_chaining_widens_the_context_of_the_pooling():
    # Chained: pool 5 (2 px) + conv 3 (1 px) + pool 5 + conv 3 = 6 px; unchained: 3 px.
    assert _reach(chained=True) == 6
    assert _reach(chained=False) == 3


def test_the_max_pools_are_5x5_with_stride_1_and_keep_the_resolution():
    model = _build()
    pools = [m for m in model.modules() if isinstance(m, PoolBlock)]
    assert len(pools) == 4 * 2                                    # 2 blocks in each of 4 CRPs
    seen = _run(model, {f"pool{i}": b.pool for i, b in enumerate(pools)})
    for i, block in enumerate(pools):
        assert (block.pool.kernel_size, block.pool.stride, block.pool.padding) == (5, 1, 2)
        args, out = seen[f"pool{i}"]
        assert out.shape == args[0].shape
    spike = np.zeros((1, 1, 9, 9), np.float32)
    spike[0, 0, 4, 4] = 1
    with no_grad():
        pooled = pools[0].pool(Tensor(spike)).data[0, 0]
    np.testing.assert_array_equal(pooled != 0, np.pad(np.ones((5, 5), bool), 2))


def test_pool_blocks_sets_the_length_of_the_chain_and_invalid_values_are_refused():
    model = _build(pool_blocks=4)
    assert all(len(getattr(model, n).crp.blocks) == 4 for n in BLOCKS)
    with pytest.raises(ValueError, match="pool_blocks must be an int >= 1, got 0"):
        models.create("refinenet", num_classes=3, pool_blocks=0)
    with pytest.raises(ValueError, match="widths must be a tuple of 4 items"):
        models.create("refinenet", num_classes=3, widths=(64, 32, 32))
