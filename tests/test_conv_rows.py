"""Convolutions on small maps, channels last, one product per tap over gathered rows
(``kernels/conv_rows.h``): forward and input gradient against the float64 reference on odd
geometries (channel counts that leave partial panels, strides, dilations, paddings larger
than the kernel, non-square kernels), the transposed conv with bias, thread-count
independence, and when conv2d takes this path."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edu_seg._kernels import conv as cy
from edu_seg.reference import conv as ref

from helpers import assert_thread_count_independent

ONE = (1, 1)


def relative_error(got, want):
    return np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)


def arrays(seed, N, C, C_out, H, W, KH, KW):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((C_out, C, KH, KW)) / np.sqrt(C * KH * KW)  # outputs of order 1
    return x, w, rng.standard_normal(C_out)


geometry = dict(
    N=st.integers(1, 3), C=st.integers(32, 50), C_out=st.integers(32, 50),
    H=st.integers(1, 8), W=st.integers(1, 8), KH=st.integers(1, 4), KW=st.integers(1, 4),
    padding=st.tuples(st.integers(0, 5), st.integers(0, 5)),
    dilation=st.tuples(st.integers(1, 4), st.integers(1, 4)), seed=st.integers(0, 2**16))


def output_size(H, W, KH, KW, stride, padding, dilation):
    """The output's (OH, OW); hypothesis skips the geometries that do not take the rows path:
    no output, more than 64 output pixels, a 1x1 kernel, or a conv that runs band by band."""
    OH, OW = (max((i + 2 * p - d * (k - 1) - 1) // s + 1, 0) for i, k, s, p, d in
              zip((H, W), (KH, KW), stride, padding, dilation))
    assume(0 < OH * OW <= cy.CHANNELS_LAST_MAX_PIXELS and KH * KW > 1)
    assume(cy._banded_rectangles((H, W), (OH, OW), (KH, KW), stride, padding, dilation) is None)
    return OH, OW


@settings(max_examples=60, deadline=None)
@given(stride=st.tuples(st.integers(1, 2), st.integers(1, 2)), bias=st.booleans(), **geometry)
def test_forward_matches_the_float64_reference(N, C, C_out, H, W, KH, KW, stride, padding,
                                               dilation, bias, seed):
    OH, OW = output_size(H, W, KH, KW, stride, padding, dilation)
    x, w, b = arrays(seed, N, C, C_out, H, W, KH, KW)
    b = b if bias else None
    assert cy._channels_last_applies(np.dtype(np.float32), C, C_out, (KH, KW), 1, OH * OW)
    want = ref.conv2d_forward(x, w, b, stride, padding, dilation, 1)
    got = cy.conv2d_forward(x.astype(np.float32), w.astype(np.float32),
                            None if b is None else b.astype(np.float32), stride, padding,
                            dilation, 1)
    assert got.dtype == np.float32 and got.shape == want.shape and got.flags.c_contiguous
    assert relative_error(got, want) < 1e-5


@settings(max_examples=60, deadline=None)
@given(**geometry)
def test_input_gradient_matches_the_float64_reference(N, C, C_out, H, W, KH, KW, padding,
                                                      dilation, seed):
    """Stride 1: dx is the conv of dy with the flipped filters and padding d(K-1) - p, which is
    negative when the conv's padding exceeds d(K-1)."""
    OH, OW = output_size(H, W, KH, KW, ONE, padding, dilation)
    x, w, _ = arrays(seed, N, C, C_out, H, W, KH, KW)
    dy = np.random.default_rng(seed + 1).standard_normal((N, C_out, OH, OW))
    want = ref.conv2d_backward_input(dy, w, x.shape, ONE, padding, dilation, 1)
    got = cy.conv2d_backward_input(dy.astype(np.float32), w.astype(np.float32), x.shape, ONE,
                                   padding, dilation, 1)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert relative_error(got, want) < 1e-5


@settings(max_examples=60, deadline=None)
@given(stride=st.tuples(st.integers(1, 2), st.integers(1, 2)), **geometry)
def test_weight_gradient_matches_the_float64_reference(N, C, C_out, H, W, KH, KW, stride,
                                                       padding, dilation, seed):
    """Taps that no output pixel sees inside the input get a zero gradient."""
    OH, OW = output_size(H, W, KH, KW, stride, padding, dilation)
    x, w, _ = arrays(seed, N, C, C_out, H, W, KH, KW)
    dy = np.random.default_rng(seed + 1).standard_normal((N, C_out, OH, OW))
    want = ref.conv2d_backward_weight(dy, x, w.shape, stride, padding, dilation, 1)
    got = cy.conv2d_backward_weight(dy.astype(np.float32), x.astype(np.float32), w.shape,
                                    stride, padding, dilation, 1)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert relative_error(got, want) < 1e-5


def test_transposed_conv_with_bias_through_the_rows():
    """conv_transpose2d is the input gradient plus a bias on every output pixel; with
    output_padding its output is one larger than the flipped conv gives, so it keeps im2col."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 40, 4, 4))
    w = rng.standard_normal((40, 36, 3, 3)) / 20
    b = rng.standard_normal(36)
    for stride, padding, output_padding, dilation in [(ONE, ONE, (0, 0), ONE),
                                                      (ONE, (2, 1), (0, 0), (2, 1)),
                                                      (ONE, ONE, (1, 1), (2, 2))]:
        want = ref.conv_transpose2d_forward(x, w, b, stride, padding, output_padding, dilation,
                                            1)
        got = cy.conv_transpose2d_forward(x.astype(np.float32), w.astype(np.float32),
                                          b.astype(np.float32), stride, padding,
                                          output_padding, dilation, 1)
        assert relative_error(got, want) < 1e-5


def test_rows_conv_is_thread_count_independent():
    """The items split pixels and, with few pixel blocks, output channels; each sums its taps
    in the same order whatever thread runs it."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 72, 6, 7)).astype(np.float32)
    w = rng.standard_normal((80, 72, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((5, 80, 6, 7)).astype(np.float32)
    args = (ONE, (2, 2), (2, 2), 1)
    assert_thread_count_independent(lambda: (
        cy.conv2d_forward(x, w, None, *args), cy.conv2d_backward_input(dy, w, x.shape, *args),
        cy.conv2d_backward_weight(dy, x, w.shape, *args)))


def test_a_batch_without_samples():
    x = np.zeros((0, 64, 4, 4), dtype=np.float32)
    w = np.ones((64, 64, 3, 3), dtype=np.float32)
    assert cy.conv2d_forward(x, w, None, ONE, ONE, ONE, 1).shape == (0, 64, 4, 4)
    assert cy.conv2d_backward_input(x, w, x.shape, ONE, ONE, ONE, 1).shape == (0, 64, 4, 4)
    np.testing.assert_array_equal(cy.conv2d_backward_weight(x, x, w.shape, ONE, ONE, ONE, 1), 0)


@pytest.mark.parametrize("dtype, C, C_out, kernel, groups, pixels, expected", [
    (np.float32, 64, 64, (3, 3), 1, 64, True),       # 8x8
    (np.float32, 512, 512, (3, 3), 1, 4, True),      # 2x2
    (np.float32, 64, 64, (1, 3), 1, 64, True),
    (np.float32, 64, 64, (3, 3), 1, 65, False),      # larger maps keep im2col or Winograd
    (np.float64, 64, 64, (3, 3), 1, 64, False),      # float64 keeps im2col
    (np.float32, 16, 64, (3, 3), 1, 64, False),      # too few input channels
    (np.float32, 64, 16, (3, 3), 1, 64, False),      # too few output channels
    (np.float32, 64, 64, (3, 3), 2, 64, False),      # grouped
    (np.float32, 64, 64, (1, 1), 1, 64, False),      # 1x1: a plain GEMM already
])
def test_when_a_conv_runs_on_rows(dtype, C, C_out, kernel, groups, pixels, expected):
    assert cy._channels_last_applies(np.dtype(dtype), C, C_out, kernel, groups,
                                     pixels) == expected


def test_conv2d_and_its_input_gradient_run_on_rows(monkeypatch):
    """The dispatch: a 3x3 conv of 64 channels on 8x8 maps, dilation 4 (56% of its taps in the
    padding), runs forward, input gradient and weight gradient on rows; with stride 2 the input
    gradient does not (a strided conv's input gradient is no plain conv of dy)."""
    calls = []
    real, real_weight = cy._conv_rows, cy._conv_rows_weight
    monkeypatch.setattr(cy, "_conv_rows", lambda *a: calls.append(a[-1]) or real(*a))
    monkeypatch.setattr(cy, "_conv_rows_weight",
                        lambda *a: calls.append("weight") or real_weight(*a))
    x, w, b = arrays(5, 2, 64, 64, 8, 8, 3, 3)
    dy = np.random.default_rng(6).standard_normal((2, 64, 8, 8))
    for stride, expected_calls in ((ONE, [False, True, "weight"]), ((2, 2), [False, "weight"])):
        calls.clear()
        args = (stride, (4, 4), (4, 4), 1)
        want = ref.conv2d_forward(x, w, b, *args)
        y = cy.conv2d_forward(*(a.astype(np.float32) for a in (x, w, b)), *args)
        g = dy[:, :, :want.shape[2], :want.shape[3]]
        dx = cy.conv2d_backward_input(g.astype(np.float32), w.astype(np.float32), x.shape, *args)
        dw = cy.conv2d_backward_weight(g.astype(np.float32), x.astype(np.float32), w.shape,
                                       *args)
        assert calls == expected_calls
        assert relative_error(y, want) < 1e-5
        assert relative_error(dx, ref.conv2d_backward_input(g, w, x.shape, *args)) < 1e-5
        assert relative_error(dw, ref.conv2d_backward_weight(g, x, w.shape, *args)) < 1e-5
