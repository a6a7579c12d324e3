"""The box toolkit: IoU, NMS, box coding, anchors, clipping, masks, FPN levels."""
import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edu_seg
import edu_seg.reference.nms
from edu_seg.boxes import (DEFAULT_CLAMP, batched_nms, box_area, box_iou, clip_boxes,
                           decode_boxes, encode_boxes, fpn_level, make_anchors, masks_to_boxes,
                           nms, paste_masks)


def random_boxes(rng, K, extent=100.0, min_size=0.0, max_size=40.0):
    xy = rng.uniform(0, extent, (K, 2))
    wh = rng.uniform(min_size, max_size, (K, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def iou_one(a, b):
    """IoU of two boxes, the way one would write it by hand."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# ------------------------------------------------------------------------------------- IoU
def test_box_iou_known_values():
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1]])
    b = np.array([[1, 0, 3, 2], [5, 5, 6, 6], [0, 0, 2, 2]])
    np.testing.assert_allclose(box_iou(a, b), [[1 / 3, 0, 1], [0, 0, 0.25]])
    np.testing.assert_allclose(box_area(a), [4, 1])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.integers(1, 12))
def test_box_iou_symmetric_diagonal_one_and_matches_brute_force(seed, M, N):
    rng = np.random.default_rng(seed)
    a, b = random_boxes(rng, M, min_size=0.5), random_boxes(rng, N, min_size=0.5)
    iou = box_iou(a, b)
    assert iou.shape == (M, N)
    np.testing.assert_allclose(iou, [[iou_one(p, q) for q in b] for p in a], rtol=1e-12)
    np.testing.assert_array_equal(iou, box_iou(b, a).T)
    np.testing.assert_allclose(np.diag(box_iou(a, a)), 1.0, rtol=1e-15)
    assert ((iou >= 0) & (iou <= 1)).all()


def test_box_iou_of_zero_area_boxes_is_zero_not_nan():
    z = np.array([[1.0, 1.0, 1.0, 1.0]])
    assert box_iou(z, z)[0, 0] == 0


# ------------------------------------------------------------------------------------- NMS
# The NMS loop runs in the backend's kernel module: the NumPy reference's tiles or the
# compiled walk. Every NMS test runs on both.
BACKENDS = ["numpy", "cython"]


# the backend holds for every example a hypothesis test draws
SHARED_FIXTURE = dict(suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(params=BACKENDS)
def nms_backend(request):
    if request.param == "cython":
        pytest.importorskip("edu_seg._kernels.nms")
    with edu_seg.use_backend(request.param):
        yield request.param


def nms_brute_force(boxes, scores, thr):
    """Greedy NMS with two plain loops: the definition."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(iou_one(boxes[i], boxes[j]) <= thr for j in keep):
            keep.append(i)
    return keep


@settings(max_examples=60, deadline=None, **SHARED_FIXTURE)
@given(st.integers(0, 2**32 - 1), st.integers(0, 60), st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
def test_nms_equals_brute_force(nms_backend, seed, K, thr):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, K, extent=60.0)
    scores = rng.integers(0, 5, K).astype(float)   # many ties: the order must be stable
    want = nms_brute_force(boxes, scores, thr)
    keep = nms(boxes, scores, thr)
    assert keep.dtype == np.int64
    assert keep.tolist() == want
    with mock.patch.object(edu_seg.reference.nms, "NMS_TILE", 7):   # many tiles, few boxes
        assert nms(boxes, scores, thr).tolist() == want


def test_nms_keeps_the_best_of_two_overlapping_boxes(nms_backend):
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    assert nms(boxes, [0.5, 0.9, 0.1], 0.5).tolist() == [1, 2]
    assert nms(boxes, [0.5, 0.9, 0.1], 0.99).tolist() == [1, 0, 2]
    assert nms(boxes, [0.9, 0.9, 0.9], 0.5).tolist() == [0, 2]       # tie: lower index wins
    assert nms(np.zeros((0, 4)), [], 0.5).tolist() == []


def test_nms_on_2000_boxes_equals_brute_force(nms_backend):
    rng = np.random.default_rng(1)
    boxes = random_boxes(rng, 2000, extent=800.0, min_size=10, max_size=200)
    scores = rng.random(2000)
    keep = nms(boxes, scores, 0.5)
    # brute force, vectorised differently: the full IoU matrix, then the greedy scan
    over = box_iou(boxes, boxes) > 0.5
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(2000, bool)
    want = []
    for i in order:
        if not suppressed[i]:
            want.append(i)
            suppressed |= over[i]
    assert keep.tolist() == want


@settings(max_examples=30, deadline=None, **SHARED_FIXTURE)
@given(st.integers(0, 2**32 - 1), st.integers(0, 40))
def test_batched_nms_is_nms_per_class(nms_backend, seed, K):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, K, extent=40.0)
    scores = rng.integers(0, 4, K).astype(float)
    classes = rng.integers(0, 3, K)
    keep = batched_nms(boxes, scores, classes, 0.4)
    want = []
    for c in range(3):
        members = np.flatnonzero(classes == c)
        want += [members[i] for i in nms_brute_force(boxes[members], scores[members], 0.4)]
    want.sort(key=lambda i: (-scores[i], i))
    assert keep.tolist() == want


def test_batched_nms_never_suppresses_across_classes(nms_backend):
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]])
    assert batched_nms(boxes, [0.9, 0.8], [0, 1], 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, [0.9, 0.8], [1, 1], 0.5).tolist() == [0]
    assert batched_nms(boxes, [0.9, 0.8], ["cat", "dog"], 0.5).tolist() == [0, 1]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 80),
       st.sampled_from([-0.5, 0.0, 1 / 3, 0.5, 1.0]))
def test_compiled_nms_equals_the_reference_on_grid_boxes(seed, K, thr):
    # boxes on a coarse integer grid: duplicates, zero-area boxes and IoUs of exactly 1/3,
    # 1/2 and 1 (on the threshold) are common; a negative threshold suppresses even
    # disjoint boxes. The compiled walk must decide every pair as the reference does.
    compiled = pytest.importorskip("edu_seg._kernels.nms")
    rng = np.random.default_rng(seed)
    xy = rng.integers(0, 6, (K, 2))
    boxes = np.concatenate([xy, xy + rng.integers(0, 4, (K, 2))], axis=1).astype(float)
    scores = rng.integers(0, 3, K).astype(float)
    classes = rng.integers(0, 2, K)
    reference = edu_seg.reference.nms
    assert (compiled.nms(boxes, scores, thr).tolist()
            == reference.nms(boxes, scores, thr).tolist())
    assert (compiled.batched_nms(boxes, scores, classes, thr).tolist()
            == reference.batched_nms(boxes, scores, classes, thr).tolist())


# ------------------------------------------------------------------------------ box coding
@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([(1, 1, 1, 1), (10, 10, 5, 5), (2, 3, 4, 5)]))
def test_decode_inverts_encode(seed, weights):
    rng = np.random.default_rng(seed)
    # sizes within a factor 30 of each other: inside decode's clamp (a factor 62.5)
    boxes = random_boxes(rng, 20, min_size=10.0, max_size=300.0)
    reference = random_boxes(rng, 20, min_size=10.0, max_size=300.0)
    deltas = encode_boxes(boxes, reference, weights)
    np.testing.assert_allclose(decode_boxes(deltas, reference, weights), boxes,
                               rtol=1e-12, atol=1e-9)


def test_encode_known_values_and_decode_clamp():
    ref = np.array([[0.0, 0.0, 10.0, 20.0]])
    box = np.array([[10.0, 0.0, 20.0, 40.0]])          # moved one width right, twice as tall
    np.testing.assert_allclose(encode_boxes(box, ref), [[1.0, 0.5, 0.0, math.log(2)]])
    np.testing.assert_allclose(encode_boxes(box, ref, (10, 10, 5, 5)),
                               [[10.0, 5.0, 0.0, 5 * math.log(2)]])
    big = decode_boxes(np.array([[0.0, 0.0, 50.0, 50.0]]), ref)  # exp(50) would overflow sizes
    np.testing.assert_allclose(big[0, 2] - big[0, 0], 10 * math.exp(DEFAULT_CLAMP))
    np.testing.assert_allclose(big[0, 3] - big[0, 1], 20 * 1000 / 16)


# --------------------------------------------------------------------------------- anchors
def test_make_anchors_centres_sizes_and_ratios():
    sizes, ratios = [32, 64], [0.5, 1.0, 2.0]
    anchors = make_anchors((3, 4), 16, sizes, ratios)
    A = len(sizes) * len(ratios)
    assert anchors.shape == (3 * 4 * A, 4)
    grid = anchors.reshape(3, 4, A, 4)
    centres = (grid[..., :2] + grid[..., 2:]) / 2
    np.testing.assert_allclose(centres[2, 1, 0], [(1 + 0.5) * 16, (2 + 0.5) * 16])
    np.testing.assert_allclose(centres[..., 0], np.broadcast_to(
        ((np.arange(4) + 0.5) * 16)[None, :, None], (3, 4, A)))
    w = grid[0, 0, :, 2] - grid[0, 0, :, 0]
    h = grid[0, 0, :, 3] - grid[0, 0, :, 1]
    np.testing.assert_allclose(w * h, [32**2, 64**2] * 3)               # area = size²
    np.testing.assert_allclose(h / w, np.repeat(ratios, 2))             # ratio-major order
    np.testing.assert_allclose(make_anchors(1, (8, 16), [16], [1.0]), [[0, -4, 16, 12]])


def test_clip_boxes():
    boxes = np.array([[-5.0, 3.0, 20.0, 50.0], [2.0, -1.0, 4.0, 5.0]])
    np.testing.assert_array_equal(clip_boxes(boxes, (30, 10)), [[0, 3, 10, 30], [2, 0, 4, 5]])


# ----------------------------------------------------------------------------------- masks
def test_masks_to_boxes_gives_pixel_edges():
    m = np.zeros((2, 6, 8), dtype=bool)
    m[0, 1:4, 2:7] = True
    m[1, 5, 0] = True
    np.testing.assert_array_equal(masks_to_boxes(m), [[2, 1, 7, 4], [0, 5, 1, 6]])


@pytest.mark.parametrize("box", [(2, 3, 7, 9), (0, 0, 12, 10), (2.4, 3.6, 7.5, 8.5),
                                 (-3, -2, 4, 5), (8, 6, 20, 30)])
def test_paste_masks_of_all_ones_fills_exactly_its_box(box):
    H, W = 10, 12
    out = paste_masks(np.ones((1, 7, 7), np.float32), np.array([box]), (H, W))
    assert out.dtype == np.float32
    cx, cy = np.arange(W) + 0.5, np.arange(H) + 0.5
    inside = ((cy[:, None] >= box[1]) & (cy[:, None] < box[3])
              & (cx[None, :] >= box[0]) & (cx[None, :] < box[2]))
    np.testing.assert_array_equal(out[0], inside.astype(np.float32))


def test_paste_masks_round_trips_with_masks_to_boxes():
    rng = np.random.default_rng(2)
    m = np.zeros((3, 9, 11), dtype=bool)
    for k in range(3):
        y0, x0 = rng.integers(0, 5, 2)
        m[k, y0:y0 + rng.integers(1, 4), x0:x0 + rng.integers(1, 6)] = True
    pasted = paste_masks(np.ones((3, 5, 5)), masks_to_boxes(m), (9, 11))
    np.testing.assert_array_equal(pasted, m.astype(float))             # rectangles come back


def test_paste_masks_at_native_size_copies_the_mask():
    rng = np.random.default_rng(3)
    mask = rng.random((1, 4, 5))
    out = paste_masks(mask, np.array([[3, 2, 8, 6]]), (9, 10))     # box is 5 wide, 4 high
    np.testing.assert_allclose(out[0, 2:6, 3:8], mask[0], rtol=0, atol=1e-15)
    out[0, 2:6, 3:8] = 0
    assert (out == 0).all()


def test_paste_masks_interpolates_between_mask_pixels():
    mask = np.array([[[0.0, 1.0]]])                                 # 1 x 2 mask
    out = paste_masks(mask, np.array([[0, 0, 4, 1]]), (1, 4))       # stretched to 4 pixels
    # pixel centres 0.5..3.5 -> mask x = -0.25, 0.25, 0.75, 1.25 -> clamp, lerp, lerp, clamp
    np.testing.assert_allclose(out[0, 0], [0.0, 0.25, 0.75, 1.0])


# ------------------------------------------------------------------------------ FPN levels
def test_fpn_level():
    def square(s):
        return [0, 0, s, s]
    boxes = np.array([square(224), square(112), square(448), square(10), square(5000),
                      square(223), [0, 0, 0, 0]])
    np.testing.assert_array_equal(fpn_level(boxes), [4, 3, 5, 2, 5, 3, 2])
    np.testing.assert_array_equal(fpn_level(boxes[:3], k0=5, k_min=3, k_max=6), [5, 4, 6])


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("call, error, match", [
    (lambda: box_iou(np.zeros((2, 3)), np.zeros((1, 4))), ValueError, r"a must have shape"),
    (lambda: box_iou(np.zeros((1, 4)), [[0, 0, -1, 1]]), ValueError, "x2 < x1"),
    (lambda: box_area([[0, 0, np.nan, 1]]), ValueError, "not finite"),
    (lambda: box_area(np.array([["a"] * 4])), TypeError, "real numbers"),
    (lambda: nms(np.zeros((2, 4)), [1.0], 0.5), ValueError, r"scores must have shape \(2,\)"),
    (lambda: nms(np.zeros((1, 4)), [np.nan], 0.5), ValueError, "finite"),
    (lambda: batched_nms(np.zeros((2, 4)), [1, 2], [0], 0.5), ValueError, "classes"),
    (lambda: encode_boxes(np.ones((1, 4)) * [0, 0, 1, 1], np.zeros((1, 4))), ValueError,
     "reference box needs width"),
    (lambda: encode_boxes(np.zeros((1, 4)), [[0, 0, 1, 1]]), ValueError, "target box"),
    (lambda: encode_boxes(np.zeros((2, 4)), np.zeros((1, 4))), ValueError, "same shape"),
    (lambda: decode_boxes(np.zeros((2, 4)), [[0, 0, 1, 1]]), ValueError, "same shape"),
    (lambda: make_anchors(0, 16, [32], [1.0]), ValueError, "feature_size must be positive"),
    (lambda: make_anchors(2, 16.5, [32], [1.0]), TypeError, "stride"),
    (lambda: make_anchors(2, 16, [], [1.0]), ValueError, "non-empty"),
    (lambda: make_anchors(2, 16, [32], [-1.0]), ValueError, "> 0"),
    (lambda: clip_boxes(np.zeros((1, 4)), (0, 5)), ValueError, "image_size"),
    (lambda: masks_to_boxes(np.zeros((5, 5))), ValueError, r"\(K, H, W\)"),
    (lambda: masks_to_boxes(np.zeros((2, 5, 5))), ValueError, "mask 0 is empty"),
    (lambda: paste_masks(np.ones((2, 3, 3)), [[0, 0, 1, 1]], (4, 4)), ValueError,
     "2 masks but 1 boxes"),
    (lambda: paste_masks(np.ones((1, 0, 3)), [[0, 0, 1, 1]], (4, 4)), ValueError, "MH, MW"),
    (lambda: paste_masks(np.ones((1, 3, 3)), [[0, 0, 1, 1]], (4, 4.0)), TypeError,
     "image_size"),
    (lambda: fpn_level([[0, 0, 1, 1]], k_min=5, k_max=2), ValueError, "k_min"),
])
def test_bad_input_raises(call, error, match):
    with pytest.raises(error, match=match):
        call()
