"""RoIAlign and RoIPool: published vectors, Cython == reference, gradients, threads, errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edu_seg
from edu_seg import Tensor, gradcheck
from edu_seg._kernels import roi as compiled
from edu_seg.ops.roi import boxes_to_rois, roi_align, roi_pool
from edu_seg.reference import roi as reference

BACKENDS = ["numpy", "cython"]
KERNELS = {"numpy": reference, "cython": compiled}


# ------------------------------------------------------------------- published test vectors
X6 = np.arange(36.0).reshape(1, 1, 6, 6)          # value 6y + x
BOX6 = np.array([[0, 0, 2, 2, 4]], dtype=np.float64)  # image 0, x1=0, y1=2, x2=2, y2=4


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_published_vectors(backend, dtype):
    edu_seg.set_backend(backend)
    x, box = X6.astype(dtype), BOX6.astype(dtype)
    out = roi_align(x, box, 2, 1.0, -1, aligned=False).numpy()
    assert out.dtype == dtype
    np.testing.assert_array_equal(out[0, 0], [[15.5, 16.5], [21.5, 22.5]])
    out = roi_align(x, box, 2, 1.0, -1, aligned=True).numpy()
    np.testing.assert_array_equal(out[0, 0], [[12, 13], [18, 19]])
    np.testing.assert_array_equal(roi_pool(x, box, 2, 1.0).numpy()[0, 0], [[19, 20], [25, 26]])
    y, argmax = KERNELS[backend].roi_pool_forward(x, box, (2, 2), 1.0)
    np.testing.assert_array_equal(y[0, 0], [[19, 20], [25, 26]])
    np.testing.assert_array_equal(argmax[0, 0], [[19, 20], [25, 26]])
    assert argmax.dtype == np.int64
    x5 = np.arange(25.0, dtype=dtype).reshape(1, 1, 5, 5)
    out = roi_align(x5, np.array([[0, 0, 0, 2, 2]], dtype), 2, 1.0, 2, aligned=False).numpy()
    np.testing.assert_array_equal(out[0, 0], [[3, 4], [8, 9]])


# ------------------------------------------------------------------ random boxes of all kinds
KINDS = ["inside", "straddling", "outside", "zero", "tiny", "huge", "inverted"]


def make_boxes(rng, kinds, N, H, W, scale):
    """(K, 5) rois in image coordinates, one per entry of ``kinds``."""
    Hi, Wi = H / scale, W / scale                  # the image the feature map came from
    rows = []
    for kind in kinds:
        corners = []
        for size in (Wi, Hi):
            if kind == "inside":
                a = rng.uniform(0, size)
                b = rng.uniform(a, size)
            elif kind == "straddling":
                a = rng.uniform(-size / 2, size / 2)
                b = a + rng.uniform(0.5, 1.0) * size
            elif kind == "outside":                 # 2+ feature pixels off the map
                gap = rng.uniform(2, 6) / scale
                if rng.random() < 0.5:
                    a = size + gap
                    b = a + rng.uniform(0, size)
                else:
                    b = -gap
                    a = b - rng.uniform(0, size)
            elif kind == "zero":
                a = b = rng.uniform(-1, size + 1)
            elif kind == "tiny":
                a = rng.uniform(0, size)
                b = a + 0.01 / scale
            elif kind == "huge":
                a = rng.uniform(-2 * size, 0)
                b = rng.uniform(size, 3 * size)
            else:  # inverted: x2 < x1
                a = rng.uniform(0, size)
                b = a - rng.uniform(0, size / 2)
            corners.append((a, b))
        (x1, x2), (y1, y2) = corners
        rows.append([rng.integers(0, N), x1, y1, x2, y2])
    if rng.random() < 0.3:                          # integers and halves hit the edge cases
        rows = [[r[0]] + [round(v * 2 * scale) / (2 * scale) for v in r[1:]] for r in rows]
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


geometries = st.fixed_dictionaries({
    "seed": st.integers(0, 2**32 - 1),
    "N": st.integers(1, 2), "C": st.integers(1, 3), "H": st.integers(1, 8),
    "W": st.integers(1, 8), "PH": st.integers(1, 3), "PW": st.integers(1, 3),
    "kinds": st.lists(st.sampled_from(KINDS), min_size=0, max_size=5),
    "scale": st.sampled_from([1.0, 0.25, 0.125]),
    "sampling_ratio": st.sampled_from([-1, 0, 1, 2, 3]),
    "aligned": st.booleans(),
    "dtype": st.sampled_from([np.float64, np.float32]),
})


def _case(g):
    rng = np.random.default_rng(g["seed"])
    x = rng.standard_normal((g["N"], g["C"], g["H"], g["W"])).astype(g["dtype"])
    rois = make_boxes(rng, g["kinds"], g["N"], g["H"], g["W"], g["scale"]).astype(g["dtype"])
    dy = rng.standard_normal((len(rois), g["C"], g["PH"], g["PW"])).astype(g["dtype"])
    return x, rois, dy


@settings(max_examples=120, deadline=None)
@given(geometries)
def test_compiled_equals_reference_bit_for_bit(g):
    """Same operations in the same order, no FMA contraction: the twins agree exactly."""
    x, rois, dy = _case(g)
    align = ((g["PH"], g["PW"]), g["scale"], g["sampling_ratio"], g["aligned"])
    for k in (reference, compiled):
        assert k.roi_align_forward(x, rois, *align).dtype == x.dtype
    np.testing.assert_array_equal(compiled.roi_align_forward(x, rois, *align),
                                  reference.roi_align_forward(x, rois, *align))
    np.testing.assert_array_equal(compiled.roi_align_backward(dy, rois, x.shape, *align),
                                  reference.roi_align_backward(dy, rois, x.shape, *align))
    pool = ((g["PH"], g["PW"]), g["scale"])
    y_c, arg_c = compiled.roi_pool_forward(x, rois, *pool)
    y_r, arg_r = reference.roi_pool_forward(x, rois, *pool)
    np.testing.assert_array_equal(y_c, y_r)
    np.testing.assert_array_equal(arg_c, arg_r)
    np.testing.assert_array_equal(compiled.roi_pool_backward(dy, arg_c, rois, x.shape),
                                  reference.roi_pool_backward(dy, arg_r, rois, x.shape))


# ------------------------------------------------ the geometry helpers are what the kernels use
def _bilinear_many(plane, ys, xs):
    """Bilinear values at many points, written independently of the kernels (clamp form)."""
    H, W = plane.shape
    out = np.zeros(len(ys))
    inside = (ys >= -1) & (ys <= H) & (xs >= -1) & (xs <= W)
    y = np.clip(ys[inside], 0, H - 1)
    x = np.clip(xs[inside], 0, W - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, H - 1), np.minimum(x0 + 1, W - 1)
    ly, lx = y - y0, x - x0
    out[inside] = ((1 - ly) * (1 - lx) * plane[y0, x0] + (1 - ly) * lx * plane[y0, x1]
                   + ly * (1 - lx) * plane[y1, x0] + ly * lx * plane[y1, x1])
    return out


@settings(max_examples=40, deadline=None)
@given(geometries)
def test_sample_points_are_what_roi_align_samples(g):
    x, rois, _ = _case(g)
    x, rois = x.astype(np.float64), rois.astype(np.float64)
    PH, PW = g["PH"], g["PW"]
    y = compiled.roi_align_forward(x, rois, (PH, PW), g["scale"], g["sampling_ratio"],
                                   g["aligned"])
    for k, (b, *box) in enumerate(rois):
        geo = reference.roi_align_sample_points(box, (PH, PW), g["scale"], g["sampling_ratio"],
                                                g["aligned"])
        gh, gw = geo.grid
        assert geo.ys.shape == (PH, max(gh, 0)) and geo.xs.shape == (PW, max(gw, 0))
        np.testing.assert_allclose(geo.y_edges[[0, -1]], [geo.box[1], geo.box[1] + PH * geo.bin_h])
        for ph in range(PH):
            for pw in range(PW):
                pts = geo.bin_points(ph, pw)
                for c in range(x.shape[1]):
                    want = _bilinear_many(x[int(b), c], pts[:, 0], pts[:, 1]).sum() / geo.count
                    assert abs(y[k, c, ph, pw] - want) <= 1e-12 * (1 + abs(want))


@settings(max_examples=40, deadline=None)
@given(geometries)
def test_pool_bins_are_what_roi_pool_pools(g):
    x, rois, _ = _case(g)
    N, C, H, W = x.shape
    y, argmax = compiled.roi_pool_forward(x, rois, (g["PH"], g["PW"]), g["scale"])
    for k, (b, *box) in enumerate(rois):
        bins = reference.roi_pool_bins(box, (g["PH"], g["PW"]), g["scale"], (H, W), x.dtype)
        for ph in range(g["PH"]):
            for pw in range(g["PW"]):
                region = x[int(b), :, bins.hstart[ph]:bins.hend[ph], bins.wstart[pw]:bins.wend[pw]]
                if region.size == 0:
                    assert (y[k, :, ph, pw] == 0).all() and (argmax[k, :, ph, pw] == -1).all()
                else:
                    np.testing.assert_array_equal(y[k, :, ph, pw], region.max(axis=(1, 2)))


def test_roi_pool_bins_show_both_quantisations():
    bins = reference.roi_pool_bins((0, 2, 2, 4), (2, 2), 1.0)
    assert bins.box == (0, 2, 2, 4)
    np.testing.assert_array_equal(bins.hstart, [2, 3])      # bins of 1.5 px overlap by one row
    np.testing.assert_array_equal(bins.hend, [4, 5])
    # x1 = 0.6 rounds to 1 at scale 1: the box moves by 0.4 px before pooling
    assert reference.roi_pool_bins((0.6, 0, 3, 3), (1, 1), 1.0).box[0] == 1
    assert reference.roi_pool_bins((2.5, 0, 3, 3), (1, 1), 1.0).box[0] == 3   # half away from 0
    assert reference.roi_pool_bins((-2.5, 0, 3, 3), (1, 1), 1.0).box[0] == -3


# ------------------------------------------------------------------------- documented cases
@pytest.mark.parametrize("backend", BACKENDS)
def test_inverted_boxes_follow_torchvision(backend):
    edu_seg.set_backend(backend)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 8, 8))
    inverted = [[0, 5.0, 1.0, 2.0, 6.0]]                    # x2 < x1
    unit = [[0, 5.0, 1.0, 6.0, 6.0]]                        # the 1-pixel-wide box it becomes
    for sr in (-1, 2):
        np.testing.assert_array_equal(roi_align(x, inverted, 3, 1.0, sr).numpy(),
                                      roi_align(x, unit, 3, 1.0, sr).numpy())
    # aligned=True keeps the negative width: the adaptive grid is empty, the output 0
    assert (roi_align(x, inverted, 3, 1.0, -1, aligned=True).numpy() == 0).all()
    assert np.abs(roi_align(x, inverted, 3, 1.0, 2, aligned=True).numpy()).sum() > 0
    # RoIPool: rw = max(xe - xs + 1, 1) = 1, a one-column box at xs = 5
    np.testing.assert_array_equal(roi_pool(x, inverted, 2).numpy(),
                                  roi_pool(x, [[0, 5.0, 1.0, 5.0, 6.0]], 2).numpy())


@pytest.mark.parametrize("backend", BACKENDS)
def test_boxes_outside_the_image_give_zero(backend):
    edu_seg.set_backend(backend)
    x = np.random.default_rng(4).standard_normal((1, 3, 6, 6)) + 10
    far = [[0, 100.0, 100.0, 120.0, 130.0], [0, -50.0, -40.0, -20.0, -3.0]]
    for aligned in (False, True):
        assert (roi_align(x, far, 2, 1.0, -1, aligned).numpy() == 0).all()
    assert (roi_pool(x, far, 2).numpy() == 0).all()
    # a sample between -1 and 0 reads the border pixel (clamped), one below -1 reads nothing
    one = np.ones((1, 1, 4, 4))
    # (aligned, zero-size box, one sample: it sits at x = x1 - 0.5, y = 1.5)
    assert roi_align(one, [[0, -0.4, 2, -0.4, 2]], 1, 1.0, 1, True).numpy().item() == 1
    assert roi_align(one, [[0, -0.6, 2, -0.6, 2]], 1, 1.0, 1, True).numpy().item() == 0


def test_roi_pool_ties_take_the_first_maximum_and_skip_nan():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 0, 0] = np.nan
    for k in KERNELS.values():
        y, argmax = k.roi_pool_forward(x, np.array([[0, 0, 0, 2, 2.0]]), (1, 1), 1.0)
        assert y.item() == 0 and argmax.item() == 1       # NaN never wins; the first 0 does


# ----------------------------------------------------------------------------- the op layer
def test_list_of_boxes_equals_rois_with_batch_index():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 9))
    per_image = [rng.uniform(0, 7, (3, 4)), rng.uniform(0, 7, (2, 4))]
    rois = boxes_to_rois(per_image)
    np.testing.assert_array_equal(rois[:, 0], [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(rois[:, 1:], np.concatenate(per_image))
    np.testing.assert_array_equal(roi_align(x, per_image, (2, 3), 0.5, 2, True).numpy(),
                                  roi_align(x, rois, (2, 3), 0.5, 2, True).numpy())
    np.testing.assert_array_equal(roi_pool(x, [Tensor(b) for b in per_image], 2).numpy(),
                                  roi_pool(x, Tensor(rois), 2).numpy())


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_boxes_gives_empty_output_and_zero_gradient(backend):
    edu_seg.set_backend(backend)
    x = Tensor(np.ones((1, 2, 4, 4), dtype=np.float32), requires_grad=True)
    for op in (lambda t: roi_align(t, np.zeros((0, 5)), 3), lambda t: roi_pool(t, [], 3)):
        y = op(x)
        assert y.shape == (0, 2, 3, 3) and y.dtype == np.float32
        x.grad = None
        y.sum().backward()
        assert x.grad.shape == x.shape and (x.grad == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_gradcheck_roi_align(backend, aligned, sampling_ratio):
    edu_seg.set_backend(backend)
    rng = np.random.default_rng(6)
    x = Tensor(rng.standard_normal((2, 2, 5, 6)), requires_grad=True)
    boxes = [[0, 0.3, 1.2, 9.1, 7.7], [1, -3.0, 2.0, 4.5, 15.0], [1, 5.0, 5.0, 7.0, 6.0]]
    gradcheck(lambda t: roi_align(t, boxes, (2, 3), 0.5, sampling_ratio, aligned), [x])


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_roi_pool_without_ties(backend):
    edu_seg.set_backend(backend)
    rng = np.random.default_rng(7)
    # distinct values 1/60 apart: a ±1e-6 step never changes which pixel is the maximum
    x = Tensor(rng.permutation(60).reshape(1, 2, 5, 6) / 60.0, requires_grad=True)
    boxes = [[0, 0.3, 1.2, 5.1, 4.7], [0, -2.0, 2.0, 3.0, 9.0], [0, 2.0, 2.0, 4.0, 3.0]]
    gradcheck(lambda t: roi_pool(t, boxes, (2, 3)), [x])


@pytest.mark.parametrize("backend", BACKENDS)
def test_roi_align_adjoint_identity(backend):
    """RoIAlign is linear in x: <A x, dy> == <x, A^T dy> to 1e-12."""
    rng = np.random.default_rng(8)
    kernel = KERNELS[backend]
    x = rng.standard_normal((2, 3, 9, 7))
    rois = make_boxes(rng, KINDS * 2, 2, 9, 7, 0.25)
    for sr, aligned in [(-1, False), (2, True), (3, False), (0, True)]:
        args = ((3, 2), 0.25, sr, aligned)
        y = kernel.roi_align_forward(x, rois, *args)
        dy = rng.standard_normal(y.shape)
        dx = kernel.roi_align_backward(dy, rois, x.shape, *args)
        lhs, rhs = np.vdot(y, dy), np.vdot(x, dx)
        assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs)), (lhs, rhs)


def test_autograd_gradient_is_the_kernel_backward():
    rng = np.random.default_rng(9)
    x = Tensor(rng.standard_normal((1, 2, 6, 6)).astype(np.float32), requires_grad=True)
    boxes = np.array([[0, 1.0, 1.0, 5.0, 4.0]], dtype=np.float32)
    roi_align(x, boxes, 2, 1.0, 2, True).sum().backward()
    want = compiled.roi_align_backward(np.ones((1, 2, 2, 2), np.float32), boxes, x.shape,
                                       (2, 2), 1.0, 2, True)
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, want)


# --------------------------------------------------------------------------------- threads
def test_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3, 40, 11, 13)).astype(np.float32)
    rois = make_boxes(rng, KINDS * 12, 3, 11, 13, 0.5).astype(np.float32)
    dy = rng.standard_normal((len(rois), 40, 4, 3)).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        edu_seg.set_num_threads(n)
        y = compiled.roi_align_forward(x, rois, (4, 3), 0.5, -1, True)
        dx = compiled.roi_align_backward(dy, rois, x.shape, (4, 3), 0.5, -1, True)
        p, arg = compiled.roi_pool_forward(x, rois, (4, 3), 0.5)
        dp = compiled.roi_pool_backward(dy, arg, rois, x.shape)
        results.append((y, dx, p, arg, dp))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------- torchvision, where it imports
def _torchvision_ops_problem():
    """None if torchvision's compiled RoI ops run here, else why not (checked once, outside
    hypothesis, whose examples must not skip one by one)."""
    try:
        import torch
        from torchvision import extension, ops
        if not extension._has_ops():      # the Python fallback compiles with inductor: slow
            return "torchvision is installed but its compiled C++ ops do not load"
        ops.roi_align(torch.zeros(1, 1, 2, 2), torch.zeros(1, 5), 1)
    except Exception as exc:  # not installed, or a build that does not match this PyTorch
        return f"torchvision's ops are not usable here ({type(exc).__name__}: {exc})"[:200]
    return None


_TORCHVISION_PROBLEM = _torchvision_ops_problem()


@pytest.mark.skipif(_TORCHVISION_PROBLEM is not None, reason=str(_TORCHVISION_PROBLEM))
@settings(max_examples=60, deadline=None)
@given(geometries)
def test_matches_torchvision(g):
    """The spec of record: torchvision's CPU kernels, forward and backward."""
    import torch
    from torchvision import ops
    x, rois, dy = _case(g)
    PH, PW, scale = g["PH"], g["PW"], g["scale"]
    tol = dict(rtol=1e-12, atol=1e-12) if x.dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    for op, kwargs, ours in [
            (ops.roi_align, dict(sampling_ratio=g["sampling_ratio"], aligned=g["aligned"]),
             lambda t: roi_align(t, rois, (PH, PW), scale, g["sampling_ratio"], g["aligned"])),
            (ops.roi_pool, {}, lambda t: roi_pool(t, rois, (PH, PW), scale))]:
        tx = torch.from_numpy(x.copy()).requires_grad_(True)
        ty = op(tx, torch.from_numpy(rois), (PH, PW), scale, **kwargs)
        ty.backward(torch.from_numpy(dy))
        ex = Tensor(x.copy(), requires_grad=True)
        ey = ours(ex)
        ey.backward(dy)
        np.testing.assert_allclose(ey.numpy(), ty.detach().numpy(), **tol)
        np.testing.assert_allclose(ex.grad, tx.grad.numpy(), **tol)


# ---------------------------------------------------------------------------------- errors
GOOD_X = np.zeros((2, 3, 5, 5))
GOOD_BOXES = [[0, 0, 0, 2, 2]]


@pytest.mark.parametrize("op", [roi_align, roi_pool])
@pytest.mark.parametrize("x, boxes, kwargs, error, match", [
    (GOOD_X, np.zeros((3, 4)), {}, ValueError, "no batch index"),
    (GOOD_X, np.zeros((3, 6)), {}, ValueError, r"shape \(K, 5\)"),
    (GOOD_X, np.zeros(5), {}, ValueError, r"shape \(K, 5\)"),
    (GOOD_X, [np.zeros((2, 5))], {}, ValueError, r"boxes\[0\] must have shape"),
    (GOOD_X, [np.zeros((1, 4))] * 3, {}, ValueError, "only N=2 images"),
    (GOOD_X, [[2, 0, 0, 1, 1]], {}, ValueError, r"batch index 2\.0"),
    (GOOD_X, [[-1, 0, 0, 1, 1]], {}, ValueError, "batch index"),
    (GOOD_X, [[0.5, 0, 0, 1, 1]], {}, ValueError, "must be an integer"),
    (GOOD_X, [[0, 0, np.nan, 1, 1]], {}, ValueError, "non-finite"),
    (GOOD_X, [[0, 0, 0, np.inf, 1]], {}, ValueError, "non-finite"),
    (GOOD_X, [[0, 0, 0, 1e9, 1]], {}, ValueError, "2\\*\\*24"),
    (GOOD_X, np.array([["a", "b", "c", "d", "e"]]), {}, TypeError, "real numbers"),
    (GOOD_X, GOOD_BOXES, {"output_size": 0}, ValueError, "output_size must be positive"),
    (GOOD_X, GOOD_BOXES, {"output_size": (2, -1)}, ValueError, "output_size must be positive"),
    (GOOD_X, GOOD_BOXES, {"output_size": 2.5}, TypeError, "output_size"),
    (GOOD_X, GOOD_BOXES, {"output_size": (1, 2, 3)}, TypeError, "output_size"),
    (GOOD_X, GOOD_BOXES, {"spatial_scale": 0.0}, ValueError, "spatial_scale"),
    (GOOD_X, GOOD_BOXES, {"spatial_scale": -0.5}, ValueError, "spatial_scale"),
    (GOOD_X, GOOD_BOXES, {"spatial_scale": float("nan")}, ValueError, "spatial_scale"),
    (GOOD_X, GOOD_BOXES, {"spatial_scale": "1/16"}, TypeError, "spatial_scale"),
    (np.zeros((3, 5, 5)), GOOD_BOXES, {}, ValueError, "4-D"),
    (np.zeros((1, 1, 0, 5)), GOOD_BOXES, {}, ValueError, "H, W >= 1"),
    (np.zeros((1, 1, 5, 5), dtype=np.int64), GOOD_BOXES, {}, TypeError, "float32 or float64"),
    (np.zeros((1, 1, 5, 5), dtype=np.float16), GOOD_BOXES, {}, TypeError, "float32 or float64"),
    ([[[[0.0]]]], GOOD_BOXES, {}, TypeError, "Tensor or an array"),
])
def test_bad_input_raises(op, x, boxes, kwargs, error, match):
    kwargs = {"output_size": 2, **kwargs}
    with pytest.raises(error, match=match):
        op(x, boxes, **kwargs)


@pytest.mark.parametrize("kwargs, match", [({"sampling_ratio": 1.5}, "sampling_ratio"),
                                           ({"sampling_ratio": True}, "sampling_ratio"),
                                           ({"aligned": 1}, "aligned")])
def test_roi_align_option_types(kwargs, match):
    with pytest.raises(TypeError, match=match):
        roi_align(GOOD_X, GOOD_BOXES, 2, **kwargs)
