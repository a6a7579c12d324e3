"""Resizing images in plain NumPy: bilinear and nearest interpolation and their adjoints (the
textbook twin of ``kernels/resample.pyx``).

Every kernel takes a C-contiguous float32/float64 array and normalised options (sizes as
``(int, int)``; ``scales`` is None or the ``(float, float)`` scale factors the user passed),
already validated by :mod:`edu_seg.ops.resample`, and returns a new array.

Both resizes are separable: an output pixel (oh, ow) reads input rows chosen by oh alone and
columns chosen by ow alone. So each axis gets a small table — for every output index, which
input indices it reads and with what weights — and the image is resized one axis at a time.
The backward passes are the adjoints (transposes) of those linear maps: scatters that add.
"""
import numpy as np

__all__ = ["linear_source_taps", "nearest_source_index",
           "interpolate_bilinear_forward", "interpolate_bilinear_backward",
           "interpolate_nearest_forward", "interpolate_nearest_backward"]


def linear_source_taps(in_size, out_size, align_corners, scale=None):
    """For each output index along one axis: the two input taps of linear interpolation.

    Parameters
    ----------
    in_size, out_size : int
    align_corners : bool
    scale : float or None
        The scale factor the user passed (PyTorch then steps by 1/scale, not in/out).

    Returns
    -------
    i0, i1 : ndarray of int64, shape (out_size,)
        The input indices left and right of the source coordinate (i1 = i0 + 1, or i0 at the
        last pixel).
    lam : ndarray of float64, shape (out_size,)
        Weight of i1; i0 gets 1 - lam.

    Notes
    -----
    Source coordinate of output index o (PyTorch's rules, in float64 here):

    - align_corners=True: ``src = o·(in−1)/(out−1)`` (0 when out = 1): the centres of the
      corner pixels of input and output coincide.
    - align_corners=False: ``src = max((o + ½)·step − ½, 0)`` with step = in/out, or 1/scale
      when a scale factor was given: pixels are unit squares and their centres are mapped.

    An axis whose size does not change is copied (src = o), even when a scale factor such as
    1.25 was given that floors back to the same size: PyTorch's rule, taken by using
    step = in/out = 1 there.
    """
    dst = np.arange(out_size, dtype=np.float64)
    if align_corners:
        src = dst * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    else:
        step = 1.0 / scale if scale is not None and out_size != in_size else in_size / out_size
        src = np.maximum((dst + 0.5) * step - 0.5, 0.0)
    i0 = np.minimum(src.astype(np.int64), in_size - 1)   # src >= 0, so truncation is floor
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, src - i0


def nearest_source_index(in_size, out_size, scale=None):
    """For each output index along one axis: the input index PyTorch's ``nearest`` copies.

    Notes
    -----
    ``src = min(⌊o·step⌋, in−1)`` with step = in/out, or 1/scale when a scale factor was given.
    Computed in float32 exactly as PyTorch does, so the floor lands on the same side when
    o·step is (nearly) an integer. This is the legacy ``nearest`` (it shifts the image by up
    to half a pixel), not ``nearest-exact``.

    PyTorch ignores the scale factor where the size is unchanged or exactly doubled (its fast
    paths src = o and src = o // 2, which is what step = in/out gives there); so do we.
    """
    if scale is not None and out_size not in (in_size, 2 * in_size):
        step = np.float32(1.0 / scale)
    else:
        step = np.float32(in_size) / np.float32(out_size)
    src = np.floor(np.arange(out_size, dtype=np.float32) * step).astype(np.int64)
    return np.minimum(src, in_size - 1)


def _scales(scales):
    return (None, None) if scales is None else scales


def interpolate_bilinear_forward(x, out_hw, align_corners, scales):
    """Bilinear resize.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    out_hw : (int, int)
        (OH, OW).
    align_corners : bool
    scales : (float, float) or None
        Scale factors given by the user, or None when the size was given.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)

    Notes
    -----
    With the row taps (h0, h1, λh) and column taps (w0, w1, λw) of :func:`linear_source_taps`,

        y[oh, ow] = (1−λh)·r[h0, ow] + λh·r[h1, ow],
        r[h, ow]  = (1−λw)·x[h, w0] + λw·x[h, w1],

    i.e. interpolate along W first (H·OW values), then along H.
    """
    (OH, OW), (sh, sw) = out_hw, _scales(scales)
    H, W = x.shape[2:]
    h0, h1, lh = linear_source_taps(H, OH, align_corners, sh)
    w0, w1, lw = linear_source_taps(W, OW, align_corners, sw)
    lh, lw = lh.astype(x.dtype)[:, None], lw.astype(x.dtype)
    r = x[:, :, :, w0] * (1 - lw) + x[:, :, :, w1] * lw             # (N, C, H, OW)
    return r[:, :, h0, :] * (1 - lh) + r[:, :, h1, :] * lh          # (N, C, OH, OW)


def interpolate_bilinear_backward(dy, in_hw, align_corners, scales):
    """Gradient of the bilinear resize: its adjoint, which scatters dy back to the four taps.

    Parameters
    ----------
    dy : ndarray, shape (N, C, OH, OW)
    in_hw : (int, int)
        (H, W) of the forward's input.
    align_corners : bool
    scales : (float, float) or None

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)

    Notes
    -----
    The forward is y = A_H · x · A_Wᵀ with sparse matrices A (two weights per row), so
    dx = A_Hᵀ · dy · A_W: undo the H step first (each output row adds its share into two
    rows), then the W step. Many outputs read the same input when upsampling, so the scatter
    must add (``np.add.at``), never assign.
    """
    (H, W), (sh, sw) = in_hw, _scales(scales)
    N, C, OH, OW = dy.shape
    h0, h1, lh = linear_source_taps(H, OH, align_corners, sh)
    w0, w1, lw = linear_source_taps(W, OW, align_corners, sw)
    lh, lw = lh.astype(dy.dtype)[:, None], lw.astype(dy.dtype)
    all_ = slice(None)
    dr = np.zeros((N, C, H, OW), dtype=dy.dtype)                    # gradient of r
    np.add.at(dr, (all_, all_, h0), dy * (1 - lh))
    np.add.at(dr, (all_, all_, h1), dy * lh)
    dx = np.zeros((N, C, H, W), dtype=dy.dtype)
    np.add.at(dx, (all_, all_, all_, w0), dr * (1 - lw))
    np.add.at(dx, (all_, all_, all_, w1), dr * lw)
    return dx


def interpolate_nearest_forward(x, out_hw, scales):
    """Nearest-neighbour resize (PyTorch's ``mode="nearest"``).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    out_hw : (int, int)
    scales : (float, float) or None

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)
        y[oh, ow] = x[src_h[oh], src_w[ow]] with :func:`nearest_source_index`.
    """
    (OH, OW), (sh, sw) = out_hw, _scales(scales)
    H, W = x.shape[2:]
    rows = nearest_source_index(H, OH, sh)
    cols = nearest_source_index(W, OW, sw)
    return x[:, :, rows[:, None], cols[None, :]]


def interpolate_nearest_backward(dy, in_hw, scales):
    """Gradient of the nearest resize: each input pixel sums dy over the outputs that copied it.

    Parameters
    ----------
    dy : ndarray, shape (N, C, OH, OW)
    in_hw : (int, int)
    scales : (float, float) or None

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    (H, W), (sh, sw) = in_hw, _scales(scales)
    N, C, OH, OW = dy.shape
    rows = nearest_source_index(H, OH, sh)
    cols = nearest_source_index(W, OW, sw)
    dx = np.zeros((N, C, H, W), dtype=dy.dtype)
    np.add.at(dx, (slice(None), slice(None), rows[:, None], cols[None, :]), dy)
    return dx
