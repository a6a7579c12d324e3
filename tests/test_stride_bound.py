"""The output-stride bound: what a model that predicts at stride s and up-samples its scores
bilinearly can draw at best (average-pooled one-hot ground truth, bilinear up, argmax)."""
import numpy as np
import pytest

from edu_seg.bench.stride_bound import output_stride_bound, pooled_upsampled_prediction
from edu_seg.data import Shapes
from edu_seg.metrics import ConfusionMatrix


def _shapes_masks(n=32, variant="default"):
    data = Shapes(n, size=64, num_classes=4, variant=variant, seed=1)
    return np.stack([data[i]["mask"] for i in range(n)])          # (n, 64, 64)


def _blocks(cells, s):
    """Masks whose every aligned s x s block has the class of its cell: (N, h s, w s)."""
    return np.kron(cells, np.ones((s, s), np.int64))


def test_stride_1_is_perfect():
    assert output_stride_bound(_shapes_masks(8), 4, 1) == 1.0


@pytest.mark.parametrize("s", [2, 4, 8, 16])
def test_bands_and_checkerboards_of_aligned_blocks_survive_exactly(s):
    """Where no pixel's 2x2 neighbourhood of samples has its own class in a minority, the
    interpolated scores keep every boundary at its place: straight bands of whole cells
    (three classes here) and a checkerboard of cells."""
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 3, size=(2, 64 // s, 1))               # one class per band
    bands = _blocks(np.repeat(rows, 64 // s, axis=2), s)          # (2, 64, 64)
    assert len(np.unique(bands)) == 3
    assert output_stride_bound(bands, 3, s) == 1.0
    assert output_stride_bound(bands.transpose(0, 2, 1), 3, s) == 1.0   # vertical bands
    i = np.arange(64 // s)
    checker = _blocks(((i[:, None] + i[None, :]) % 2)[None], s)
    assert output_stride_bound(checker, 2, s) == 1.0


def test_any_pattern_of_aligned_2x2_blocks_survives_at_stride_2():
    """At s = 2 a pixel is 1/2 pixel from its cell's centre in each axis, so its own sample
    weighs (3/4)^2 = 9/16 > 1/2 and wins whatever its neighbours are."""
    cells = np.random.default_rng(1).integers(0, 4, size=(3, 32, 32))
    assert output_stride_bound(_blocks(cells, 2), 4, 2) == 1.0


@pytest.mark.parametrize("s, lost_per_corner", [(2, 0), (4, 1), (8, 6)])
def test_an_isolated_aligned_block_loses_the_corner_pixels_where_its_own_weight_is_below_half(
        s, lost_per_corner):
    """Corner pixels of a block see 3 background samples; with (dx, dy) their distances to
    the block's centre, the block's own bilinear weight is (1 - dx/s)(1 - dy/s)."""
    cells = np.zeros((1, 5, 5), np.int64)
    cells[0, 2, 2] = 1                                            # one block in the middle
    masks = _blocks(cells, s)
    wrong = pooled_upsampled_prediction(masks, 2, s) != masks
    d = np.abs(np.arange(s) + 0.5 - s / 2)                        # distances to the centre
    rule = (1 - d[:, None] / s) * (1 - d[None, :] / s) < 0.5      # (s, s): pixels it loses
    np.testing.assert_array_equal(wrong[0, 2 * s:3 * s, 2 * s:3 * s], rule)
    assert wrong.sum() == rule.sum() == 4 * lost_per_corner      # and nothing else changes


def test_a_one_pixel_stripe_is_lost_at_stride_8():
    masks = np.zeros((2, 64, 64), np.int64)
    masks[0, :, 21] = 1                                           # vertical, inside a cell
    masks[1, 37, :] = 1                                           # horizontal
    prediction = pooled_upsampled_prediction(masks, 2, 8)
    assert not (prediction == 1).any()                            # not one stripe pixel drawn
    cm = ConfusionMatrix(2)
    cm.update(prediction, masks)
    assert cm.iou()[1] == 0.0
    assert output_stride_bound(masks, 2, 8) == pytest.approx((1 - 1 / 64) / 2)
    assert output_stride_bound(masks, 2, 1) == 1.0


def test_the_bound_falls_as_the_stride_grows_on_shapes_default():
    masks = _shapes_masks(32)
    values = [output_stride_bound(masks, 4, s) for s in (1, 2, 4, 8, 16, 32)]
    assert values[0] == 1.0
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[3] < 0.85                  # a stride-8 decoder cannot reach 0.85 here


def test_inputs_it_cannot_score_get_a_clear_error():
    masks = np.zeros((1, 60, 64), np.int64)
    with pytest.raises(ValueError, match="60x64 are not divisible by stride 8"):
        output_stride_bound(masks, 2, 8)
    with pytest.raises(ValueError, match=r"shape \(N, H, W\)"):
        output_stride_bound(np.zeros((64, 64), np.int64), 2, 4)
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        output_stride_bound(np.zeros((1, 64, 64), np.int64), 2, 0)
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 2\)"):
        output_stride_bound(np.full((1, 64, 64), 2), 2, 4)
