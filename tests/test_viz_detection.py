"""The pictures of region-based segmentation show what the model computes.

- detections: one box and one tag per detection above the threshold, the ground truth row,
  and a rendered array that is the upscaled image except where an object is drawn;
- anchors: the ``A`` boxes drawn per cell are ``model.anchors``'s rows of that cell;
- proposals: the "after NMS" boxes are ``model.propose``'s, the "before NMS" boxes overlap;
- sampled RoIs: the counts and boxes are ``sample_balanced``'s with the same seed, and every
  positive / negative obeys its IoU rule;
- RoI ops: the outputs drawn are ``roi_pool`` / ``roi_align``'s, with ``model.roi_features``'s
  settings; the bins and points are the geometry helpers';
- mask head: the pasted mask is the detection's own ``masks`` entry;
- looking changes nothing: the model's mode and weights are as they were;
- bad input gets a ValueError that says what was wrong.
"""
import matplotlib

matplotlib.use("Agg")  # noqa: E402  (headless, whatever the environment says)

import numpy as np
import pytest
from matplotlib.figure import Figure

from edu_seg import models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.boxes import box_iou, clip_boxes, decode_boxes
from edu_seg.data import Shapes
from edu_seg.models.detection import match_boxes, sample_balanced
from edu_seg.ops.roi import roi_align, roi_pool
from edu_seg.viz.detection import (draw_detections, render_detections, show_anchors,
                                   show_detections, show_mask_head, show_proposals,
                                   show_roi_ops_on_features, show_sampled_rois)
from edu_seg.viz.roi import roi_sampling_geometry

DATA = Shapes(2, size=64, seed=0)


@pytest.fixture(scope="module")
def model():
    nn.init.manual_seed(0)
    return models.create("mask_rcnn", num_classes=4).eval()


@pytest.fixture(scope="module")
def detections(model):
    with no_grad():
        return model(Tensor(np.stack([DATA[i]["image"] for i in range(2)])))


def _patches(ax, gid):
    return [p for p in ax.patches if p.get_gid() == gid]


def _corners(patches):
    """(K, 4) (x1, y1, x2, y2) of rectangles."""
    return np.array([[p.get_x(), p.get_y(), p.get_x() + p.get_width(),
                      p.get_y() + p.get_height()] for p in patches]).reshape(-1, 4)


def _made_up(scores=(0.9, 0.6, 0.3)):
    """Three made-up detections of a 64x64 image, each mask filling its box."""
    boxes = np.array([[10, 10, 30, 30], [36, 36, 60, 60], [2, 40, 12, 60]], np.float32)
    masks = np.zeros((3, 64, 64), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        masks[k, y1:y2, x1:x2] = 0.9
    return {"boxes": boxes, "labels": np.array([1, 2, 3]), "scores": np.array(scores),
            "masks": masks}


# --------------------------------------------------------------------------- detections
def test_one_box_and_one_tag_per_detection_above_the_threshold():
    ax = Figure().subplots()
    drawn = draw_detections(ax, DATA[0]["image"], _made_up(), DATA.class_names,
                            score_threshold=0.5)
    assert drawn.tolist() == [0, 1]
    np.testing.assert_allclose(_corners(_patches(ax, "detection")),
                               [[10, 10, 30, 30], [36, 36, 60, 60]])
    assert sorted(t.get_text() for t in ax.texts) == ["circle 0.90", "square 0.60"]


def test_the_model_detections_and_the_ground_truth_row(model, detections):
    images = np.stack([DATA[i]["image"] for i in range(2)])
    threshold = float(np.median(detections[0]["scores"]))      # some above, some below
    fig = show_detections(images, detections, DATA.class_names, targets=[DATA[0], DATA[1]],
                          score_threshold=threshold)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    for i in range(2):
        above = int((detections[i]["scores"] >= threshold).sum())
        assert len(_patches(fig.axes[i], "detection")) == above
        truth = fig.axes[2 + i]
        np.testing.assert_allclose(_corners(_patches(truth, "detection")), DATA[i]["boxes"])
        assert len(truth.texts) == len(DATA[i]["boxes"])         # ground truth: class only
        assert all(" " not in t.get_text() for t in truth.texts)
    assert 0 < len(_patches(fig.axes[0], "detection")) < len(detections[0]["boxes"])


def test_the_rendered_array_is_the_upscaled_image_except_where_objects_are():
    image = DATA[0]["image"]
    rgb = render_detections(image, _made_up(), DATA.class_names, scale=4)
    assert rgb.shape == (256, 256, 3) and rgb.dtype == np.uint8
    plain = (image.transpose(1, 2, 0) * 255).round().astype(np.uint8).repeat(4, 0).repeat(4, 1)
    diff = np.abs(rgb.astype(int) - plain).max(axis=-1)
    assert diff[4 * 12:4 * 28, 4 * 12:4 * 28].min() > 20          # inside detection 0's mask
    # detection 2 scores 0.3 < 0.5: not drawn, and far from the others the image is untouched
    assert diff[4 * 42:4 * 58, 4 * 3:4 * 11].max() <= 1


# ------------------------------------------------------------------------------ anchors
def test_the_anchors_drawn_are_the_model_anchors_of_each_cell(model):
    cells = [(8, 8), (0, 15)]
    fig = show_anchors(model, DATA[0]["image"], cells)
    drawn = _corners(_patches(fig.axes[0], "anchor"))
    A = model.num_anchors
    assert A == 9 and len(drawn) == len(cells) * A
    anchors = model.anchors((16, 16))
    expected = np.concatenate([anchors[(i * 16 + j) * A:(i * 16 + j + 1) * A] for i, j in cells])
    np.testing.assert_allclose(drawn, expected)
    centres = (drawn[:, :2] + drawn[:, 2:]) / 2               # every anchor centred on its cell
    np.testing.assert_allclose(centres[:A], [[34, 34]] * A)
    with pytest.raises(ValueError, match=r"cell \(16, 0\) is not a \(row, column\) of the "
                                         r"16x16 feature grid"):
        show_anchors(model, DATA[0]["image"], [(16, 0)])


# ---------------------------------------------------------------------------- proposals
def test_after_nms_are_the_model_proposals_and_before_nms_overlap(model):
    image = DATA[0]["image"]
    fig = show_proposals(model, image, max_boxes=100, gt_boxes=DATA[0]["boxes"])
    ax_before, ax_after = fig.axes[1], fig.axes[2]
    with no_grad():
        features = model.neck(model.backbone.features(Tensor(image[None])))
        objectness, deltas = model.rpn(features)
    anchors = model.anchors((16, 16))
    proposals = model.propose(objectness.data, deltas.data, anchors, (64, 64))[0]
    after = _corners(_patches(ax_after, "proposal"))[::-1]      # drawn worst first
    np.testing.assert_allclose(after, proposals[:100], atol=1e-9)
    before = _corners(_patches(ax_before, "proposal"))[::-1]
    best = int(np.argmax(objectness.data[0]))
    np.testing.assert_allclose(before[0], clip_boxes(decode_boxes(
        deltas.data[0, best:best + 1], anchors[best:best + 1]), (64, 64))[0], atol=1e-9)
    iou_after, iou_before = box_iou(after, after), box_iou(before, before)
    np.fill_diagonal(iou_after, 0)
    np.fill_diagonal(iou_before, 0)
    assert iou_after.max() <= model.config.rpn_nms_threshold < iou_before.max()
    assert len(_patches(ax_after, "ground truth")) == len(DATA[0]["boxes"])


# ------------------------------------------------------------------------- sampled RoIs
def test_sampled_rois_are_sample_balanced_with_the_same_seed(model):
    sample, c = DATA[1], model.config
    fig = show_sampled_rois(model, sample, rng=3)
    # the same steps, the same generator: anchors first, then RoIs (model.forward's order)
    gt = sample["boxes"].astype(np.float64)
    with no_grad():
        features = model.neck(model.backbone.features(Tensor(sample["image"][None])))
        objectness, deltas = model.rpn(features)
    anchors = model.anchors((16, 16))
    model.train()
    proposals = model.propose(objectness.data, deltas.data, anchors, (64, 64))[0]
    model.eval()
    rng = np.random.default_rng(3)
    rpn = sample_balanced(match_boxes(box_iou(gt, anchors), 0.7, 0.3, allow_low_quality=True),
                          c.rpn_batch_size, c.rpn_positive_fraction, rng)
    candidates = np.concatenate([proposals, gt])
    roi = sample_balanced(match_boxes(box_iou(gt, candidates), 0.5, 0.5), c.roi_batch_size,
                          c.roi_positive_fraction, rng)
    for ax, boxes, (pos, neg) in ((fig.axes[0], anchors, rpn), (fig.axes[1], candidates, roi)):
        np.testing.assert_allclose(_corners(_patches(ax, "positive")), boxes[pos], atol=1e-9)
        np.testing.assert_allclose(_corners(_patches(ax, "negative")), boxes[neg], atol=1e-9)
        assert len(_patches(ax, "ground truth")) == len(gt)
    assert len(rpn[0]) + len(rpn[1]) == c.rpn_batch_size
    # The rules themselves: RPN positives overlap 0.7 or are an object's best anchor, ...
    iou = box_iou(gt, anchors)
    best_of_object = (iou == iou.max(axis=1, keepdims=True)).any(axis=0)
    assert ((iou[:, rpn[0]].max(axis=0) >= 0.7) | best_of_object[rpn[0]]).all()
    assert (iou[:, rpn[1]].max(axis=0) < 0.3).all()
    # ... RoI positives 0.5, and every ground-truth box (a candidate itself) can be one
    iou = box_iou(gt, candidates)
    assert (iou[:, roi[0]].max(axis=0) >= 0.5).all() and (iou[:, roi[1]].max(axis=0) < 0.5).all()


def test_looking_changes_neither_the_mode_nor_the_weights():
    nn.init.manual_seed(1)
    model = models.create("mask_rcnn", num_classes=4)         # in training mode
    before = {k: v.copy() for k, v in model.state_dict().items()}
    show_sampled_rois(model, DATA[0])
    show_mask_head(model, DATA[0]["image"])
    assert all(m.training for m in model.modules())
    for key, value in model.state_dict().items():             # running statistics included
        np.testing.assert_array_equal(value, before[key])


# ---------------------------------------------------------------------- RoI ops on features
@pytest.mark.parametrize("roi_op", ["align", "pool"])
def test_the_roi_outputs_drawn_are_the_ops_with_the_model_settings(roi_op):
    nn.init.manual_seed(0)
    model = models.create("mask_rcnn", num_classes=4, roi_op=roi_op).eval()
    image, box = DATA[0]["image"], DATA[0]["boxes"][2]
    fig = show_roi_ops_on_features(model, image, box, size=7, channel=5)
    with no_grad():
        features = model.neck(model.backbone.features(Tensor(image[None])))
        mine = model.roi_features(features, np.concatenate([[0.0], box])[None], 7).data[0, 5]
    rois = np.concatenate([[0.0], box])[None].astype(np.float32)
    pooled = roi_pool(features, rois, 7, spatial_scale=0.25).data[0, 5]
    aligned = roi_align(features, rois, 7, spatial_scale=0.25, sampling_ratio=2,
                        aligned=True).data[0, 5]
    shown_pool, shown_align = (ax.get_images()[0].get_array() for ax in fig.axes[4:6])
    np.testing.assert_array_equal(shown_pool, pooled)
    np.testing.assert_array_equal(shown_align, aligned)
    np.testing.assert_array_equal(mine, aligned if roi_op == "align" else pooled)
    g = roi_sampling_geometry(box, (16, 16), (7, 7), 0.25, 2, True)
    non_empty = sum(y1 > y0 and x1 > x0 for y0, y1, x0, x1 in g.pool_bins)
    assert len(_patches(fig.axes[1], "pool bin")) == non_empty
    points = fig.axes[2].collections[0].get_offsets()
    np.testing.assert_allclose(points, g.align_points.reshape(-1, 2)[:, ::-1])
    assert g.pool_error > g.align_error


# ---------------------------------------------------------------------------- mask head
def test_the_pasted_mask_is_the_detection_own_mask(model, detections):
    fig = show_mask_head(model, DATA[0]["image"], detection_index=2,
                         class_names=DATA.class_names)
    K = model.config.num_classes
    assert len(fig.axes) == K + 3                             # image, K masks, pasted, colour bar
    masks = [ax.get_images()[0].get_array() for ax in fig.axes[1:K + 1]]
    assert all(m.shape == (28, 28) for m in masks)
    np.testing.assert_allclose(fig.axes[K + 1].get_images()[0].get_array(),
                               detections[0]["masks"][2], atol=1e-6)
    assert "(used)" in fig.axes[1 + int(detections[0]["labels"][2])].get_title()


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call", [
    lambda m: render_detections(np.zeros((64, 64, 3)), _made_up()),
    lambda m: show_anchors(m, np.zeros((1, 3, 64, 64))),
    lambda m: show_proposals(m, np.zeros((64, 64))),
    lambda m: show_roi_ops_on_features(m, np.zeros((4, 64, 64)), (0, 0, 8, 8)),
    lambda m: show_mask_head(m, np.zeros((64, 64, 3))),
])
def test_a_wrong_image_shape_is_named(model, call):
    with pytest.raises(ValueError, match=r"image must be one \(3, H, W\) image"):
        call(model)


def test_other_bad_arguments_get_clear_errors(model, detections):
    D = len(detections[0]["boxes"])
    with pytest.raises(ValueError, match=rf"detection_index must be an int in 0..{D - 1} "
                                         rf"\(the model found {D} detections"):
        show_mask_head(model, DATA[0]["image"], detection_index=D)
    with pytest.raises(ValueError, match="box must be 4 finite numbers"):
        show_roi_ops_on_features(model, DATA[0]["image"], (20, 20, 10, 30))
    with pytest.raises(ValueError, match="channel must be in 0..63"):
        show_roi_ops_on_features(model, DATA[0]["image"], (0, 0, 8, 8), channel=64)
    with pytest.raises(ValueError, match=r"masks must be \(D, H, W\) = \(3, 64, 64\)"):
        render_detections(DATA[0]["image"], dict(_made_up(), masks=np.zeros((3, 32, 32))))
    with pytest.raises(ValueError, match="pad to 64x64"):
        show_anchors(model, np.zeros((3, 48, 64), np.float32))
    with pytest.raises(ValueError, match="need one per image"):
        show_detections(np.zeros((2, 3, 64, 64)), detections[:1])
    with pytest.raises(ValueError, match="scale must be a positive int"):
        render_detections(DATA[0]["image"], _made_up(), scale=0)
