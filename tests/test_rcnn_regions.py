"""R-CNN region segmentation (``rcnn_regions``): two pathways per region, SVM scores, painting.

The shared contract (shapes, errors, loss falls, state dict, batch independence) is
``tests/test_models.py -k rcnn_regions``; here are the ideas that make this model what it is.
"""
import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.data import Shapes
from edu_seg.metrics import ConfusionMatrix
from edu_seg.models.rcnn_regions import (SAMPLING_RATIO, ProposalCache, _instances_from_mask,
                                         hinge_loss, paint_regions, region_oracle)
from edu_seg.ops.loss import cross_entropy
from edu_seg.ops.roi import roi_align
from edu_seg.proposals import Proposals, selective_search
from helpers import record_forward


def _model(**config):
    nn.init.manual_seed(0)
    return models.create("rcnn_regions", num_classes=3, **config)


def _shapes_batch(n, seed=0):
    data = Shapes(n, size=64, num_classes=3, seed=seed)
    samples = [data[i] for i in range(n)]
    batch = {"image": np.stack([s["image"] for s in samples]),
             "mask": np.stack([s["mask"] for s in samples])}
    for key in ("instance_masks", "labels"):
        batch[key] = [s[key] for s in samples]
    return batch


# ------------------------------------------------------------------ the two pathways
def test_region_pathway_sees_the_crop_blanked_outside_the_mask_and_box_pathway_does_not():
    model = _model().eval()
    image = _shapes_batch(1)["image"]
    _, seen = record_forward(model, {"box": model.box_pathway,
                                     "region": model.region_pathway}, image)
    box_in, region_in = seen["box"][0], seen["region"][0]            # the first chunk
    proposals = model.proposals(image[0])
    R, S = len(box_in), model.config.crop_size
    assert box_in.shape == region_in.shape == (R, 3, S, S)
    # where the warp reads the region's mask, 0 = only outside pixels, 1 = only inside ones
    rois = np.concatenate([np.arange(R)[:, None], proposals.boxes[:R]], axis=1)
    warped_mask = roi_align(proposals.masks[:R, None].astype(np.float32), rois, S,
                            sampling_ratio=SAMPLING_RATIO, aligned=True).data  # (R, 1, S, S)
    outside = np.broadcast_to(warped_mask == 0, region_in.shape)
    inside = np.broadcast_to(warped_mask > 1 - 1e-6, region_in.shape)
    assert outside.sum() > 1000 and inside.sum() > 1000
    assert (region_in[outside] == 0).all()                           # blanked to the mean
    assert (np.abs(box_in[outside]) > 1e-3).mean() > 0.9             # the box keeps the scene
    np.testing.assert_allclose(region_in[inside], box_in[inside], atol=1e-5)


def test_box_pathway_input_is_the_box_warped_to_the_crop_size():
    model = _model(crop_size=8).eval()
    image = np.zeros((3, 64, 64), np.float32)
    image[:, 15:33, 31:41] = 1.0                  # a block one pixel larger than the box
    boxes = np.array([[32, 16, 40, 32]], np.float32)                 # 8 wide, 16 high
    masks = np.zeros((1, 64, 64), bool)
    masks[0, 16:32, 32:40] = True
    box_crops, region_crops = model.crop_regions(image, boxes, masks)
    # the warp is anisotropic: the tall box fills the whole square crop, minus the mean
    mean = image.mean(axis=(1, 2))[None, :, None, None]
    np.testing.assert_allclose(box_crops, np.broadcast_to(1.0 - mean, (1, 3, 8, 8)), rtol=1e-6)
    # the region's crop blends in the blanked pixels left and right of it (one image pixel
    # per crop column: the samples at its edge read half outside); its interior does not
    np.testing.assert_allclose(region_crops[..., 1:-1], box_crops[..., 1:-1], rtol=1e-6)
    assert (region_crops[..., [0, -1]] < box_crops[..., [0, -1]]).all()


# -------------------------------------------------------------------- the pixel labelling
def test_each_pixel_takes_the_scores_of_its_most_confident_covering_region():
    masks = np.zeros((3, 2, 3), bool)
    masks[0, :, :2] = True                 # left two columns
    masks[1, :, 1:] = True                 # right two columns
    masks[2, 0, 1] = True                  # one pixel in the middle of the top row
    scores = np.array([[0.0, 0.5, -1.0],   # region 0: class 1, confidence 0.5
                       [0.0, -1.0, 0.8],   # region 1: class 2, confidence 0.8
                       [3.0, 1.0, -1.0]], np.float32)  # region 2: 1.0, but background
    painted = paint_regions(masks, scores)
    assert painted.shape == (3, 2, 3)
    np.testing.assert_array_equal(painted.argmax(0), [[1, 0, 2], [1, 2, 2]])
    np.testing.assert_array_equal(painted[:, 1, 1], scores[1])      # the whole score vector
    np.testing.assert_array_equal(painted[:, 0, 1], scores[2])


def test_pixels_no_region_covers_are_background_one_hot():
    masks = np.zeros((1, 2, 2), bool)
    masks[0, 0, 0] = True
    painted = paint_regions(masks, np.array([[-1.0, 2.0]]))
    np.testing.assert_array_equal(painted[:, 0, 0], [-1.0, 2.0])
    np.testing.assert_array_equal(painted[:, 1, 1], [1.0, 0.0])


def test_forward_paints_the_region_scores_of_every_proposal(monkeypatch):
    model = _model().eval()
    masks = np.zeros((2, 64, 64), bool)
    masks[0, :, :40] = True
    masks[1, :, 24:] = True
    scores = np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    proposals = Proposals(boxes=np.array([[0, 0, 40, 64], [24, 0, 64, 64]], np.float32),
                          masks=masks)
    monkeypatch.setattr(model, "proposals", lambda image: proposals)
    monkeypatch.setattr(model, "score_regions", lambda image, p: scores[:len(p)])
    with no_grad():
        labels = model(Tensor(np.zeros((2, 3, 64, 64), np.float32))).data.argmax(1)
    expected = np.where(np.arange(64) < 40, 1, 2)                   # region 0 wins the overlap
    np.testing.assert_array_equal(labels, np.broadcast_to(expected, (2, 64, 64)))


def _three_regions(model, monkeypatch, scores):
    """Patch ``model`` to see three regions: 0 and 1 overlapping boxes, 2 apart."""
    masks = np.zeros((3, 64, 64), bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 12:30, 10:30] = True                                   # box IoU 0.9 with region 0
    masks[2, 40:60, 40:60] = True
    boxes = np.array([[10, 10, 30, 30], [10, 12, 30, 30], [40, 40, 60, 60]], np.float32)
    monkeypatch.setattr(model, "proposals", lambda image: Proposals(boxes=boxes, masks=masks))
    monkeypatch.setattr(model, "score_regions", lambda image, p: np.asarray(scores, np.float32))
    return boxes, masks


def test_detect_objects_keeps_the_best_region_per_class_and_overlap(monkeypatch):
    model = _model().eval()
    # columns: background, class 1, class 2
    scores = [[0.0, 2.0, -1.0], [0.0, 1.5, 0.5], [0.0, -0.5, 3.0]]
    boxes, masks = _three_regions(model, monkeypatch, scores)
    (found,) = model.detect_objects(Tensor(np.zeros((1, 3, 64, 64), np.float32)))
    # class 1: region 1 (1.5) overlaps the better region 0 (2.0) -> suppressed, region 2 kept;
    # class 2: region 0 (-1.0) is suppressed by region 1 (0.5); best first over all classes
    expected = [(2, 2, 3.0), (0, 1, 2.0), (1, 2, 0.5), (2, 1, -0.5)]
    assert [(int(lab), float(sc)) for lab, sc in zip(found["labels"], found["scores"])] == \
        [(lab, sc) for _, lab, sc in expected]
    np.testing.assert_array_equal(found["masks"], masks[[r for r, _, _ in expected]])
    np.testing.assert_array_equal(found["boxes"], boxes[[r for r, _, _ in expected]])
    assert found["labels"].dtype == np.int64 and found["scores"].dtype == np.float32


def test_detect_objects_keeps_at_most_detections_per_image(monkeypatch):
    model = _model(detections_per_image=2).eval()
    _three_regions(model, monkeypatch, [[0.0, 2.0, -1.0], [0.0, 1.5, 0.5], [0.0, -0.5, 3.0]])
    (found,) = model.detect_objects(Tensor(np.zeros((1, 3, 64, 64), np.float32)))
    assert found["scores"].tolist() == [3.0, 2.0]


def test_detected_regions_score_by_mask_ap_like_an_instance_model():
    from edu_seg.train import evaluate_instances

    data = Shapes(4, size=64, num_classes=3, seed=3)
    ap = evaluate_instances(_model(), data, batch_size=2).summary()
    assert -1 <= ap["mask"]["AP"] <= 1 and -1 <= ap["box"]["AP"] <= 1
    with pytest.raises(ValueError, match="unet is a semantic model that cannot list objects"):
        evaluate_instances(models.create("unet", num_classes=3), data)


def test_score_regions_runs_every_proposal_and_chunks_change_nothing():
    image = _shapes_batch(1)["image"][0]
    big, small = _model().eval(), _model(eval_chunk=7).eval()
    proposals = big.proposals(image)
    a, b = big.score_regions(image, proposals), small.score_regions(image, proposals)
    assert a.shape == (len(proposals), 3)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- training
def test_hinge_loss_is_the_one_vs_rest_formula():
    scores = Tensor(np.array([[2.0, 0.5, -3.0],
                              [0.2, -0.5, 1.5]], np.float32), requires_grad=True)
    loss = hinge_loss(scores, np.array([0, 2]))
    # y = [[+1, -1, -1], [-1, -1, +1]]; max(0, 1 - y s) =
    #     [[0, 1.5, 0], [1.2, 0.5, 0]] -> mean 3.2 / 6
    np.testing.assert_allclose(loss.item(), 3.2 / 6, rtol=1e-6)
    loss.backward()
    # d/ds = -y / 6 inside the margin, 0 beyond it
    np.testing.assert_allclose(scores.grad, np.array([[0, 1, 0], [1, 1, 0]]) / 6, rtol=1e-6)


def test_loss_is_cross_entropy_plus_hinge_with_the_svm_regulariser():
    model = _model(svm_l2=0.01)
    batch = _shapes_batch(2)
    outputs = model.forward_train(batch)
    total, terms = model.loss(outputs, batch)
    labels = outputs["labels"]
    ce = cross_entropy(outputs["logits"], labels).item()
    svm = hinge_loss(outputs["svm"], labels).item() + 0.01 * (model.svm.weight.data ** 2).sum()
    np.testing.assert_allclose([terms["ce"].item(), terms["hinge"].item(), total.item()],
                               [ce, svm, ce + svm], rtol=1e-5)


def test_the_hinge_trains_only_the_svms_and_the_cross_entropy_only_the_cnns():
    model = _model()
    batch = _shapes_batch(2)
    _, terms = model.loss(model.forward_train(batch), batch)
    terms["hinge"].backward()
    assert model.svm.weight.grad is not None
    assert all(p.grad is None for p in model.box_pathway.parameters())
    assert all(p.grad is None for p in model.region_pathway.parameters())
    model.zero_grad()
    _, terms = model.loss(model.forward_train(batch), batch)
    terms["ce"].backward()
    assert model.svm.weight.grad is None
    assert all(p.grad is not None for p in model.region_pathway.parameters())
    assert model.classifier.weight.grad is not None


def test_forward_train_outputs_one_row_per_sampled_region():
    model = _model()
    batch = _shapes_batch(2)
    outputs = model.forward_train(batch)
    M = len(outputs["labels"])
    assert 0 < M <= 2 * model.config.regions_per_image
    assert outputs["logits"].shape == outputs["svm"].shape == (M, 3)
    assert outputs["out"].shape == (2, 3, 64, 64)
    positives = (outputs["labels"] > 0).sum()
    assert 0 < positives <= 2 * int(model.config.regions_per_image * 0.25)


def test_regions_are_labelled_by_mask_iou_and_sampled_with_a_positive_cap():
    model = _model(regions_per_image=64)
    obj = np.zeros((1, 10, 10), bool)
    obj[0, :4, :4] = True                                            # 16 pixels, class 2
    exact = obj[0].copy()
    partial = np.zeros((10, 10), bool)
    partial[:4, :2] = True                                           # IoU 8/16 = 0.5
    between = np.zeros((10, 10), bool)
    between[:2, :3] = True                                           # IoU 6/16: ignored
    away = np.zeros((10, 10), bool)
    away[6:, 6:] = True                                              # IoU 0: background
    masks = np.stack([exact, partial, between, away])
    rng = np.random.default_rng(0)
    chosen, labels = model.sample_regions(masks, obj, np.array([2]), rng)
    assert dict(zip(chosen.tolist(), labels.tolist())) == {0: 2, 1: 2, 3: 0}
    model.config.regions_per_image = 4                               # a quarter: 1 positive
    chosen, labels = model.sample_regions(masks, obj, np.array([2]), rng)
    assert (labels == 2).sum() == 1 and sorted(labels.tolist()) == [0, 2]


def test_objects_come_from_the_semantic_mask_when_there_are_no_instance_masks():
    mask = np.zeros((6, 6), np.int64)
    mask[0:2, 0:2] = 1
    mask[4:6, 4:6] = 1                   # a second, separate object of class 1
    mask[2, 2] = 2                       # diagonal neighbour of the first: its own class
    mask[5, 0] = -100                    # ignored pixels are no object
    objects, classes = _instances_from_mask(mask)
    assert classes.tolist() == [1, 1, 2]
    assert [int(o.sum()) for o in objects] == [4, 4, 1]
    model = _model()
    batch = _shapes_batch(2)
    del batch["instance_masks"], batch["labels"]
    assert (model.forward_train(batch)["labels"] > 0).any()


# ------------------------------------------------------------------------- the proposals
def test_the_proposal_cache_is_hit_on_the_second_pass():
    model = _model().eval()
    images = _shapes_batch(2)["image"]
    with no_grad():
        first = model(Tensor(images)).data
        assert (model.proposals.misses, model.proposals.hits) == (2, 0)
        second = model(Tensor(images)).data
    assert (model.proposals.misses, model.proposals.hits) == (2, 2)
    np.testing.assert_array_equal(first, second)
    cached = model.proposals(images[1])
    direct = selective_search(images[1])
    np.testing.assert_array_equal(cached.masks, direct.masks)
    np.testing.assert_array_equal(cached.boxes, direct.boxes)


def test_the_proposal_cache_drops_the_least_recently_used_image():
    images = _shapes_batch(3)["image"]
    cache = ProposalCache(max_images=2)
    cache(images[0]), cache(images[1]), cache(images[0]), cache(images[2])
    assert len(cache) == 2 and (cache.misses, cache.hits) == (3, 1)
    cache(images[0])                                                 # still there
    assert cache.hits == 2
    cache(images[1])                                                 # dropped: computed again
    assert cache.misses == 4
    off = ProposalCache(max_images=0)
    off(images[0]), off(images[0])
    assert len(off) == 0 and off.misses == 2


def test_inputs_outside_0_1_are_clipped_for_the_proposals():
    image = np.random.default_rng(0).standard_normal((3, 16, 16)).astype(np.float32)
    proposals = ProposalCache(1)(image)
    reference = selective_search(np.clip(image, 0, 1))
    np.testing.assert_array_equal(proposals.masks, reference.masks)


# ---------------------------------------------------------------------------- the oracle
def test_region_oracle_pastes_each_objects_best_proposal_or_every_matching_one():
    objects = np.zeros((2, 4, 6), bool)
    objects[0, :2, :2] = True                                        # class 1, top left
    objects[1, 2:, 3:] = True                                        # class 2, bottom right
    loose = np.zeros((4, 6), bool)
    loose[:2, :3] = True                                             # object 0, IoU 4/6
    tight = objects[0].copy()                                        # object 0, IoU 1
    corner = np.zeros((4, 6), bool)
    corner[3, 5] = True                                              # object 1, IoU 1/6
    regions = np.stack([loose, tight, corner])
    best = region_oracle(regions, objects, np.array([1, 2]), 3, match="best")
    expected = np.zeros((4, 6), np.int64)
    expected[:2, :2] = 1                   # object 0 pasted as its tight region
    expected[3, 5] = 2                     # object 1's best region, however poor
    np.testing.assert_array_equal(best, expected)
    every = region_oracle(regions, objects, np.array([1, 2]), 3, match="all")
    expected = np.zeros((4, 6), np.int64)
    expected[:2, :3] = 1                   # the loose region spills over one column
    np.testing.assert_array_equal(every, expected)   # the corner's IoU < 0.5: background


def test_region_oracle_on_shapes_the_proposals_are_nearly_exact_the_loose_ones_spill():
    data = Shapes(8, size=64, num_classes=3, seed=1)
    best, every = ConfusionMatrix(3), ConfusionMatrix(3)
    for i in range(8):
        s = data[i]
        masks = selective_search(s["image"]).masks
        for cm, match in ((best, "best"), (every, "all")):
            cm.update(region_oracle(masks, s["instance_masks"], s["labels"], 3, match)[None],
                      s["mask"][None])
    assert 0.95 < best.miou() < 1.0
    assert every.miou() < best.miou() - 0.05


# -------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("config,message", [
    ({"num_classes": 1}, "num_classes counts the background"),
    ({"in_channels": 2}, "in_channels must be 1 .grey. or 3"),
    ({"positive_iou": 0.3, "negative_iou": 0.5}, "negative_iou .0.5. must not exceed"),
    ({"crop_size": 0}, "crop_size must be an int >= 1"),
])
def test_bad_configs_are_refused(config, message):
    with pytest.raises(ValueError, match=message):
        models.create("rcnn_regions", **{"num_classes": 3, **config})


def test_bad_arguments_get_named_errors():
    masks = np.ones((2, 4, 4), bool)
    with pytest.raises(ValueError, match=r"scores must be \(R, K\) with R = 2"):
        paint_regions(masks, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="masks must be a .R, H, W. bool array"):
        paint_regions(masks.astype(np.uint8), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="scores must be finite"):
        paint_regions(masks, np.array([[0.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"labels must be 2 ints .* in \[0, 3\)"):
        hinge_loss(Tensor(np.zeros((2, 3))), np.array([0, 3]))
    with pytest.raises(ValueError, match="scores must be a .R, K. Tensor"):
        hinge_loss(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"instance_labels must be 1 ints .* in \[1, 3\)"):
        region_oracle(masks, masks[:1], np.array([0]), 3)
    with pytest.raises(ValueError, match="instance_masks are"):
        region_oracle(masks, np.ones((1, 5, 5), bool), np.array([1]), 3)
    with pytest.raises(ValueError, match="match must be 'best' .* or 'all'"):
        region_oracle(masks, masks[:1], np.array([1]), 3, match="some")
    with pytest.raises(ValueError, match="max_images must be an int >= 0"):
        ProposalCache(-1)
    model = _model()
    with pytest.raises(ValueError, match="in_channels=3"):
        model.forward_train({"image": np.zeros((1, 1, 64, 64), np.float32),
                             "mask": np.zeros((1, 64, 64), np.int64)})
