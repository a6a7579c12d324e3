"""The CUDA twin of the dense-CRF messages == the NumPy reference (emulated on the CPU, and on a
real GPU where there is one: the ``gpu`` fixture of conftest.py)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edu_seg.reference import crf as ref


def _case(rng, L, H, W, dtype):
    """Colours in 0-255 and marginals normalised over the labels (as tests/test_crf.py's
    random_case; not imported: that module skips itself without the compiled core)."""
    image = (rng.random((3, H, W)) * 255).astype(dtype)
    q = rng.random((L, H, W)).astype(dtype)
    return image, q / q.sum(axis=0)


def _close(want, got, dtype):
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def _check(gpu, image, q, params):
    twin = gpu.twin("crf")
    m = twin.dense_crf_messages(*gpu.to_device(image, q), *params)
    assert type(m) is gpu.cupy.ndarray and m.dtype == q.dtype and m.shape == q.shape
    _close(ref.dense_crf_messages(image, q, *params), m.get(), q.dtype)


@given(L=st.integers(1, 4), H=st.integers(1, 11), W=st.integers(1, 11),
       theta_alpha=st.floats(0.5, 80.0), theta_beta=st.floats(2.0, 60.0),
       theta_gamma=st.floats(0.3, 10.0), w1=st.floats(0.0, 10.0), w2=st.floats(0.0, 5.0),
       dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 2 ** 16))
def test_messages_twin_matches_reference(gpu, L, H, W, theta_alpha, theta_beta, theta_gamma,
                                         w1, w2, dtype, seed):
    image, q = _case(np.random.default_rng(seed), L, H, W, dtype)
    _check(gpu, image, q, (theta_alpha, theta_beta, theta_gamma, w1, w2))


@pytest.mark.parametrize("L, H, W", [(1, 7, 9), (3, 16, 12), (5, 20, 23)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_messages_twin_on_the_compiled_twins_shapes(gpu, L, H, W, dtype):
    """The shapes and widths of tests/test_crf.py, plus a block of identical colours."""
    image, q = _case(np.random.default_rng(L), L, H, W, dtype)
    image[:, 1:4, 2:6] = 120.0                      # equal colours: k_alpha = its spatial part
    _check(gpu, image, q, (40.0, 20.0, 2.0, 5.0, 3.0))
