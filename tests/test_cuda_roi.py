"""The CUDA twin of RoIAlign / RoIPool == the NumPy reference (emulated on the CPU, and on a real
GPU where there is one: the ``gpu`` fixture of conftest.py).

Geometries are test_roi's: boxes inside, straddling the border, far outside, zero-size, tiny,
huge and inverted, integer/half-pixel corners, K = 0 boxes, sampling_ratio adaptive (-1, 0) and
fixed, aligned True/False, scales 1, 1/4, 1/8. Values match to 1e-12 (float64) / 1e-5
(float32); RoIPool's maxima and int64 argmax exactly (ties: the first maximum; NaN never wins;
-1 for an empty bin).
"""
import numpy as np
from hypothesis import given, settings
from test_roi import X6, _case, geometries

from edu_seg.reference import roi as ref


def _close(want, got, dtype):
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def _align_matches(gpu, x, rois, dy, output_hw, scale, sampling_ratio, aligned):
    """RoIAlign forward and backward: twin == reference; returns the twin's y (on the host)."""
    twin = gpu.twin("roi")
    args = (output_hw, scale, sampling_ratio, aligned)
    d_x, d_rois, d_dy = gpu.to_device(x, rois, dy)
    y = twin.roi_align_forward(d_x, d_rois, *args)
    assert type(y) is gpu.cupy.ndarray and y.dtype == x.dtype
    _close(ref.roi_align_forward(x, rois, *args), y.get(), x.dtype)
    dx = twin.roi_align_backward(d_dy, d_rois, x.shape, *args)
    assert dx.dtype == x.dtype and dx.shape == x.shape
    _close(ref.roi_align_backward(dy, rois, x.shape, *args), dx.get(), x.dtype)
    return y.get()


def _pool_matches(gpu, x, rois, dy, output_hw, scale):
    """RoIPool forward (values and argmax exactly) and backward: twin == reference."""
    twin = gpu.twin("roi")
    d_x, d_rois, d_dy = gpu.to_device(x, rois, dy)
    y, argmax = twin.roi_pool_forward(d_x, d_rois, output_hw, scale)
    y_ref, argmax_ref = ref.roi_pool_forward(x, rois, output_hw, scale)
    assert y.dtype == x.dtype and argmax.dtype == np.int64
    assert np.array_equal(y.get(), y_ref)
    assert np.array_equal(argmax.get(), argmax_ref)
    dx = twin.roi_pool_backward(d_dy, argmax, d_rois, x.shape)
    assert dx.dtype == x.dtype and dx.shape == x.shape
    _close(ref.roi_pool_backward(dy, argmax_ref, rois, x.shape), dx.get(), x.dtype)
    return y.get(), argmax.get()


@settings(max_examples=150)
@given(geometries)
def test_roi_align_twin_matches_reference(gpu, g):
    x, rois, dy = _case(g)
    _align_matches(gpu, x, rois, dy, (g["PH"], g["PW"]), g["scale"], g["sampling_ratio"],
                   g["aligned"])


@settings(max_examples=150)
@given(geometries)
def test_roi_pool_twin_matches_reference(gpu, g):
    x, rois, dy = _case(g)
    _pool_matches(gpu, x, rois, dy, (g["PH"], g["PW"]), g["scale"])


def test_published_vectors(gpu):
    for dtype in (np.float32, np.float64):
        x = X6.astype(dtype)                              # value 6y + x
        box = np.array([[0, 0, 2, 2, 4]], dtype=dtype)    # x1=0, y1=2, x2=2, y2=4
        dy = np.ones((1, 1, 2, 2), dtype)
        y = _align_matches(gpu, x, box, dy, (2, 2), 1.0, -1, False)
        np.testing.assert_array_equal(y[0, 0], [[15.5, 16.5], [21.5, 22.5]])
        y = _align_matches(gpu, x, box, dy, (2, 2), 1.0, -1, True)
        np.testing.assert_array_equal(y[0, 0], [[12, 13], [18, 19]])
        y, argmax = _pool_matches(gpu, x, box, dy, (2, 2), 1.0)
        np.testing.assert_array_equal(y[0, 0], [[19, 20], [25, 26]])
        np.testing.assert_array_equal(argmax[0, 0], [[19, 20], [25, 26]])


def test_no_boxes(gpu):
    """K = 0: empty outputs, zero gradients (no kernel is launched)."""
    x = np.ones((2, 3, 4, 5), np.float32)
    rois = np.zeros((0, 5), np.float32)
    dy = np.zeros((0, 3, 2, 2), np.float32)
    for sampling_ratio, aligned in [(-1, False), (2, True)]:
        y = _align_matches(gpu, x, rois, dy, (2, 2), 0.5, sampling_ratio, aligned)
        assert y.shape == (0, 3, 2, 2)
    y, argmax = _pool_matches(gpu, x, rois, dy, (2, 2), 0.5)
    assert y.shape == argmax.shape == (0, 3, 2, 2)


def test_roi_pool_ties_nan_and_lowest(gpu):
    """Ties keep the first maximum, NaN never wins; an all -inf bin keeps -FLT_MAX and argmax
    -1, like an empty bin's argmax (torchvision's rule, for float64 too)."""
    for dtype in (np.float32, np.float64):
        x = np.zeros((1, 2, 3, 3), dtype)
        x[0, 0, 0, 0] = np.nan
        x[0, 1] = -np.inf
        rois = np.array([[0, 0, 0, 2, 2]], dtype)
        y, argmax = _pool_matches(gpu, x, rois, np.ones((1, 2, 1, 1), dtype), (1, 1), 1.0)
        assert y[0, 0].item() == 0 and argmax[0, 0].item() == 1
        assert y[0, 1].item() == np.float32(-3.4028234663852886e38) and argmax[0, 1].item() == -1
        # a bin off the map is empty: 0 and -1
        far = np.array([[0, 10, 10, 12, 12]], dtype)
        y, argmax = _pool_matches(gpu, x, far, np.ones((1, 2, 1, 1), dtype), (1, 1), 1.0)
        assert (y == 0).all() and (argmax == -1).all()


def test_roi_align_computes_coordinates_in_the_dtype_of_x(gpu):
    """float32 boxes give float32 sample positions (as in torchvision): here the box height
    (24.2 - 8.2)/16 is exactly 1 in float32 arithmetic (one adaptive sample row, at y = 1.01)
    but a little more than 1 in float64 (two rows, at y = 0.76 and 1.26, either side of pixel
    row 1). The twin must follow the float32 arithmetic."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    rois = np.array([[0, 0.0, 8.2, 40.0, 24.2]], np.float32)
    dy = rng.standard_normal((1, 2, 1, 1)).astype(np.float32)
    y = _align_matches(gpu, x, rois, dy, (1, 1), 1 / 16, 0, False)
    in_float64 = ref.roi_align_forward(x.astype(np.float64), rois.astype(np.float64), (1, 1),
                                       1 / 16, 0, False)
    assert np.abs(y - in_float64).max() > 1e-2     # the test can tell the two apart


def test_more_work_than_threads(gpu):
    """More output elements than one block of threads (and many boxes on both images): the
    grid-stride loops and the (k, c, ph, pw) decomposition of the thread index."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 9, 11))
    rois = np.column_stack([rng.integers(0, 2, 12), rng.uniform(-4, 20, (12, 2)),
                            rng.uniform(10, 40, (12, 2))])
    dy = rng.standard_normal((12, 5, 3, 4))
    _align_matches(gpu, x, rois, dy, (3, 4), 0.5, -1, True)
    _align_matches(gpu, x, rois, dy, (3, 4), 0.5, 2, False)
    _pool_matches(gpu, x, rois, dy, (3, 4), 0.5)
