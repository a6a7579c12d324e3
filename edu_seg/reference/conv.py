"""Convolution in plain NumPy: the textbook twin of ``kernels/conv.pyx``.

A convolution layer (really a cross-correlation, like every deep-learning library's) slides a
small weight tensor over the input and takes a dot product at every position::

    y[n, o, i, j] = b[o] + Σ_{c, kh, kw} w[o, c, kh, kw] · x_pad[n, c, i·sh + kh·dh, j·sw + kw·dw]

with stride (sh, sw), zero padding (ph, pw) and dilation (dh, dw). Output size per axis:
OH = ⌊(H + 2·ph − dh·(KH−1) − 1)/sh⌋ + 1.

This module computes it three ways, from slowest and clearest to fastest:

1. :func:`conv2d_naive` — the formula as loops. Only for tiny inputs: it is the test oracle.
2. :func:`im2col` + one matrix product — copy every receptive field into a column of a matrix
   ``cols`` of shape (C·KH·KW, OH·OW); then the whole layer is ``w.reshape(C_out, -1) @ cols``,
   which BLAS runs at full machine speed. This is what :func:`conv2d_forward` does.
3. The compiled kernels do 2. in tiles, in parallel (``kernels/conv.pyx``).
4. :func:`conv2d_winograd` — for the common 3x3 stride-1 case, Winograd's minimal filtering
   F(2x2, 3x3): 16 multiplications per 2x2 block of outputs and input channel instead of 36.
   The compiled float32 kernels use it (``kernels/winograd.pyx``); this is its textbook form.

The gradients are matrix products too. With ``W = w.reshape(C_out, C·KH·KW)``::

    dW    = Σ_n dy[n] @ cols[n]ᵀ           (conv2d_backward_weight)
    dcols = Wᵀ @ dy[n],  dx = col2im(dcols) (conv2d_backward_input)

``col2im`` is the adjoint of ``im2col``: it adds each column entry back into the pixel it was
copied from (pixels covered by several windows collect several contributions).

The transposed convolution ("deconvolution") is *defined* as the input-gradient of a conv, so
:func:`conv_transpose2d_forward` simply calls :func:`conv2d_backward_input`. Two other views of
it are written out for the chapter: :func:`conv_transpose2d_scatter` (each input pixel stamps a
scaled copy of the kernel into the output) and :func:`conv_transpose2d_zero_insertion` (insert
stride−1 zeros between pixels, pad, and run an ordinary conv with the flipped kernel).

Groups split the channels into ``groups`` independent convolutions: output channels
[g·C_out/G, (g+1)·C_out/G) see only input channels [g·C/G, (g+1)·C/G). Depthwise is groups = C.

Layouts (PyTorch's): x (N, C, H, W); conv weight (C_out, C/groups, KH, KW); transposed-conv
weight (C_in, C_out/groups, KH, KW). All geometry arguments arrive as ``(int, int)`` pairs and
all arrays are already validated (:mod:`edu_seg.ops.conv` does that).
"""
import numpy as np

__all__ = ["im2col", "col2im", "conv2d_forward", "conv2d_backward_input",
           "conv2d_backward_weight", "conv2d_backward_bias", "conv_transpose2d_forward", "conv2d_naive",
           "conv_transpose2d_scatter", "conv_transpose2d_zero_insertion", "conv2d_winograd"]


def _out_size(size, k, s, p, d):
    """⌊(size + 2p − d(k−1) − 1)/s⌋ + 1: how many windows fit along one axis."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _transposed_out_size(size, k, s, p, op, d):
    """(size − 1)·s − 2p + d(k − 1) + op + 1: a transposed convolution's output along one axis."""
    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1


def im2col(x, kernel_size, stride, padding, dilation):
    """Copy every receptive field of ``x`` into a column.

    Parameters
    ----------
    x : ndarray, (N, C, H, W)
    kernel_size, stride, padding, dilation : (int, int)

    Returns
    -------
    cols : ndarray, (N, C*KH*KW, OH*OW)
        ``cols[n, (c*KH + kh)*KW + kw, oh*OW + ow] = x_pad[n, c, oh*sh + kh*dh, ow*sw + kw*dw]``.

    Notes
    -----
    Loop over the KH·KW kernel taps, not over the OH·OW windows: for a fixed tap (kh, kw) the
    pixels it touches in all windows form one strided slice of the padded input, so each tap
    is a single vectorised copy.

    Examples
    --------
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> im2col(x, (2, 2), (1, 1), (0, 0), (1, 1))[0]
    array([[0., 1., 3., 4.],
           [1., 2., 4., 5.],
           [3., 4., 6., 7.],
           [4., 5., 7., 8.]])
    """
    N, C, H, W = x.shape
    (KH, KW), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    OH, OW = _out_size(H, KH, sh, ph, dh), _out_size(W, KW, sw, pw, dw)
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((N, C, KH, KW, OH, OW), dtype=x.dtype)
    for kh in range(KH):
        for kw in range(KW):
            # tap (kh, kw) of window (oh, ow) reads x_pad[oh*sh + kh*dh, ow*sw + kw*dw]
            top, left = kh * dh, kw * dw
            cols[:, :, kh, kw] = x_pad[:, :, top:top + sh * (OH - 1) + 1:sh,
                                       left:left + sw * (OW - 1) + 1:sw]
    return cols.reshape(N, C * KH * KW, OH * OW)


def col2im(cols, x_shape, kernel_size, stride, padding, dilation):
    """Add every column entry back into the input pixel it came from: the adjoint of im2col.

    Parameters
    ----------
    cols : ndarray, (N, C*KH*KW, OH*OW)
    x_shape : (N, C, H, W)
    kernel_size, stride, padding, dilation : (int, int)

    Returns
    -------
    x : ndarray, (N, C, H, W)

    Notes
    -----
    ⟨im2col(x), cols⟩ = ⟨x, col2im(cols)⟩ for all x and cols. Where windows overlap, a pixel was
    copied into several columns, so it collects the sum of all of them (``+=``, not ``=``);
    entries that were copied from the zero padding are dropped.
    """
    N, C, H, W = x_shape
    (KH, KW), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    OH, OW = _out_size(H, KH, sh, ph, dh), _out_size(W, KW, sw, pw, dw)
    cols = cols.reshape(N, C, KH, KW, OH, OW)
    x_pad = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for kh in range(KH):
        for kw in range(KW):
            top, left = kh * dh, kw * dw
            x_pad[:, :, top:top + sh * (OH - 1) + 1:sh,
                  left:left + sw * (OW - 1) + 1:sw] += cols[:, :, kh, kw]
    return x_pad[:, :, ph:ph + H, pw:pw + W].copy()


def conv2d_forward(x, w, b, stride, padding, dilation, groups):
    """y = w ⋆ x + b with im2col and one (batched) matrix product.

    Parameters
    ----------
    x : ndarray, (N, C, H, W)
    w : ndarray, (C_out, C/groups, KH, KW)
    b : ndarray, (C_out,), or None
    stride, padding, dilation : (int, int)
    groups : int

    Returns
    -------
    y : ndarray, (N, C_out, OH, OW)

    Notes
    -----
    With G groups, rows of ``cols`` for group g are the contiguous block of its C/G channels, so
    ``cols`` reshapes to (N, G, C/G·KH·KW, OH·OW) and ``w`` to (G, C_out/G, C/G·KH·KW); one
    broadcast ``matmul`` gives (N, G, C_out/G, OH·OW), which is already NCHW.
    """
    N, C, H, W = x.shape
    C_out, _, KH, KW = w.shape
    G = groups
    OH = _out_size(H, KH, stride[0], padding[0], dilation[0])
    OW = _out_size(W, KW, stride[1], padding[1], dilation[1])
    cols = im2col(x, (KH, KW), stride, padding, dilation).reshape(N, G, -1, OH * OW)
    y = np.matmul(w.reshape(G, C_out // G, -1), cols).reshape(N, C_out, OH, OW)
    if b is not None:
        y += b.reshape(1, C_out, 1, 1)
    return y


def conv2d_backward_input(dy, w, x_shape, stride, padding, dilation, groups):
    """dx = col2im(Wᵀ dy): the gradient of conv2d with respect to x.

    Parameters
    ----------
    dy : ndarray, (N, C_out, OH, OW)
    w : ndarray, (C_out, C/groups, KH, KW)
    x_shape : (N, C, H, W)
        OH, OW are taken from ``dy``. They can be smaller than the conv of an (H, W) input
        would give (a transposed conv with output_padding): rows no output reads get zero.
    stride, padding, dilation : (int, int)
    groups : int

    Returns
    -------
    dx : ndarray, x_shape

    Notes
    -----
    y = W · im2col(x) is linear in x, so its gradient applies the two adjoints in reverse
    order: dx = col2im(Wᵀ · dy). Read forwards, the same map is the transposed convolution.
    """
    N, C, H, W = x_shape
    C_out, _, KH, KW = w.shape
    G = groups
    _, _, OH, OW = dy.shape
    dcols = np.matmul(w.reshape(G, C_out // G, -1).transpose(0, 2, 1),  # (G, C/G·KK, C_out/G)
                      dy.reshape(N, G, C_out // G, OH * OW))              # (N, G, C_out/G, L)
    dcols = dcols.reshape(N, C, KH, KW, OH, OW)
    # col2im expects the full window grid of an (H, W) input; a shorter dy means the missing
    # windows got zero gradient.
    OHf = _out_size(H, KH, stride[0], padding[0], dilation[0])
    OWf = _out_size(W, KW, stride[1], padding[1], dilation[1])
    if (OHf, OWf) != (OH, OW):
        full = np.zeros((N, C, KH, KW, OHf, OWf), dtype=dy.dtype)
        full[..., :OH, :OW] = dcols
        dcols = full
    return col2im(dcols.reshape(N, C * KH * KW, OHf * OWf), x_shape, (KH, KW), stride, padding,
                  dilation)


def conv2d_backward_weight(dy, x, w_shape, stride, padding, dilation, groups):
    """dW = Σ_n dy[n] colsᵀ[n]: the gradient of conv2d with respect to w.

    Parameters
    ----------
    dy : ndarray, (N, C_out, OH, OW)
    x : ndarray, (N, C, H, W)
    w_shape : (C_out, C/groups, KH, KW)
    stride, padding, dilation : (int, int)
    groups : int

    Returns
    -------
    dw : ndarray, w_shape

    Notes
    -----
    Each weight is used at every output position of every sample, so its gradient sums
    dy · (the input pixel it multiplied) over n, oh, ow: a matrix product whose inner dimension
    is N·OH·OW. OH, OW are taken from ``dy`` (see :func:`conv2d_backward_input`).
    """
    N, C, H, W = x.shape
    C_out, _, KH, KW = w_shape
    G = groups
    _, _, OH, OW = dy.shape
    cols = im2col(x, (KH, KW), stride, padding, dilation)
    OHf = _out_size(H, KH, stride[0], padding[0], dilation[0])
    OWf = _out_size(W, KW, stride[1], padding[1], dilation[1])
    cols = cols.reshape(N, C * KH * KW, OHf, OWf)[:, :, :OH, :OW]
    # put the summed axes (n, oh, ow) last: (G, rows, N·L), then one matmul per group
    cols = cols.reshape(N, G, C // G * KH * KW, OH * OW).transpose(1, 2, 0, 3)
    dy = dy.reshape(N, G, C_out // G, OH * OW).transpose(1, 2, 0, 3)
    dw = np.matmul(dy.reshape(G, C_out // G, -1), cols.reshape(G, C // G * KH * KW, -1)
                   .transpose(0, 2, 1))
    return dw.reshape(w_shape)


def conv2d_backward_bias(dy):
    """db[o] = Σ_{n, oh, ow} dy[n, o, oh, ow]: the bias was added at every output pixel.

    Parameters
    ----------
    dy : ndarray, (N, C_out, OH, OW)

    Returns
    -------
    db : ndarray, (C_out,)
    """
    return dy.sum(axis=(0, 2, 3))


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding, dilation, groups):
    """Transposed convolution, computed as the input-gradient of a conv (one code path).

    Parameters
    ----------
    x : ndarray, (N, C_in, H, W)
    w : ndarray, (C_in, C_out/groups, KH, KW)
        Read as the weight of the conv that maps C_out channels to C_in: the same array.
    b : ndarray, (C_out,), or None
    stride, padding, output_padding, dilation : (int, int)
    groups : int

    Returns
    -------
    y : ndarray, (N, C_out, OH, OW)

    Notes
    -----
    OH = (H − 1)·sh − 2·ph + dh·(KH − 1) + oph + 1. Several output sizes give the same conv
    output size H when sh > 1; output_padding (< max(stride, dilation)) picks the larger ones.
    """
    N, _, H, W = x.shape
    _, C_out_per_group, KH, KW = w.shape
    OH = _transposed_out_size(H, KH, stride[0], padding[0], output_padding[0], dilation[0])
    OW = _transposed_out_size(W, KW, stride[1], padding[1], output_padding[1], dilation[1])
    y = conv2d_backward_input(x, w, (N, C_out_per_group * groups, OH, OW), stride, padding,
                              dilation, groups)
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


# ------------------------------------------------------------------ views for the chapter
def conv2d_naive(x, w, b, stride, padding, dilation, groups):
    """The convolution formula as nested loops: slow, obviously right, the test oracle.

    Parameters
    ----------
    x : ndarray, (N, C, H, W)
    w : ndarray, (C_out, C/groups, KH, KW)
    b : ndarray, (C_out,), or None
    stride, padding, dilation : (int, int)
    groups : int

    Returns
    -------
    y : ndarray, (N, C_out, OH, OW)

    Notes
    -----
    y[n, o, i, j] = b[o] + Σ_{c, kh, kw} w[o, c, kh, kw] · x[n, g·C/G + c, ih, iw] with
    ih = i·sh − ph + kh·dh, iw = j·sw − pw + kw·dw, where g = o // (C_out/G) is the group of
    output channel o and taps that fall outside x read 0 (the padding).
    """
    N, C, H, W = x.shape
    C_out, Cg, KH, KW = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    OH, OW = _out_size(H, KH, sh, ph, dh), _out_size(W, KW, sw, pw, dw)
    y = np.zeros((N, C_out, OH, OW), dtype=x.dtype)
    for n in range(N):
        for o in range(C_out):
            g = o // (C_out // groups)          # the group this output channel belongs to
            for i in range(OH):
                for j in range(OW):
                    total = 0.0 if b is None else b[o]
                    for c in range(Cg):
                        for kh in range(KH):
                            for kw in range(KW):
                                ih = i * sh - ph + kh * dh
                                iw = j * sw - pw + kw * dw
                                if 0 <= ih < H and 0 <= iw < W:  # else: padding, adds 0
                                    total += w[o, c, kh, kw] * x[n, g * Cg + c, ih, iw]
                    y[n, o, i, j] = total
    return y


def conv_transpose2d_scatter(x, w, b, stride, padding, output_padding, dilation, groups):
    """Transposed convolution, view 1: every input pixel stamps a scaled kernel into the output.

    Parameters and result as :func:`conv_transpose2d_forward`.

    Notes
    -----
    Input pixel (i, j) of channel c adds ``x[n, c, i, j] · w[c, o, kh, kw]`` to output pixel
    (i·sh − ph + kh·dh, j·sw − pw + kw·dw) for every tap; stamps overlap when the kernel is
    larger than the stride, and whatever lands in the padding border is cropped away. This is
    the loop :func:`conv2d_naive` gives when read backwards (scatter instead of gather).
    """
    N, C_in, H, W = x.shape
    _, Cog, KH, KW = w.shape
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    OH = _transposed_out_size(H, KH, sh, ph, oph, dh)
    OW = _transposed_out_size(W, KW, sw, pw, opw, dw)
    Cig = C_in // groups
    y = np.zeros((N, Cog * groups, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C_in):
            g = c // Cig
            for i in range(H):
                for j in range(W):
                    for kh in range(KH):
                        for kw in range(KW):
                            oi, oj = i * sh - ph + kh * dh, j * sw - pw + kw * dw
                            if 0 <= oi < OH and 0 <= oj < OW:
                                y[n, g * Cog:(g + 1) * Cog, oi, oj] += x[n, c, i, j] * w[c, :, kh, kw]
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def conv_transpose2d_zero_insertion(x, w, b, stride, padding, output_padding, dilation, groups):
    """Transposed convolution, view 3: spread the input out with zeros, then run a plain conv.

    Parameters and result as :func:`conv_transpose2d_forward`.

    Notes
    -----
    1. insert sh−1 zero rows (sw−1 zero columns) between input pixels;
    2. pad by dh·(KH−1)−ph on each side (plus output_padding at the bottom/right);
    3. run a stride-1 conv with the same dilation and the kernel flipped in space and with its
       in/out channels swapped: w'[o, c, kh, kw] = w[c, o, KH−1−kh, KW−1−kw] (per group).

    This is the "fancy padding" picture of vdumoulin's conv_arithmetic. Step 2's padding can be
    negative (ph > dh·(KH−1)): then it crops instead.
    """
    N, C_in, H, W = x.shape
    _, Cog, KH, KW = w.shape
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    # 1. zero insertion
    spread = np.zeros((N, C_in, (H - 1) * sh + 1, (W - 1) * sw + 1), dtype=x.dtype)
    spread[:, :, ::sh, ::sw] = x
    # 2. pad (a negative amount crops)
    top, left = dh * (KH - 1) - ph, dw * (KW - 1) - pw
    bottom, right = top + oph, left + opw
    spread = np.pad(spread, ((0, 0), (0, 0), (max(top, 0), max(bottom, 0)),
                             (max(left, 0), max(right, 0))))
    spread = spread[:, :, max(-top, 0):spread.shape[2] - max(-bottom, 0),
                    max(-left, 0):spread.shape[3] - max(-right, 0)]
    # 3. flipped kernel, in/out swapped within each group: (C_out, C_in/groups, KH, KW)
    Cig = C_in // groups
    w_conv = (w[:, :, ::-1, ::-1].reshape(groups, Cig, Cog, KH, KW).transpose(0, 2, 1, 3, 4)
              .reshape(groups * Cog, Cig, KH, KW))
    return conv2d_forward(np.ascontiguousarray(spread), np.ascontiguousarray(w_conv), b,
                          (1, 1), (0, 0), dilation, groups)


# Winograd F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
# CVPR 2016): for a 4x4 input tile d and a 3x3 filter g, the 2x2 outputs of their
# cross-correlation are Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A.
WINOGRAD_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=float)
WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
WINOGRAD_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=float)


def conv2d_winograd(x, w, b, padding):
    """A 3x3 stride-1 convolution by Winograd's F(2x2, 3x3).

    Parameters
    ----------
    x : ndarray, (N, C, H, W)
    w : ndarray, (C_out, C, 3, 3)
    b : ndarray, (C_out,), or None
    padding : (int, int)

    Returns
    -------
    y : ndarray, (N, C_out, H + 2·ph − 2, W + 2·pw − 2), equal to :func:`conv2d_forward` with
    stride 1 and dilation 1 up to rounding.

    Notes
    -----
    In one dimension, two outputs of a 3-tap filter over four inputs need 6 products done
    directly, but only 4 as m0 = (d0 − d2) g0, m1 = (d1 + d2)(g0 + g1 + g2)/2,
    m2 = (d2 − d1)(g0 − g1 + g2)/2, m3 = (d1 − d3) g2; y0 = m0 + m1 + m2, y1 = m1 − m2 − m3.
    Nested in two dimensions: 16 products for 4 outputs instead of 36. Cut the output into 2x2
    tiles; tile (t, u) reads the 4x4 input block at rows 2t.., columns 2u.. of the padded input.
    Summed over the input channels, the element-wise product at each of the 16 positions is a
    matrix product over c, which is where the time goes.
    """
    N, C, H, W = x.shape
    ph, pw = padding
    OH, OW = H + 2 * ph - 2, W + 2 * pw - 2
    TH, TW = -(-OH // 2), -(-OW // 2)                   # tiles per column and per row
    # padding, plus one more row/column of zeros where OH/OW is odd: every tile is whole
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph + 2 * TH - OH), (pw, pw + 2 * TW - OW)))
    d = np.lib.stride_tricks.sliding_window_view(xp, (4, 4), axis=(2, 3))[:, :, ::2, ::2]
    V = WINOGRAD_BT @ d @ WINOGRAD_BT.T                 # (N, C, TH, TW, 4, 4): the input tiles
    U = WINOGRAD_G @ w @ WINOGRAD_G.T                   # (C_out, C, 4, 4): the filters
    M = np.einsum("ocab,nctuab->notuab", U, V)          # 16 products summed over c
    Y = WINOGRAD_AT @ M @ WINOGRAD_AT.T                 # (N, C_out, TH, TW, 2, 2): the outputs
    y = Y.transpose(0, 1, 2, 4, 3, 5).reshape(N, w.shape[0], 2 * TH, 2 * TW)[:, :, :OH, :OW]
    if b is not None:
        y = y + b[None, :, None, None]
    return np.ascontiguousarray(y, dtype=x.dtype)
