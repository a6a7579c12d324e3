"""FRRN: the residual stream stays at full resolution through every FRRU, each FRRU reads it
max-pooled and adds back an up-sampled 1x1 conv of its output, the pooling stream works at
stride s, the ablation has no residual stream at all, and the bootstrapped loss averages the
K hardest pixels."""
import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.ops.loss import cross_entropy
from helpers import random_images


def _build(preset=None, seed=0, **config):
    nn.init.manual_seed(seed)
    return models.create("frrn", num_classes=3, preset=preset, **config)


def _frrus(model):
    """Every FRRU in the order forward runs them: the encoder's levels, then the decoder's."""
    return [frru for levels in (model.down, model.up) for level in levels for frru in level]


def _record_frrus(model, x):
    """Run ``model`` on ``x`` (eval) and return, per FRRU, ``(frru, (y, z), (y', z'))``."""
    seen = []
    handles = [f.register_forward_hook(lambda m, args, out: seen.append((m, args, out)))
               for f in _frrus(model)]
    try:
        with no_grad():
            model.eval()(Tensor(x))
    finally:
        for h in handles:
            h.remove()
    return seen


def _max_pool(a, s):
    N, C, H, W = a.shape
    return a.reshape(N, C, H // s, s, W // s, s).max(axis=(3, 5))


# ----------------------------------------------------------------- the two streams, shapes
def test_residual_stream_has_full_resolution_and_its_width_at_every_frru():
    model = _build()
    seen = _record_frrus(model, random_images(2))
    assert len(seen) == sum(model.config.down_units) + sum(model.config.up_units) == 8
    r = model.config.residual_channels
    for frru, (y, z), (y_out, z_out) in seen:
        assert z.shape == z_out.shape == (2, r, 64, 64)        # never pooled
    # One stream runs through all of them: each FRRU reads exactly what the previous wrote.
    for (_, _, (_, z_prev)), (_, (_, z_next), _) in zip(seen, seen[1:]):
        assert z_next is z_prev


def test_pooling_stream_works_at_stride_s_going_down_then_up():
    model = _build()
    seen = _record_frrus(model, random_images(2))
    strides = [frru.stride for frru, _, _ in seen]
    assert strides == [2, 4, 4, 8, 16, 8, 4, 2]
    widths = [w for w, n in zip(model.config.down_widths + model.config.up_widths,
                                model.config.down_units + model.config.up_units)
              for _ in range(n)]
    for (frru, (y, _), (y_out, _)), w in zip(seen, widths):
        s = frru.stride
        assert y.shape[2:] == y_out.shape[2:] == (64 // s, 64 // s)
        assert y_out.shape[1] == w
    assert model.output_stride == 16


def test_each_frru_reads_the_pooled_residual_stream_and_adds_back_an_upsampled_1x1_conv():
    """conv1 sees concat(y, maxpool_s(z)); z' - z = nearest_up_s(W y' + b), checked in NumPy."""
    model = _build()
    reads = []
    handles = [f.conv1.register_forward_hook(lambda m, args, out: reads.append(args[0].data))
               for f in _frrus(model)]
    seen = _record_frrus(model, random_images(2))
    for h in handles:
        h.remove()
    for (frru, (y, z), (y_out, z_out)), read in zip(seen, reads):
        s = frru.stride
        expected_read = np.concatenate([y.data, _max_pool(z.data, s)], axis=1)
        np.testing.assert_array_equal(read, expected_read)
        w = frru.to_residual.weight.data[:, :, 0, 0]            # (r, C_out)
        b = frru.to_residual.bias.data
        update = np.einsum("rc,nchw->nrhw", w, y_out.data) + b[None, :, None, None]
        update = update.repeat(s, axis=2).repeat(s, axis=3)      # nearest, x s
        np.testing.assert_allclose(z_out.data - z.data, update, rtol=1e-4, atol=1e-5)
        assert np.abs(update).max() > 1e-3                        # the unit does write back


def test_the_merge_concatenates_the_pooling_stream_with_the_residual_stream():
    model = _build()
    got = []
    handle = model.units_out[0].register_forward_hook(lambda m, args, out: got.append(args[0]))
    seen = _record_frrus(model, random_images(1))
    handle.remove()
    merged = got[0].data
    last_z = seen[-1][2][1].data
    c = model.config
    assert merged.shape == (1, c.up_widths[-1] + c.residual_channels, 64, 64)
    np.testing.assert_array_equal(merged[:, c.up_widths[-1]:], last_z)


# ------------------------------------------------------------------------------- ablation
def test_no_residual_stream_is_a_plain_encoder_decoder_with_the_same_pooling_convs():
    full, ablated = _build(), _build("no_residual_stream")
    keys = set(ablated.state_dict())
    assert not [k for k in keys if k.startswith("split.") or ".to_residual." in k]
    assert all(f.pool is None and f.upsample is None for f in _frrus(ablated))
    # Same pooling-stream convs, except that no input channels come from a residual stream.
    r = full.config.residual_channels
    for f, g in zip(_frrus(full), _frrus(ablated)):
        assert g.conv1.conv.weight.shape[1] == f.conv1.conv.weight.shape[1] - r
        assert g.conv2.conv.weight.shape == f.conv2.conv.weight.shape
    assert ablated.units_out[0].conv1.conv.weight.shape[1] == full.config.up_widths[-1]
    seen = _record_frrus(ablated, random_images(1))
    assert all(z is None and z_out is None for _, (_, z), (_, z_out) in seen)


# ------------------------------------------------------------------------------ the paper
def test_paper_preset_is_frrn_a_with_its_17_7_million_parameters():
    model = models.create("frrn", num_classes=19, preset="paper")      # Cityscapes' 19
    assert [len(level) for level in model.down] == [3, 4, 2, 2]
    assert [len(level) for level in model.up] == [2, 2, 2]
    assert [level[0].conv2.conv.weight.shape[0] for level in model.down] == [96, 192, 384, 384]
    assert [level[0].conv2.conv.weight.shape[0] for level in model.up] == [192, 192, 96]
    assert model.split[0].weight.shape == (32, 48, 1, 1)
    assert model.stem.conv.weight.shape == (48, 3, 5, 5)
    assert round(model.num_parameters() / 1e6, 1) == 17.7             # as the paper reports


# --------------------------------------------------------------------- bootstrapped loss
def _pixel_ce(logits, mask):
    """Per-pixel cross-entropy in NumPy (float64): (N, K, H, W), (N, H, W) -> (N, H·W)."""
    z = logits.astype(np.float64)
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    picked = np.take_along_axis(log_p, mask[:, None], axis=1)[:, 0]
    return -picked.reshape(len(mask), -1)


def test_bootstrapped_loss_is_the_mean_of_the_k_largest_pixel_losses_of_each_image():
    k = 100
    model = _build(bootstrap_k=k)
    rng = np.random.default_rng(0)
    logits = Tensor(rng.standard_normal((2, 3, 16, 16)).astype(np.float32), requires_grad=True)
    mask = rng.integers(0, 3, (2, 16, 16))
    total, terms = model.loss(logits, {"mask": mask})
    hardest = -np.sort(-_pixel_ce(logits.data, mask), axis=1)[:, :k]      # (2, k)
    assert set(terms) == {"bootstrapped_ce"}
    np.testing.assert_allclose(total.item(), hardest.mean(), rtol=1e-5)
    # Only the selected pixels are trained: k pixels per image get a gradient.
    total.backward()
    trained = (np.abs(logits.grad).sum(axis=1) > 0).reshape(2, -1).sum(axis=1)
    np.testing.assert_array_equal(trained, [k, k])


def test_bootstrap_k_zero_is_plain_cross_entropy():
    model = _build()
    rng = np.random.default_rng(1)
    logits = Tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    mask = rng.integers(0, 3, (2, 8, 8))
    total, terms = model.loss(logits, {"mask": mask})
    assert set(terms) == {"ce"}
    np.testing.assert_allclose(total.item(), _pixel_ce(logits.data, mask).mean(), rtol=1e-5)
    np.testing.assert_allclose(total.item(), cross_entropy(logits, mask).item(), rtol=1e-6)


# --------------------------------------------------------------------------------- config
@pytest.mark.parametrize("config, message", [
    ({"bootstrap_k": -1}, "bootstrap_k must be an int >= 0, got -1"),
    ({"down_units": (1, 2, 1)}, "down_widths and down_units need one entry per encoder level"),
    ({"up_widths": (64, 32)}, "up_widths and up_units need 3 entries"),
    ({"residual_channels": 0}, "residual_channels must be an int >= 1"),
])
def test_invalid_configs_are_refused_with_the_field_named(config, message):
    with pytest.raises(ValueError, match=message):
        models.create("frrn", num_classes=3, **config)


def test_three_levels_give_output_stride_8_and_full_size_scores():
    model = _build(down_widths=(8, 16, 16), down_units=(1, 1, 1), up_widths=(16, 8),
                   up_units=(1, 1)).eval()
    assert model.output_stride == 8
    with no_grad():
        assert model(Tensor(random_images(1, size=24))).shape == (1, 3, 24, 24)
