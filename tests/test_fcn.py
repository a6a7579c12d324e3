"""FCN-32s/16s/8s: convolutionalisation, bilinear up-sampling, zero-initialised skips, fusion."""
import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.models.fcn import bilinear_upsampling, convolutionalize
from edu_seg.ops.resample import interpolate


def test_convolutionalize_computes_the_linear_layer_on_every_window():
    nn.init.manual_seed(0)
    fc = nn.Linear(4 * 3 * 3, 5)
    conv = convolutionalize(fc, in_channels=4, kernel_size=3)
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 6)).astype(np.float32)
    y = conv(Tensor(x)).data                                   # (2, 5, 3, 4)
    for i, j in [(0, 0), (2, 3), (1, 2)]:
        window = x[:, :, i:i + 3, j:j + 3].reshape(2, -1)      # what the classifier sees
        np.testing.assert_allclose(y[:, :, i, j], fc(Tensor(window)).data, rtol=1e-5,
                                   atol=1e-6)
    with pytest.raises(ValueError, match="takes 36 inputs, but a 4x2x2 map has 16"):
        convolutionalize(fc, in_channels=4, kernel_size=2)


@pytest.mark.parametrize("factor", [2, 8, 32])
@pytest.mark.parametrize("pattern", ["constant", "ramp"])
def test_bilinear_initialised_upsampling_equals_interpolate_away_from_the_border(factor,
                                                                                  pattern):
    n = 6
    rows, cols = np.mgrid[0:n, 0:n].astype(np.float32)
    image = np.ones((n, n), np.float32) if pattern == "constant" else 3 * rows - 2 * cols
    x = Tensor(np.stack([image, -image])[None])               # (1, 2, 6, 6)
    up = bilinear_upsampling(2, factor, learnable=False)
    y = up(x).data
    ref = interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False).data
    assert y.shape == ref.shape == (1, 2, n * factor, n * factor)
    # The transposed conv treats the outside as zeros; interpolate clamps to the edge pixel.
    # They differ only in the outer factor/2 rows and columns, where the kernel reaches out.
    inner = slice(factor // 2, n * factor - factor // 2)
    np.testing.assert_allclose(y[..., inner, inner], ref[..., inner, inner], rtol=1e-5,
                               atol=1e-5)
    assert not np.allclose(y, ref)                            # ... and they do differ there


@pytest.mark.parametrize("name,skips", [("fcn32s", []), ("fcn16s", ["pool4"]),
                                        ("fcn8s", ["pool4", "pool3"])])
def test_skips_start_at_zero_and_only_the_final_upsampling_is_frozen(name, skips):
    nn.init.manual_seed(0)
    model = models.create(name, num_classes=3)
    assert list(model.score_pool.keys()) == skips
    for score in model.score_pool.values():                   # the finer net starts as the
        assert not score.weight.data.any() and not score.bias.data.any()   # coarser one
    assert not model.upscore.weight.requires_grad
    assert all(up.weight.requires_grad for up in model.upscore2.values())
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32))
    model(x).sum().backward()
    assert model.upscore.weight.grad is None
    for score in model.score_pool.values():                   # ... and learns the skip
        assert np.abs(score.weight.grad).sum() > 0


def test_skip_fusion_adds_the_finer_scores():
    """With the skip layers set by hand, FCN-8s's output changes exactly by their share."""
    nn.init.manual_seed(0)
    model = models.create("fcn8s", num_classes=2).eval()
    x = Tensor(np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32))
    with no_grad():
        base = model(x).data
        model.score_pool["pool3"].bias.copy_(np.array([1.0, -1.0], np.float32))
        shifted = model(x).data
    # A constant +1/-1 added at stride 8, then up-sampled x8 bilinearly (the kernel sums to
    # 1 per output pixel away from the border): the output moves by +1/-1 inside.
    inner = np.s_[:, :, 8:-8, 8:-8]
    np.testing.assert_allclose((shifted - base)[inner][:, 0], 1.0, atol=1e-5)
    np.testing.assert_allclose((shifted - base)[inner][:, 1], -1.0, atol=1e-5)
