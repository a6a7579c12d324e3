"""COCO-style box and mask AP: hand-computed cases, the matching rule, validation, COCOeval.

Every hand case below is one class unless it says otherwise; its expected AP is worked out in
the comment. Three facts recur:

- COCO reads the precision curve at the 101 recall points 0, 0.01, .., 1 and averages them.
  A point is read at the FIRST detection whose recall reaches it; points never reached read 0.
- The IoU in a hand case is the same for all ten thresholds 0.50..0.95 unless it says
  otherwise, so the AP over thresholds equals the AP at any one of them.
- COCOeval divides by ``TP + FP + eps``, so a perfect score is ``1 - 2.2e-16``: compare with
  ``pytest.approx``.
"""
import contextlib
import io
import time

import numpy as np
import pytest

from edu_seg.autograd import Tensor
from edu_seg.data import Shapes
from edu_seg.metrics import (AREA_NAMES, COCO_IOU_THRESHOLDS, COCO_RECALL_POINTS, InstanceAP,
                             coco_area_ranges, coco_match, format_instance_ap,
                             instance_average_precision)

SIZE = 64
KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def rect_mask(x1, y1, x2, y2, size=SIZE):
    """A (size, size) bool mask covering pixel columns x1..x2-1 and rows y1..y2-1."""
    m = np.zeros((size, size), bool)
    m[y1:y2, x1:x2] = True
    return m


def target(*objects):
    """Ground truth of rectangles: objects are (label, (x1, y1, x2, y2))."""
    boxes = np.array([b for _, b in objects], np.float64).reshape(-1, 4)
    return {"boxes": boxes, "labels": np.array([c for c, _ in objects], np.int64),
            "masks": np.array([rect_mask(*b) for _, b in objects]).reshape(-1, SIZE, SIZE)}


def prediction(*objects):
    """Detections of rectangles: objects are (label, (x1, y1, x2, y2), score); the mask is the
    rectangle as probabilities 0.9 / 0.1 (so binarising at 0.5 gives the rectangle back)."""
    boxes = np.array([b for _, b, _ in objects], np.float64).reshape(-1, 4)
    masks = np.array([np.where(rect_mask(*b), 0.9, 0.1) for _, b, _ in objects])
    return {"boxes": boxes, "labels": np.array([c for c, _, _ in objects], np.int64),
            "scores": np.array([s for _, _, s in objects], np.float64),
            "masks": masks.reshape(-1, SIZE, SIZE)}


def ap(preds, targets, **kwargs):
    return instance_average_precision(preds, targets, **kwargs)


# At SIZE = 64 the ranges are small < 10.24 px², medium 10.24..92.16, large > 92.16.
LARGE = (10, 10, 30, 30)        # 400 px²
MEDIUM = (40, 40, 46, 46)       # 36 px²
SMALL = (50, 5, 53, 8)          # 9 px²


# ------------------------------------------------------------------------------ hand cases
def test_a_perfect_prediction_scores_one_for_box_and_mask():
    out = ap([prediction((1, LARGE, 0.9))], [target((1, LARGE))])
    for kind in ("box", "mask"):
        assert out[kind]["AP"] == pytest.approx(1, abs=1e-12)
        assert out[kind]["AP50"] == pytest.approx(1, abs=1e-12)
        assert out[kind]["AP75"] == pytest.approx(1, abs=1e-12)
        assert out[kind]["APl"] == pytest.approx(1, abs=1e-12)
        # No small or medium object: those APs are undefined (-1), not 0 or 1.
        assert out[kind]["APs"] == out[kind]["APm"] == -1.0
    assert set(out) == {"box", "mask"} and all(set(v) == set(KEYS) for v in out.values())


def test_a_miss_scores_zero():
    # The detection lies elsewhere (IoU 0): a false positive, and the object is never found.
    # Recall stays 0, so every recall point > 0 reads 0; the point r = 0 is reached by the
    # first detection, whose precision is 0.
    out = ap([prediction((1, (40, 40, 60, 60), 0.9))], [target((1, LARGE))])
    assert out["box"]["AP"] == out["mask"]["AP"] == 0.0
    # No detection at all: the same.
    out = ap([prediction()], [target((1, LARGE))])
    assert out["box"]["AP"] == out["mask"]["AP"] == 0.0


def test_a_duplicate_is_a_false_positive():
    # Two objects A, B. Detections in score order: A (0.9), A again (0.8), B (0.7).
    # The duplicate finds A already taken: a false positive.
    #   TP:        1    1    2
    #   FP:        0    1    1
    #   recall:    1/2  1/2  1
    #   precision: 1    1/2  2/3   -> made non-increasing from the right: 1, 2/3, 2/3
    # Recall points 0..0.50 (51 of them) are first reached by detection 1 -> precision 1;
    # points 0.51..1 (50) by detection 3 -> 2/3. AP = (51 + 50 * 2/3) / 101 = 253/303.
    B = (40, 40, 60, 60)
    out = ap([prediction((1, LARGE, 0.9), (1, LARGE, 0.8), (1, B, 0.7))],
             [target((1, LARGE), (1, B))])
    for kind in ("box", "mask"):
        assert out[kind]["AP"] == pytest.approx(253 / 303, abs=1e-12)
    # The same duplicate BELOW the last true positive costs nothing: every recall point is
    # reached before it (COCO's AP only looks at the best precision at each recall).
    out = ap([prediction((1, LARGE, 0.9), (1, B, 0.8), (1, LARGE, 0.7))],
             [target((1, LARGE), (1, B))])
    assert out["box"]["AP"] == pytest.approx(1, abs=1e-12)


def test_iou_of_exactly_0_6_counts_for_thresholds_0_50_to_0_60():
    # Ground truth 10 x 10, detection its top 10 x 6: intersection 60, union 100, IoU 0.6 for
    # the boxes and for the masks alike. Thresholds 0.50, 0.55, 0.60 (IoU >= t, the third
    # one inclusive) give a perfect match, AP 1; the seven thresholds 0.65..0.95 give a miss,
    # AP 0. AP = 3/10; AP50 = 1, AP75 = 0.
    out = ap([prediction((1, (0, 0, 10, 6), 0.9))], [target((1, (0, 0, 10, 10)))])
    for kind in ("box", "mask"):
        assert out[kind]["AP"] == pytest.approx(3 / 10, abs=1e-12)
        assert out[kind]["AP50"] == pytest.approx(1, abs=1e-12)
        assert out[kind]["AP75"] == 0.0


def test_ap_by_threshold_shows_where_a_detection_stops_counting():
    # the IoU-0.6 case above, threshold by threshold: 1 up to 0.60, 0 from 0.65; the mean is AP
    metric = InstanceAP()
    metric.update([prediction((1, (0, 0, 10, 6), 0.9))], [target((1, (0, 0, 10, 10)))])
    for kind in ("box", "mask"):
        per = metric.ap_by_threshold(kind)
        np.testing.assert_allclose(per, [1, 1, 1, 0, 0, 0, 0, 0, 0, 0], atol=1e-12)
        assert per.mean() == pytest.approx(metric.summary()[kind]["AP"], abs=1e-12)
    assert (metric.ap_by_threshold("mask", area="small") == -1).all()   # no small object
    with pytest.raises(ValueError, match="area must be one of"):
        metric.ap_by_threshold("mask", area="tiny")


def test_class_confusion():
    # The right box with the wrong class finds nothing: class 1 is missed (AP 0), and class 2
    # has no ground truth, so it has no AP (-1) and stays out of the mean: AP = 0, not 0.5.
    out = ap([prediction((2, LARGE, 0.9))], [target((1, LARGE))])
    assert out["box"]["AP"] == out["mask"]["AP"] == 0.0
    # Two objects, class 1 at A and class 2 at B; B is detected as class 1 (0.9), A as
    # class 1 (0.8). Class 1: FP then TP -> recall 0, 1; precision 0, 1/2 -> interpolated
    # 1/2 everywhere: AP 1/2. Class 2: missed, AP 0. Mean over the two classes: 1/4.
    B = (40, 40, 60, 60)
    out = ap([prediction((1, B, 0.9), (1, LARGE, 0.8))], [target((1, LARGE), (2, B))])
    assert out["box"]["AP"] == pytest.approx(0.25, abs=1e-12)
    metric = InstanceAP(iou_types=("box",))
    metric.update([prediction((1, B, 0.9), (1, LARGE, 0.8))], [target((1, LARGE), (2, B))])
    classes, table = metric.precision("box")
    np.testing.assert_array_equal(classes, [1, 2])
    assert table.shape == (10, 101, 2, 4)
    np.testing.assert_allclose(table[:, :, 0, 0], 0.5, atol=1e-12)      # class 1, range "all"
    np.testing.assert_array_equal(table[:, :, 1, 0], 0.0)               # class 2: missed
    np.testing.assert_array_equal(table[:, :, :, 1], -1.0)              # no small object


def test_each_size_range_scores_its_own_objects():
    three = target((1, SMALL), (1, MEDIUM), (1, LARGE))
    out = ap([prediction((1, SMALL, 0.9), (1, MEDIUM, 0.8), (1, LARGE, 0.7))], [three])
    for kind in ("box", "mask"):
        for key in KEYS:
            assert out[kind][key] == pytest.approx(1, abs=1e-12), (kind, key)
    # Miss the small one. APs: its only object missed -> 0; APm, APl unaffected: the
    # detections of the other objects match ground truths the range ignores, so they are
    # ignored too, not false positives. AP ("all"): TP, TP with recall 1/3, 2/3 and
    # precision 1: points 0..0.66 (67 of them) read 1, 0.67..1 never reached -> 67/101.
    out = ap([prediction((1, MEDIUM, 0.8), (1, LARGE, 0.7))], [three])
    for kind in ("box", "mask"):
        assert out[kind]["APs"] == 0.0
        assert out[kind]["APm"] == pytest.approx(1, abs=1e-12)
        assert out[kind]["APl"] == pytest.approx(1, abs=1e-12)
        assert out[kind]["AP"] == pytest.approx(67 / 101, abs=1e-12)


def test_an_unmatched_detection_counts_only_in_its_own_size_range():
    # A large false positive (20 x 20 = 400 px², score 0.99) above a perfect small and a
    # perfect large detection. "small": the FP is outside the range -> ignored, APs = 1.
    # "large": FP (0.99), then the small detection (matched to the small ground truth, which
    # this range ignores -> ignored), then TP: precision 0, 1/2 -> AP 1/2.
    fp = (40, 40, 60, 60)
    out = ap([prediction((1, fp, 0.99), (1, SMALL, 0.9), (1, LARGE, 0.8))],
             [target((1, SMALL), (1, LARGE))])
    for kind in ("box", "mask"):
        assert out[kind]["APs"] == pytest.approx(1, abs=1e-12)
        assert out[kind]["APl"] == pytest.approx(0.5, abs=1e-12)


def test_a_detection_s_area_is_its_box_for_box_ap_and_its_mask_for_mask_ap():
    # A false positive whose box is large (400 px²) but whose mask is 3 x 3 = 9 px², small,
    # scored above a perfect detection of a small object. Box AP judges the FP by its box
    # area: outside "small" -> ignored, APs = 1. Mask AP by its mask area: inside "small" ->
    # FP first, precision 0 then 1/2, APs = 1/2.
    fp = prediction((1, (40, 40, 60, 60), 0.99))
    fp["masks"][0] = np.where(rect_mask(45, 45, 48, 48), 0.9, 0.1)
    good = prediction((1, SMALL, 0.9))
    pred = {k: np.concatenate([fp[k], good[k]]) for k in fp}
    out = ap([pred], [target((1, SMALL))])
    assert out["box"]["APs"] == pytest.approx(1, abs=1e-12)
    assert out["mask"]["APs"] == pytest.approx(0.5, abs=1e-12)


def test_the_ground_truth_area_is_its_mask_not_its_box():
    # A ground truth whose box is 20 x 20 but whose mask is 3 x 3: COCO's "area" is the mask's
    # pixel count, for box AP too, so the object is small for both.
    gt = target((1, (40, 40, 60, 60)))
    gt["masks"][0] = rect_mask(45, 45, 48, 48)
    pred = prediction((1, (40, 40, 60, 60), 0.9))
    pred["masks"][0] = np.where(gt["masks"][0], 0.9, 0.1)
    out = ap([pred], [gt])
    assert out["box"]["APs"] == pytest.approx(1, abs=1e-12) and out["box"]["APl"] == -1.0


def test_max_detections_keeps_the_best_per_image_and_class():
    # Two false positives (0.9, 0.8) above the true positive (0.7). Keeping 2 drops the TP:
    # AP 0. Keeping 3: precision 0, 0, 1/3 -> interpolated 1/3 at every recall: AP 1/3.
    pred = prediction((1, (40, 40, 50, 50), 0.9), (1, (50, 50, 60, 60), 0.8),
                      (1, LARGE, 0.7))
    gt = target((1, LARGE))
    assert ap([pred], [gt], max_detections=2)["box"]["AP"] == 0.0
    assert ap([pred], [gt], max_detections=3)["box"]["AP"] == pytest.approx(1 / 3, abs=1e-12)
    # The cap is per class (COCOeval evaluates each image-class pair on its own): a more
    # confident detection of class 2 does not push class 1's only detection out.
    pred = prediction((2, (40, 40, 50, 50), 0.9), (1, LARGE, 0.7))
    assert ap([pred], [gt], max_detections=1)["box"]["AP"] == pytest.approx(1, abs=1e-12)


def test_equal_scores_keep_the_image_order():
    # 40 images of one object each; images alternate a false positive and a true positive,
    # all scored 0.5. The stable sort keeps the image order: FP, TP, FP, TP, .. so the
    # precision is 1/2 after every TP and below it after every FP: interpolated, 1/2 up to
    # the final recall 20/40 = 0.5. Points 0..0.50 (51) read 1/2, the rest 0: AP = 51/202.
    # (An unstable sort would shuffle the tie, and one TP first would read precision 1.)
    gt = target((1, LARGE))
    fp, tp = prediction((1, (40, 40, 60, 60), 0.5)), prediction((1, LARGE, 0.5))
    assert ap([fp, tp] * 20, [gt] * 40)["box"]["AP"] == pytest.approx(51 / 202, abs=1e-12)
    # TP first: precision 1 at recall 1/40, 2/3 at 2/40, .., so more than that.
    assert ap([tp, fp] * 20, [gt] * 40)["box"]["AP"] > 51 / 202 + 0.01


def test_box_only_needs_no_predicted_masks():
    pred = prediction((1, LARGE, 0.9))
    del pred["masks"]
    out = ap([pred], [target((1, LARGE))], iou_types=("box",))
    assert set(out) == {"box"} and out["box"]["AP"] == pytest.approx(1, abs=1e-12)


def test_accepts_tensors_and_bool_masks():
    pred = prediction((1, LARGE, 0.9))
    pred = {"boxes": Tensor(pred["boxes"].astype(np.float32)), "labels": pred["labels"],
            "scores": Tensor(pred["scores"].astype(np.float32)), "masks": pred["masks"] > 0.5}
    assert ap([pred], [target((1, LARGE))])["mask"]["AP"] == pytest.approx(1, abs=1e-12)


def test_a_probability_of_exactly_one_half_is_inside_the_mask():
    pred = prediction((1, LARGE, 0.9))
    pred["masks"] = np.where(pred["masks"] > 0.5, 0.5, 0.49)
    assert ap([pred], [target((1, LARGE))])["mask"]["AP"] == pytest.approx(1, abs=1e-12)


def test_no_image_or_no_ground_truth_gives_minus_one():
    assert InstanceAP().summary() == {k: dict.fromkeys(KEYS, -1.0) for k in ("box", "mask")}
    out = ap([prediction((1, LARGE, 0.9))], [target()])    # detections, nothing to find
    assert out["box"] == dict.fromkeys(KEYS, -1.0)


# ------------------------------------------------------------------ accumulating over batches
def random_batch(n, seed, size=SIZE, num_classes=4):
    """Noisy copies of Shapes' instances (0-2 per object, sometimes the wrong class), random
    false positives of every size, and random scores (on odd images rounded to 0.1, so that
    equal scores occur). Boxes are on a quarter-pixel grid so that COCO's (x, y, w, h) boxes
    hold exactly the same numbers."""
    rng = np.random.default_rng(seed)
    ds = Shapes(n, size=size, num_classes=num_classes, seed=seed)
    preds, targets = [], []
    for i in range(n):
        s = ds[i]
        targets.append({"boxes": s["boxes"], "labels": s["labels"],
                        "masks": s["instance_masks"]})
        boxes, labels, masks = [], [], []
        for m, b, c in zip(s["instance_masks"], s["boxes"], s["labels"]):
            for _ in range(rng.integers(0, 3)):
                moved = np.roll(m, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
                masks.append(np.clip(0.8 * moved + rng.uniform(-0.35, 0.35, m.shape), 0, 1))
                boxes.append(b + np.round(rng.normal(0, 6, 4)) / 4)
                labels.append(c if rng.random() < 0.85 else rng.integers(1, num_classes))
        for _ in range(rng.integers(0, 4)):
            x, y = rng.integers(0, size - 4, 2)
            w, h = rng.integers(1, 30, 2)
            m = np.zeros((size, size))
            m[y:y + h, x:x + w] = rng.uniform(0.3, 1)
            masks.append(m)
            boxes.append(np.array([x, y, x + w, y + h], np.float64))
            labels.append(rng.integers(1, num_classes))
        K = len(boxes)
        boxes = np.array(boxes).reshape(K, 4)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        scores = rng.random(K)
        preds.append({"boxes": boxes, "labels": np.array(labels, np.int64).reshape(K),
                      "scores": np.round(scores, 1) if i % 2 else scores,
                      "masks": np.array(masks).reshape(K, size, size)})
    return preds, targets


def test_batches_accumulate_to_the_one_call_result_and_reset_forgets():
    preds, targets = random_batch(12, seed=3)
    whole = ap(preds, targets)
    metric = InstanceAP()
    for start in range(0, 12, 5):
        metric.update(preds[start:start + 5], targets[start:start + 5])
    assert metric.num_images == 12
    assert metric.summary() == whole
    assert 0 < whole["mask"]["AP"] < whole["mask"]["AP50"] < 1
    metric.reset()
    assert metric.num_images == 0
    metric.update(preds[:3], targets[:3])
    assert metric.summary() == ap(preds[:3], targets[:3])


# ------------------------------------------------------------------------------- the ranges
def test_coco_area_ranges_scale_with_the_image_side():
    assert coco_area_ranges(64) == {"all": (0.0, np.inf), "small": (0.0, 10.24),
                                    "medium": (10.24, 92.16), "large": (92.16, np.inf)}
    assert coco_area_ranges(640)["medium"] == (32.0 ** 2, 96.0 ** 2)     # COCO's own
    assert coco_area_ranges((48, 64)) == coco_area_ranges(64)              # the longer side
    assert list(coco_area_ranges(64)) == list(AREA_NAMES)


@pytest.mark.parametrize("bad", [0, -64, 64.0, True, (64,), (64, 0), "64"])
def test_coco_area_ranges_refuses_a_bad_size(bad):
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        coco_area_ranges(bad)


def test_the_default_ranges_follow_the_image_size():
    # A 9-px² object is small at 64 px (< 10.24) but medium at 32 px (>= 2.56 = (32·32/640)²).
    def scene(size):
        masks = np.zeros((1, size, size), bool)
        masks[0, 1:4, 1:4] = True
        t = {"boxes": np.array([[1.0, 1, 4, 4]]), "labels": np.array([1]), "masks": masks}
        return dict(t, scores=np.array([0.9])), t
    p, t = scene(64)
    assert ap([p], [t])["box"]["APs"] == pytest.approx(1, abs=1e-12)
    p, t = scene(32)
    assert ap([p], [t])["box"]["APs"] == -1.0
    assert ap([p], [t])["box"]["APm"] == pytest.approx(1, abs=1e-12)
    # Explicit ranges apply as given, both ends inclusive: 9 px² is "small" in (0, 9).
    ranges = {"all": (0, np.inf), "small": (0, 9), "medium": (9, 50), "large": (50, np.inf)}
    out = ap([p], [t], area_ranges=ranges)["box"]
    assert out["APs"] == pytest.approx(1, abs=1e-12) and out["APm"] == pytest.approx(1, abs=1e-12)


def test_images_of_another_size_need_explicit_ranges():
    small_t = target((1, LARGE))
    small_t["masks"] = small_t["masks"][:, :32, :32]
    small_p = {k: v for k, v in prediction((1, LARGE, 0.9)).items()}
    small_p["masks"] = small_p["masks"][:, :32, :32]
    metric = InstanceAP()
    metric.update([prediction((1, LARGE, 0.9))], [target((1, LARGE))])
    with pytest.raises(ValueError, match=r"area_ranges=coco_area_ranges\(S\)"):
        metric.update([small_p], [small_t])
    metric = InstanceAP(area_ranges=coco_area_ranges(64))
    metric.update([prediction((1, LARGE, 0.9))], [target((1, LARGE))])
    metric.update([small_p], [small_t])
    assert metric.num_images == 2


# ----------------------------------------------------------------------------- the matching
def cocoeval_match(ious, gt_ignore, thresholds):
    """COCOeval's ``evaluateImg`` matching loop, transcribed line by line (one area range):
    the ground truths are visited regular first, ignored last; returns (T, D) indices."""
    gtind = np.argsort(gt_ignore, kind="mergesort")
    T, D, G = len(thresholds), len(ious), len(gt_ignore)
    out = -np.ones((T, D), np.int64)
    gtm = np.zeros((T, G))
    for tind, t in enumerate(thresholds):
        for dind in range(D):
            iou, m = min(t, 1 - 1e-10), -1
            for gind in range(G):
                if gtm[tind, gind] > 0:
                    continue
                if m > -1 and not gt_ignore[gtind[m]] and gt_ignore[gtind[gind]]:
                    break
                if ious[dind, gtind[gind]] < iou:
                    continue
                iou, m = ious[dind, gtind[gind]], gind
            if m == -1:
                continue
            gtm[tind, m] = 1
            out[tind, dind] = gtind[m]
    return out


def test_matching_prefers_ground_truths_of_the_range_over_higher_iou_ignored_ones():
    ious = np.array([[0.9, 0.6]])
    ignore = np.array([[True, False], [False, False]])       # range 0 ignores gt 0
    match = coco_match(ious, ignore, [0.5, 0.6, 0.7])
    np.testing.assert_array_equal(match[0, :, 0], [1, 1, 0])  # 0.7: only the ignored qualifies
    np.testing.assert_array_equal(match[1, :, 0], [0, 0, 0])  # both regular: the best IoU


def test_matching_is_greedy_and_takes_each_ground_truth_once():
    # Detection 0 (most confident) takes gt 0 although detection 1 had nothing else:
    # detection 1 stays unmatched (greedy, not an optimal assignment).
    ious = np.array([[0.8, 0.7], [0.9, 0.0]])
    np.testing.assert_array_equal(coco_match(ious, np.zeros((1, 2), bool), [0.5])[0],
                                  [[0, -1]])
    # Equal IoUs go to the later ground truth (COCOeval scans with >=).
    np.testing.assert_array_equal(coco_match([[0.7, 0.7]], np.zeros((1, 2), bool), [0.5])[0],
                                  [[1]])
    # No ground truth: nothing matches.
    assert coco_match(np.zeros((3, 0)), np.zeros((2, 0), bool)).shape == (2, 10, 3)
    assert (coco_match(np.zeros((3, 0)), np.zeros((2, 0), bool)) == -1).all()


def test_matching_equals_cocoevals_loop_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(200):
        D, G = rng.integers(0, 7), rng.integers(0, 6)
        # Few distinct IoU values, so that ties and exact threshold hits happen.
        ious = rng.choice([0.0, 0.3, 0.5, 0.55, 0.6, 0.75, 0.9, 1.0], size=(D, G))
        ignore = rng.random((3, G)) < 0.4
        ours = coco_match(ious, ignore, COCO_IOU_THRESHOLDS)
        for a in range(3):
            np.testing.assert_array_equal(ours[a], cocoeval_match(ious, ignore[a],
                                                                  COCO_IOU_THRESHOLDS))


@pytest.mark.parametrize("ious, ignore, thresholds, match", [
    (np.zeros(3), np.zeros((1, 3), bool), [0.5], "ious must be a .D, G. matrix"),
    (np.zeros((2, 3)), np.zeros((1, 2), bool), [0.5], r"gt_ignore must be a bool \(A, 3\)"),
    (np.zeros((2, 3)), np.zeros((1, 3)), [0.5], "gt_ignore must be a bool"),
    (np.zeros((2, 3)), np.zeros((1, 3), bool), [[0.5]], "iou_thresholds must be 1-D"),
])
def test_coco_match_refuses_bad_shapes(ious, ignore, thresholds, match):
    with pytest.raises(ValueError, match=match):
        coco_match(ious, ignore, thresholds)


def test_the_constants_are_cocos():
    np.testing.assert_allclose(COCO_IOU_THRESHOLDS, np.arange(10) * 0.05 + 0.5)
    assert COCO_IOU_THRESHOLDS[2] == 0.6 and COCO_IOU_THRESHOLDS[5] == 0.75
    assert len(COCO_RECALL_POINTS) == 101 and COCO_RECALL_POINTS[50] == 0.5


# ------------------------------------------------------------------------------- the report
def test_format_instance_ap():
    results = {"mask": {"AP": 0.51234, "AP50": 0.8, "AP75": -1.0, "APs": -1.0},
               "box": {"AP": 0.0, "AP50": 1.0, "AP75": 0.5}}
    assert format_instance_ap(results) == ("mask AP 0.512 AP50 0.800 AP75 -\n"
                                           "box AP 0.000 AP50 1.000 AP75 0.500")
    with pytest.raises(ValueError, match="results must map an IoU type"):
        format_instance_ap({"box": {"AP": 0.5}})


def test_repr():
    assert repr(InstanceAP(("mask",), 20)) == \
        "InstanceAP(iou_types=('mask',), max_detections=20, images=0)"


# ------------------------------------------------------------------------------- validation
def _one():
    return prediction((1, LARGE, 0.9)), target((1, LARGE))


def _broken(change):
    p, t = _one()
    change(p, t)
    return [p], [t]


@pytest.mark.parametrize("change, error, match", [
    (lambda p, t: p["labels"].__setitem__(0, -1), ValueError, r"predictions\[0\]\['labels'\] "
     "contains -1"),
    (lambda p, t: t.__setitem__("labels", np.array([-2])), ValueError,
     r"targets\[0\]\['labels'\] contains -2"),
    (lambda p, t: p["scores"].__setitem__(0, np.nan), ValueError, "scores'] must be finite"),
    (lambda p, t: p.__setitem__("scores", np.array([0.9, 0.8])), ValueError,
     r"scores'\] must have shape \(1,\)"),
    (lambda p, t: p.__setitem__("labels", np.array([1, 1])), ValueError,
     "must be 1 integer class ids"),
    (lambda p, t: p.__setitem__("labels", np.array([1.0])), ValueError, "integer class ids"),
    (lambda p, t: p.__setitem__("masks", p["masks"][:0]), ValueError,
     r"masks'\] must have shape \(1, H, W\)"),
    (lambda p, t: p.__setitem__("masks", p["masks"][:, :32]), ValueError,
     r"\(32, 64\) pixels but targets\[0\]\['masks'\] are \(64, 64\)"),
    (lambda p, t: p.__setitem__("masks", p["masks"] * 4 - 2), ValueError, "apply a sigmoid"),
    (lambda p, t: t.__setitem__("masks", t["masks"] * 2), ValueError, "must be bool"),
    (lambda p, t: p.__setitem__("boxes", np.zeros((1, 3))), ValueError, r"shape \(K, 4\)"),
    (lambda p, t: p.__setitem__("boxes", np.array([[5.0, 0, 1, 1]])), ValueError,
     "x2 >= x1"),
    (lambda p, t: t.__setitem__("boxes", np.array([[0, np.inf, 1, 1]])), ValueError,
     r"targets\[0\]\['boxes'\]\[0\] = .* must be finite"),
    (lambda p, t: p.pop("scores"), ValueError, r"predictions\[0\] has no scores"),
    (lambda p, t: t.__setitem__("instance_masks", t.pop("masks")), ValueError,
     "has no masks .a Shapes sample calls them instance_masks"),
    (lambda p, t: p.__setitem__("scores", np.array(["a"])), TypeError, "numeric array"),
])
def test_update_refuses_bad_inputs(change, error, match):
    preds, targets = _broken(change)
    metric = InstanceAP()
    with pytest.raises(error, match=match):
        metric.update(preds, targets)
    assert metric.num_images == 0


def test_update_refuses_bad_containers_and_records_nothing_of_a_bad_batch():
    p, t = _one()
    metric = InstanceAP()
    with pytest.raises(ValueError, match="got 2 predictions for 1 targets"):
        metric.update([p, p], [t])
    with pytest.raises(TypeError, match="predictions must be a list"):
        metric.update(p, [t])
    with pytest.raises(TypeError, match=r"targets\[0\] must be a dict"):
        metric.update([p], [t["masks"]])
    bad = dict(p, scores=np.array([np.nan]))
    with pytest.raises(ValueError, match="finite"):
        metric.update([p, bad], [t, t])
    assert metric.num_images == 0 and metric.summary()["box"]["AP"] == -1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"iou_types": "box"}, "iou_types must be"),
    ({"iou_types": ("box", "segm")}, "iou_types must be"),
    ({"iou_types": ()}, "iou_types must be"),
    ({"iou_types": ("box", "box")}, "iou_types must be"),
    ({"max_detections": 0}, "max_detections must be a positive int"),
    ({"max_detections": 10.0}, "max_detections must be a positive int"),
    ({"area_ranges": {"all": (0, 1)}}, "area_ranges must be a dict with keys"),
    ({"area_ranges": dict(coco_area_ranges(64), small=(5, 1))},
     r"area_ranges\['small'\] must be a pair"),
    ({"area_ranges": dict(coco_area_ranges(64), large=3)}, r"area_ranges\['large'\]"),
])
def test_constructor_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InstanceAP(**kwargs)


def test_precision_refuses_an_iou_type_not_computed():
    with pytest.raises(ValueError, match="iou_type must be one of"):
        InstanceAP(iou_types=("box",)).precision("mask")


# ------------------------------------------------------------------------------------ speed
def test_a_hundred_images_take_well_under_a_second():
    # About 4 detections per image here; the bound leaves room for a loaded machine.
    preds, targets = random_batch(100, seed=5)
    start = time.perf_counter()
    instance_average_precision(preds, targets)
    assert time.perf_counter() - start < 1.0


# ------------------------------------------------------------------------- against COCOeval
def _rle(mask):
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def _xywh(b):
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def cocoeval(preds, targets, iou_type, max_detections, area_ranges):
    """pycocotools' COCOeval on the same images (ids 1..N, classes = every label seen)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    H, W = targets[0]["masks"].shape[1:]
    classes = sorted(set(np.concatenate([x["labels"] for x in preds + targets]).tolist()))
    images, anns = [], []
    for i, t in enumerate(targets):
        images.append({"id": i + 1, "height": H, "width": W})
        for m, b, c in zip(t["masks"], t["boxes"], t["labels"]):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c),
                         "bbox": _xywh(b), "area": float(m.sum()), "iscrowd": 0,
                         "segmentation": _rle(m)})
    results = []
    for i, p in enumerate(preds):
        for b, c, s, m in zip(p["boxes"], p["labels"], p["scores"], p["masks"]):
            r = {"image_id": i + 1, "category_id": int(c), "score": float(s)}
            if iou_type == "bbox":
                r["bbox"] = _xywh(b)
            else:
                r["segmentation"] = _rle(m >= 0.5)
            results.append(r)
    with contextlib.redirect_stdout(io.StringIO()):            # COCOeval prints its progress
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": c} for c in classes]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), iou_type)
        if max_detections != 100:
            ev.params.maxDets = [max_detections]   # COCOeval sorts maxDets: use one value
        ev.params.areaRng = [list(area_ranges[name]) for name in AREA_NAMES]
        ev.evaluate()
        ev.accumulate()
        if max_detections == 100:
            ev.summarize()                          # needs its default maxDets [1, 10, 100]
    return ev


@pytest.mark.parametrize("seed, max_detections, area_ranges", [
    (0, 100, coco_area_ranges(64)),
    # Shapes' objects are 100..600 px² at 64 px: these ranges put some in each, with
    # objects of exactly 144 and 324 px² on the edges (both ends inclusive).
    (1, 100, {"all": (0, np.inf), "small": (0, 144), "medium": (144, 324),
              "large": (324, np.inf)}),
    (2, 2, {"all": (0, np.inf), "small": (0, 160), "medium": (160, 300),
            "large": (300, np.inf)}),
])
def test_equals_pycocotools_cocoeval(seed, max_detections, area_ranges):
    pytest.importorskip("pycocotools")
    preds, targets = random_batch(20, seed=seed)
    metric = InstanceAP(max_detections=max_detections, area_ranges=area_ranges)
    metric.update(preds, targets)
    ours = metric.summary()
    for kind, coco_type in (("box", "bbox"), ("mask", "segm")):
        ev = cocoeval(preds, targets, coco_type, max_detections, area_ranges)
        classes, table = metric.precision(kind)
        np.testing.assert_array_equal(classes, ev.params.catIds)
        # The whole (threshold, recall point, class, range) table, for the last maxDets.
        np.testing.assert_allclose(table, ev.eval["precision"][..., -1], rtol=0, atol=1e-12)
        if max_detections == 100:
            np.testing.assert_allclose([ours[kind][k] for k in KEYS], ev.stats[:6],
                                       rtol=0, atol=1e-12)
    if area_ranges != coco_area_ranges(64):
        # These ranges hold objects of every size: all six numbers were compared, none -1.
        assert all(ours[kind][k] > 0 for kind in ours for k in KEYS)
