"""The CUDA twin of the conv kernels == the NumPy reference (emulated on the CPU, and on a real
GPU where there is one: the ``gpu`` fixture of conftest.py).

Geometries are test_conv's: kernels 1..5 per axis (so 1×1, k×1 and 1×k), strides, padding,
dilation, groups incl. depthwise, N > 1, odd sizes, transposed convs with output_padding
(also output_padding >= stride, where the gradient's window grid is shorter than the full one).
float64 must match to 1e-12; float32 to 1e-5 of the reference run in float64 on the same inputs.
"""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from test_conv import (conv_arrays, conv_size, geometries, geometry_args, rand, tconv_arrays,
                       tconv_size, transposed_geometries)

from edu_seg.reference import conv as ref

dtypes = st.sampled_from([np.float64, np.float32])


def _close(want, got, dtype):
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def _ref(function, *args):
    """The reference, run in float64: for float32 inputs that is (nearly) the exact answer, so
    the twin's float32 result is checked for its own rounding only, whatever order cuBLAS sums in
    (two float32 results in different orders can differ by twice that)."""
    return function(*(a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args))


def _on_device(gpu, got, dtype):
    """The twin's result is a device array of the input's dtype; its host copy."""
    assert type(got) is gpu.cupy.ndarray and got.dtype == dtype
    return got.get()


def _conv_output_hw(g):
    return tuple(conv_size(i, k, s, p, d) for i, k, s, p, d in
                 zip((g["H"], g["W"]), g["k"], g["stride"], g["padding"], g["dilation"]))


def _check_conv(gpu, twin, g, dtype):
    """Every conv2d function of the twin against the reference on geometry g."""
    x, w, b = conv_arrays(g, dtype)
    args = geometry_args(g)
    X, Wd, B = gpu.to_device(x, w, b)
    y_ref = _ref(ref.conv2d_forward, x, w, b, *args)
    _close(y_ref, _on_device(gpu, twin.conv2d_forward(X, Wd, B, *args), dtype), dtype)

    dy = rand(np.random.default_rng(g["seed"] + 1), *y_ref.shape, dtype=dtype)
    DY = gpu.to_device(dy)
    _close(_ref(ref.conv2d_backward_input, dy, w, x.shape, *args),
           _on_device(gpu, twin.conv2d_backward_input(DY, Wd, x.shape, *args), dtype), dtype)
    _close(_ref(ref.conv2d_backward_weight, dy, x, w.shape, *args),
           _on_device(gpu, twin.conv2d_backward_weight(DY, X, w.shape, *args), dtype), dtype)
    _close(_ref(ref.conv2d_backward_bias, dy),
           _on_device(gpu, twin.conv2d_backward_bias(DY), dtype), dtype)


@given(g=geometries(), dtype=dtypes)
def test_conv2d_twin_matches_reference(gpu, g, dtype):
    assume(min(_conv_output_hw(g)) > 0)
    _check_conv(gpu, gpu.twin("conv"), g, dtype)


@given(g=geometries(), dtype=dtypes)
def test_im2col_col2im_twin_match_reference_and_are_adjoint(gpu, g, dtype):
    """im2col is a copy and col2im a gather that adds in the reference's (kh, kw) order, so
    both equal the reference exactly; and <col2im(c), x> = <c, im2col(x)>."""
    twin = gpu.twin("conv")
    OH, OW = _conv_output_hw(g)
    assume(OH > 0 and OW > 0)
    x, _, _ = conv_arrays(g, dtype)
    geometry = (g["k"], g["stride"], g["padding"], g["dilation"])
    cols = _on_device(gpu, twin.im2col(gpu.to_device(x), *geometry), dtype)
    np.testing.assert_array_equal(cols, ref.im2col(x, *geometry))

    c = rand(np.random.default_rng(g["seed"] + 8), g["N"], g["C"] * g["k"][0] * g["k"][1],
             OH * OW, dtype=dtype)
    back = _on_device(gpu, twin.col2im(gpu.to_device(c), x.shape, *geometry), dtype)
    np.testing.assert_array_equal(back, ref.col2im(c, x.shape, *geometry))
    lhs = np.vdot(back.astype(np.float64), x.astype(np.float64))
    rhs = np.vdot(c.astype(np.float64), cols.astype(np.float64))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert abs(lhs - rhs) <= tol * np.linalg.norm(c) * np.linalg.norm(x) + 1e-300


@given(g=transposed_geometries(), dtype=dtypes)
def test_conv_transpose2d_twin_matches_reference(gpu, g, dtype):
    """The forward (conv2d_backward_input, dy's grid possibly shorter than x's full one), and
    the weight gradient the ops compute for it (x and dy swapped: the column grid is x's)."""
    twin = gpu.twin("conv")
    OH, OW = (tconv_size(i, k, s, p, q, d) for i, k, s, p, q, d in
              zip((g["H"], g["W"]), g["k"], g["stride"], g["padding"], g["output_padding"],
                  g["dilation"]))
    assume(OH > 0 and OW > 0)
    x, w, b = tconv_arrays(g, dtype)
    args = (g["stride"], g["padding"], g["output_padding"], g["dilation"], g["groups"])
    X, Wd, B = gpu.to_device(x, w, b)
    y_ref = _ref(ref.conv_transpose2d_forward, x, w, b, *args)
    _close(y_ref, _on_device(gpu, twin.conv_transpose2d_forward(X, Wd, B, *args), dtype), dtype)

    conv_args = (g["stride"], g["padding"], g["dilation"], g["groups"])
    dy = rand(np.random.default_rng(g["seed"] + 1), *y_ref.shape, dtype=dtype)
    _close(_ref(ref.conv2d_backward_weight, x, dy, w.shape, *conv_args),
           _on_device(gpu, twin.conv2d_backward_weight(X, gpu.to_device(dy), w.shape,
                                                       *conv_args), dtype), dtype)


@pytest.mark.parametrize("per_chunk", [1, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_chunks_of_samples_give_the_same_result(gpu, monkeypatch, per_chunk, dtype):
    """A tiny MAX_COLUMN_BYTES forces one sample per chunk, or ragged chunks (2, 2, 1): same
    results as the reference."""
    twin = gpu.twin("conv")
    g = dict(N=5, C=4, C_out=6, H=7, W=6, k=(3, 2), stride=(2, 1), padding=(1, 0),
             dilation=(1, 2), groups=2, bias=True, seed=3)
    sample_bytes = 4 * 3 * 2 * 4 * 4 * np.dtype(dtype).itemsize  # C·KH·KW·OH·OW entries
    monkeypatch.setattr(twin, "MAX_COLUMN_BYTES", per_chunk * sample_bytes + 1)
    assert len(twin._sample_chunks(5, sample_bytes)) == (5 if per_chunk == 1 else 3)
    _check_conv(gpu, twin, g, dtype)
    x, w, b = tconv_arrays(dict(g, C=6, C_out=4), dtype)
    args = ((2, 2), (1, 0), (1, 1), (1, 2), 2)
    _close(_ref(ref.conv_transpose2d_forward, x, w, b, *args),
           _on_device(gpu, twin.conv_transpose2d_forward(*gpu.to_device(x, w, b), *args), dtype),
           dtype)
