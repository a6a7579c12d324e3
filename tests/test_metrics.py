"""ConfusionMatrix: hand-computed examples, absent classes, ignore_index, validation."""
import numpy as np
import pytest

import edu_seg
from edu_seg.metrics import (BoundaryConfusion, ConfusionMatrix, boundary_band,
                             boundary_band_iou)

# A 3-class example worked out by hand (rows = ground truth, columns = prediction):
#   target: 0 0 0 1 1 2 2 2
#   pred:   0 0 1 1 2 2 2 0
#   gt 0 -> predicted 0, 0, 1    row [2, 1, 0]
#   gt 1 -> predicted 1, 2       row [0, 1, 1]
#   gt 2 -> predicted 2, 2, 0    row [1, 0, 2]
TARGET = np.array([0, 0, 0, 1, 1, 2, 2, 2])
PRED = np.array([0, 0, 1, 1, 2, 2, 2, 0])


def test_hand_computed_example():
    cm = ConfusionMatrix(3)
    cm.update(PRED, TARGET)
    np.testing.assert_array_equal(cm.matrix, [[2, 1, 0], [0, 1, 1], [1, 0, 2]])
    assert cm.matrix.dtype == np.int64
    # TP = [2, 1, 2], GT (rows) = [3, 2, 3], P (cols) = [3, 2, 3]
    np.testing.assert_allclose(cm.iou(), [2 / 4, 1 / 3, 2 / 4])      # TP / (GT + P - TP)
    assert cm.miou() == pytest.approx((0.5 + 1 / 3 + 0.5) / 3)        # 4/9
    assert cm.pixel_accuracy() == pytest.approx(5 / 8)
    np.testing.assert_allclose(cm.class_accuracy(), [2 / 3, 1 / 2, 2 / 3])
    assert cm.mean_class_accuracy() == pytest.approx(11 / 18)
    assert cm.frequency_weighted_iou() == pytest.approx(3 / 8 * 0.5 + 2 / 8 / 3 + 3 / 8 * 0.5)
    assert cm.summary() == {"pixel_accuracy": cm.pixel_accuracy(),
                            "mean_class_accuracy": cm.mean_class_accuracy(),
                            "miou": cm.miou(),
                            "frequency_weighted_iou": cm.frequency_weighted_iou()}


def test_matches_a_pixel_by_pixel_count_on_random_data():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, size=(3, 7, 9))
    pred = rng.integers(0, 5, size=(3, 7, 9))
    expected = np.zeros((5, 5), np.int64)
    for t, p in zip(target.ravel(), pred.ravel()):
        expected[t, p] += 1
    cm = ConfusionMatrix(5)
    cm.update(pred, target)
    np.testing.assert_array_equal(cm.matrix, expected)


def test_absent_class_is_nan_not_one():
    # Class 3 occurs in neither prediction nor ground truth: 0/0 -> NaN, excluded from the mean.
    cm = ConfusionMatrix(4)
    cm.update(PRED, TARGET)
    iou = cm.iou()
    assert np.isnan(iou[3])
    np.testing.assert_allclose(iou[:3], [0.5, 1 / 3, 0.5])
    assert cm.miou() == pytest.approx(4 / 9)                  # the mean of the 3 present ones
    assert np.isnan(cm.class_accuracy()[3])
    assert cm.mean_class_accuracy() == pytest.approx(11 / 18)


def test_perfect_prediction_with_absent_classes():
    cm = ConfusionMatrix(5)
    y = np.array([[0, 0, 2], [2, 2, 0]])
    cm.update(y, y)
    iou = cm.iou()
    np.testing.assert_array_equal(iou[[0, 2]], [1.0, 1.0])
    assert np.isnan(iou[[1, 3, 4]]).all()  # never 1.0 for classes that were never tested
    assert cm.miou() == 1.0 and cm.pixel_accuracy() == 1.0
    assert cm.frequency_weighted_iou() == pytest.approx(1.0)


def test_class_only_predicted_or_only_missed_scores_zero():
    cm = ConfusionMatrix(3)
    # class 1 only in the prediction (false positive); class 2 only in the ground truth (missed)
    cm.update(np.array([0, 1, 0, 0]), np.array([0, 0, 2, 0]))
    iou = cm.iou()
    assert iou[1] == 0.0 and iou[2] == 0.0
    assert iou[0] == pytest.approx(2 / 4)
    assert cm.miou() == pytest.approx(2 / 4 / 3)
    assert np.isnan(cm.class_accuracy()[1])  # no ground truth for class 1
    assert cm.class_accuracy()[2] == 0.0
    # frequency weights: class 0 has 3/4 of the pixels, class 2 1/4, class 1 none
    assert cm.frequency_weighted_iou() == pytest.approx(3 / 4 * 0.5)


@pytest.mark.parametrize("ignore_index", [255, -100, 1])
def test_ignore_index_skips_ground_truth_pixels(ignore_index):
    target = np.array([0, 0, 2, 2, ignore_index, ignore_index])
    pred = np.array([0, 2, 2, 2, 0, 2])  # any prediction on ignored pixels must not count
    cm = ConfusionMatrix(3, ignore_index=ignore_index)
    cm.update(pred, target)
    np.testing.assert_array_equal(cm.matrix, [[1, 0, 1], [0, 0, 0], [0, 0, 2]])
    assert cm.pixel_accuracy() == pytest.approx(3 / 4)
    iou = cm.iou()
    assert iou[0] == pytest.approx(1 / 2) and iou[2] == pytest.approx(2 / 3)
    assert np.isnan(iou[1])


def test_ignore_index_value_in_prediction_is_an_error():
    cm = ConfusionMatrix(3, ignore_index=255)
    with pytest.raises(ValueError, match=r"pred contains 255"):
        cm.update(np.array([0, 255]), np.array([0, 1]))


def test_accumulates_over_the_whole_dataset_not_per_image():
    # Image A: class 1 covers 1 pixel and is missed. Image B: class 1 covers 9 pixels, all hit.
    a_t, a_p = np.array([0] * 9 + [1]), np.array([0] * 10)
    b_t, b_p = np.array([0] + [1] * 9), np.array([0] + [1] * 9)
    cm = ConfusionMatrix(2)
    cm.update(a_p, a_t)
    cm.update(b_p, b_t)
    together = ConfusionMatrix(2)
    together.update(np.concatenate([a_p, b_p]), np.concatenate([a_t, b_t]))
    np.testing.assert_array_equal(cm.matrix, together.matrix)
    # Dataset IoU of class 1 = 9 / 10; the per-image average would be (0 + 1) / 2 = 0.5.
    assert cm.iou()[1] == pytest.approx(0.9)
    per_image = []
    for p, t in ((a_p, a_t), (b_p, b_t)):
        one = ConfusionMatrix(2)
        one.update(p, t)
        per_image.append(one.iou()[1])
    assert np.mean(per_image) == pytest.approx(0.5)


def test_logits_and_tensors_are_accepted():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    target = rng.integers(0, 4, size=(2, 3, 5))
    a, b, c = ConfusionMatrix(4), ConfusionMatrix(4), ConfusionMatrix(4)
    a.update(logits, target)
    b.update(logits.argmax(axis=1), target)
    c.update(edu_seg.Tensor(logits), edu_seg.Tensor(target))
    np.testing.assert_array_equal(a.matrix, b.matrix)
    np.testing.assert_array_equal(a.matrix, c.matrix)
    assert a.matrix.sum() == target.size


def test_reset():
    cm = ConfusionMatrix(3)
    cm.update(PRED, TARGET)
    cm.reset()
    assert cm.matrix.sum() == 0
    assert np.isnan(cm.pixel_accuracy()) and np.isnan(cm.miou())
    assert np.isnan(cm.frequency_weighted_iou())


def test_table_lists_every_class_and_dashes_absent_ones():
    cm = ConfusionMatrix(4)
    cm.update(PRED, TARGET)
    text = cm.table(["background", "circle", "square", "triangle"])
    lines = text.splitlines()
    row = {line.split()[0]: line.split()[1:] for line in lines[2:6]}
    assert row["background"] == ["0.500", "0.667", "37.5", "%"]
    assert row["circle"] == ["0.333", "0.500", "25.0", "%"]
    assert row["triangle"] == ["-", "-", "0.0", "%"]  # absent: no number, never 1.000
    assert lines[7].split()[:3] == ["mean", "0.444", "0.611"]
    assert "pixel accuracy 0.625" in text and "8 pixels" in text
    assert "class 3" in cm.table()  # default names
    with pytest.raises(ValueError, match=r"got 2 class_names for 4 classes"):
        cm.table(["a", "b"])


# ---------------------------------------------------------------------------------- errors
def test_prediction_out_of_range_names_the_value():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"pred contains 7, but class ids must be in \[0, 3\)"):
        cm.update(np.array([0, 7]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"pred contains -1"):
        cm.update(np.array([0, -1]), np.array([0, 1]))
    assert cm.matrix.sum() == 0  # a rejected batch adds nothing


def test_target_out_of_range_names_the_value():
    cm = ConfusionMatrix(3, ignore_index=255)
    with pytest.raises(ValueError, match=r"target contains 3, .*\[0, 3\) or ignore_index=255"):
        cm.update(np.array([0, 1]), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"target contains -100"):
        ConfusionMatrix(3).update(np.array([0, 1]), np.array([0, -100]))


def test_shape_mismatch():
    with pytest.raises(ValueError, match=r"pred has shape \(2, 3\) but target has shape \(3, 2\)"):
        ConfusionMatrix(3).update(np.zeros((2, 3), int), np.zeros((3, 2), int))


def test_bad_dtypes():
    with pytest.raises(TypeError, match=r"target must hold integer class ids"):
        ConfusionMatrix(3).update(np.zeros(4, int), np.zeros(4))
    with pytest.raises(TypeError, match=r"float pred must be logits of shape \(N, 3, \.\.\.\)"):
        ConfusionMatrix(3).update(np.zeros((2, 5, 4)), np.zeros((2, 4), int))
    with pytest.raises(TypeError, match=r"ignore_index must be an int"):
        ConfusionMatrix(3, ignore_index=1.5)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match=r"num_classes must be a positive int"):
        ConfusionMatrix(bad)


# --------------------------------------------------------------------- boundary-band IoU
def _square(top, left, size=16, side=8):
    mask = np.zeros((1, size, size), np.int64)
    mask[0, top:top + side, left:left + side] = 1
    return mask


def test_boundary_band_is_the_edge_pixels_dilated_by_a_square():
    row = np.array([[0, 0, 0, 0, 1, 1, 1, 1]])
    assert boundary_band(row, band=0).astype(int).tolist() == [[0, 0, 0, 1, 1, 0, 0, 0]]
    assert boundary_band(row, band=2).astype(int).tolist() == [[0, 1, 1, 1, 1, 1, 1, 0]]
    band = boundary_band(_square(4, 4), band=1)[0]
    # The edge: the square's outer ring (rows/cols 4..11) and its 4-neighbours outside
    # (rows/cols 3 and 12, not the diagonal corners). Dilated by a 3x3 square: rows/cols
    # 2..13, except the 4 corners (2, 2)... (2 from the nearest edge pixel) and the inside
    # rows/cols 6..9.
    expected = np.zeros((16, 16), bool)
    expected[2:14, 2:14] = True
    expected[6:10, 6:10] = False
    expected[[2, 2, 13, 13], [2, 13, 2, 13]] = False
    np.testing.assert_array_equal(band, expected)
    assert not boundary_band(np.zeros((2, 5, 5), int), band=3).any()   # no edge, no band


def test_boundary_band_ignores_edges_to_ignored_pixels_and_never_crosses_images():
    target = np.array([[[0, 0, 255, 1]], [[1, 1, 1, 1]]])              # (2, 1, 4)
    band = boundary_band(target, band=0, ignore_index=255)
    assert band.astype(int).tolist() == [[[0, 0, 0, 0]], [[0, 0, 0, 0]]]
    with pytest.raises(ValueError, match="band must be an int >= 0, got -1"):
        boundary_band(target, band=-1)


def test_perfect_prediction_scores_one_in_the_band():
    target = _square(4, 4)
    iou, miou = boundary_band_iou(target, target, num_classes=2, band=2)
    assert miou == 1.0 and iou.tolist() == [1.0, 1.0]


def test_a_square_shifted_by_one_pixel_loses_more_in_the_band_than_overall():
    target = _square(8, 8, size=32, side=16)
    pred = _square(8, 9, size=32, side=16)                              # one column right
    full = ConfusionMatrix(2)
    full.update(pred, target)
    # Overall: 16 of 256 square pixels missed and 16 background pixels claimed, diluted by
    # the correct pixels far from the edges.
    np.testing.assert_allclose(full.iou(), [752 / 784, 240 / 272])
    iou, miou = boundary_band_iou(pred, target, num_classes=2, band=1)
    # The band: rows/cols 6..25 minus 4 corners minus the inside rows/cols 10..21, 252
    # pixels, 112 of them square. The same 32 wrong pixels all lie in it.
    np.testing.assert_allclose(iou, [124 / 156, 96 / 128])
    assert miou < full.miou() - 0.1


def test_boundary_confusion_accumulates_like_one_big_batch():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, (4, 12, 12))
    target[:, :6] = 0                                                  # some calm regions
    pred = np.where(rng.random(target.shape) < 0.8, target, rng.integers(0, 3, target.shape))
    cm = BoundaryConfusion(3, band=1)
    for i in range(4):
        cm.update(pred[i:i + 1], target[i:i + 1])
    iou, miou = boundary_band_iou(pred, target, num_classes=3, band=1)
    np.testing.assert_allclose(cm.iou(), iou)
    assert cm.miou() == pytest.approx(miou)
    logits = np.eye(3, dtype=np.float32)[pred].transpose(0, 3, 1, 2)   # (N, C, H, W)
    assert boundary_band_iou(logits, target, 3, band=1)[1] == pytest.approx(miou)
