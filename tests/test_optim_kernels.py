"""The Adam update's three twins (edu_seg/reference/optim.py, kernels/optim.pyx, cuda/optim.cu):
the compiled kernel is BIT-identical to the reference (no fused multiply-adds, the same
operations in the same order), on odd sizes, with and without AMSGrad, on 1 and 2 threads;
the CUDA twin (emulated on the CPU, and on a real GPU where there is one) agrees to rounding."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edu_seg import nn
from edu_seg.optim import Adam
from edu_seg.reference import optim as ref
from helpers import assert_thread_count_independent

compiled = pytest.importorskip("edu_seg._kernels.optim")

# sizes around the kernel's block of 16384 values and the one-thread grain of 32768
SIZES = st.sampled_from([0, 1, 7, 16383, 16384, 16385, 40000])
DTYPES = st.sampled_from([np.float32, np.float64])
HYPER = dict(lr=3e-3, beta1=0.8, beta2=0.99, eps=1e-8)


def _run(update, n, dtype, amsgrad, steps=4, seed=0, to_device=lambda a: a):
    """p, m, v (and v̂) after ``steps`` updates of the same starting point, as host arrays."""
    rng = np.random.default_rng(seed)
    p = to_device(rng.standard_normal(n).astype(dtype))
    state = [to_device(np.zeros(n, dtype)) for _ in range(3 if amsgrad else 2)]
    for t in range(1, steps + 1):
        g = to_device((rng.standard_normal(n) * (1 + t)).astype(dtype))
        update(p, g, state[0], state[1], state[2] if amsgrad else None, t, **HYPER)
    return tuple(a.get() if hasattr(a, "get") else a for a in (p, *state))


@given(n=SIZES, dtype=DTYPES, amsgrad=st.booleans(), seed=st.integers(0, 2**16))
def test_compiled_update_is_bit_identical_to_the_reference(n, dtype, amsgrad, seed):
    want = _run(ref.adam_update, n, dtype, amsgrad, seed=seed)
    got = assert_thread_count_independent(
        lambda: _run(compiled.adam_update, n, dtype, amsgrad, seed=seed))
    for a, b in zip(want, got):
        np.testing.assert_array_equal(b, a)


def test_amsgrad_keeps_the_largest_second_moment_and_propagates_nan():
    p, g = np.zeros(3, np.float32), np.zeros(3, np.float32)
    m, v = np.zeros(3, np.float32), np.array([1.0, 1.0, 1.0], np.float32)
    v_max = np.array([4.0, 0.5, np.nan], np.float32)
    compiled.adam_update(p, g, m, v, v_max, 1, **HYPER)
    np.testing.assert_array_equal(v_max, np.array([4.0, 0.99, np.nan], np.float32))


@pytest.mark.parametrize("bad, message", [
    (lambda a: a.astype(np.float64), "dtype float64"),
    (lambda a: a[:-1], r"shape \(4,\)"),
    (lambda a: np.stack([a, a], axis=1)[:, 0], "C-contiguous False"),
])
def test_compiled_update_names_a_wrong_array(bad, message):
    p = np.ones(5, np.float32)
    with pytest.raises(ValueError, match=f"adam_update: grad .*{message}"):
        compiled.adam_update(p, bad(np.ones(5, np.float32)), np.zeros_like(p),
                             np.zeros_like(p), None, 1, **HYPER)


def test_adam_updates_a_strided_parameter_in_its_own_array():
    # a parameter that is a transposed view: the kernel runs on a contiguous copy that is
    # written back, so the view and the array under it change, as NumPy's in-place ops would
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = nn.Parameter(base.T)
    plain = nn.Parameter(base.T.copy())
    for q in (p, plain):
        opt = Adam([q], lr=0.1)
        q.grad = np.ones((4, 3), np.float32)
        opt.step()
    assert np.shares_memory(p.data, base)
    np.testing.assert_array_equal(p.data, plain.data)
    np.testing.assert_array_equal(base, plain.data.T)


@given(n=SIZES, dtype=DTYPES, amsgrad=st.booleans())
def test_cuda_twin_matches_reference(gpu, n, dtype, amsgrad):
    twin = gpu.twin("optim")
    want = _run(ref.adam_update, n, dtype, amsgrad)
    got = _run(twin.adam_update, n, dtype, amsgrad, to_device=gpu.cupy.asarray)
    tol = 1e-12 if dtype == np.float64 else 1e-5          # a GPU may fuse multiply-adds
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol)
