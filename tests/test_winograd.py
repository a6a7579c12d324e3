"""Winograd F(2x2, 3x3): forward and weight gradient against the float64 reference on odd
shapes, the error bound, the filter transform, thread-count independence, and when conv2d
takes this path."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edu_seg import Tensor
from edu_seg._kernels import conv as cy
from edu_seg._kernels import winograd
from edu_seg.ops.conv import conv2d, conv_transpose2d
from edu_seg.reference import conv as ref

from helpers import assert_thread_count_independent

ONE = (1, 1)


def arrays(seed, N, C, C_out, H, W):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((C_out, C, 3, 3)) / np.sqrt(9 * C)   # outputs of order 1
    b = rng.standard_normal(C_out)
    return x, w, b


def relative_error(got, want):
    return np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)


@settings(max_examples=60, deadline=None)
@given(N=st.integers(1, 3), C=st.integers(1, 12), C_out=st.integers(1, 12),
       H=st.integers(1, 14), W=st.integers(1, 14), ph=st.integers(0, 3), pw=st.integers(0, 3),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_winograd_matches_the_float64_reference_within_its_error_bound(
        N, C, C_out, H, W, ph, pw, bias, seed):

    """Odd and even maps (a last tile half outside), every padding, 1x1 outputs: the float32
    result is within 1e-5 of the float64 reference relative to the output's scale."""
    if H + 2 * ph < 3 or W + 2 * pw < 3:
        return                                    # no output pixel
    x, w, b = arrays(seed, N, C, C_out, H, W)
    b = b if bias else None
    want = ref.conv2d_forward(x, w, b, ONE, (ph, pw), ONE, 1)
    got = winograd.winograd_conv3x3(x.astype(np.float32), w.astype(np.float32),
                                    None if b is None else b.astype(np.float32), (ph, pw))
    assert got.dtype == np.float32 and got.shape == want.shape
    assert relative_error(got, want) < 1e-5


@settings(max_examples=60, deadline=None)
@given(N=st.integers(1, 3), C=st.integers(1, 12), C_out=st.integers(1, 12),
       H=st.integers(1, 14), W=st.integers(1, 14), ph=st.integers(0, 3), pw=st.integers(0, 3),
       seed=st.integers(0, 2**16))
def test_winograd_weight_gradient_matches_the_float64_reference(N, C, C_out, H, W, ph, pw, seed):
    """dw = Gᵀ [Σ_tiles (A DY Aᵀ) ⊙ (Bᵀ D B)] G: odd maps (dy tiles half outside), paddings
    that put whole tiles in the padding, single-pixel outputs."""
    if H + 2 * ph < 3 or W + 2 * pw < 3:
        return
    x, w, _ = arrays(seed, N, C, C_out, H, W)
    dy = np.random.default_rng(seed + 1).standard_normal((N, C_out, H + 2 * ph - 2, W + 2 * pw - 2))
    want = ref.conv2d_backward_weight(dy, x, w.shape, ONE, (ph, pw), ONE, 1)
    got = winograd.winograd_conv3x3_backward_weight(dy.astype(np.float32), x.astype(np.float32),
                                                    (ph, pw))
    assert got.dtype == np.float32 and got.shape == want.shape
    assert relative_error(got, want) < 1e-5


@settings(max_examples=40, deadline=None)
@given(N=st.integers(1, 2), C=st.integers(1, 6), C_out=st.integers(1, 6),
       H=st.integers(1, 11), W=st.integers(1, 11), ph=st.integers(0, 3), pw=st.integers(0, 3),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_the_textbook_winograd_is_the_convolution(N, C, C_out, H, W, ph, pw, bias, seed):
    """The NumPy reference's conv2d_winograd (the transforms as matrices) equals the im2col
    convolution to float64 rounding."""
    if H + 2 * ph < 3 or W + 2 * pw < 3:
        return
    x, w, b = arrays(seed, N, C, C_out, H, W)
    b = b if bias else None
    np.testing.assert_allclose(ref.conv2d_winograd(x, w, b, (ph, pw)),
                               ref.conv2d_forward(x, w, b, ONE, (ph, pw), ONE, 1),
                               rtol=1e-12, atol=1e-12)


def test_error_bound_on_the_benchmark_geometry_and_against_im2col():
    """64 channels, 32x32: Winograd's float32 error stays below 1e-5 of the output's scale, and
    within a small factor of the direct (im2col) float32 sum's error on the same data."""
    x, w, b = arrays(0, 2, 64, 64, 32, 32)
    want = ref.conv2d_forward(x, w, b, ONE, ONE, ONE, 1)
    f32 = [a.astype(np.float32) for a in (x, w, b)]
    wino = relative_error(winograd.winograd_conv3x3(*f32, ONE), want)
    y_im2col = np.empty(want.shape, dtype=np.float32)
    cy._forward(*f32, y_im2col, 1, 1, 1, 1, 1, 1, 1)          # the im2col path, called directly
    direct = relative_error(y_im2col, want)
    assert wino < 1e-5
    assert wino < 10 * direct


def test_filter_transform_is_g_g_gt():
    G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    w = np.random.default_rng(1).standard_normal((5, 3, 3, 3)).astype(np.float32)
    U = winograd.transform_filters(w)
    assert U.shape == (16, 5, 3) and U.dtype == np.float32
    for o, c in [(0, 0), (4, 2), (2, 1)]:
        np.testing.assert_allclose(U[:, o, c].reshape(4, 4), G @ w[o, c] @ G.T, rtol=1e-6)


def test_winograd_is_thread_count_independent():
    """Forward and weight gradient (whose batch sum runs in chunks on several threads)."""
    x, w, b = (a.astype(np.float32) for a in arrays(2, 3, 16, 24, 21, 18))
    dy = np.random.default_rng(3).standard_normal((3, 24, 21, 18)).astype(np.float32)
    assert_thread_count_independent(lambda: (
        winograd.winograd_conv3x3(x, w, b, ONE),
        winograd.winograd_conv3x3_backward_weight(dy, x, ONE)))


@pytest.mark.parametrize("dtype, C, C_out, H, kernel, stride, dilation, groups, expected", [
    (np.float32, 16, 16, 16, (3, 3), ONE, ONE, 1, True),
    (np.float64, 16, 16, 16, (3, 3), ONE, ONE, 1, False),     # float64 keeps im2col
    (np.float32, 3, 16, 64, (3, 3), ONE, ONE, 1, False),      # a stem: too few channels
    (np.float32, 64, 64, 8, (3, 3), ONE, ONE, 1, False),      # 64 output pixels: too small
    (np.float32, 16, 16, 16, (3, 3), (2, 2), ONE, 1, False),
    (np.float32, 16, 16, 16, (3, 3), ONE, (2, 2), 1, False),
    (np.float32, 16, 16, 16, (3, 3), ONE, ONE, 2, False),
    (np.float32, 16, 16, 16, (5, 5), ONE, ONE, 1, False),
])
def test_when_conv2d_runs_as_winograd(dtype, C, C_out, H, kernel, stride, dilation, groups,
                                      expected):
    assert cy._winograd_applies(dtype, C, C_out, kernel, stride, dilation, groups,
                                H * H) == expected


@pytest.mark.parametrize("padding", [(0, 0), (1, 1), (2, 1), (0, 2)])
def test_conv2d_forward_and_gradients_through_winograd(padding, monkeypatch):
    """The dispatch: conv2d's forward, its input gradient (a conv of dy with the flipped,
    transposed filters) and its weight gradient all run Winograd here, and agree with the
    float64 reference."""
    calls = []
    for name in ("_winograd_conv3x3", "_winograd_conv3x3_backward_weight"):
        real = getattr(cy, name)
        monkeypatch.setattr(cy, name, lambda *a, real=real: calls.append(1) or real(*a))
    x, w, b = arrays(3, 2, 24, 24, 19, 20)    # >= 256 output pixels, 24 x 24 channels
    args = (ONE, padding, ONE, 1)
    y = cy.conv2d_forward(*(a.astype(np.float32) for a in (x, w, b)), *args)
    want = ref.conv2d_forward(x, w, b, *args)
    dy = np.random.default_rng(4).standard_normal(want.shape)
    dx = cy.conv2d_backward_input(dy.astype(np.float32), w.astype(np.float32), x.shape, *args)
    dw = cy.conv2d_backward_weight(dy.astype(np.float32), x.astype(np.float32), w.shape, *args)
    assert len(calls) == 3
    assert relative_error(y, want) < 1e-5
    assert relative_error(dx, ref.conv2d_backward_input(dy, w, x.shape, *args)) < 1e-5
    assert relative_error(dw, ref.conv2d_backward_weight(dy, x, w.shape, *args)) < 1e-5


def test_training_gradients_through_winograd_match_float64():
    """Through the autograd: conv2d in float32 (Winograd forward and input gradient) against the
    same graph in float64 (im2col)."""
    x, w, b = arrays(5, 2, 8, 10, 16, 16)
    grads = {}
    for dtype in (np.float32, np.float64):
        xt = Tensor(x.astype(dtype), requires_grad=True)
        wt = Tensor(w.astype(dtype), requires_grad=True)
        y = conv2d(xt, wt, Tensor(b.astype(dtype)), 1, 1)
        (y * y).sum().backward()
        grads[dtype] = (y.data, xt.grad, wt.grad)
    for got, want in zip(grads[np.float32], grads[np.float64]):
        assert relative_error(got, want) < 1e-5


def test_transposed_stride_1_conv_through_winograd():
    """conv_transpose2d with a 3x3 stride-1 kernel is an input gradient, so it runs Winograd."""
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((2, 10, 16, 15)), rng.standard_normal((10, 12, 3, 3)) / 9, \
        rng.standard_normal(12)
    want = ref.conv_transpose2d_forward(x, w, b, ONE, ONE, (0, 0), ONE, 1)
    got = conv_transpose2d(Tensor(x.astype(np.float32)), Tensor(w.astype(np.float32)),
                           Tensor(b.astype(np.float32)), 1, 1).data
    assert relative_error(got, want) < 1e-5
