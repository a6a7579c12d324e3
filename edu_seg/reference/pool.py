"""Pooling in plain NumPy: max, average, adaptive, and max-unpooling (the textbook twin of
``kernels/pool.pyx``).

Every kernel takes C-contiguous float32/float64 arrays and normalised options (pairs of ints,
already validated by :mod:`edu_seg.ops.pool`) and returns new arrays. The compiled twin has the
same functions, signatures and results.

Windows
-------
A pool with kernel (KH, KW), stride (SH, SW), padding (PH, PW) and dilation (DH, DW) gives output
pixel (oh, ow) the window of input taps

    h = oh·SH − PH + kh·DH,    w = ow·SW − PW + kw·DW,    0 <= kh < KH, 0 <= kw < KW.

Taps outside [0, H) × [0, W) are padding: −∞ for max pooling (they never win), 0 for average
pooling. The output size per axis is :func:`pool_output_size`.

Indices
-------
Max pooling also returns, for each output pixel, where its maximum came from: the flat index
``h*W + w`` inside its own (n, c) plane, like PyTorch. Ties go to the first maximum in row-major
order; a NaN counts as larger than any number (the first NaN wins), so NaNs propagate.
"""
import numpy as np

__all__ = ["pool_output_size", "adaptive_pool_bins",
           "max_pool2d_forward", "max_pool2d_backward",
           "max_unpool2d_forward", "max_unpool2d_backward",
           "avg_pool2d_forward", "avg_pool2d_backward",
           "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward",
           "adaptive_max_pool2d_forward"]


def pool_output_size(size, kernel_size, stride, padding, dilation=1, ceil_mode=False):
    """Number of windows a pool fits along one axis (PyTorch's rule).

    Parameters
    ----------
    size, kernel_size, stride, padding, dilation : int
        i, k, s, p, d of one axis.
    ceil_mode : bool
        Round up instead of down, so a last, partial window is kept.

    Returns
    -------
    int
        o; zero or negative when the window does not fit (the ops reject that).

    Notes
    -----
    With the effective kernel k̂ = d(k − 1) + 1,

        o = ⌊(i + 2p − k̂) / s⌋ + 1          (⌈·⌉ with ceil_mode).

    With ceil_mode the last window is dropped if it would start at or beyond i + p, i.e. in
    the right padding only: every window must start inside the input or the left padding.

    Examples
    --------
    >>> pool_output_size(5, 2, 2, 0), pool_output_size(5, 2, 2, 0, ceil_mode=True)
    (2, 3)
    """
    room = size + 2 * padding - (dilation * (kernel_size - 1) + 1)
    if not ceil_mode:
        return room // stride + 1
    out = -(-room // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def adaptive_pool_bins(size, bins):
    """Start and end (exclusive) of each adaptive-pooling bin along one axis.

    Notes
    -----
    Bin j of n covers [⌊j·i/n⌋, ⌈(j+1)·i/n⌉). When n does not divide i the bins overlap by one
    pixel (3 bins on 4 pixels: [0, 2), [1, 3), [2, 4)); when n > i some pixels feed several bins.

    Returns
    -------
    start, end : ndarray of int64, shape (bins,)
    """
    j = np.arange(bins, dtype=np.int64)
    return (j * size) // bins, ((j + 1) * size + bins - 1) // bins


def _window_taps(out, kernel, stride, padding, dilation):
    """(out, kernel) array: the input position each tap of each window reads (may be padding)."""
    return (np.arange(out)[:, None] * stride - padding) + np.arange(kernel)[None, :] * dilation


# ================================================================================ max pooling
def max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode):
    """Max pooling with the argmax of every window.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel_size, stride, padding, dilation : (int, int)
    ceil_mode : bool

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)
        y[n, c, oh, ow] = max over the window's taps inside the input.
    indices : ndarray of int64, shape (N, C, OH, OW)
        Flat position ``h*W + w`` of that maximum in its (n, c) plane.

    Notes
    -----
    The loop runs over the KH·KW taps and is vectorised over all windows at once: each tap
    replaces the best value so far where it is larger. Taps are visited in row-major order and
    only a strictly larger value replaces the best, so ties keep the first maximum.
    """
    N, C, H, W = x.shape
    (KH, KW), (SH, SW), (PH, PW), (DH, DW) = kernel_size, stride, padding, dilation
    OH = pool_output_size(H, KH, SH, PH, DH, ceil_mode)
    OW = pool_output_size(W, KW, SW, PW, DW, ceil_mode)
    rows = _window_taps(OH, KH, SH, PH, DH)                # (OH, KH)
    cols = _window_taps(OW, KW, SW, PW, DW)                # (OW, KW)
    y = np.full((N, C, OH, OW), -np.inf, dtype=x.dtype)
    indices = np.full((N, C, OH, OW), -1, dtype=np.int64)  # -1: no tap inside the input yet
    for kh in range(KH):
        h = rows[:, kh][:, None]                           # (OH, 1) row this tap reads
        for kw in range(KW):
            w = cols[:, kw][None, :]                       # (1, OW)
            inside = (h >= 0) & (h < H) & (w >= 0) & (w < W)              # (OH, OW)
            v = x[:, :, np.clip(h, 0, H - 1), np.clip(w, 0, W - 1)]      # (N, C, OH, OW)
            # A padding tap never wins. The first inside tap always does (even if it is -inf);
            # a NaN beats numbers but not an earlier NaN.
            take = inside & ((indices < 0) | (v > y) | (np.isnan(v) & ~np.isnan(y)))
            y = np.where(take, v, y)
            indices = np.where(take, h * W + w, indices)
    return y, indices


def max_pool2d_backward(dy, indices, x_shape):
    """Gradient of max pooling (and of adaptive max pooling): route dy to the argmax.

    Parameters
    ----------
    dy : ndarray, shape (N, C, OH, OW)
    indices : ndarray of int64, shape (N, C, OH, OW)
        From the forward pass.
    x_shape : (N, C, H, W)

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
        dx[n, c].flat[i] = Σ dy[n, c, oh, ow] over the windows whose maximum was at i.
    """
    N, C, H, W = x_shape
    dx = np.zeros((N * C, H * W), dtype=dy.dtype)
    planes = np.arange(N * C)[:, None]
    # np.add.at, not dx[...] += dy: overlapping windows can share an argmax, and each must add.
    np.add.at(dx, (planes, indices.reshape(N * C, -1)), dy.reshape(N * C, -1))
    return dx.reshape(x_shape)


def max_unpool2d_forward(x, indices, output_hw):
    """Max-unpooling (SegNet): put each value back where its maximum came from, zeros elsewhere.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    indices : ndarray of int64, shape (N, C, H, W)
        Flat positions ``h*OW + w`` in [0, OH·OW), e.g. from max pooling.
    output_hw : (int, int)
        (OH, OW).

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)
        y[n, c].flat[indices[n, c, i, j]] = x[n, c, i, j]. If two inputs name the same position
        (overlapping pooling windows), the later one in row-major order is kept, as a serial loop
        would; after max pooling they hold the same value anyway.
    """
    N, C = x.shape[:2]
    OH, OW = output_hw
    y = np.zeros((N * C, OH * OW), dtype=x.dtype)
    planes = np.arange(N * C)[:, None]
    y[planes, indices.reshape(N * C, -1)] = x.reshape(N * C, -1)
    return y.reshape(N, C, OH, OW)


def max_unpool2d_backward(dy, indices):
    """Gradient of max-unpooling: read dy back from the positions the values were put (a gather).

    Parameters
    ----------
    dy : ndarray, shape (N, C, OH, OW)
    indices : ndarray of int64, shape (N, C, H, W)

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
        dx[n, c, i, j] = dy[n, c].flat[indices[n, c, i, j]].
    """
    N, C = indices.shape[:2]
    flat = np.take_along_axis(dy.reshape(N * C, -1), indices.reshape(N * C, -1), axis=1)
    return flat.reshape(indices.shape)


# ============================================================================ average pooling
def _avg_divisors(size, out, kernel, stride, padding, count_include_pad):
    """(out,) window lengths along one axis: the divisor of average pooling, factor by factor.

    PyTorch's rule: a window is clipped to end at size + padding (a ceil_mode window may hang
    past the padding, that part never counts); count_include_pad=False also drops the padding.
    """
    start = np.arange(out) * stride - padding
    end = np.minimum(start + kernel, size + padding)
    if not count_include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, size)
    return end - start


def _avg_geometry(x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, dtype):
    """Output size, the zero-padded input size every window fits in, and the (OH, OW) divisors."""
    H, W = x_shape[2:]
    (KH, KW), (SH, SW), (PH, PW) = kernel_size, stride, padding
    OH = pool_output_size(H, KH, SH, PH, 1, ceil_mode)
    OW = pool_output_size(W, KW, SW, PW, 1, ceil_mode)
    # A ceil_mode window may hang past the bottom/right padding: pad far enough for it.
    HP = max(H + 2 * PH, (OH - 1) * SH + KH)
    WP = max(W + 2 * PW, (OW - 1) * SW + KW)
    divisor = np.outer(_avg_divisors(H, OH, KH, SH, PH, count_include_pad),
                       _avg_divisors(W, OW, KW, SW, PW, count_include_pad)).astype(dtype)
    return (OH, OW), (HP, WP), divisor


def avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    """Average pooling.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel_size, stride, padding : (int, int)
    ceil_mode, count_include_pad : bool

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)

    Notes
    -----
    y[oh, ow] = (Σ of the window's taps inside the input) / divisor[oh, ow], the divisor being
    the window's size clipped to the padded input (count_include_pad=True) or to the input.
    Computed tap by tap (Chainer's im2col idea): the taps (kh, kw) of all windows form the
    strided slice ``xpad[kh : kh + SH·(OH−1) + 1 : SH, kw : ...]`` of the zero-padded input.
    """
    N, C, H, W = x.shape
    (KH, KW), (SH, SW), (PH, PW) = kernel_size, stride, padding
    (OH, OW), (HP, WP), divisor = _avg_geometry(x.shape, kernel_size, stride, padding,
                                                ceil_mode, count_include_pad, x.dtype)
    xpad = np.zeros((N, C, HP, WP), dtype=x.dtype)
    xpad[:, :, PH:PH + H, PW:PW + W] = x
    total = np.zeros((N, C, OH, OW), dtype=x.dtype)
    for kh in range(KH):
        for kw in range(KW):
            total += xpad[:, :, kh:kh + SH * (OH - 1) + 1:SH, kw:kw + SW * (OW - 1) + 1:SW]
    return total / divisor


def avg_pool2d_backward(dy, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad):
    """Gradient of average pooling: every tap of a window gets dy / divisor (the adjoint).

    Parameters
    ----------
    dy : ndarray, shape (N, C, OH, OW)
    x_shape : (N, C, H, W)
    kernel_size, stride, padding : (int, int)
    ceil_mode, count_include_pad : bool

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
        The forward's tap loop run backwards: slices are added to instead of read. Within one
        tap the windows touch distinct pixels, so a plain ``+=`` on the strided slice is exact.
    """
    N, C, H, W = x_shape
    (KH, KW), (SH, SW), (PH, PW) = kernel_size, stride, padding
    (OH, OW), (HP, WP), divisor = _avg_geometry(x_shape, kernel_size, stride, padding,
                                                ceil_mode, count_include_pad, dy.dtype)
    share = dy / divisor
    dxpad = np.zeros((N, C, HP, WP), dtype=dy.dtype)
    for kh in range(KH):
        for kw in range(KW):
            dxpad[:, :, kh:kh + SH * (OH - 1) + 1:SH, kw:kw + SW * (OW - 1) + 1:SW] += share
    return dxpad[:, :, PH:PH + H, PW:PW + W].copy()  # gradients on padding are dropped


# ============================================================================ adaptive pooling
def adaptive_avg_pool2d_forward(x, output_hw):
    """Adaptive average pooling to a fixed (OH, OW), whatever H and W (PSPNet's pyramid bins).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    output_hw : (int, int)

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)
        The mean of each bin (:func:`adaptive_pool_bins`). Global average pooling is
        ``output_hw=(1, 1)``.

    Notes
    -----
    A bin is a rectangle, so its sum is separable: first sum the rows of bin row oh into one
    row of column sums (a "band"), then sum each bin's columns of that band.
    """
    N, C, H, W = x.shape
    OH, OW = output_hw
    h0, h1 = adaptive_pool_bins(H, OH)
    w0, w1 = adaptive_pool_bins(W, OW)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    for oh in range(OH):
        band = x[:, :, h0[oh]:h1[oh], :].sum(axis=2)                 # (N, C, W)
        for ow in range(OW):
            count = x.dtype.type((h1[oh] - h0[oh]) * (w1[ow] - w0[ow]))
            y[:, :, oh, ow] = band[:, :, w0[ow]:w1[ow]].sum(axis=2) / count
    return y


def adaptive_avg_pool2d_backward(dy, x_shape):
    """Gradient of adaptive average pooling: each bin spreads dy / count over its pixels.

    Parameters
    ----------
    dy : ndarray, shape (N, C, OH, OW)
    x_shape : (N, C, H, W)

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
        Overlapping bins add. Separable like the forward: spread bin row oh's gradients along
        their columns into one row, then add that row to every input row of the band.
    """
    N, C, H, W = x_shape
    OH, OW = dy.shape[2:]
    h0, h1 = adaptive_pool_bins(H, OH)
    w0, w1 = adaptive_pool_bins(W, OW)
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for oh in range(OH):
        row = np.zeros((N, C, W), dtype=dy.dtype)
        for ow in range(OW):
            count = dy.dtype.type((h1[oh] - h0[oh]) * (w1[ow] - w0[ow]))
            row[:, :, w0[ow]:w1[ow]] += (dy[:, :, oh, ow] / count)[:, :, None]
        dx[:, :, h0[oh]:h1[oh], :] += row[:, :, None, :]
    return dx


def adaptive_max_pool2d_forward(x, output_hw):
    """Adaptive max pooling, with the argmax of every bin.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    output_hw : (int, int)

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)
    indices : ndarray of int64, shape (N, C, OH, OW)
        Flat ``h*W + w`` of each maximum in its plane; ties and NaNs as in max pooling (which is
        what ``np.argmax`` does: first maximum, first NaN). Its backward is
        :func:`max_pool2d_backward`.
    """
    N, C, H, W = x.shape
    OH, OW = output_hw
    h0, h1 = adaptive_pool_bins(H, OH)
    w0, w1 = adaptive_pool_bins(W, OW)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    indices = np.empty((N, C, OH, OW), dtype=np.int64)
    for oh in range(OH):
        for ow in range(OW):
            bin_ = x[:, :, h0[oh]:h1[oh], w0[ow]:w1[ow]].reshape(N, C, -1)  # row-major order
            k = bin_.argmax(axis=2)                                         # (N, C)
            y[:, :, oh, ow] = np.take_along_axis(bin_, k[:, :, None], axis=2)[:, :, 0]
            bin_w = w1[ow] - w0[ow]
            indices[:, :, oh, ow] = (h0[oh] + k // bin_w) * W + w0[ow] + k % bin_w
    return y, indices
