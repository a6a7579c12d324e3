"""The CUDA twin of the resampling kernels == the NumPy reference (emulated on the CPU, and on a
real GPU where there is one: the ``gpu`` fixture of conftest.py)."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from test_resample import _close, _x, resizes

from edu_seg.reference import resample as ref


@given(geom=resizes(), align=st.booleans(), dtype=st.sampled_from([np.float64, np.float32]))
def test_bilinear_twin_matches_reference(gpu, geom, align, dtype):
    twin = gpu.twin("resample")
    shape, out_hw, scales = geom
    x = _x(shape, dtype)
    y = twin.interpolate_bilinear_forward(gpu.to_device(x), out_hw, align, scales)
    assert type(y) is gpu.cupy.ndarray and y.dtype == dtype
    _close(ref.interpolate_bilinear_forward(x, out_hw, align, scales), y.get(), dtype)
    dy = _x(y.shape, dtype, seed=1)
    dx = twin.interpolate_bilinear_backward(gpu.to_device(dy), shape[2:], align, scales)
    _close(ref.interpolate_bilinear_backward(dy, shape[2:], align, scales), dx.get(), dtype)


@given(geom=resizes(), dtype=st.sampled_from([np.float64, np.float32]))
def test_nearest_twin_matches_reference(gpu, geom, dtype):
    twin = gpu.twin("resample")
    shape, out_hw, scales = geom
    x = _x(shape, dtype)
    y = twin.interpolate_nearest_forward(gpu.to_device(x), out_hw, scales)
    assert np.array_equal(ref.interpolate_nearest_forward(x, out_hw, scales), y.get())
    dy = _x(y.shape, dtype, seed=1)
    dx = twin.interpolate_nearest_backward(gpu.to_device(dy), shape[2:], scales)
    _close(ref.interpolate_nearest_backward(dy, shape[2:], scales), dx.get(), dtype)
