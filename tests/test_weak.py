"""BoxSup (edu_seg.weak): the cost of a candidate segment on hand-made segments, the choice,
painting, candidates from selective search, the boxes-only data view, the training loop that
never reads a true mask, reproducibility, and errors."""
import math

import numpy as np
import pytest

from edu_seg import models
from edu_seg.data import Shapes
from edu_seg.metrics import ConfusionMatrix
from edu_seg.train import TrainConfig, seed_everything
from edu_seg.weak import (BoxesOnly, BoxSupConfig, box_overlap, candidate_segments,
                          choose_segment, disagreement, estimate_mask, filled_box_masks,
                          paint_segments, segment_cost, BoxSup)

H = W = 8
BOX = [2, 2, 6, 6]                     # a 4x4 box: rows and columns 2..5


def region(y1, y2, x1, x2):
    m = np.zeros((H, W), dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


def probs_saying(cls, num_classes=3, where=None):
    """One-hot probabilities: class ``cls`` on ``where`` (default everywhere), else 0."""
    where = np.ones((H, W), bool) if where is None else where
    labels = np.where(where, cls, 0)
    return np.eye(num_classes)[labels].transpose(2, 0, 1)


def tiny_model(num_classes=4):
    return models.create("unet", num_classes=num_classes, depth=1, base_width=4)


def quick_config(**kw):
    return TrainConfig(**{**dict(steps=4, batch_size=8, lr=3e-3, progress=False,
                                 verbose=False), **kw})


# --------------------------------------------------------------------------------- cost
def test_box_overlap_is_the_iou_of_the_filled_box_and_the_segment():
    masks = np.stack([region(2, 6, 2, 6),           # the box itself
                      region(2, 4, 2, 6),           # its top half
                      region(0, 8, 0, 8),           # the whole image: 16 / 64
                      region(0, 2, 0, 2),           # outside the box
                      np.zeros((H, W), bool)])      # empty
    np.testing.assert_allclose(box_overlap(BOX, masks), [1.0, 0.5, 0.25, 0.0, 0.0])


def test_segment_equal_to_its_box_with_an_agreeing_network_costs_zero():
    masks = region(2, 6, 2, 6)[None]
    assert segment_cost(BOX, masks, probs_saying(1), cls=1, lam=3.0) == pytest.approx([0.0])


def test_disagreement_and_poor_overlap_raise_the_cost_by_the_stated_amounts():
    box_region, half = region(2, 6, 2, 6), region(2, 4, 2, 6)
    masks = np.stack([box_region, half])
    lam = 3.0
    # The network agrees on the top half only: the box region doubts half of what it claims
    # (D = (1/2 + 0) / 2), the half is right on both of its parts (D = 0).
    np.testing.assert_allclose(segment_cost(BOX, masks, probs_saying(1, where=half), 1, lam),
                               [lam * 0.25, 0.5])
    # The network agrees nowhere: full doubt on what each claims, nothing believed in what
    # the half leaves out: D = (1 + 0) / 2 for both, so only the overlap term separates them.
    np.testing.assert_allclose(segment_cost(BOX, masks, probs_saying(2, where=~box_region), 1,
                                            lam), [lam * 0.5, 0.5 + lam * 0.5])
    # Any probability c constant over the box gives D = ((1 - c) + c) / 2 = 1/2 for every
    # segment that claims part of the box: a network without a spatial opinion does not
    # change the choice among them. A segment claiming all of the box has D = (1 - c) / 2.
    partial = np.stack([half, region(3, 5, 3, 5), region(0, 3, 0, 8)])
    for c in (0.0, 0.25, 0.9):
        probs = np.full((3, H, W), (1.0 - c) / 2)
        probs[1] = c
        np.testing.assert_allclose(disagreement(BOX, partial, probs, 1), [0.5, 0.5, 0.5])
        np.testing.assert_allclose(disagreement(BOX, box_region[None], probs, 1), [(1 - c) / 2])


def test_leaving_part_of_the_object_out_is_charged():
    # The network is sure of the object's core and hesitant (p = 0.5) on the rest of the box.
    # A score over the segment's own pixels would prefer the core (no doubt there); the
    # balanced score charges the core for the half-believed pixels it leaves out, and the
    # whole object wins.
    core = region(3, 5, 3, 5)
    probs = np.zeros((3, H, W))
    probs[1] = np.where(core, 1.0, np.where(region(2, 6, 2, 6), 0.5, 0.0))
    probs[0] = 1.0 - probs[1]
    masks = np.stack([region(2, 6, 2, 6), core])
    # whole: doubt 12 * 0.5 / 16 on what it claims, nothing left out; core: no doubt, but
    # belief 0.5 in the 12 pixels it leaves out.
    np.testing.assert_allclose(disagreement(BOX, masks, probs, 1), [0.1875, 0.25])
    costs = segment_cost(BOX, masks, probs, 1, 3.0)
    np.testing.assert_allclose(costs, [3 * 0.1875, 0.75 + 3 * 0.25])
    assert choose_segment(costs) == 0


def test_lambda_weighs_the_network_term_and_none_means_overlap_only():
    masks = np.stack([region(2, 6, 2, 6), region(2, 4, 2, 6), region(0, 3, 0, 3)])
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=(H, W)).transpose(2, 0, 1)
    overlap = 1.0 - box_overlap(BOX, masks)
    d = disagreement(BOX, masks, probs, 2)
    np.testing.assert_allclose(segment_cost(BOX, masks, probs, 2, 0.0), overlap)
    np.testing.assert_allclose(segment_cost(BOX, masks, probs, 2, 2.5), overlap + 2.5 * d)
    np.testing.assert_allclose(segment_cost(BOX, masks, None, 2, 2.5), overlap)


# ------------------------------------------------------------------------------- choice
def test_choice_picks_the_minimum_and_top_k_samples_among_the_k_cheapest():
    costs = np.array([0.9, 0.1, 0.5, 0.3, 0.7])
    assert choose_segment(costs) == 1
    picks = {choose_segment(costs, 3, np.random.default_rng(s)) for s in range(60)}
    assert picks == {1, 2, 3}
    a = [choose_segment(costs, 3, np.random.default_rng(7)) for _ in range(5)]
    b = [choose_segment(costs, 3, np.random.default_rng(7)) for _ in range(5)]
    assert a == b


def test_the_network_term_can_overrule_the_box_on_a_non_convex_object():
    # An L-shaped object in its box: the filled box overlaps the box best, but a network that
    # sees the L (lam large enough) makes the L the cheapest candidate.
    ell = region(2, 6, 2, 4) | region(4, 6, 2, 6)              # 12 of the box's 16 pixels
    candidates = [np.stack([region(2, 6, 2, 6), ell])]
    boxes, labels = np.array([BOX], float), np.array([1])
    first, chosen = estimate_mask(boxes, labels, candidates, None, 3.0)
    assert chosen.tolist() == [0]
    np.testing.assert_array_equal(first, region(2, 6, 2, 6).astype(np.int64))
    mask, chosen = estimate_mask(boxes, labels, candidates, probs_saying(1, where=ell), 3.0)
    assert chosen.tolist() == [1]                # 0.25 + 0 beats 0 + 3 * 0.125
    np.testing.assert_array_equal(mask, ell.astype(np.int64))
    _, chosen = estimate_mask(boxes, labels, candidates, probs_saying(1, where=ell), 0.5)
    assert chosen.tolist() == [0]                # lam 0.5: 0.0625 beats 0.25


# ------------------------------------------------------------------------------ painting
def test_segments_are_clipped_to_their_box_and_smaller_ones_painted_on_top():
    everything = np.ones((H, W), bool)
    mask = paint_segments([everything, region(3, 5, 3, 5)], [[0, 0, 8, 4], [2, 2, 6, 6]],
                          [1, 2], (H, W))
    expected = np.zeros((H, W), np.int64)
    expected[:4, :] = 1
    expected[3:5, 3:5] = 2
    np.testing.assert_array_equal(mask, expected)
    # Swapping the order of the boxes changes nothing: size decides, not order.
    np.testing.assert_array_equal(paint_segments([region(3, 5, 3, 5), everything],
                                                 [[2, 2, 6, 6], [0, 0, 8, 4]], [2, 1], (H, W)),
                                  expected)


def test_an_image_without_boxes_is_all_background():
    mask, chosen = estimate_mask(np.zeros((0, 4)), [], [], None, 3.0, size=(H, W))
    assert mask.shape == (H, W) and not mask.any() and len(chosen) == 0


def test_filled_box_masks():
    mask = filled_box_masks([[0, 0, 6, 6], [4, 4, 8, 8]], [3, 1], (H, W))
    assert (mask[:4, :6] == 3).all() and (mask[4:, 4:] == 1).all()   # equal sizes: 2nd on top
    assert mask[6, 0] == 0 and mask[0, 7] == 0
    assert filled_box_masks(np.zeros((0, 4)), [], (H, W)).sum() == 0


# ---------------------------------------------------------------------------- candidates
def test_candidates_from_selective_search_contain_each_object():
    ds = Shapes(6, num_classes=7, seed=3)
    for i in range(len(ds)):
        s = ds[i]
        cands = candidate_segments(s["image"], s["boxes"], max_candidates=8)
        assert len(cands) == len(s["boxes"])
        for box, c, true in zip(s["boxes"], cands, s["instance_masks"]):
            assert c.dtype == bool and 1 <= len(c) <= 8
            overlaps = box_overlap(box, c)
            assert (np.diff(overlaps) <= 0).all() and (overlaps > 0).all()   # best first
            mask_iou = (c & true).sum(axis=(1, 2)) / (c | true).sum(axis=(1, 2))
            assert mask_iou.max() > 0.7         # some candidate is (nearly) the object


def test_best_overlap_candidates_beat_filled_boxes_on_non_convex_shapes():
    ds = Shapes(16, num_classes=7, seed=0)
    box, seg = ConfusionMatrix(7), ConfusionMatrix(7)
    for i in range(len(ds)):
        s = ds[i]
        cands = candidate_segments(s["image"], s["boxes"])
        box.update(filled_box_masks(s["boxes"], s["labels"], (64, 64)), s["mask"])
        seg.update(estimate_mask(s["boxes"], s["labels"], cands, None, 3.0)[0], s["mask"])
    assert seg.miou() > box.miou() + 0.1


# ------------------------------------------------------------------------------ the view
class Guarded(dict):
    """A sample that records every key asked for and refuses the true labels."""

    def __init__(self, sample, asked):
        super().__init__(sample)
        self.asked = asked

    def __getitem__(self, key):
        self.asked.add(key)
        if key in ("mask", "instance_masks"):
            raise AssertionError(f"box supervision read the true {key!r}")
        return super().__getitem__(key)


class GuardedShapes:
    def __init__(self, n, **kw):
        self.shapes, self.asked = Shapes(n, **kw), set()
        self.class_names = self.shapes.class_names

    def __len__(self):
        return len(self.shapes)

    def __getitem__(self, i):
        return Guarded(self.shapes[i], self.asked)


def test_view_exposes_boxes_and_the_estimate_and_refuses_true_masks():
    ds = Shapes(4, seed=0)
    view = BoxesOnly(ds)
    s = view[1]
    assert sorted(s) == ["boxes", "image", "labels", "mask"]
    np.testing.assert_array_equal(s["mask"], filled_box_masks(ds[1]["boxes"], ds[1]["labels"],
                                                              (64, 64)))
    with pytest.raises(KeyError, match="instance_masks.*evaluation only"):
        s["instance_masks"]
    view.set_masks(np.zeros((4, 64, 64), np.int64))
    assert view[1]["mask"].sum() == 0
    with pytest.raises(ValueError, match="one per sample"):
        view.set_masks(np.zeros((3, 64, 64), np.int64))


def test_training_never_reads_a_true_mask():
    data = GuardedShapes(16, seed=0)
    seed_everything(0)
    model = tiny_model()
    history = BoxSup(model, data, Shapes(8, seed=1), BoxSupConfig(max_candidates=8),
                     quick_config(steps=6)).fit()
    assert data.asked <= {"image", "boxes", "labels"} and "boxes" in data.asked
    assert [r["round"] for r in history] == [1, 2, 3]        # 2 steps an epoch: 3 rounds
    assert [r["step"] for r in history] == [2, 4, 6]
    assert all(math.isfinite(r["train_loss"]) and 0 <= r["val_miou"] <= 1 for r in history)
    assert history[0]["estimate_miou"] is None and history[0]["changed"] is None
    assert 0 <= history[1]["changed"] <= 1


def test_samples_without_any_true_labels_train():
    ds = Shapes(16, seed=0)
    stripped = [{k: ds[i][k] for k in ("image", "boxes", "labels")} for i in range(len(ds))]
    seed_everything(0)
    view, ended = BoxesOnly(stripped), []
    history = BoxSup(tiny_model(), view, None, BoxSupConfig(epochs_per_round=2,
                                                            max_candidates=4),
                     quick_config(steps=4), truth=ds,
                     on_epoch_end=lambda t: ended.append(t.epoch)).fit()
    assert len(history) == 1 and history[0]["step"] == 4
    assert ended == [1, 2]                 # the Trainer's options reach it
    assert 0.5 < history[0]["estimate_miou"] <= 1.0        # the best-overlap candidates
    assert view.masks.shape == (16, 64, 64) and view.masks.max() <= 3


def run_short(cache, top_k):
    ds = Shapes(16, seed=0)
    seed_everything(0)
    model, view = tiny_model(), BoxesOnly(ds)
    history = BoxSup(model, view, None, BoxSupConfig(top_k=top_k, max_candidates=6),
                     quick_config(steps=6), truth=ds, cache=cache).fit()
    return history, view.masks.copy(), {k: np.array(v) for k, v in model.state_dict().items()}


def test_rounds_are_reproducible_for_a_seed():
    cache = []
    h1, masks1, weights1 = run_short(cache, top_k=3)
    assert len(cache) == 16                 # filled by the first run, reused by the second
    h2, masks2, weights2 = run_short(cache, top_k=3)
    np.testing.assert_array_equal(masks1, masks2)
    assert weights1.keys() == weights2.keys() and weights1
    for k in weights1:
        np.testing.assert_array_equal(weights1[k], weights2[k])
    assert h1 == h2
    # top_k = 3 really samples: the greedy choice gives other masks
    _, greedy, _ = run_short(cache, top_k=1)
    assert not np.array_equal(greedy, masks1)


def test_init_box_starts_from_the_filled_boxes():
    ds = Shapes(16, seed=0)
    seed_everything(0)
    view = BoxesOnly(ds)
    cache = []
    boxsup = BoxSup(tiny_model(), view, None, BoxSupConfig(init="box", max_candidates=4,
                                                           epochs_per_round=2),
                    quick_config(steps=4), truth=ds, cache=cache)
    assert cache == []                     # no candidates are needed before the first estimate
    boxes_only = ConfusionMatrix(4)
    for i in range(len(ds)):
        boxes_only.update(filled_box_masks(ds[i]["boxes"], ds[i]["labels"], (64, 64)),
                          ds[i]["mask"])
    assert boxsup.fit()[0]["estimate_miou"] == pytest.approx(boxes_only.miou())


def test_without_refinement_one_round_trains_the_whole_run_on_the_first_estimate():
    ds = Shapes(16, seed=0)
    seed_everything(0)
    boxsup = BoxSup(tiny_model(), ds, None, BoxSupConfig(init="box", refine=False),
                    quick_config(steps=6), truth=ds)
    first = boxsup.view.masks.copy()
    rounds = boxsup.fit()
    assert [r["step"] for r in rounds] == [6] and boxsup.cache == []
    np.testing.assert_array_equal(boxsup.view.masks, first)
    with pytest.raises(RuntimeError, match="all 3 epochs are trained"):
        boxsup.train_round()


def test_stepping_by_hand_is_the_same_as_fit():
    ds = Shapes(16, seed=0)
    cache = []
    seed_everything(0)
    by_hand = BoxSup(tiny_model(), ds, None, BoxSupConfig(max_candidates=4),
                     quick_config(steps=4), truth=ds, cache=cache)
    snapshots = [by_hand.view.masks.copy()]
    while not by_hand.done:
        by_hand.train_round()
        if not by_hand.done:
            assert 0 <= by_hand.estimate() <= 1
            snapshots.append(by_hand.view.masks.copy())
    seed_everything(0)
    fitted = BoxSup(tiny_model(), ds, None, BoxSupConfig(max_candidates=4),
                    quick_config(steps=4), truth=ds, cache=cache)
    assert fitted.fit() == by_hand.rounds and len(snapshots) == 2
    np.testing.assert_array_equal(fitted.view.masks, snapshots[-1])


# -------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw, match", [
    ({"epochs_per_round": 0}, "epochs_per_round"), ({"top_k": 1.5}, "top_k"),
    ({"max_candidates": True}, "max_candidates"), ({"seed": -1}, "seed"),
    ({"init": "mask"}, "init must be 'segment'"), ({"lam": -1.0}, "lam"),
    ({"lam": float("nan")}, "lam"), ({"refine": 1}, "refine must be True or False")])
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        BoxSupConfig(**kw)


def test_bad_arguments():
    masks = region(2, 6, 2, 6)[None]
    with pytest.raises(ValueError, match="segment_masks must be a .R, H, W. bool"):
        box_overlap(BOX, masks.astype(np.uint8))
    with pytest.raises(ValueError, match="x2 < x1"):
        box_overlap([5, 2, 3, 6], masks)
    with pytest.raises(ValueError, match="class_probs must be .C, H, W."):
        disagreement(BOX, masks, np.ones((3, 4, 4)), 1)
    with pytest.raises(ValueError, match=r"cls must be an object class in \[1, 3\)"):
        segment_cost(BOX, masks, probs_saying(1), 0, 3.0)
    with pytest.raises(ValueError, match="lam"):
        segment_cost(BOX, masks, None, 1, -2)
    with pytest.raises(ValueError, match="pass rng"):
        choose_segment([0.1, 0.2], top_k=2)
    with pytest.raises(ValueError, match="non-empty"):
        choose_segment([])
    with pytest.raises(ValueError, match="one segment and one label per box"):
        paint_segments([masks[0]], [BOX, BOX], [1, 1], (H, W))
    with pytest.raises(ValueError, match="without boxes needs size"):
        estimate_mask(np.zeros((0, 4)), [], [], None, 3.0)
    with pytest.raises(ValueError, match="max_candidates"):
        candidate_segments(np.zeros((3, H, W)), [BOX], max_candidates=0)
    with pytest.raises(TypeError, match="__getitem__"):
        BoxesOnly(5)
    with pytest.raises(TypeError, match="BoxSupConfig"):
        BoxSup(tiny_model(), Shapes(16), config={"lam": 3})
    with pytest.raises(ValueError, match="cache holds 2 images"):
        BoxSup(tiny_model(), Shapes(16), cache=[[], []])
    with pytest.raises(ValueError, match="semantic segmentation model"):
        BoxSup(models.create("mask_rcnn", num_classes=4), Shapes(16))
