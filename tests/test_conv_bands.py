"""Convolutions computed band by band where the kernel reads mostly padding (a dilated kernel on
a small map): the bands, when they are used, and equality with the reference for the forward
pass, both gradients and the transposed conv, including outputs that only see padding."""
import numpy as np
import pytest

from edu_seg._kernels import conv as cy
from edu_seg.reference import conv as ref

from helpers import assert_thread_count_independent

TIGHT = dict(rtol=1e-11, atol=1e-11)


def test_bands_of_a_dilated_kernel_on_a_small_map():
    # 3 taps, dilation 4, padding 4 on 8 positions: tap 0 reads o - 4, tap 2 reads o + 4
    assert cy._padding_bands(8, 8, 3, 1, 4, 4) == ([(0, 4, 1, 3), (4, 8, 0, 2)], 2 / 3)
    # an ordinary 3x3 'same' conv: only the border rows lose a tap
    bands, fraction = cy._padding_bands(32, 32, 3, 1, 1, 1)
    assert bands == [(0, 1, 1, 3), (1, 31, 0, 3), (31, 32, 0, 2)]
    assert fraction == pytest.approx(94 / 96)


@pytest.mark.parametrize("x_hw, kernel, padding, dilation, banded", [
    ((16, 16), (3, 3), (8, 8), (8, 8), True),      # 4 of 9 taps inside: rectangles of 8x8
    ((8, 8), (3, 3), (4, 4), (4, 4), False),       # the same, but rectangles of 4x4: too thin
    ((32, 32), (3, 3), (1, 1), (1, 1), False),     # an ordinary conv: nearly all taps inside
    ((10, 10), (1, 1), (3, 3), (1, 1), True),      # padding only: the border sees no tap
])
def test_when_a_conv_runs_band_by_band(x_hw, kernel, padding, dilation, banded):
    y_hw = tuple((i + 2 * p - d * (k - 1) - 1) + 1 for i, k, p, d in zip(x_hw, kernel, padding,
                                                                          dilation))
    rectangles = cy._banded_rectangles(x_hw, y_hw, kernel, (1, 1), padding, dilation)
    assert (rectangles is not None) == banded


CASES = [  # x shape, w shape, stride, padding, dilation, groups
    ((2, 6, 16, 16), (5, 6, 3, 3), (1, 1), (8, 8), (8, 8), 1),
    ((2, 6, 16, 18), (6, 3, 3, 3), (1, 1), (8, 9), (8, 9), 2),      # grouped, odd width
    ((2, 4, 16, 16), (4, 1, 3, 3), (1, 1), (8, 8), (8, 8), 4),      # depthwise
    ((2, 3, 10, 10), (4, 3, 1, 1), (1, 1), (3, 3), (1, 1), 1),      # border outputs: bias only
    ((1, 3, 48, 48), (4, 3, 3, 3), (2, 2), (24, 24), (24, 24), 1),  # strided
]


@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", CASES)
def test_banded_conv_equals_the_reference(xs, ws, stride, padding, dilation, groups):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    args = (stride, padding, dilation, groups)
    y = ref.conv2d_forward(x, w, b, *args)
    assert cy._banded_rectangles(xs[2:], y.shape[2:], ws[2:], stride, padding, dilation)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(cy.conv2d_forward(x, w, b, *args), y, **TIGHT)
    np.testing.assert_allclose(cy.conv2d_backward_input(dy, w, xs, *args),
                               ref.conv2d_backward_input(dy, w, xs, *args), **TIGHT)
    np.testing.assert_allclose(cy.conv2d_backward_weight(dy, x, ws, *args),
                               ref.conv2d_backward_weight(dy, x, ws, *args), **TIGHT)


def test_banded_transposed_conv_with_bias_and_output_padding():
    """The transposed conv is the input gradient: its band-by-band form adds the bias to every
    output, including the row and column that output_padding adds and no input reaches."""
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 4, 16, 16)), rng.standard_normal((4, 3, 3, 3)), \
        rng.standard_normal(3)
    args = ((2, 2), (16, 16), (1, 1), (16, 16), 1)
    want = ref.conv_transpose2d_forward(x, w, b, *args)
    assert cy._banded_rectangles(want.shape[2:], x.shape[2:], (3, 3), (2, 2), (16, 16),
                                 (16, 16))
    np.testing.assert_allclose(cy.conv_transpose2d_forward(x, w, b, *args), want, **TIGHT)


def test_banded_conv_is_thread_count_independent():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 16, 16, 16)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((4, 16, 16, 16)).astype(np.float32)
    args = ((1, 1), (8, 8), (8, 8), 1)
    assert_thread_count_independent(lambda: (
        cy.conv2d_forward(x, w, None, *args), cy.conv2d_backward_input(dy, w, x.shape, *args),
        cy.conv2d_backward_weight(dy, x, w.shape, *args)))
