"""Pooling: max, average, adaptive, max-unpool.

Checks, per the issue: Cython == NumPy reference on hypothesis-drawn geometries; gradcheck of
every op (max ops on tie-free inputs); the adjoint identity for the linear kernels; unpool∘pool
puts values at the argmax; the tie rule; thread-count independence; every documented error;
and PyTorch as an extra oracle where installed. (conftest.py restores backend and threads.)
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import edu_seg
from edu_seg import Tensor, gradcheck
from edu_seg._kernels import pool as cy
from edu_seg.ops.pool import (adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, max_pool2d,
                              max_unpool2d, pool_output_size)
from edu_seg.reference import pool as ref

BACKENDS = ["numpy", "cython"]


# ================================================================================== helpers
def _tie_free(shape, seed=0):
    """Distinct values at least 0.01 apart: a gradcheck step (1e-6) never changes an argmax."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) * 0.01 - 0.005 * n).astype(np.float64)


def _windows_see_input(size, out, k, s, p, d):
    """True if every window holds at least one input pixel (else max pooling refuses it)."""
    return all(any(0 <= o * s - p + j * d < size for j in range(k)) for o in range(out))


@st.composite
def pool_geometries(draw, dilation=True, max_pool=True):
    """x shape, kernel, stride, padding, dilation, ceil_mode, drawn within the issue's ranges."""
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    H, W = draw(st.integers(1, 17)), draw(st.integers(1, 17))
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilation else (1, 1)
    ceil_mode = draw(st.booleans())
    out = [pool_output_size(i, *a, ceil_mode) for i, a in zip((H, W), zip(k, s, p, d))]
    assume(min(out) >= 1)
    if max_pool:
        assume(all(_windows_see_input(i, o, *a) for i, o, a in zip((H, W), out, zip(k, s, p, d))))
    return (N, C, H, W), k, s, p, d, ceil_mode


def _x(shape, dtype=np.float64, seed=0, ties=False):
    """Random data; with ties=True, values from {-2, ..., 2} so windows hold equal maxima."""
    rng = np.random.default_rng(seed)
    data = rng.integers(-2, 3, shape) if ties else rng.standard_normal(shape)
    return data.astype(dtype)


def _close(a, b, dtype=np.float64):
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# ========================================================================= output-size rule
def test_pool_output_size_by_hand_and_twins_agree():
    assert pool_output_size(5, 2, 2, 0) == 2
    assert pool_output_size(5, 2, 2, 0, ceil_mode=True) == 3
    # ceil_mode keeps the partial window only if it starts inside input or left padding:
    # 5 + 2·1 − 2 = 5 → ⌈5/2⌉ + 1 = 4, but window 3 would start at 6 − 1 = 5 = i: dropped.
    assert pool_output_size(5, 2, 2, 1, ceil_mode=True) == 3
    assert pool_output_size(7, 3, 1, 0, dilation=2) == 3          # effective kernel 5
    for args in [(i, k, s, p, d, c) for i in range(1, 12) for k in range(1, 5)
                 for s in range(1, 4) for p in range(0, k // 2 + 1) for d in (1, 2)
                 for c in (False, True)]:
        assert cy.pool_output_size(*args) == ref.pool_output_size(*args), args


def test_adaptive_bins_overlap_where_the_count_does_not_divide():
    start, end = ref.adaptive_pool_bins(4, 3)
    assert start.tolist() == [0, 1, 2] and end.tolist() == [2, 3, 4]
    start, end = ref.adaptive_pool_bins(5, 6)  # more bins than pixels: every bin non-empty
    assert start.tolist() == [0, 0, 1, 2, 3, 4] and end.tolist() == [1, 2, 3, 4, 5, 5]
    for i in range(1, 18):
        for n in range(1, 10):
            for a, b in zip(ref.adaptive_pool_bins(i, n), cy.adaptive_pool_bins(i, n)):
                assert np.array_equal(a, b)


# ======================================================================= Cython == reference
@given(geom=pool_geometries(), dtype=st.sampled_from([np.float64, np.float32]),
       ties=st.booleans())
def test_max_pool_cython_matches_reference(geom, dtype, ties):
    shape, k, s, p, d, ceil_mode = geom
    x = _x(shape, dtype, ties=ties)
    y_ref, i_ref = ref.max_pool2d_forward(x, k, s, p, d, ceil_mode)
    y_cy, i_cy = cy.max_pool2d_forward(x, k, s, p, d, ceil_mode)
    assert y_cy.dtype == dtype and i_cy.dtype == np.int64
    assert np.array_equal(y_ref, y_cy) and np.array_equal(i_ref, i_cy)
    dy = _x(y_ref.shape, dtype, seed=1)
    _close(ref.max_pool2d_backward(dy, i_ref, shape), cy.max_pool2d_backward(dy, i_cy, shape),
           dtype)


@given(geom=pool_geometries(dilation=False, max_pool=False), include_pad=st.booleans(),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_avg_pool_cython_matches_reference(geom, include_pad, dtype):
    shape, k, s, p, _, ceil_mode = geom
    x = _x(shape, dtype)
    y_ref = ref.avg_pool2d_forward(x, k, s, p, ceil_mode, include_pad)
    y_cy = cy.avg_pool2d_forward(x, k, s, p, ceil_mode, include_pad)
    assert y_cy.dtype == dtype
    _close(y_ref, y_cy, dtype)
    dy = _x(y_ref.shape, dtype, seed=1)
    _close(ref.avg_pool2d_backward(dy, shape, k, s, p, ceil_mode, include_pad),
           cy.avg_pool2d_backward(dy, shape, k, s, p, ceil_mode, include_pad), dtype)


@given(N=st.integers(1, 2), C=st.integers(1, 3), H=st.integers(1, 17), W=st.integers(1, 17),
       OH=st.integers(1, 9), OW=st.integers(1, 9), dtype=st.sampled_from([np.float64, np.float32]),
       ties=st.booleans())
def test_adaptive_pools_cython_match_reference(N, C, H, W, OH, OW, dtype, ties):
    x = _x((N, C, H, W), dtype, ties=ties)
    _close(ref.adaptive_avg_pool2d_forward(x, (OH, OW)),
           cy.adaptive_avg_pool2d_forward(x, (OH, OW)), dtype)
    dy = _x((N, C, OH, OW), dtype, seed=1)
    _close(ref.adaptive_avg_pool2d_backward(dy, x.shape),
           cy.adaptive_avg_pool2d_backward(dy, x.shape), dtype)
    y_ref, i_ref = ref.adaptive_max_pool2d_forward(x, (OH, OW))
    y_cy, i_cy = cy.adaptive_max_pool2d_forward(x, (OH, OW))
    assert np.array_equal(y_ref, y_cy) and np.array_equal(i_ref, i_cy)


@given(geom=pool_geometries(dilation=False), dtype=st.sampled_from([np.float64, np.float32]))
def test_max_unpool_cython_matches_reference(geom, dtype):
    shape, k, s, p, _, ceil_mode = geom
    x = _x(shape, dtype)
    pooled, indices = ref.max_pool2d_forward(x, k, s, p, (1, 1), ceil_mode)
    # Overlapping windows give repeated indices; they carry equal values, so both agree.
    out_hw = shape[2:]
    assert np.array_equal(ref.max_unpool2d_forward(pooled, indices, out_hw),
                          cy.max_unpool2d_forward(pooled, indices, out_hw))
    dy = _x(shape, dtype, seed=1)
    assert np.array_equal(ref.max_unpool2d_backward(dy, indices),
                          cy.max_unpool2d_backward(dy, indices))


def test_max_unpool_repeated_index_keeps_the_last_value_in_both_backends():
    x = np.array([[[[1.0, 2.0, 3.0]]]])
    indices = np.array([[[[4, 4, 1]]]])
    for K in (ref, cy):
        y = K.max_unpool2d_forward(x, indices, (2, 3))
        assert y.tolist() == [[[[0.0, 3.0, 0.0], [0.0, 2.0, 0.0]]]]


# ================================================================= semantics the issue names
@pytest.mark.parametrize("K", [ref, cy], ids=["numpy", "cython"])
def test_ties_go_to_the_first_maximum_in_row_major_order(K):
    x = np.ones((1, 1, 4, 4))
    y, indices = K.max_pool2d_forward(x, (3, 3), (1, 1), (1, 1), (1, 1), False)
    # Window (oh, ow) starts at (oh − 1, ow − 1); its first pixel inside the input wins.
    expected = [[max(oh - 1, 0) * 4 + max(ow - 1, 0) for ow in range(4)] for oh in range(4)]
    assert indices[0, 0].tolist() == expected and (y == 1).all()
    y, indices = K.adaptive_max_pool2d_forward(np.ones((1, 1, 5, 5)), (2, 2))
    assert indices[0, 0].tolist() == [[0, 2], [10, 12]]     # bins start at rows/cols 0 and 2


@pytest.mark.parametrize("K", [ref, cy], ids=["numpy", "cython"])
def test_max_pool_handles_minus_inf_and_propagates_nan(K):
    x = np.full((1, 1, 3, 3), -np.inf)
    y, indices = K.max_pool2d_forward(x, (3, 3), (1, 1), (1, 1), (1, 1), False)
    assert np.isneginf(y).all() and ((indices >= 0) & (indices < 9)).all()  # never padding
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    x[0, 0, 0, 1] = x[0, 0, 2, 0] = np.nan
    y, indices = K.max_pool2d_forward(x, (3, 3), (3, 3), (0, 0), (1, 1), False)
    assert np.isnan(y).all() and indices.item() == 1                       # the first NaN
    y, indices = K.adaptive_max_pool2d_forward(x, (1, 1))
    assert np.isnan(y).all() and indices.item() == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_unpool_of_max_pool_puts_values_at_the_argmax(backend):
    edu_seg.set_backend(backend)
    x = _tie_free((2, 3, 6, 8))
    pooled, indices = max_pool2d(x, 2, return_indices=True)
    y = max_unpool2d(pooled, indices, 2).numpy()
    # Independently: the maximum of each 2x2 block, zeros elsewhere.
    blocks = x.reshape(2, 3, 3, 2, 4, 2)
    is_max = blocks == blocks.max(axis=(3, 5), keepdims=True)
    assert np.array_equal(y, np.where(is_max, blocks, 0.0).reshape(x.shape))
    # With odd sizes and padding the output_size argument restores the input size.
    x = _tie_free((1, 2, 7, 5), seed=1)
    pooled, indices = max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    y = max_unpool2d(pooled, indices, 3, stride=2, padding=1, output_size=x.shape).numpy()
    flat_x, flat_y = x.reshape(2, -1), y.reshape(2, -1)
    flat_i, flat_p = indices.numpy().reshape(2, -1), pooled.numpy().reshape(2, -1)
    for c in range(2):
        assert np.array_equal(flat_y[c, flat_i[c]], flat_p[c])
        assert np.array_equal(flat_x[c, flat_i[c]], flat_p[c])
        others = np.setdiff1d(np.arange(35), flat_i[c])
        assert (flat_y[c, others] == 0).all()


def test_global_average_pooling_is_adaptive_avg_pool_to_one():
    x = _x((2, 3, 5, 7))
    np.testing.assert_allclose(adaptive_avg_pool2d(x, 1).numpy(),
                               x.mean(axis=(2, 3), keepdims=True), rtol=1e-14)


def test_adaptive_pools_accept_none_to_keep_an_input_size():
    x = _x((1, 2, 5, 7))
    assert adaptive_avg_pool2d(x, (None, 3)).shape == (1, 2, 5, 3)
    assert adaptive_max_pool2d(x, (2, None)).shape == (1, 2, 2, 7)


# ================================================================================ gradients
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=(2, 3), stride=1, dilation=(2, 1),
                                     ceil_mode=True)])
def test_gradcheck_max_pool2d(backend, kw):
    edu_seg.set_backend(backend)
    x = Tensor(_tie_free((1, 2, 6, 7)), requires_grad=True)
    gradcheck(lambda t: max_pool2d(t, **kw), [x])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1,
                                                          ceil_mode=True),
                                dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0),
                                     count_include_pad=False)])
def test_gradcheck_avg_pool2d(backend, kw):
    edu_seg.set_backend(backend)
    x = Tensor(_x((1, 2, 6, 7)), requires_grad=True)
    gradcheck(lambda t: avg_pool2d(t, **kw), [x])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("out", [1, 3, (2, 4), 6])
def test_gradcheck_adaptive_pools(backend, out):
    edu_seg.set_backend(backend)
    x = Tensor(_tie_free((1, 2, 7, 5)), requires_grad=True)
    gradcheck(lambda t: adaptive_avg_pool2d(t, out), [x])
    gradcheck(lambda t: adaptive_max_pool2d(t, out), [x])


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_max_unpool2d(backend):
    edu_seg.set_backend(backend)
    pooled, indices = max_pool2d(_tie_free((1, 2, 6, 7)), 2, return_indices=True)
    x = Tensor(_x(pooled.shape), requires_grad=True)
    gradcheck(lambda t: max_unpool2d(t, indices, 2, output_size=(6, 7)), [x])


def test_max_pool_gradient_flows_through_the_indices_output_too():
    x = Tensor(_tie_free((1, 1, 4, 4)), requires_grad=True)
    y, indices = max_pool2d(x, 2, return_indices=True)
    assert not indices.requires_grad and indices.dtype == np.int64
    y.sum().backward()
    assert x.grad.sum() == 4 and set(np.flatnonzero(x.grad).tolist()) == \
        set(indices.numpy().ravel().tolist())


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_ops_take_a_broadcast_float64_gradient(backend):
    """Sum's backward hands over a read-only broadcast view; a loss may be float64."""
    edu_seg.set_backend(backend)
    x64 = _tie_free((2, 3, 7, 6))
    for op in (lambda t: max_pool2d(t, 3, 2, 1), lambda t: avg_pool2d(t, 2, ceil_mode=True),
               lambda t: adaptive_avg_pool2d(t, 3), lambda t: adaptive_max_pool2d(t, (2, 4))):
        grads = []
        for dtype in (np.float32, np.float64):
            x = Tensor(x64.astype(dtype), requires_grad=True)
            y = op(x)
            assert y.dtype == dtype
            (y * Tensor(np.full(y.shape, 0.5))).sum().backward()
            assert x.grad.dtype == dtype
            grads.append(x.grad)
        np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6)


# =========================================================================== adjoint identity
def _adjoint_gap(forward, backward, x_shape, y_shape):
    """|<A x, v> − <x, Aᵀ v>| relative to the size of the terms."""
    x, v = _x(x_shape, seed=2), _x(y_shape, seed=3)
    lhs, rhs = np.vdot(forward(x), v), np.vdot(x, backward(v))
    return abs(lhs - rhs) / max(abs(lhs), 1.0)


@settings(max_examples=25)
@given(geom=pool_geometries(dilation=False, max_pool=False), include_pad=st.booleans())
def test_avg_pool_backward_is_the_adjoint(geom, include_pad):
    shape, k, s, p, _, ceil_mode = geom
    for K in (ref, cy):
        y_shape = K.avg_pool2d_forward(np.zeros(shape), k, s, p, ceil_mode, include_pad).shape
        gap = _adjoint_gap(lambda x: K.avg_pool2d_forward(x, k, s, p, ceil_mode, include_pad),
                           lambda v: K.avg_pool2d_backward(v, shape, k, s, p, ceil_mode,
                                                           include_pad), shape, y_shape)
        assert gap < 1e-12


@settings(max_examples=25)
@given(H=st.integers(1, 17), W=st.integers(1, 17), OH=st.integers(1, 9), OW=st.integers(1, 9))
def test_adaptive_avg_pool_backward_is_the_adjoint(H, W, OH, OW):
    for K in (ref, cy):
        gap = _adjoint_gap(lambda x: K.adaptive_avg_pool2d_forward(x, (OH, OW)),
                           lambda v: K.adaptive_avg_pool2d_backward(v, (2, 3, H, W)),
                           (2, 3, H, W), (2, 3, OH, OW))
        assert gap < 1e-12


def test_max_unpool_and_its_gather_are_adjoint_for_distinct_indices():
    _, indices = ref.max_pool2d_forward(_tie_free((2, 3, 8, 6)), (2, 2), (2, 2), (0, 0), (1, 1),
                                        False)
    for K in (ref, cy):
        gap = _adjoint_gap(lambda x: K.max_unpool2d_forward(x, indices, (8, 6)),
                           lambda v: K.max_unpool2d_backward(v, indices), (2, 3, 4, 3),
                           (2, 3, 8, 6))
        assert gap < 1e-12


# ======================================================================== thread independence
def test_results_do_not_depend_on_the_thread_count():
    x = _x((4, 8, 48, 44), np.float32)
    assert x.size >= cy.GRAIN  # smaller calls run on one thread whatever the setting
    cases = {
        "max": lambda: cy.max_pool2d_forward(x, (3, 3), (2, 1), (1, 1), (1, 2), True),
        "avg": lambda: cy.avg_pool2d_forward(x, (3, 2), (2, 1), (1, 1), True, False),
        "adaptive_avg": lambda: cy.adaptive_avg_pool2d_forward(x, (6, 4)),
        "adaptive_max": lambda: cy.adaptive_max_pool2d_forward(x, (6, 4)),
    }
    results = {}
    for threads in (1, 2):
        edu_seg.set_num_threads(threads)
        out = {name: fn() for name, fn in cases.items()}
        y, idx = out["max"]
        dy = _x(y.shape, np.float32, seed=1)
        out["max_bwd"] = cy.max_pool2d_backward(dy, idx, x.shape)
        out["unpool"] = cy.max_unpool2d_forward(y, idx, x.shape[2:])
        out["unpool_bwd"] = cy.max_unpool2d_backward(x, idx)
        out["avg_bwd"] = cy.avg_pool2d_backward(_x(out["avg"].shape, np.float32), x.shape,
                                                (3, 2), (2, 1), (1, 1), True, False)
        out["adaptive_avg_bwd"] = cy.adaptive_avg_pool2d_backward(_x((4, 8, 6, 4), np.float32),
                                                                  x.shape)
        results[threads] = out
    for name in results[1]:
        a, b = results[1][name], results[2][name]
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert u.tobytes() == v.tobytes(), name


# ============================================================================= PyTorch oracle
@settings(max_examples=30)
@given(geom=pool_geometries())
def test_max_pool_matches_pytorch(geom):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    shape, k, s, p, d, ceil_mode = geom
    x = _tie_free(shape)
    xt = torch.tensor(x, requires_grad=True)
    yt, it = F.max_pool2d(xt, k, s, p, d, ceil_mode, return_indices=True)
    dy = _x(yt.shape, seed=1)
    yt.backward(torch.tensor(dy))
    xe = Tensor(x, requires_grad=True)
    y, indices = max_pool2d(xe, k, s, p, d, ceil_mode, return_indices=True)
    y.backward(dy)
    assert np.array_equal(y.numpy(), yt.detach().numpy())
    assert np.array_equal(indices.numpy(), it.numpy())
    np.testing.assert_allclose(xe.grad, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@settings(max_examples=30)
@given(geom=pool_geometries(dilation=False, max_pool=False), include_pad=st.booleans())
def test_avg_pool_matches_pytorch(geom, include_pad):
    torch = pytest.importorskip("torch")
    shape, k, s, p, _, ceil_mode = geom
    x = _x(shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.avg_pool2d(xt, k, s, p, ceil_mode, include_pad)
    dy = _x(yt.shape, seed=1)
    yt.backward(torch.tensor(dy))
    xe = Tensor(x, requires_grad=True)
    y = avg_pool2d(xe, k, s, p, ceil_mode, include_pad)
    y.backward(dy)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(xe.grad, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@settings(max_examples=30)
@given(H=st.integers(1, 17), W=st.integers(1, 17), OH=st.sampled_from([1, 2, 3, 6, 4, 9]),
       OW=st.sampled_from([1, 2, 3, 6, 5, 7]))
def test_adaptive_pools_match_pytorch(H, W, OH, OW):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = _tie_free((2, 2, H, W))
    dy = _x((2, 2, OH, OW), seed=1)
    for ours, theirs in [(lambda t: adaptive_avg_pool2d(t, (OH, OW)),
                          lambda t: F.adaptive_avg_pool2d(t, (OH, OW))),
                         (lambda t: adaptive_max_pool2d(t, (OH, OW), return_indices=True),
                          lambda t: F.adaptive_max_pool2d(t, (OH, OW), return_indices=True))]:
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt)
        xe = Tensor(x, requires_grad=True)
        y = ours(xe)
        if isinstance(yt, tuple):
            (yt, it), (y, indices) = yt, y
            assert np.array_equal(indices.numpy(), it.numpy())
        yt.backward(torch.tensor(dy))
        y.backward(dy)
        np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(xe.grad, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_max_unpool_matches_pytorch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = _tie_free((2, 3, 9, 7))
    pooled, it = F.max_pool2d(torch.tensor(x), 3, 2, 1, return_indices=True)
    pt = pooled.clone().requires_grad_(True)
    yt = F.max_unpool2d(pt, it, 3, 2, 1, output_size=(9, 7))
    dy = _x(yt.shape, seed=1)
    yt.backward(torch.tensor(dy))
    pe = Tensor(pooled.numpy(), requires_grad=True)
    y = max_unpool2d(pe, it.numpy(), 3, 2, 1, output_size=(9, 7))
    y.backward(dy)
    assert np.array_equal(y.numpy(), yt.detach().numpy())
    assert np.array_equal(pe.grad, pt.grad.numpy())


# ==================================================================================== errors
def test_errors_on_the_input_tensor():
    with pytest.raises(TypeError, match=r"max_pool2d: x must be float32 or float64, got dtype "
                                        r"int64"):
        max_pool2d(np.zeros((1, 1, 4, 4), dtype=np.int64), 2)
    with pytest.raises(ValueError, match=r"avg_pool2d: x must be 4-D \(N, C, H, W\), got shape"):
        avg_pool2d(np.zeros((1, 4, 4)), 2)
    with pytest.raises(ValueError, match=r"adaptive_avg_pool2d: x must not have an empty axis"):
        adaptive_avg_pool2d(np.zeros((0, 1, 4, 4)), 2)


@pytest.mark.parametrize("op", [max_pool2d, avg_pool2d])
def test_pool_option_errors(op):
    x = np.zeros((1, 1, 5, 5))
    name = op.__name__
    with pytest.raises(ValueError, match=rf"{name}: padding=\(2, 2\) must be at most half of "
                                         r"kernel_size=\(3, 3\)"):
        op(x, 3, padding=2)
    with pytest.raises(ValueError, match=rf"{name}: the 8x8 window .* is larger than the padded "
                                         r"input 7x7"):
        op(x, 8, padding=1)
    with pytest.raises(ValueError, match=rf"{name}: kernel_size must be >= 1, got 0"):
        op(x, 0)
    with pytest.raises(ValueError, match=rf"{name}: stride must be >= 1, got \(1, 0\)"):
        op(x, 2, stride=(1, 0))
    with pytest.raises(ValueError, match=rf"{name}: padding must be >= 0, got -1"):
        op(x, 2, padding=-1)
    with pytest.raises(TypeError, match=rf"{name}: kernel_size must be an int or a pair of "
                                        r"ints, got 2.0"):
        op(x, 2.0)


def test_max_pool_specific_errors():
    with pytest.raises(ValueError, match=r"max_pool2d: dilation must be >= 1, got 0"):
        max_pool2d(np.zeros((1, 1, 5, 5)), 2, dilation=0)
    # Taps at -1 and 1 of a 1-pixel row: a window of padding only (PyTorch returns -inf and
    # an index outside the input here).
    with pytest.raises(ValueError, match=r"max_pool2d: .* window 0 of the 1-pixel input holds "
                                         r"only padding"):
        max_pool2d(np.zeros((1, 1, 1, 4)), 2, stride=1, padding=1, dilation=2)


def test_max_pool_refuses_exactly_the_windows_of_padding_only():
    """The op's quick check against brute force: a miss would let the kernel write index -1."""
    for size in range(1, 7):
        x = np.zeros((1, 1, size, 3))
        for k in range(1, 6):
            for s in range(1, 4):
                for p in range(k // 2 + 1):
                    for d in range(1, 4):
                        for ceil_mode in (False, True):
                            out = pool_output_size(size, k, s, p, d, ceil_mode)
                            if out < 1:
                                continue
                            args = dict(kernel_size=(k, 1), stride=(s, 1), padding=(p, 0),
                                        dilation=(d, 1), ceil_mode=ceil_mode)
                            if _windows_see_input(size, out, k, s, p, d):
                                assert max_pool2d(x, **args).shape[2] == out
                            else:
                                with pytest.raises(ValueError, match="holds only padding"):
                                    max_pool2d(x, **args)


def test_kernel_larger_than_padded_input_message_names_sizes():
    with pytest.raises(ValueError, match=r"max_pool2d: the 5x5 window \(kernel_size=\(5, 5\), "
                                         r"dilation=\(1, 1\)\) is larger than the padded input "
                                         r"4x4 \(input 4x4, padding=\(0, 0\)\)"):
        max_pool2d(np.zeros((1, 1, 4, 4)), 5)


def test_max_unpool_errors():
    x = np.ones((1, 2, 2, 2))
    good = np.zeros((1, 2, 2, 2), dtype=np.int64)
    with pytest.raises(ValueError, match=r"max_unpool2d: indices have shape \(2, 2, 2\) but x "
                                         r"has shape \(1, 2, 2, 2\)"):
        max_unpool2d(x, good[0], 2)
    with pytest.raises(ValueError, match=r"max_unpool2d: indices must lie in \[0, 16\) for an "
                                         r"output of 4x4, got values in \[0, 16\]"):
        max_unpool2d(x, good + np.array([0, 0, 0, 16]).reshape(1, 1, 2, 2), 2)
    with pytest.raises(ValueError, match=r"max_unpool2d: indices must lie in \[0, 16\)"):
        max_unpool2d(x, good - 1, 2)
    with pytest.raises(TypeError, match=r"max_unpool2d: indices must be integers, got dtype "
                                        r"float64"):
        max_unpool2d(x, good.astype(np.float64), 2)
    with pytest.raises(ValueError, match=r"max_unpool2d: output_size \(6, 4\) is not compatible"):
        max_unpool2d(x, good, 2, output_size=(6, 4))
    with pytest.raises(ValueError, match=r"max_unpool2d: output_size must be \(OH, OW\) or "
                                         r"\(N, C, OH, OW\)"):
        max_unpool2d(x, good, 2, output_size=(4, 4, 4))
    # An index valid for the 5x5 output that output_size asks for, not for the default 4x4.
    assert max_unpool2d(x, good + 24, 2, output_size=(5, 5)).shape == (1, 2, 5, 5)


def test_adaptive_output_size_errors():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"adaptive_avg_pool2d: output_size must be positive, "
                                         r"got \(0, 2\)"):
        adaptive_avg_pool2d(x, (0, 2))
    with pytest.raises(ValueError, match=r"adaptive_max_pool2d: output_size must be positive, "
                                         r"got -1"):
        adaptive_max_pool2d(x, -1)
    with pytest.raises(TypeError, match=r"adaptive_avg_pool2d: output_size must be an int or "
                                        r"a pair of ints"):
        adaptive_avg_pool2d(x, 2.5)
