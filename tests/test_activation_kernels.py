"""The ReLU's three twins (edu_seg/reference/activation.py, kernels/activation.pyx,
cuda/activation.cu): bit-identical results, special values included (NaN, ±0, ±inf), on odd
sizes, on 1 and 2 threads, and the reference's expression for arrays the loops do not take."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edu_seg.reference import activation as ref
from helpers import assert_thread_count_independent

compiled = pytest.importorskip("edu_seg._kernels.activation")

SPECIAL = [0.0, -0.0, np.nan, np.inf, -np.inf, 1.5, -2.0, 1e-45, -1e-45]
# sizes around the kernels' block of 16384 values and the one-thread grain of 32768
SIZES = st.sampled_from([0, 1, 9, 16383, 16385, 40000])
DTYPES = st.sampled_from([np.float32, np.float64])


def _data(n, dtype, seed):
    rng = np.random.default_rng(seed)
    x, dy = rng.standard_normal((2, n)).astype(dtype)
    x[: min(n, len(SPECIAL))] = SPECIAL[:n]               # special values at the front
    dy[-min(n, len(SPECIAL)):] = SPECIAL[:n][::-1]        # and at the back of dy
    return x, dy


def _same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.ascontiguousarray(a).view(np.uint8),
                                  np.ascontiguousarray(b).view(np.uint8))


@pytest.mark.filterwarnings("ignore:invalid value")        # inf * 0 in the reference
@given(n=SIZES, dtype=DTYPES, seed=st.integers(0, 2**16))
def test_compiled_relu_is_bit_identical_to_the_reference(n, dtype, seed):
    x, dy = _data(n, dtype, seed)
    y, dx = assert_thread_count_independent(
        lambda: (compiled.relu_forward(x), compiled.relu_backward(dy, ref.relu_forward(x))))
    _same_bits(ref.relu_forward(x), y)
    _same_bits(ref.relu_backward(dy, ref.relu_forward(x)), dx)


def test_relu_keeps_nan_and_makes_negative_zero_positive():
    y = compiled.relu_forward(np.array([np.nan, -0.0, -1.0, 2.0], np.float32))
    assert np.isnan(y[0]) and not np.signbit(y[1]) and y[2] == 0 and y[3] == 2


@pytest.mark.parametrize("x", [
    np.arange(-6, 6, dtype=np.float32).reshape(3, 4).T,        # not C-contiguous
    np.arange(-6, 6, dtype=np.float16),                         # a dtype the loops lack
    np.arange(-6, 6, dtype=np.int64),
])
def test_other_arrays_take_the_reference_expression(x):
    _same_bits(ref.relu_forward(x), compiled.relu_forward(x))
    dy = np.ones(x.shape, x.dtype)
    _same_bits(ref.relu_backward(dy, x), compiled.relu_backward(dy, x))


@pytest.mark.filterwarnings("ignore:invalid value")
@given(n=SIZES, dtype=DTYPES)
def test_cuda_twin_is_bit_identical_to_the_reference(gpu, n, dtype):
    twin = gpu.twin("activation")
    x, dy = _data(n, dtype, 0)
    y = ref.relu_forward(x)
    _same_bits(y, twin.relu_forward(gpu.to_device(x)).get())
    _same_bits(ref.relu_backward(dy, y), twin.relu_backward(*gpu.to_device(dy, y)).get())
