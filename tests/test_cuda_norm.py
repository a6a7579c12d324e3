"""The CUDA twin of the batch-norm kernels == the NumPy reference (emulated on the CPU, and on a
real GPU where there is one: the ``gpu`` fixture of conftest.py).

Shapes and data are test_nn's (odd sizes, N·H·W = 1 included, means far from zero). Per-channel
results are float64 whatever the dtype of x, dx/y are in the dtype of x; values match to 1e-12
(float64) / 1e-5 (float32), the absolute tolerance of y and dx scaled by the size of the terms
that cancel in them (|x| ~ |shift|: a multiply-add fused on the GPU rounds once, not twice).
"""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from test_nn import randn, shapes

from edu_seg.reference import norm as ref

DTYPES = st.sampled_from([np.float64, np.float32])
SHIFTS = st.sampled_from([0.0, 5.0, -1e3])


def _close(want, got, dtype, size=1.0):
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * size)


def _data(shape, seed, shift, dtype):
    C = shape[1]
    x = randn(*shape, seed=seed, scale=2.0, shift=shift, dtype=dtype)
    dy = randn(*shape, seed=seed + 1, dtype=dtype)
    weight, bias = randn(C, seed=seed + 2), randn(C, seed=seed + 3)
    return x, dy, weight, bias


@given(shape=shapes, seed=st.integers(0, 2**16), shift=SHIFTS, dtype=DTYPES)
def test_stats_twin_matches_reference(gpu, shape, seed, shift, dtype):
    twin = gpu.twin("norm")
    x, _, _, _ = _data(shape, seed, shift, dtype)
    mean, var = twin.batch_norm_stats(gpu.to_device(x))
    assert type(mean) is gpu.cupy.ndarray
    assert mean.dtype == var.dtype == np.float64 and mean.shape == var.shape == (shape[1],)
    mean_ref, var_ref = ref.batch_norm_stats(x)
    # float64 sums either way: the order of summation is the only difference
    np.testing.assert_allclose(mean.get(), mean_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(var.get(), var_ref, rtol=1e-12, atol=1e-12)


@given(shape=shapes, seed=st.integers(0, 2**16), shift=SHIFTS, dtype=DTYPES,
       eps=st.sampled_from([1e-5, 1e-3]))
def test_forward_and_backward_twin_match_reference(gpu, shape, seed, shift, dtype, eps):
    twin = gpu.twin("norm")
    x, dy, weight, bias = _data(shape, seed, shift, dtype)
    mean, var = ref.batch_norm_stats(x)
    invstd = 1 / np.sqrt(var + eps)
    size = 1 + abs(shift)
    d_x, d_dy, d_mean, d_invstd, d_weight, d_bias = gpu.to_device(x, dy, mean, invstd, weight,
                                                                  bias)
    y = twin.batch_norm_forward(d_x, d_mean, d_invstd, d_weight, d_bias)
    assert y.dtype == dtype and y.shape == x.shape
    _close(ref.batch_norm_forward(x, mean, invstd, weight, bias), y.get(), dtype, size)
    for training in (True, False):
        dx, dweight, dbias = twin.batch_norm_backward(d_dy, d_x, d_mean, d_invstd, d_weight,
                                                      training)
        dx_ref, dweight_ref, dbias_ref = ref.batch_norm_backward(dy, x, mean, invstd, weight,
                                                                 training)
        assert dx.dtype == dtype and dweight.dtype == dbias.dtype == np.float64
        _close(dx_ref, dx.get(), dtype, size)
        _close(dweight_ref, dweight.get(), np.float64, x.size)   # sums of m terms
        _close(dbias_ref, dbias.get(), np.float64, x.size)


def test_evaluation_statistics_and_float32_at_scale(gpu):
    """Running statistics unrelated to the batch (evaluation), and a plane bigger than one block
    of threads: the grid-stride loops and the channel index of element i."""
    twin = gpu.twin("norm")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 3, 17, 19)) * 3 + 7).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    mean, invstd = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    weight, bias = rng.standard_normal(3), rng.standard_normal(3)
    d = gpu.to_device(x, dy, mean, invstd, weight, bias)
    y = twin.batch_norm_forward(d[0], *d[2:])
    _close(ref.batch_norm_forward(x, mean, invstd, weight, bias), y.get(), np.float32, 10)
    got = twin.batch_norm_backward(d[1], d[0], d[2], d[3], d[4], False)
    want = ref.batch_norm_backward(dy, x, mean, invstd, weight, False)
    _close(want[0], got[0].get(), np.float32)
    for w, g in zip(want[1:], got[1:]):
        _close(w, g.get(), np.float64, x.size)
