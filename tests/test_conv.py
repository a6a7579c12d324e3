"""Convolution family: kernels against the reference and the naive loop, gradients, adjoints,
the three views of the transposed conv, output sizes, thread independence, and every error."""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import edu_seg
from edu_seg import Tensor, gradcheck
from edu_seg._kernels import conv as cy
from edu_seg.ops import conv as ops
from edu_seg.ops.conv import (conv2d, conv2d_output_size, conv_transpose2d,
                              conv_transpose2d_output_size)
from edu_seg.reference import conv as ref

from helpers import assert_thread_count_independent

BACKENDS = {"cython": cy, "numpy": ref}
TIGHT = dict(rtol=1e-11, atol=1e-11)   # float64, same maths, different summation order


def rand(rng, *shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def pair(v):
    return v if isinstance(v, tuple) else (v, v)


def conv_size(i, k, s, p, d):
    """The spec's formula, written out independently of the library."""
    return math.floor((i + 2 * p - d * (k - 1) - 1) / s) + 1


def tconv_size(i, k, s, p, q, d):
    return (i - 1) * s - 2 * p + d * (k - 1) + q + 1


# ---------------------------------------------------------------------- hypothesis geometry
pairs = lambda lo, hi: st.tuples(st.integers(lo, hi), st.integers(lo, hi))  # noqa: E731


@st.composite
def geometries(draw):
    """N, C ∈ [1, 5]; H, W ∈ [1, 13]; KH, KW ∈ [1, 5]; stride, dilation ∈ [1, 3]; padding ∈
    [0, 3]; groups dividing both channel counts (drawn first, so grouped and depthwise convs
    are as common as plain ones)."""
    groups = draw(st.integers(1, 5))
    c_in = groups * draw(st.integers(1, 5 // groups))
    c_out = groups * draw(st.integers(1, 5 // groups))
    return dict(N=draw(st.integers(1, 5)), C=c_in, C_out=c_out,
                H=draw(st.integers(1, 13)), W=draw(st.integers(1, 13)),
                k=draw(pairs(1, 5)), stride=draw(pairs(1, 3)), padding=draw(pairs(0, 3)),
                dilation=draw(pairs(1, 3)), groups=groups,
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def conv_arrays(g, dtype=np.float64):
    rng = np.random.default_rng(g["seed"])
    x = rand(rng, g["N"], g["C"], g["H"], g["W"], dtype=dtype)
    w = rand(rng, g["C_out"], g["C"] // g["groups"], *g["k"], dtype=dtype)
    b = rand(rng, g["C_out"], dtype=dtype) if g["bias"] else None
    return x, w, b


def geometry_args(g):
    return g["stride"], g["padding"], g["dilation"], g["groups"]


@settings(max_examples=60)
@given(geometries())
def test_conv2d_cython_equals_reference_equals_naive(g):
    x, w, b = conv_arrays(g)
    OH, OW = (conv_size(i, k, s, p, d) for i, k, s, p, d in
              zip((g["H"], g["W"]), g["k"], g["stride"], g["padding"], g["dilation"]))
    if OH <= 0 or OW <= 0:  # an empty output is an error, never an empty array
        with pytest.raises(ValueError, match="output (height|width) would be"):
            conv2d(x, w, b, *geometry_args(g))
        return
    args = geometry_args(g)
    y_ref = ref.conv2d_forward(x, w, b, *args)
    assert y_ref.shape == (g["N"], g["C_out"], OH, OW)
    np.testing.assert_allclose(cy.conv2d_forward(x, w, b, *args), y_ref, **TIGHT)
    # the naive loop is slow: one sample is enough (samples are independent)
    np.testing.assert_allclose(ref.conv2d_naive(x[:1], w, b, *args), y_ref[:1], **TIGHT)

    dy = rand(np.random.default_rng(g["seed"] + 1), *y_ref.shape)
    np.testing.assert_allclose(cy.conv2d_backward_input(dy, w, x.shape, *args),
                               ref.conv2d_backward_input(dy, w, x.shape, *args), **TIGHT)
    np.testing.assert_allclose(cy.conv2d_backward_weight(dy, x, w.shape, *args),
                               ref.conv2d_backward_weight(dy, x, w.shape, *args), **TIGHT)
    geometry = (g["k"], g["stride"], g["padding"], g["dilation"])
    cols = ref.im2col(x, *geometry)
    np.testing.assert_array_equal(cy.im2col(x, *geometry), cols)  # a copy: exactly equal
    np.testing.assert_allclose(cy.col2im(cols, x.shape, *geometry),
                               ref.col2im(cols, x.shape, *geometry), **TIGHT)


@settings(max_examples=40)
@given(geometries())
def test_float32_kernels_match_the_float64_reference(g):
    """float32 runs its own packed GEMM (float64 goes to the BLAS): same results to float32
    rounding on every geometry, the odd ones included."""
    x, w, b = conv_arrays(g)
    args = geometry_args(g)
    OH, OW = (conv_size(i, k, s, p, d) for i, k, s, p, d in
              zip((g["H"], g["W"]), g["k"], g["stride"], g["padding"], g["dilation"]))
    assume(OH > 0 and OW > 0)
    f32 = lambda *arrays: [None if a is None else a.astype(np.float32) for a in arrays]  # noqa: E731
    y_ref = ref.conv2d_forward(x, w, b, *args)
    dy = rand(np.random.default_rng(g["seed"] + 1), *y_ref.shape)
    x32, w32, b32, dy32 = f32(x, w, b, dy)
    tol = dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cy.conv2d_forward(x32, w32, b32, *args), y_ref, **tol)
    np.testing.assert_allclose(cy.conv2d_backward_input(dy32, w32, x.shape, *args),
                               ref.conv2d_backward_input(dy, w, x.shape, *args), **tol)
    np.testing.assert_allclose(cy.conv2d_backward_weight(dy32, x32, w.shape, *args),
                               ref.conv2d_backward_weight(dy, x, w.shape, *args), **tol)


@st.composite
def transposed_geometries(draw):
    g = draw(geometries())
    g["output_padding"] = tuple(draw(st.integers(0, max(s, d) - 1))
                                for s, d in zip(g["stride"], g["dilation"]))
    return g


def tconv_arrays(g, dtype=np.float64):
    rng = np.random.default_rng(g["seed"])
    x = rand(rng, g["N"], g["C"], g["H"], g["W"], dtype=dtype)
    w = rand(rng, g["C"], g["C_out"] // g["groups"], *g["k"], dtype=dtype)
    b = rand(rng, g["C_out"], dtype=dtype) if g["bias"] else None
    return x, w, b


@settings(max_examples=50)
@given(transposed_geometries())
def test_conv_transpose2d_three_views_and_both_backends_agree(g):
    x, w, b = tconv_arrays(g)
    args = (g["stride"], g["padding"], g["output_padding"], g["dilation"], g["groups"])
    OH, OW = (tconv_size(i, k, s, p, q, d) for i, k, s, p, q, d in
              zip((g["H"], g["W"]), g["k"], g["stride"], g["padding"], g["output_padding"],
                  g["dilation"]))
    if OH <= 0 or OW <= 0:
        with pytest.raises(ValueError, match="output (height|width) would be"):
            conv_transpose2d(x, w, b, g["stride"], g["padding"], g["output_padding"],
                             g["groups"], g["dilation"])
        return
    y_ref = ref.conv_transpose2d_forward(x, w, b, *args)  # view 2: the adjoint of a conv
    assert y_ref.shape == (g["N"], g["C_out"], OH, OW)
    np.testing.assert_allclose(cy.conv_transpose2d_forward(x, w, b, *args), y_ref, **TIGHT)
    np.testing.assert_allclose(ref.conv_transpose2d_scatter(x[:1], w, b, *args), y_ref[:1],
                               **TIGHT)  # view 1
    np.testing.assert_allclose(ref.conv_transpose2d_zero_insertion(x, w, b, *args), y_ref,
                               **TIGHT)  # view 3


# ------------------------------------------------------------------------------ adjoints
@settings(max_examples=30)
@given(geometries(), st.sampled_from(sorted(BACKENDS)))
def test_adjoint_identities(g, backend):
    """<conv(u), v> = <u, conv_transpose(v)>, <im2col(x), c> = <x, col2im(c)>, and
    <conv(x, w), v> = <w, backward_weight(v, x)> hold to 1e-12 (relative) in float64."""
    K = BACKENDS[backend]
    u, w, _ = conv_arrays(g)
    args = geometry_args(g)
    OH, OW = conv2d_output_size((g["H"], g["W"]), g["k"], *args[:3])
    assume(OH > 0 and OW > 0)
    v = rand(np.random.default_rng(g["seed"] + 7), g["N"], g["C_out"], OH, OW)

    def check(a_u, v_, u_, at_v):
        lhs, rhs = np.vdot(a_u, v_), np.vdot(u_, at_v)
        assert abs(lhs - rhs) <= 1e-12 * np.linalg.norm(a_u) * np.linalg.norm(v_) + 1e-300

    check(K.conv2d_forward(u, w, None, *args), v, u, K.conv2d_backward_input(v, w, u.shape, *args))
    check(K.conv2d_forward(u, w, None, *args), v, w, K.conv2d_backward_weight(v, u, w.shape, *args))
    geometry = (g["k"], *args[:3])
    c = rand(np.random.default_rng(g["seed"] + 8), g["N"], g["C"] * g["k"][0] * g["k"][1],
             OH * OW)
    check(K.im2col(u, *geometry), c, u, K.col2im(c, u.shape, *geometry))


def test_conv_transpose2d_is_the_adjoint_of_conv2d_through_the_ops():
    rng = np.random.default_rng(3)
    u, w = rand(rng, 2, 6, 9, 8), rand(rng, 4, 3, 3, 2)
    y = conv2d(u, w, stride=2, padding=(1, 0), dilation=(1, 2), groups=2)
    v = rand(rng, *y.shape)
    back = conv_transpose2d(v, w, stride=2, padding=(1, 0), output_padding=(0, 1), groups=2,
                            dilation=(1, 2))
    assert back.shape == u.shape
    assert np.vdot(y.data, v) == pytest.approx(np.vdot(u, back.data), rel=1e-12)


# ----------------------------------------------------------------------------- gradients
CONV_CASES = [  # (x shape, w shape, stride, padding, dilation, groups)
    ((2, 3, 5, 6), (4, 3, 3, 3), 1, 1, 1, 1),
    ((1, 4, 7, 5), (6, 2, 3, 2), (2, 1), (1, 2), (1, 2), 2),
    ((2, 3, 6, 6), (3, 1, 3, 3), 2, 1, 2, 3),           # depthwise, strided, dilated
    ((2, 4, 4, 5), (3, 4, 1, 1), 1, 0, 1, 1),           # pointwise: no im2col
    ((1, 2, 9, 4), (2, 2, 5, 1), 1, (2, 0), 1, 1),      # GCN-style k x 1
    ((1, 2, 3, 3), (2, 2, 3, 3), 3, 2, 1, 1),           # padding larger than the input
]


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", CONV_CASES)
def test_conv2d_gradcheck(backend, xs, ws, stride, padding, dilation, groups):
    edu_seg.set_backend(backend)
    rng = np.random.default_rng(0)
    x, w = Tensor(rand(rng, *xs), requires_grad=True), Tensor(rand(rng, *ws), requires_grad=True)
    b = Tensor(rand(rng, ws[0]), requires_grad=True)
    gradcheck(lambda x, w, b: conv2d(x, w, b, stride, padding, dilation, groups), [x, w, b])


TCONV_CASES = [  # (x shape, w shape, stride, padding, output_padding, groups, dilation)
    ((2, 3, 4, 3), (3, 2, 3, 3), 1, 1, 0, 1, 1),
    ((1, 4, 3, 4), (4, 3, 2, 2), 2, 0, 1, 2, 1),        # the k2s2 upsampler, grouped
    ((1, 2, 4, 3), (2, 3, 4, 4), 2, 1, 0, 1, 1),        # k4s2p1
    ((1, 2, 3, 3), (2, 1, 3, 2), (1, 2), (0, 1), (1, 1), 2, (2, 1)),  # depthwise, op >= stride
    ((1, 3, 4, 3), (3, 1, 3, 2), 1, 0, 1, 3, 2),        # depthwise, stride 1, op >= stride
    ((2, 3, 3, 2), (3, 2, 1, 1), 1, 0, 0, 1, 1),        # pointwise
]


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("xs, ws, stride, padding, output_padding, groups, dilation", TCONV_CASES)
def test_conv_transpose2d_gradcheck(backend, xs, ws, stride, padding, output_padding, groups,
                                    dilation):
    edu_seg.set_backend(backend)
    rng = np.random.default_rng(1)
    x, w = Tensor(rand(rng, *xs), requires_grad=True), Tensor(rand(rng, *ws), requires_grad=True)
    b = Tensor(rand(rng, ws[1] * groups), requires_grad=True)
    gradcheck(lambda x, w, b: conv_transpose2d(x, w, b, stride, padding, output_padding, groups,
                                               dilation), [x, w, b])


def test_backward_skips_the_input_gradient_when_x_needs_none(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("conv2d_backward_input must not run for an input without grad")

    monkeypatch.setattr(cy, "conv2d_backward_input", forbidden)
    rng = np.random.default_rng(0)
    x = Tensor(rand(rng, 2, 3, 6, 6, dtype=np.float32))          # the image: no grad
    w = Tensor(rand(rng, 4, 3, 3, 3, dtype=np.float32), requires_grad=True)
    conv2d(x, w, padding=1).sum().backward()
    assert x.grad is None and w.grad.shape == w.shape


def test_gradients_of_a_non_contiguous_input_and_a_broadcast_dy():
    rng = np.random.default_rng(0)
    base = rand(rng, 2, 7, 6, 3)
    x = Tensor(base.transpose(0, 3, 2, 1), requires_grad=True)   # (2, 3, 6, 7), not contiguous
    w = Tensor(rand(rng, 4, 3, 2, 2), requires_grad=True)
    conv2d(x, w, stride=2).sum().backward()                       # dy is a broadcast view
    with edu_seg.use_backend("numpy"):
        x2, w2 = Tensor(np.ascontiguousarray(x.data), requires_grad=True), Tensor(w.data, requires_grad=True)
        conv2d(x2, w2, stride=2).sum().backward()
    np.testing.assert_allclose(x.grad, x2.grad, **TIGHT)
    np.testing.assert_allclose(w.grad, w2.grad, **TIGHT)


# ------------------------------------------------------------- special paths, bigger sizes
BIG_CASES = [  # exercise the row tiles, channel blocks and chunked weight sums of the kernel
    ((1, 64, 20, 64), (8, 64, 3, 3), 1, 1, 1, 1),        # several row tiles per sample
    ((1, 16, 11, 7), (16, 16, 3, 3), 1, 1, 1, 1),        # row tiles of >= 32 pixels: 6 + 5 rows
    ((3, 16, 11, 13), (12, 4, 3, 3), 1, 1, 2, 4),        # grouped
    ((2, 24, 12, 12), (24, 1, 3, 3), 2, 2, 2, 24),       # depthwise, stride 2, dilation 2
    ((2, 24, 12, 12), (24, 1, 5, 5), 1, 2, 1, 24),       # depthwise 5x5
    ((2, 16, 10, 12), (16, 1, 3, 3), 1, 2, 2, 16),       # depthwise stride 1, dilation 2
    ((2, 6, 7, 9), (6, 1, 1, 3), 1, (2, 3), 1, 6),       # depthwise, padding > d(K-1): crops
    ((5, 32, 9, 10), (16, 32, 1, 1), 1, 0, 1, 1),        # pointwise
    ((2, 8, 16, 16), (8, 8, 15, 1), 1, (7, 0), 1, 1),    # GCN 15x1
    ((2, 8, 16, 16), (8, 8, 1, 15), 1, (0, 7), 1, 1),    # GCN 1x15
    ((9, 5, 17, 6), (7, 5, 3, 2), (3, 2), (2, 1), (2, 3), 1),
    # small maps: several samples share one GEMM (tiles of whole samples, ragged last tile)
    ((17, 16, 4, 4), (24, 8, 3, 3), 1, 1, 1, 2),         # 4x4, grouped
    ((16, 32, 8, 8), (20, 32, 3, 3), 2, 1, 1, 1),        # stride 2 down to 4x4
    ((16, 48, 2, 2), (40, 48, 3, 3), 1, 2, 2, 1),        # 2x2, dilated: taps in the padding
    ((11, 24, 5, 5), (16, 24, 1, 1), 1, 0, 1, 1),        # pointwise on a small map
    # the float32 GEMM: k in several blocks of 256, M and N off its 8 x 32 register tile
    ((3, 67, 7, 9), (13, 67, 3, 3), 1, 1, 1, 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", BIG_CASES)
def test_kernel_paths_match_reference_and_are_thread_count_independent(
        dtype, xs, ws, stride, padding, dilation, groups):
    rng = np.random.default_rng(5)
    x, w, b = rand(rng, *xs, dtype=dtype), rand(rng, *ws, dtype=dtype), rand(rng, ws[0], dtype=dtype)
    args = (pair(stride), pair(padding), pair(dilation), groups)
    y_ref = ref.conv2d_forward(x, w, b, *args)
    dy = rand(rng, *y_ref.shape, dtype=dtype)
    expected = (y_ref, ref.conv2d_backward_input(dy, w, x.shape, *args),
                ref.conv2d_backward_weight(dy, x, w.shape, *args), ref.conv2d_backward_bias(dy))
    results = assert_thread_count_independent(lambda: (
        cy.conv2d_forward(x, w, b, *args), cy.conv2d_backward_input(dy, w, x.shape, *args),
        cy.conv2d_backward_weight(dy, x, w.shape, *args), cy.conv2d_backward_bias(dy)))
    tol = TIGHT if dtype == np.float64 else dict(rtol=2e-4, atol=2e-4)
    for got, want in zip(results, expected):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **tol)


def test_transposed_conv_and_im2col_are_thread_count_independent():
    rng = np.random.default_rng(6)
    x, w, b = rand(rng, 3, 16, 13, 11), rand(rng, 16, 6, 4, 4), rand(rng, 12)
    def compute():
        cols = cy.im2col(x, (3, 3), (1, 2), (1, 1), (2, 1))
        return (cy.conv_transpose2d_forward(x, w, b, (2, 2), (1, 1), (1, 0), (1, 1), 2), cols,
                cy.col2im(cols, x.shape, (3, 3), (1, 2), (1, 1), (2, 1)))

    assert_thread_count_independent(compute)


def test_float32_in_float32_out_and_close_to_float64():
    rng = np.random.default_rng(7)
    x, w, b = rand(rng, 2, 6, 10, 9), rand(rng, 4, 3, 3, 3), rand(rng, 4)
    for backend in BACKENDS:
        with edu_seg.use_backend(backend):
            y32 = conv2d(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32),
                         padding=1, groups=2)
            y64 = conv2d(x, w, b, padding=1, groups=2)
        assert y32.dtype == np.float32 and y64.dtype == np.float64
        np.testing.assert_allclose(y32.data, y64.data, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- output sizes
@settings(max_examples=60)
@given(geometries())
def test_output_size_helpers_match_the_formula(g):
    args = (g["stride"], g["padding"], g["dilation"])
    expected = tuple(conv_size(i, k, s, p, d) for i, k, s, p, d in
                     zip((g["H"], g["W"]), g["k"], *args))
    assert conv2d_output_size((g["H"], g["W"]), g["k"], *args) == expected
    q = tuple(max(s, d) - 1 for s, d in zip(g["stride"], g["dilation"]))
    assert conv_transpose2d_output_size((g["H"], g["W"]), g["k"], g["stride"], g["padding"], q,
                                        g["dilation"]) == tuple(
        tconv_size(i, k, s, p, qq, d) for i, k, s, p, qq, d in
        zip((g["H"], g["W"]), g["k"], g["stride"], g["padding"], q, g["dilation"]))


def test_output_size_examples():
    assert conv2d_output_size((64, 60), 3, stride=2, padding=1) == (32, 30)
    assert conv2d_output_size(32, 3, padding=6, dilation=6) == (32, 32)  # "same" atrous conv
    assert conv_transpose2d_output_size(16, 4, stride=2, padding=1) == (32, 32)
    assert conv_transpose2d_output_size(16, 2, stride=2) == (32, 32)


# --------------------------------------------------------------------------- PyTorch oracle
TORCH_CASES = [  # conv: (x, w, stride, padding, dilation, groups)
    ((2, 6, 11, 9), (4, 3, 3, 2), (2, 1), (1, 0), (1, 2), 2),
    ((1, 4, 8, 8), (4, 1, 3, 3), 1, 2, 2, 4),
    ((3, 5, 7, 6), (2, 5, 1, 1), 1, 0, 1, 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", TORCH_CASES)
def test_conv2d_matches_pytorch(dtype, xs, ws, stride, padding, dilation, groups):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x, w, b = rand(rng, *xs, dtype=dtype), rand(rng, *ws, dtype=dtype), rand(rng, ws[0], dtype=dtype)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride, padding, dilation, groups)
    dy = rand(rng, *ty.shape, dtype=dtype)
    ty.backward(torch.tensor(dy))
    X, Wt, B = (Tensor(a, requires_grad=True) for a in (x, w, b))
    y = conv2d(X, Wt, B, stride, padding, dilation, groups)
    y.backward(dy)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else TIGHT
    for ours, theirs in ((y.data, ty), (X.grad, tx.grad), (Wt.grad, tw.grad), (B.grad, tb.grad)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride, padding, output_padding, groups, dilation", [
    (2, 1, 1, 1, 1), (2, 0, 0, 2, 1), ((1, 3), (0, 1), (1, 2), 1, (2, 1)), (1, 1, 2, 2, 3)])
def test_conv_transpose2d_matches_pytorch(dtype, stride, padding, output_padding, groups,
                                          dilation):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    x, w, b = rand(rng, 2, 4, 5, 6, dtype=dtype), rand(rng, 4, 3, 3, 4, dtype=dtype), \
        rand(rng, 3 * groups, dtype=dtype)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv_transpose2d(tx, tw, tb, stride, padding, output_padding,
                                              groups, dilation)
    dy = rand(rng, *ty.shape, dtype=dtype)
    ty.backward(torch.tensor(dy))
    X, Wt, B = (Tensor(a, requires_grad=True) for a in (x, w, b))
    y = conv_transpose2d(X, Wt, B, stride, padding, output_padding, groups, dilation)
    y.backward(dy)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else TIGHT
    for ours, theirs in ((y.data, ty), (X.grad, tx.grad), (Wt.grad, tw.grad), (B.grad, tb.grad)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), **tol)


# ---------------------------------------------------------------------------------- errors
def _x(*shape, dtype=np.float32):
    return np.ones(shape, dtype=dtype)


@pytest.fixture
def no_kernels(monkeypatch):
    """Every invalid call must be refused before any kernel runs."""
    def forbidden(name):
        raise AssertionError(f"kernels({name!r}) was reached with invalid arguments")

    monkeypatch.setattr(ops, "kernels", forbidden)


ERRORS = [  # (call, exception, message pattern)
    (lambda: conv2d(_x(3, 8, 8), _x(4, 3, 3, 3)), ValueError, r"x must be 4-D \(N, C, H, W\), got shape \(3, 8, 8\)"),
    (lambda: conv2d(_x(1, 3, 8, 8), _x(4, 3, 3)), ValueError, r"w must be 4-D"),
    (lambda: conv2d(_x(1, 3, 8, 8), _x(4, 4, 3, 3)), ValueError, r"x has C=3 but w expects 4 \(w.shape\[1\]\*groups = 4\*1\)"),
    (lambda: conv2d(_x(1, 5, 8, 8), _x(4, 2, 3, 3), groups=2), ValueError, r"groups=2 does not divide x's C=5"),
    (lambda: conv2d(_x(1, 4, 8, 8), _x(5, 2, 3, 3), groups=2), ValueError, r"groups=2 does not divide w's C_out=5"),
    (lambda: conv2d(_x(1, 4, 8, 8), _x(4, 4, 3, 3), groups=0), ValueError, r"groups must be >= 1, got 0"),
    (lambda: conv2d(_x(1, 4, 8, 8), _x(4, 4, 3, 3), groups=1.0), TypeError, r"groups must be an int"),
    (lambda: conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), _x(3)), ValueError, r"b must have shape \(4,\)"),
    (lambda: conv2d(_x(1, 3, 3, 8), _x(4, 3, 5, 3)), ValueError,
     r"output height would be -1 .*floor\(\(3 \+ 2\*0 - 1\*\(5-1\) - 1\)/1\) \+ 1"),
    (lambda: conv2d(_x(1, 3, 8, 2), _x(4, 3, 3, 3), dilation=(1, 2)), ValueError,
     r"output width would be -2 .*floor\(\(2 \+ 2\*0 - 2\*\(3-1\) - 1\)/1\) \+ 1"),
    (lambda: conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), stride=0), ValueError, r"stride must be >= 1, got 0"),
    (lambda: conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), padding=(1, -1)), ValueError, r"padding must be >= 0, got \(1, -1\)"),
    (lambda: conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), dilation=0), ValueError, r"dilation must be >= 1, got 0"),
    (lambda: conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), stride=1.5), TypeError, r"stride must be an int or a pair of ints, got 1.5 \(a float\)"),
    (lambda: conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), padding=float("nan")), TypeError, r"padding must be an int .*got nan"),
    (lambda: conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), stride=(1, float("inf"))), TypeError, r"stride must be an int .*inf"),
    (lambda: conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), dilation=True), TypeError, r"dilation must be an int .*\(a bool\)"),
    (lambda: conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), stride=(1, 2, 3)), ValueError, r"stride must be an int or a pair of ints, got \(1, 2, 3\) \(3 values\)"),
    (lambda: conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3, dtype=np.float64)), TypeError, r"w has dtype float64 but x has float32"),
    (lambda: conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), _x(4, dtype=np.float64)), TypeError, r"b has dtype float64 but x has float32"),
    (lambda: conv2d(_x(1, 3, 8, 8, dtype=np.int64), _x(4, 3, 3, 3, dtype=np.int64)), TypeError, r"x has dtype int64; it needs float32 or float64"),
    (lambda: conv2d(_x(0, 3, 8, 8), _x(4, 3, 3, 3)), ValueError, r"zero-sized dimension"),
    (lambda: conv_transpose2d(_x(1, 3, 8, 8), _x(4, 2, 3, 3)), ValueError, r"x has C=3 but w expects 4 \(w.shape\[0\]"),
    (lambda: conv_transpose2d(_x(1, 3, 8, 8), _x(3, 2, 3, 3), groups=2), ValueError, r"groups=2 does not divide x's C=3"),
    (lambda: conv_transpose2d(_x(1, 4, 8, 8), _x(4, 2, 3, 3), stride=2, output_padding=2), ValueError,
     r"output_padding=\(2, 2\) must be smaller than max\(stride, dilation\) = \(2, 2\)"),
    (lambda: conv_transpose2d(_x(1, 4, 8, 8), _x(4, 2, 3, 3), output_padding=(0, 1), dilation=(2, 1)), ValueError,
     r"output_padding=\(0, 1\) must be smaller than max\(stride, dilation\) = \(2, 1\)"),
    (lambda: conv_transpose2d(_x(1, 4, 1, 8), _x(4, 2, 1, 3), padding=1), ValueError,
     r"output height would be -1 .*\(1-1\)\*1 - 2\*1 \+ 1\*\(1-1\) \+ 0 \+ 1"),
    (lambda: conv_transpose2d(_x(1, 4, 8, 8), _x(4, 2, 3, 3), _x(3)), ValueError, r"b must have shape \(2,\)"),
    (lambda: conv_transpose2d(_x(1, 4, 8, 8), _x(4, 2, 3, 3, dtype=np.float64)), TypeError, r"w has dtype float64 but x has float32"),
    (lambda: conv_transpose2d(_x(1, 4, 8, 8), _x(4, 2, 3, 3), stride=-1), ValueError, r"stride must be >= 1"),
]


@pytest.mark.parametrize("call, error, message", ERRORS, ids=[m[:40] for _, _, m in ERRORS])
def test_invalid_arguments_raise_before_any_kernel(no_kernels, call, error, message):
    with pytest.raises(error, match=message):
        call()
