"""InstanceWeightedIoU (Cityscapes' iIoU) on hand-made masks, against a per-object loop, and
its relation to the pixel IoU."""
import numpy as np
import pytest

from edu_seg.data import Shapes
from edu_seg.metrics import ConfusionMatrix, InstanceWeightedIoU


def square(shape, y, x, side):
    m = np.zeros(shape, bool)
    m[y:y + side, x:x + side] = True
    return m


def scene(objects, labels, shape=(20, 20)):
    """(target (H, W), masks (G, H, W), labels (G,)) from non-overlapping object masks."""
    masks = np.stack(objects) if objects else np.zeros((0,) + shape, bool)
    labels = np.array(labels, dtype=np.int64)
    target = np.zeros(shape, np.int64)
    for m, c in zip(masks, labels):
        target[m] = c
    return target, masks, labels


def test_big_and_small_objects_disagree():
    # One class, a 100-pixel object found and a 4-pixel object missed.
    big, small = square((20, 20), 0, 0, 10), square((20, 20), 15, 15, 2)
    target, masks, labels = scene([big, small], [1, 1])
    pred = np.where(small, 0, target)
    metric = InstanceWeightedIoU(2)
    metric.update(pred, target, masks, labels)
    # Pixels: 100 of 104 right, no false positive. Objects: recall 1 and 0, mean size 52.
    assert metric.confusion.iou()[1] == pytest.approx(100 / 104)
    assert metric.iou()[1] == pytest.approx(0.5)
    # The other way round (small found, big missed): pixel IoU collapses, iIoU stays 0.5.
    metric = InstanceWeightedIoU(2)
    metric.update(np.where(big, 0, target), target, masks, labels)
    assert metric.confusion.iou()[1] == pytest.approx(4 / 104)
    assert metric.iou()[1] == pytest.approx(0.5)


def test_weights_by_hand_with_false_positives():
    # Class 1: objects of 8 and 2 pixels; 4 of the 8 and both of the 2 are found;
    # 3 background pixels are predicted 1. Mean size 5, weights 5/8 and 5/2:
    # iTP = 5/8 * 4 + 5/2 * 2 = 7.5, iFN = 5/8 * 4 = 2.5, FP = 3 (unweighted).
    a = np.zeros((20, 20), bool)
    a[0, 0:8] = True
    b = np.zeros((20, 20), bool)
    b[5, 0:2] = True
    target, masks, labels = scene([a, b], [1, 1])
    pred = target.copy()
    pred[0, 4:8] = 0
    pred[10, 0:3] = 1
    metric = InstanceWeightedIoU(2)
    metric.update(pred, target, masks, labels)
    assert metric.iou()[1] == pytest.approx(7.5 / (7.5 + 3 + 2.5))
    assert np.isnan(metric.iou()[0])                      # the background has no object
    assert metric.miou() == pytest.approx(7.5 / 13)


def test_equal_sizes_give_the_pixel_iou():
    # With objects of one size the weights are all 1: iIoU == pixel IoU.
    rng = np.random.default_rng(0)
    objects = [square((20, 20), y, x, 4) for y, x in ((0, 0), (0, 8), (10, 0), (10, 10))]
    target, masks, labels = scene(objects, [1, 2, 1, 2])
    pred = np.where(rng.random(target.shape) < 0.3, rng.integers(0, 3, target.shape), target)
    metric = InstanceWeightedIoU(3)
    metric.update(pred, target, masks, labels)
    np.testing.assert_allclose(metric.iou()[1:], metric.confusion.iou()[1:])


def reference_iiou(images, C):
    """The Cityscapes recipe, one object at a time: weights from the mean size per class."""
    sizes = {c: [] for c in range(C)}
    for _, _, masks, labels in images:
        for m, c in zip(masks, labels):
            sizes[c].append(m.sum())
    tp, fn, fp = np.zeros(C), np.zeros(C), np.zeros(C)
    for pred, target, masks, labels in images:
        for m, c in zip(masks, labels):
            w = np.mean(sizes[c]) / m.sum()
            tp[c] += w * np.sum(pred[m] == c)
            fn[c] += w * np.sum(pred[m] != c)
        for c in range(C):
            fp[c] += np.sum((pred == c) & (target != c))
    out = np.full(C, np.nan)
    for c in range(C):
        if sizes[c]:
            out[c] = tp[c] / (tp[c] + fp[c] + fn[c])
    return out


def _pixel_miou(images, C):
    cm = ConfusionMatrix(C)
    for pred, target, _, _ in images:
        cm.update(pred[None], target[None])
    return cm.miou()


def test_matches_the_per_object_recipe_on_shapes():
    rng = np.random.default_rng(1)
    data = Shapes(12, size=32, num_classes=4, variant="scale", seed=5)
    images = []
    for s in (data[i] for i in range(len(data))):
        target = s["mask"]
        pred = np.where(rng.random(target.shape) < 0.2, rng.integers(0, 4, target.shape),
                        np.roll(target, 1, axis=1))
        images.append((pred, target, s["instance_masks"], s["labels"]))
    metric = InstanceWeightedIoU(4)
    for image in images:
        metric.update(*image)
    np.testing.assert_allclose(metric.iou(), reference_iiou(images, 4), equal_nan=True)
    assert np.isclose(metric.confusion.miou(), _pixel_miou(images, 4))


def test_two_images_count_as_one_image_side_by_side():
    # Summed over the dataset: two updates == one update of the images placed side by side.
    first = scene([square((10, 10), 0, 0, 6), square((10, 10), 8, 8, 1)], [1, 2], (10, 10))
    second = scene([square((10, 10), 2, 2, 3)], [1], (10, 10))
    preds = [np.roll(first[0], 1, axis=0), np.zeros((10, 10), np.int64)]
    metric = InstanceWeightedIoU(3)
    for pred, (target, masks, labels) in zip(preds, (first, second)):
        metric.update(pred, target, masks, labels)
    pad = np.zeros((10, 10), bool)
    wide_masks = np.concatenate([np.stack([np.hstack([m, pad]) for m in first[1]]),
                                 np.stack([np.hstack([pad, m]) for m in second[1]])])
    wide = InstanceWeightedIoU(3)
    wide.update(np.hstack(preds), np.hstack([first[0], second[0]]), wide_masks,
                np.concatenate([first[2], second[2]]))
    np.testing.assert_allclose(metric.iou(), wide.iou(), equal_nan=True)


def test_perfect_prediction_and_absent_classes():
    target, masks, labels = scene([square((20, 20), 0, 0, 5), square((20, 20), 9, 9, 1)],
                                  [1, 1])
    metric = InstanceWeightedIoU(4)
    metric.update(target, target, masks, labels)
    iou = metric.iou()
    assert iou[1] == 1.0 and np.isnan(iou[[0, 2, 3]]).all()
    assert metric.miou() == 1.0
    metric.reset()
    assert np.isnan(metric.iou()).all() and np.isnan(metric.miou())


def test_ignored_pixels_count_nowhere():
    target, masks, labels = scene([square((20, 20), 0, 0, 4)], [1])   # a 16-pixel object
    target[0, 0:4] = 255                                   # 4 of its pixels are ignored
    target[19, 19] = 255                                   # and one background pixel
    pred = np.where(target == 255, 1, target)              # all 5 predicted 1
    metric = InstanceWeightedIoU(2, ignore_index=255)
    metric.update(pred, target, masks, labels)
    assert metric.iou()[1] == 1.0                          # 12 of 12 found, no false positive
    assert metric.confusion.matrix.sum() == 400 - 5


def test_bad_input_raises():
    target, masks, labels = scene([square((20, 20), 0, 0, 4)], [1])
    metric = InstanceWeightedIoU(3)
    with pytest.raises(ValueError, match="object 0 has class 2"):
        metric.update(target, target, masks, np.array([2]))
    with pytest.raises(ValueError, match="instance_masks must be"):
        metric.update(target, target, masks[0], labels)
    with pytest.raises(ValueError, match="instance_labels must be"):
        metric.update(target, target, masks, np.array([1, 1]))
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        metric.update(target, target, masks, np.array([3]))
    with pytest.raises(ValueError, match="shape"):
        metric.update(target[:10], target, masks, labels)
    # Nothing was counted by the failed calls.
    assert metric.confusion.matrix.sum() == 0 and np.isnan(metric.miou())
