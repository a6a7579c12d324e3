"""Convolution on the GPU (CUDA twin of :mod:`edu_seg.reference.conv`).

Same functions, signatures and results as the reference, on CuPy arrays, and the same recipe:
the data movement is :func:`im2col` / :func:`col2im` (CUDA kernels in ``conv.cu``, one thread
per output element) and the arithmetic is matrix products (cuBLAS, through ``cupy.matmul``)::

    y     = W · im2col(x) + b                  conv2d_forward
    dx    = col2im(Wᵀ · dy)                     conv2d_backward_input (= conv_transpose2d_forward)
    dW    = Σ_n dy[n] · im2col(x)[n]ᵀ           conv2d_backward_weight
    db    = Σ_{n, oh, ow} dy                    conv2d_backward_bias

with ``W = w.reshape(G, C_out/G, C/G·KH·KW)`` per group (a batched matmul over the groups, and
over the samples where the product has one). Layouts as in the reference (PyTorch's).

Memory: the column matrix of one sample has C·KH·KW·OH·OW entries, KH·KW times the input, and
for a whole batch of large maps that can be gigabytes. So the three conv functions run over the
batch in *chunks of samples* whose column matrix stays under :data:`MAX_COLUMN_BYTES` (at least
one sample per chunk): a big map goes one sample at a time, while small maps (the deep layers,
where one sample's product would be too small to keep the GPU busy) go many samples per
product. Chunking is a simple cap, not a tuning: it does not change the result (each sample's
output is its own product; only dW adds the chunks, in order).
"""
import cupy

from ..reference.conv import _out_size, _transposed_out_size
from ._raw import launch

__all__ = ["im2col", "col2im", "conv2d_forward", "conv2d_backward_input",
           "conv2d_backward_weight", "conv2d_backward_bias", "conv_transpose2d_forward"]

#: Largest column matrix (bytes) built at once by the conv functions; a chunk of the batch
#: holds as many samples as fit under it, and never fewer than one.
MAX_COLUMN_BYTES = 256 << 20


def _sample_chunks(N, bytes_per_sample):
    """(n0, n1) ranges covering range(N), each with columns under MAX_COLUMN_BYTES (≥ 1 sample)."""
    step = max(1, MAX_COLUMN_BYTES // max(bytes_per_sample, 1))
    return [(n0, min(n0 + step, N)) for n0 in range(0, N, step)]


def _full_grid(hw, kernel_size, stride, padding, dilation):
    """(OH, OW): how many windows fit along each axis of an (H, W) input."""
    return tuple(_out_size(*a) for a in zip(hw, kernel_size, stride, padding, dilation))


def _im2col(x, kernel_size, stride, padding, dilation, grid):
    """Columns of x (contiguous) for the windows of ``grid`` = (OH, OW): (N, C·KH·KW, OH·OW)."""
    N, C, H, W = x.shape
    (KH, KW), (OH, OW) = kernel_size, grid
    cols = cupy.empty((N, C * KH * KW, OH * OW), dtype=x.dtype)
    launch("conv", "im2col", x.dtype, cols.size, x, cols, N, C, H, W, KH, KW, *stride, *padding,
           *dilation, OH, OW)
    return cols


def _col2im_into(cols, x, kernel_size, stride, padding, dilation, grid):
    """The adjoint of :func:`_im2col` for the windows of ``grid``: writes every element of x.

    cols and x are contiguous (x may be a slice ``dx[n0:n1]`` of a bigger batch).
    """
    N, C, H, W = x.shape
    (KH, KW), (OH, OW) = kernel_size, grid
    launch("conv", "col2im", cols.dtype, x.size, cols, x, N, C, H, W, KH, KW, *stride, *padding,
           *dilation, OH, OW)
    return x


def im2col(x, kernel_size, stride, padding, dilation):
    """Every receptive field of x (N, C, H, W) as a column: (N, C·KH·KW, OH·OW); see the reference.

    ``cols[n, (c·KH + kh)·KW + kw, oh·OW + ow] = x_pad[n, c, oh·sh + kh·dh, ow·sw + kw·dw]``.
    """
    grid = _full_grid(x.shape[2:], kernel_size, stride, padding, dilation)
    return _im2col(cupy.ascontiguousarray(x), kernel_size, stride, padding, dilation, grid)


def col2im(cols, x_shape, kernel_size, stride, padding, dilation):
    """The adjoint of :func:`im2col`: cols (N, C·KH·KW, OH·OW) -> x (N, C, H, W).

    Each pixel sums the column entries copied from it (a gather kernel, no atomics).
    """
    grid = _full_grid(x_shape[2:], kernel_size, stride, padding, dilation)
    x = cupy.empty(tuple(x_shape), dtype=cols.dtype)
    return _col2im_into(cupy.ascontiguousarray(cols), x, kernel_size, stride, padding, dilation,
                        grid)


def conv2d_forward(x, w, b, stride, padding, dilation, groups):
    """y = w ⋆ x + b: x (N, C, H, W), w (C_out, C/groups, KH, KW), b (C_out,) or None.

    Per chunk of samples: cols (n, G, C/G·KH·KW, OH·OW), and one broadcast matmul with
    w (G, C_out/G, C/G·KH·KW) gives (n, G, C_out/G, OH·OW), which is already NCHW.
    """
    N, C, H, W = x.shape
    C_out, _, KH, KW = w.shape
    G = groups
    OH, OW = _full_grid((H, W), (KH, KW), stride, padding, dilation)
    x = cupy.ascontiguousarray(x)
    w_groups = w.reshape(G, C_out // G, C // G * KH * KW)
    y = cupy.empty((N, C_out, OH, OW), dtype=x.dtype)
    for n0, n1 in _sample_chunks(N, C * KH * KW * OH * OW * x.itemsize):
        cols = _im2col(x[n0:n1], (KH, KW), stride, padding, dilation, (OH, OW))
        y[n0:n1] = cupy.matmul(w_groups, cols.reshape(n1 - n0, G, -1, OH * OW)).reshape(
            n1 - n0, C_out, OH, OW)
    if b is not None:
        y += b.reshape(1, C_out, 1, 1)
    return y


def conv2d_backward_input(dy, w, x_shape, stride, padding, dilation, groups):
    """dx = col2im(Wᵀ dy): the gradient of conv2d with respect to x; see the reference.

    OH, OW are taken from ``dy``; the col2im kernel runs over exactly that window grid, so when
    it is shorter than the full grid of an (H, W) input (a transposed conv with output_padding)
    the missing windows contribute nothing, which is the reference's zero-filled ``full``.
    """
    N, C, H, W = x_shape
    C_out, _, KH, KW = w.shape
    G = groups
    _, _, OH, OW = dy.shape
    dy = cupy.ascontiguousarray(dy)
    w_t = w.reshape(G, C_out // G, C // G * KH * KW).transpose(0, 2, 1)  # (G, C/G·KK, C_out/G)
    dx = cupy.empty((N, C, H, W), dtype=dy.dtype)
    for n0, n1 in _sample_chunks(N, C * KH * KW * OH * OW * dy.itemsize):
        dcols = cupy.matmul(w_t, dy[n0:n1].reshape(n1 - n0, G, C_out // G, OH * OW))
        _col2im_into(cupy.ascontiguousarray(dcols), dx[n0:n1], (KH, KW), stride, padding,
                     dilation, (OH, OW))
    return dx


def conv2d_backward_weight(dy, x, w_shape, stride, padding, dilation, groups):
    """dW = Σ_n dy[n] colsᵀ[n]: the gradient of conv2d with respect to w; see the reference.

    OH, OW are taken from ``dy`` (im2col builds only those windows). Per chunk, as in the
    reference, the summed axes (n, oh, ow) go last so each group is one matmul whose inner
    dimension is n·OH·OW; the chunks' products are added in order. That reordering copies the
    chunk's columns once, so this function peaks at about twice MAX_COLUMN_BYTES.
    """
    N, C, H, W = x.shape
    C_out, _, KH, KW = w_shape
    G = groups
    _, _, OH, OW = dy.shape
    x, dy = cupy.ascontiguousarray(x), cupy.ascontiguousarray(dy)
    rows = C // G * KH * KW
    dw = cupy.zeros((G, C_out // G, rows), dtype=dy.dtype)
    for n0, n1 in _sample_chunks(N, C * KH * KW * OH * OW * x.itemsize):
        n = n1 - n0
        cols = _im2col(x[n0:n1], (KH, KW), stride, padding, dilation, (OH, OW))
        cols = cols.reshape(n, G, rows, OH * OW).transpose(1, 2, 0, 3).reshape(G, rows, -1)
        dy_g = dy[n0:n1].reshape(n, G, C_out // G, OH * OW).transpose(1, 2, 0, 3).reshape(
            G, C_out // G, -1)
        dw += cupy.matmul(dy_g, cols.transpose(0, 2, 1))
    return dw.reshape(w_shape)


def conv2d_backward_bias(dy):
    """db[o] = Σ_{n, oh, ow} dy[n, o, oh, ow]: dy (N, C_out, OH, OW) -> (C_out,)."""
    return dy.sum(axis=(0, 2, 3))


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding, dilation, groups):
    """Transposed convolution, computed as the input-gradient of a conv (one code path).

    x (N, C_in, H, W), w (C_in, C_out/groups, KH, KW), b (C_out,) or None -> y (N, C_out, OH, OW)
    with OH = (H − 1)·sh − 2·ph + dh·(KH − 1) + oph + 1 (likewise OW); see the reference.
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
