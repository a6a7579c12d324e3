"""Resampling: bilinear and nearest interpolate, pixel shuffle / unshuffle.

Checks, per the issue: Cython == NumPy reference on hypothesis-drawn sizes and scale factors
(both align_corners rules); gradcheck of every op; the adjoint identity (every op here is
linear); unshuffle∘shuffle = identity; thread-count independence; every documented error; and
PyTorch as an extra oracle where installed. (conftest.py restores backend and threads.)
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edu_seg
from edu_seg import Tensor, gradcheck
from edu_seg._kernels import resample as cy
from edu_seg.ops.resample import interpolate, pixel_shuffle, pixel_unshuffle
from edu_seg.reference import resample as ref

BACKENDS = ["numpy", "cython"]


def _x(shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _close(a, b, dtype=np.float64):
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@st.composite
def resizes(draw):
    """(x shape, out_hw, scales): an explicit size, or a scale factor in [0.5, 4]."""
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    H, W = draw(st.integers(1, 17)), draw(st.integers(1, 17))
    if draw(st.booleans()):
        out_hw = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
        return (N, C, H, W), out_hw, None
    scales = tuple(draw(st.floats(0.5, 4.0)) for _ in range(2))
    out_hw = (math.floor(H * scales[0]), math.floor(W * scales[1]))
    if min(out_hw) < 1:  # a scale < 1 on a 1-pixel input: use an explicit size instead
        return (N, C, H, W), (max(out_hw[0], 1), max(out_hw[1], 1)), None
    return (N, C, H, W), out_hw, scales


# ================================================================================== tables
@given(n_in=st.integers(1, 17), n_out=st.integers(1, 40), align=st.booleans(),
       scale=st.one_of(st.none(), st.floats(0.5, 4.0)))
def test_source_tables_of_both_backends_agree(n_in, n_out, align, scale):
    if scale is not None:  # the size a scale factor gives
        n_out = max(math.floor(n_in * scale), 1)
    # Compare the (n_out, n_in) interpolation matrices, not the taps: where the source
    # coordinate is an integer k, rounding may give (k − 1, weight 1 − 1e-16) in one backend and
    # (k, weight 0) in the other (the C compiler fuses a multiply-add), the same matrix.
    matrices = []
    for K in (ref, cy):
        i0, i1, lam = K.linear_source_taps(n_in, n_out, align, scale)
        assert ((0 <= i0) & (i0 <= i1) & (i1 < n_in)).all() and ((0 <= lam) & (lam <= 1)).all()
        A = np.zeros((n_out, n_in))
        np.add.at(A, (np.arange(n_out), i0), 1 - lam)
        np.add.at(A, (np.arange(n_out), i1), lam)
        matrices.append(A)
    np.testing.assert_allclose(matrices[0], matrices[1], rtol=0, atol=1e-14)
    np.testing.assert_allclose(matrices[0].sum(axis=1), 1.0, rtol=1e-14)  # rows average
    assert np.array_equal(ref.nearest_source_index(n_in, n_out, scale),
                          cy.nearest_source_index(n_in, n_out, scale))


def test_bilinear_by_hand():
    x = np.array([[[[0.0, 1.0]]]])
    # align_corners=False: output pixel centres at (o + ½)/2 − ½ = −¼, ¼, ¾, 1¼ input pixels,
    # clamped to [0, 1]: weights 0, ¼, ¾, 1.
    assert interpolate(x, scale_factor=2).numpy()[0, 0, 0].tolist() == [0.0, 0.25, 0.75, 1.0]
    y = interpolate(x, size=(1, 4), align_corners=True).numpy()[0, 0, 0]
    np.testing.assert_allclose(y, [0.0, 1 / 3, 2 / 3, 1.0], rtol=1e-15)
    # Nearest (legacy rule): output o copies input ⌊o·2/4⌋ = 0, 0, 1, 1.
    assert interpolate(x, size=(1, 4), mode="nearest").numpy()[0, 0, 0].tolist() == \
        [0.0, 0.0, 1.0, 1.0]


def test_scale_factor_is_ignored_where_pytorch_takes_a_fast_path():
    x = _x((1, 2, 1, 2))                        # 2 pixels × 1.25 → 2 pixels: PyTorch copies
    for mode in ("bilinear", "nearest"):
        assert np.array_equal(interpolate(x, scale_factor=(1.0, 1.25), mode=mode).numpy(), x)
    # Nearest, 2 pixels × 2.25 → 4 = 2·2: output o copies o // 2, not ⌊o / 2.25⌋.
    y = interpolate(x, scale_factor=(1.0, 2.25), mode="nearest").numpy()
    assert np.array_equal(y, x[:, :, :, [0, 0, 1, 1]])


def test_scale_factor_steps_by_one_over_scale_not_in_over_out():
    # 5 pixels × 1.5 → 7 outputs; the step is 1/1.5, not 5/7 (PyTorch's rule), so the two
    # calls differ although they produce the same size.
    x = _x((1, 1, 1, 5))
    by_scale = interpolate(x, scale_factor=(1.0, 1.5)).numpy()
    by_size = interpolate(x, size=(1, 7)).numpy()
    assert by_scale.shape == by_size.shape == (1, 1, 1, 7)
    assert not np.allclose(by_scale, by_size)


# ======================================================================= Cython == reference
@given(geom=resizes(), align=st.booleans(), dtype=st.sampled_from([np.float64, np.float32]))
def test_bilinear_cython_matches_reference(geom, align, dtype):
    shape, out_hw, scales = geom
    x = _x(shape, dtype)
    y_ref = ref.interpolate_bilinear_forward(x, out_hw, align, scales)
    y_cy = cy.interpolate_bilinear_forward(x, out_hw, align, scales)
    assert y_cy.dtype == dtype and y_cy.shape == shape[:2] + out_hw
    _close(y_ref, y_cy, dtype)
    dy = _x(y_ref.shape, dtype, seed=1)
    _close(ref.interpolate_bilinear_backward(dy, shape[2:], align, scales),
           cy.interpolate_bilinear_backward(dy, shape[2:], align, scales), dtype)


@given(geom=resizes(), dtype=st.sampled_from([np.float64, np.float32]))
def test_nearest_cython_matches_reference(geom, dtype):
    shape, out_hw, scales = geom
    x = _x(shape, dtype)
    assert np.array_equal(ref.interpolate_nearest_forward(x, out_hw, scales),
                          cy.interpolate_nearest_forward(x, out_hw, scales))
    dy = _x(shape[:2] + out_hw, dtype, seed=1)
    _close(ref.interpolate_nearest_backward(dy, shape[2:], scales),
           cy.interpolate_nearest_backward(dy, shape[2:], scales), dtype)


# ================================================================================ gradients
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", [dict(scale_factor=2), dict(size=(7, 3), align_corners=True),
                                dict(scale_factor=(0.6, 1.7)), dict(size=(4, 9), mode="nearest"),
                                dict(scale_factor=(2.5, 0.5), mode="nearest")])
def test_gradcheck_interpolate(backend, kw):
    edu_seg.set_backend(backend)
    x = Tensor(_x((1, 2, 5, 4)), requires_grad=True)
    gradcheck(lambda t: interpolate(t, **kw), [x])


def test_gradcheck_pixel_shuffle_and_unshuffle():
    x = Tensor(_x((1, 8, 2, 3)), requires_grad=True)
    gradcheck(lambda t: pixel_shuffle(t, 2), [x])
    x = Tensor(_x((1, 2, 4, 6)), requires_grad=True)
    gradcheck(lambda t: pixel_unshuffle(t, 2), [x])


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_ops_take_a_broadcast_float64_gradient(backend):
    """Sum's backward hands over a read-only broadcast view; a loss may be float64."""
    edu_seg.set_backend(backend)
    x64 = _x((2, 8, 5, 4))
    for op in (lambda t: interpolate(t, scale_factor=2.5), lambda t: pixel_shuffle(t, 2),
               lambda t: interpolate(t, size=(3, 9), mode="nearest")):
        grads = []
        for dtype in (np.float32, np.float64):
            x = Tensor(x64.astype(dtype), requires_grad=True)
            y = op(x)
            assert y.dtype == dtype
            (y * Tensor(np.full(y.shape, 0.5))).sum().backward()
            assert x.grad.dtype == dtype
            grads.append(x.grad)
        np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5)


# ========================================================================== adjoint identity
def _adjoint_gap(forward, backward, x_shape, y_shape):
    """|<A x, v> − <x, Aᵀ v>| relative to the size of the terms."""
    x, v = _x(x_shape, seed=2), _x(y_shape, seed=3)
    lhs, rhs = np.vdot(forward(x), v), np.vdot(x, backward(v))
    return abs(lhs - rhs) / max(abs(lhs), 1.0)


@settings(max_examples=25)
@given(geom=resizes(), align=st.booleans())
def test_resize_backwards_are_the_adjoints(geom, align):
    shape, out_hw, scales = geom
    y_shape = shape[:2] + out_hw
    for K in (ref, cy):
        assert _adjoint_gap(
            lambda x: K.interpolate_bilinear_forward(x, out_hw, align, scales),
            lambda v: K.interpolate_bilinear_backward(v, shape[2:], align, scales),
            shape, y_shape) < 1e-12
        assert _adjoint_gap(
            lambda x: K.interpolate_nearest_forward(x, out_hw, scales),
            lambda v: K.interpolate_nearest_backward(v, shape[2:], scales),
            shape, y_shape) < 1e-12


@pytest.mark.parametrize("r", [1, 2, 3])
def test_pixel_shuffle_adjoint_and_inverse(r):
    x = _x((2, 2 * r * r, 3, 4))
    y = pixel_shuffle(x, r).numpy()
    assert y.shape == (2, 2, 3 * r, 4 * r) and y.flags.c_contiguous
    # The defining formula, element by element.
    for c, i, j, h, w in [(1, r - 1, 0, 2, 3), (0, 0, r - 1, 1, 0)]:
        assert y[1, c, h * r + i, w * r + j] == x[1, c * r * r + i * r + j, h, w]
    assert np.array_equal(pixel_unshuffle(y, r).numpy(), x)
    assert np.array_equal(pixel_shuffle(pixel_unshuffle(y, r), r).numpy(), y)
    v = _x(y.shape, seed=1)  # a permutation: its adjoint is its inverse
    assert abs(np.vdot(y, v) - np.vdot(x, pixel_unshuffle(v, r).numpy())) < 1e-12


# ======================================================================== thread independence
def test_results_do_not_depend_on_the_thread_count():
    x = _x((4, 8, 37, 29), np.float32)
    assert x.size >= cy.GRAIN  # smaller calls run on one thread whatever the setting
    results = {}
    for threads in (1, 2):
        edu_seg.set_num_threads(threads)
        out = {}
        for align in (False, True):
            y = cy.interpolate_bilinear_forward(x, (61, 40), align, None)
            out[f"bilinear{align}"] = y
            out[f"bilinear_bwd{align}"] = cy.interpolate_bilinear_backward(y, (37, 29), align,
                                                                           None)
        y = cy.interpolate_nearest_forward(x, (81, 50), (2.2, 1.75))
        out["nearest"] = y
        out["nearest_bwd"] = cy.interpolate_nearest_backward(y, (37, 29), (2.2, 1.75))
        y = cy.interpolate_bilinear_forward(x, (18, 14), False, (0.5, 0.5))
        out["down_bwd"] = cy.interpolate_bilinear_backward(y, (37, 29), False, (0.5, 0.5))
        results[threads] = out
    for name in results[1]:
        assert results[1][name].tobytes() == results[2][name].tobytes(), name


# ============================================================================= PyTorch oracle
@settings(max_examples=40)
@given(geom=resizes(), mode=st.sampled_from(["bilinear", "nearest"]), align=st.booleans())
def test_interpolate_matches_pytorch(geom, mode, align):
    torch = pytest.importorskip("torch")
    shape, out_hw, scales = geom
    kw = dict(size=out_hw) if scales is None else dict(scale_factor=scales)
    kw["mode"] = mode
    if mode == "bilinear":
        kw["align_corners"] = align
    x = _x(shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.interpolate(xt, **kw)
    dy = _x(yt.shape, seed=1)
    yt.backward(torch.tensor(dy))
    xe = Tensor(x, requires_grad=True)
    y = interpolate(xe, **kw)
    y.backward(dy)
    assert y.shape == tuple(yt.shape)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(xe.grad, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@settings(max_examples=20)
@given(geom=resizes())
def test_nearest_matches_pytorch_in_float32(geom):
    """PyTorch computes the nearest index in float32; so do we, to land on the same pixel."""
    torch = pytest.importorskip("torch")
    shape, out_hw, scales = geom
    kw = dict(size=out_hw) if scales is None else dict(scale_factor=scales)
    x = _x(shape, np.float32)
    yt = torch.nn.functional.interpolate(torch.tensor(x), mode="nearest", **kw)
    assert np.array_equal(interpolate(x, mode="nearest", **kw).numpy(), yt.numpy())


def test_pixel_shuffle_matches_pytorch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = _x((2, 18, 3, 5))
    assert np.array_equal(pixel_shuffle(x, 3).numpy(), F.pixel_shuffle(torch.tensor(x), 3))
    x = _x((2, 3, 6, 4))
    assert np.array_equal(pixel_unshuffle(x, 2).numpy(), F.pixel_unshuffle(torch.tensor(x), 2))


# ==================================================================================== errors
def test_interpolate_errors():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"interpolate: give exactly one of size and "
                                         r"scale_factor, got size=None and scale_factor=None"):
        interpolate(x)
    with pytest.raises(ValueError, match=r"interpolate: give exactly one of size and "
                                         r"scale_factor, got size=8 and scale_factor=2"):
        interpolate(x, size=8, scale_factor=2)
    with pytest.raises(ValueError, match=r"interpolate: align_corners=False is only for "
                                         r"mode='bilinear'"):
        interpolate(x, scale_factor=2, mode="nearest", align_corners=False)
    with pytest.raises(ValueError, match=r"interpolate: mode must be 'bilinear' or 'nearest', "
                                         r"got 'bicubic'"):
        interpolate(x, scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match=r"interpolate: size must be >= 1, got \(0, 3\)"):
        interpolate(x, size=(0, 3))
    with pytest.raises(ValueError, match=r"interpolate: scale_factor must be positive and "
                                         r"finite, got -2"):
        interpolate(x, scale_factor=-2)
    with pytest.raises(ValueError, match=r"interpolate: scale_factor must be positive and "
                                         r"finite, got inf"):
        interpolate(x, scale_factor=float("inf"))
    with pytest.raises(ValueError, match=r"interpolate: scale_factor=0.2 turns the 4x4 input "
                                         r"into an empty 0x0 output"):
        interpolate(x, scale_factor=0.2)
    with pytest.raises(TypeError, match=r"interpolate: size must be an int or a pair of ints, "
                                        r"got 2.5"):
        interpolate(x, size=2.5)
    with pytest.raises(TypeError, match=r"interpolate: scale_factor must be a number or a pair "
                                        r"of numbers, got '2'"):
        interpolate(x, scale_factor="2")
    with pytest.raises(TypeError, match=r"interpolate: x must be float32 or float64, got dtype "
                                        r"uint8"):
        interpolate(x.astype(np.uint8), scale_factor=2)
    with pytest.raises(ValueError, match=r"interpolate: x must be 4-D \(N, C, H, W\), got shape "
                                         r"\(4, 4\)"):
        interpolate(x[0, 0], scale_factor=2)


def test_pixel_shuffle_errors():
    with pytest.raises(ValueError, match=r"pixel_shuffle: x has 6 channels, which "
                                         r"upscale_factor=2 cannot split: they must be "
                                         r"divisible by r² = 4"):
        pixel_shuffle(np.zeros((1, 6, 2, 2)), 2)
    with pytest.raises(ValueError, match=r"pixel_shuffle: upscale_factor must be positive, got 0"):
        pixel_shuffle(np.zeros((1, 4, 2, 2)), 0)
    with pytest.raises(TypeError, match=r"pixel_shuffle: upscale_factor must be an int, got 2.0"):
        pixel_shuffle(np.zeros((1, 4, 2, 2)), 2.0)
    with pytest.raises(ValueError, match=r"pixel_unshuffle: x is 4x5, which downscale_factor=2 "
                                         r"cannot split"):
        pixel_unshuffle(np.zeros((1, 1, 4, 5)), 2)
    with pytest.raises(TypeError, match=r"pixel_unshuffle: x must be float32 or float64"):
        pixel_unshuffle(np.zeros((1, 1, 4, 4), dtype=np.int32), 2)
    with pytest.raises(ValueError, match=r"pixel_shuffle: x must be 4-D"):
        pixel_shuffle(np.zeros((4, 2, 2)), 2)
