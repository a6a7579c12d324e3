"""The CUDA twin of the pooling kernels == the NumPy reference (emulated on the CPU, and on a
real GPU where there is one: the ``gpu`` fixture of conftest.py).

Values of max pooling and indices must be equal exactly (ties: the first maximum; NaN: the
first NaN), sums and gradients to 1e-12 (float64) / 1e-5 (float32)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_pool import _close, _tie_free, _x, pool_geometries

from edu_seg.reference import pool as ref

DTYPES = st.sampled_from([np.float64, np.float32])


def _max_pool_matches(gpu, x, k, s, p, d, ceil_mode):
    """Forward (exact, int64 indices) and backward of max pooling: twin == reference."""
    twin = gpu.twin("pool")
    y_ref, i_ref = ref.max_pool2d_forward(x, k, s, p, d, ceil_mode)
    y, indices = twin.max_pool2d_forward(gpu.to_device(x), k, s, p, d, ceil_mode)
    assert type(y) is gpu.cupy.ndarray and y.dtype == x.dtype and indices.dtype == np.int64
    assert np.array_equal(y_ref, y.get(), equal_nan=True)
    assert np.array_equal(i_ref, indices.get())
    dy = _x(y_ref.shape, x.dtype, seed=1)
    dx = twin.max_pool2d_backward(gpu.to_device(dy), indices, x.shape)
    assert dx.dtype == x.dtype
    _close(ref.max_pool2d_backward(dy, i_ref, x.shape), dx.get(), x.dtype)


def _avg_pool_matches(gpu, x, k, s, p, ceil_mode, include_pad):
    twin = gpu.twin("pool")
    y_ref = ref.avg_pool2d_forward(x, k, s, p, ceil_mode, include_pad)
    y = twin.avg_pool2d_forward(gpu.to_device(x), k, s, p, ceil_mode, include_pad)
    assert y.dtype == x.dtype
    _close(y_ref, y.get(), x.dtype)
    dy = _x(y_ref.shape, x.dtype, seed=1)
    dx = twin.avg_pool2d_backward(gpu.to_device(dy), x.shape, k, s, p, ceil_mode, include_pad)
    assert dx.dtype == x.dtype
    _close(ref.avg_pool2d_backward(dy, x.shape, k, s, p, ceil_mode, include_pad), dx.get(),
           x.dtype)


@given(geom=pool_geometries(), dtype=DTYPES, ties=st.booleans())
def test_max_pool_twin_matches_reference(gpu, geom, dtype, ties):
    shape, k, s, p, d, ceil_mode = geom
    _max_pool_matches(gpu, _x(shape, dtype, ties=ties), k, s, p, d, ceil_mode)


@given(geom=pool_geometries(dilation=False, max_pool=False), include_pad=st.booleans(),
       dtype=DTYPES)
def test_avg_pool_twin_matches_reference(gpu, geom, include_pad, dtype):
    shape, k, s, p, _, ceil_mode = geom
    _avg_pool_matches(gpu, _x(shape, dtype), k, s, p, ceil_mode, include_pad)


@given(N=st.integers(1, 2), C=st.integers(1, 3), H=st.integers(1, 17), W=st.integers(1, 17),
       OH=st.integers(1, 9), OW=st.integers(1, 9), dtype=DTYPES, ties=st.booleans())
def test_adaptive_pools_twin_match_reference(gpu, N, C, H, W, OH, OW, dtype, ties):
    twin = gpu.twin("pool")
    x = _x((N, C, H, W), dtype, ties=ties)
    y = twin.adaptive_avg_pool2d_forward(gpu.to_device(x), (OH, OW))
    assert y.dtype == dtype
    _close(ref.adaptive_avg_pool2d_forward(x, (OH, OW)), y.get(), dtype)
    dy = _x((N, C, OH, OW), dtype, seed=1)
    dx = twin.adaptive_avg_pool2d_backward(gpu.to_device(dy), x.shape)
    _close(ref.adaptive_avg_pool2d_backward(dy, x.shape), dx.get(), dtype)
    y_ref, i_ref = ref.adaptive_max_pool2d_forward(x, (OH, OW))
    y, indices = twin.adaptive_max_pool2d_forward(gpu.to_device(x), (OH, OW))
    assert y.dtype == dtype and indices.dtype == np.int64
    assert np.array_equal(y_ref, y.get()) and np.array_equal(i_ref, indices.get())
    # Its backward is max pooling's: bins overlap, so an argmax can be shared.
    _close(ref.max_pool2d_backward(dy, i_ref, x.shape),
           twin.max_pool2d_backward(gpu.to_device(dy), indices, x.shape).get(), dtype)


@given(geom=pool_geometries(dilation=False), dtype=DTYPES)
def test_max_unpool_twin_matches_reference(gpu, geom, dtype):
    twin = gpu.twin("pool")
    shape, k, s, p, _, ceil_mode = geom
    pooled, indices = ref.max_pool2d_forward(_x(shape, dtype), k, s, p, (1, 1), ceil_mode)
    # Overlapping windows repeat an index; unpooling other values than the pooled ones (as a
    # SegNet decoder does) makes the "later input wins" rule visible.
    for values in (pooled, _x(pooled.shape, dtype, seed=2)):
        y = twin.max_unpool2d_forward(gpu.to_device(values), gpu.to_device(indices), shape[2:])
        assert y.dtype == dtype
        assert np.array_equal(ref.max_unpool2d_forward(values, indices, shape[2:]), y.get())
    dy = _x(shape, dtype, seed=1)
    dx = twin.max_unpool2d_backward(gpu.to_device(dy), gpu.to_device(indices))
    assert dx.dtype == dtype
    assert np.array_equal(ref.max_unpool2d_backward(dy, indices), dx.get())


def test_max_unpool_repeated_index_keeps_the_last_value(gpu):
    twin = gpu.twin("pool")
    x, indices = np.array([[[[1.0, 2.0, 3.0]]]]), np.array([[[[4, 4, 1]]]])
    y = twin.max_unpool2d_forward(gpu.to_device(x), gpu.to_device(indices), (2, 3))
    assert y.get().tolist() == [[[[0.0, 3.0, 0.0], [0.0, 2.0, 0.0]]]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ties_go_to_the_first_maximum(gpu, dtype):
    twin = gpu.twin("pool")
    x = np.ones((1, 2, 4, 4), dtype=dtype)
    y, indices = twin.max_pool2d_forward(gpu.to_device(x), (3, 3), (1, 1), (1, 1), (1, 1), False)
    expected = [[max(oh - 1, 0) * 4 + max(ow - 1, 0) for ow in range(4)] for oh in range(4)]
    assert (indices.get() == expected).all() and (y.get() == 1).all()
    y, indices = twin.adaptive_max_pool2d_forward(gpu.to_device(np.ones((1, 1, 5, 5), dtype)),
                                                  (2, 2))
    assert indices.get()[0, 0].tolist() == [[0, 2], [10, 12]]
    # Constant input under every option: the reference's indices exactly.
    for k, s, p, d, ceil_mode in [((3, 2), (2, 1), (1, 1), (1, 2), True),
                                  ((2, 3), (3, 2), (1, 1), (2, 1), False)]:
        _max_pool_matches(gpu, np.full((2, 3, 7, 6), -2.5, dtype), k, s, p, d, ceil_mode)


def test_max_pool_handles_minus_inf_and_propagates_nan(gpu):
    twin = gpu.twin("pool")
    x = np.full((1, 1, 3, 3), -np.inf)
    y, indices = twin.max_pool2d_forward(gpu.to_device(x), (3, 3), (1, 1), (1, 1), (1, 1), False)
    assert np.isneginf(y.get()).all()
    assert np.array_equal(indices.get(), ref.max_pool2d_forward(x, (3, 3), (1, 1), (1, 1),
                                                                (1, 1), False)[1])
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    x[0, 0, 0, 1] = x[0, 0, 2, 0] = np.nan
    y, indices = twin.max_pool2d_forward(gpu.to_device(x), (3, 3), (3, 3), (0, 0), (1, 1), False)
    assert np.isnan(y.get()).all() and indices.get().item() == 1            # the first NaN
    y, indices = twin.adaptive_max_pool2d_forward(gpu.to_device(x), (1, 1))
    assert np.isnan(y.get()).all() and indices.get().item() == 1
    # NaNs scattered over a bigger map, overlapping windows, ceil_mode: the reference exactly.
    x = _x((2, 2, 9, 8), seed=3)
    x[_x(x.shape, seed=4) > 1.0] = np.nan
    _max_pool_matches(gpu, x, (3, 3), (2, 2), (1, 1), (1, 1), True)
    y_ref, i_ref = ref.adaptive_max_pool2d_forward(x, (4, 3))
    y, indices = twin.adaptive_max_pool2d_forward(gpu.to_device(x), (4, 3))
    assert np.array_equal(y_ref, y.get(), equal_nan=True)
    assert np.array_equal(i_ref, indices.get())


# Windows that start in the left padding, and ceil_mode windows that hang past the right padding
# (the last one of H=4, k=3, s=2, p=1 covers rows 3, 4 = padding, 5 = beyond it).
CEIL_GEOMETRIES = [((4, 5), (3, 3), (2, 2), (1, 1)), ((5, 7), (2, 3), (2, 3), (1, 1)),
                   ((6, 4), (4, 2), (3, 3), (2, 1)), ((1, 2), (3, 2), (2, 2), (1, 1))]


@pytest.mark.parametrize("hw, k, s, p", CEIL_GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ceil_mode_windows_in_the_padding(gpu, hw, k, s, p, dtype):
    for ceil_mode in (False, True):
        x = _x((2, 2, *hw), dtype)
        for include_pad in (False, True):
            _avg_pool_matches(gpu, x, k, s, p, ceil_mode, include_pad)
        _max_pool_matches(gpu, x, k, s, p, (1, 1), ceil_mode)
        _max_pool_matches(gpu, np.zeros_like(x), k, s, p, (1, 1), ceil_mode)    # all ties


def test_tie_free_max_pool_gradient_is_exact(gpu):
    """Non-overlapping windows: each dx element receives at most one dy, so no rounding."""
    twin = gpu.twin("pool")
    x = _tie_free((2, 3, 6, 8))
    y, indices = twin.max_pool2d_forward(gpu.to_device(x), (2, 2), (2, 2), (0, 0), (1, 1), False)
    dy = _x(y.shape, seed=1)
    dx = twin.max_pool2d_backward(gpu.to_device(dy), indices, x.shape).get()
    assert np.array_equal(dx, ref.max_pool2d_backward(dy, indices.get(), x.shape))
