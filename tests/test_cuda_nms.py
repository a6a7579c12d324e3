"""The CUDA twin of NMS (edu_seg/cuda/nms.py) == the NumPy functions of edu_seg.boxes (emulated
on the CPU, and on a real GPU where there is one: the ``gpu`` fixture of conftest.py).

CuPy boxes given to :func:`edu_seg.boxes.nms` / :func:`~edu_seg.boxes.batched_nms` go to the
twin; the results must EQUAL the NumPy ones: same indices, same order (ties by index)."""
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_boxes import random_boxes

from edu_seg.boxes import batched_nms, nms

THRESHOLDS = [0.0, 0.3, 0.5, 0.7, 1.0]
#: Box counts around the 64-column words of the mask (and the reference's 256-box tiles).
SIZES = st.one_of(st.sampled_from([0, 1, 2, 63, 64, 65, 128, 129, 256, 257]),
                  st.integers(0, 600))


def _problem(seed, K, dtype):
    """Boxes that overlap a lot, with duplicates, zero-area boxes and tied scores (+-0.0 too).

    Integer boxes give exact IoU values like 0.5, which test the strict ``>`` of the rule.
    """
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, K, extent=10.0 + 0.3 * K, max_size=30.0)
    if K:
        dup = rng.integers(0, K, (K // 5, 2))
        boxes[dup[:, 0]] = boxes[dup[:, 1]]                     # duplicate boxes
        flat = rng.integers(0, K, K // 10)
        boxes[flat, 2] = boxes[flat, 0]                          # zero width
    scores = rng.integers(-2, 3, K).astype(np.float64)          # many ties
    scores[(scores == 0) & (rng.random(K) < 0.5)] = -0.0        # -0.0 ties +0.0
    if dtype == np.int64:
        boxes = np.round(boxes)
    return boxes.astype(dtype), scores


def _same(gpu, got, want):
    assert type(got) is gpu.cupy.ndarray and got.dtype == np.int64
    assert want.dtype == np.int64
    np.testing.assert_array_equal(got.get(), want)


@given(seed=st.integers(0, 2**32 - 1), K=SIZES, thr=st.sampled_from(THRESHOLDS),
       dtype=st.sampled_from([np.float64, np.float32, np.int64]))
def test_nms_twin_equals_numpy(gpu, seed, K, thr, dtype):
    boxes, scores = _problem(seed, K, dtype)
    want = nms(boxes, scores, thr)
    _same(gpu, nms(*gpu.to_device(boxes, scores), thr), want)


@given(seed=st.integers(0, 2**32 - 1), K=SIZES, thr=st.sampled_from(THRESHOLDS),
       labels=st.sampled_from([[0, 1, 2], [7, -1, 3, 0], [0.5, 1.5, 2.0], [4]]))
def test_batched_nms_twin_equals_numpy(gpu, seed, K, thr, labels):
    boxes, scores = _problem(seed, K, np.float64)
    classes = np.random.default_rng(seed + 1).choice(np.array(labels), K)
    want = batched_nms(boxes, scores, classes, thr)
    _same(gpu, batched_nms(*gpu.to_device(boxes, scores, classes), thr), want)


def test_nms_twin_on_2000_boxes(gpu):
    rng = np.random.default_rng(1)
    boxes = random_boxes(rng, 2000, extent=800.0, min_size=10, max_size=200)
    scores = rng.random(2000)
    _same(gpu, nms(*gpu.to_device(boxes, scores), 0.5), nms(boxes, scores, 0.5))


def test_nms_twin_small_cases(gpu):
    boxes = gpu.to_device(np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]]))
    assert nms(boxes, [0.5, 0.9, 0.1], 0.5).get().tolist() == [1, 2]     # host scores: fine
    assert nms(boxes, gpu.to_device(np.array([0.5, 0.9, 0.1])), 0.99).get().tolist() == [1, 0, 2]
    assert nms(boxes, [0.9, 0.9, 0.9], 0.5).get().tolist() == [0, 2]     # tie: lower index
    assert nms(boxes, [0.9, 0.9, 0.9], 1).get().tolist() == [0, 1, 2]    # an int threshold
    same = gpu.to_device(np.array([[0.0, 0.0, 10.0, 10.0]] * 2))
    assert nms(same, [1.0, 1.0], 1.0).get().tolist() == [0, 1]          # IoU 1 is not > 1
    assert batched_nms(same, [0.8, 0.9], [0, 1], 0.5).get().tolist() == [1, 0]
    assert batched_nms(same, [0.8, 0.9], [1, 1], 0.5).get().tolist() == [1]
    _same(gpu, nms(gpu.to_device(np.zeros((0, 4))), [], 0.5), np.zeros(0, np.int64))
    _same(gpu, batched_nms(gpu.to_device(np.zeros((0, 4))), [], [], 0.5), np.zeros(0, np.int64))


@pytest.mark.parametrize("call", [
    lambda f, x: f.nms(x(np.zeros((2, 3))), x(np.zeros(2)), 0.5),
    lambda f, x: f.nms(x(np.array([[0, 0, np.inf, 1]])), x(np.zeros(1)), 0.5),
    lambda f, x: f.nms(x(np.array([[0, 0, 1, 1], [0, 0, -1, 1]])), x(np.zeros(2)), 0.5),
    lambda f, x: f.nms(x(np.zeros((2, 4), dtype=bool)), x(np.zeros(2)), 0.5),
    lambda f, x: f.nms(x(np.zeros((2, 4))), x(np.zeros(1)), 0.5),
    lambda f, x: f.nms(x(np.zeros((1, 4))), x(np.array([np.nan])), 0.5),
    lambda f, x: f.batched_nms(x(np.zeros((2, 4))), x(np.zeros(3)), x(np.zeros(2)), 0.5),
    lambda f, x: f.batched_nms(x(np.zeros((2, 4))), x(np.zeros(2)), x(np.zeros(1)), 0.5),
    lambda f, x: f.batched_nms(x(np.zeros((1, 3))), x(np.zeros(1)), x(np.zeros(1)), 0.5),
])
def test_bad_input_raises_as_numpy(gpu, call):
    import edu_seg.boxes as f

    with pytest.raises((ValueError, TypeError)) as on_host:
        call(f, np.asarray)
    with pytest.raises(on_host.type, match=re.escape(str(on_host.value))):
        call(f, gpu.to_device)
