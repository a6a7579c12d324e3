"""The messages of the fully connected CRF, exactly, over all pixel pairs (the textbook twin of
``kernels/crf.pyx``).

One mean-field step of the dense CRF (see :mod:`edu_seg.crf` for the whole model) needs, for
every pixel i and label l, the message

    m_i(l) = Σ_{j≠i} [ w1·k_α(i, j) + w2·k_γ(i, j) ] · Q_j(l)

with the appearance (bilateral) and smoothness (spatial) Gaussian kernels

    k_α(i, j) = exp(−|p_i−p_j|²/(2θα²) − |I_i−I_j|²/(2θβ²)),
    k_γ(i, j) = exp(−|p_i−p_j|²/(2θγ²)),

p the pixel position (row, column) in pixels, I the colour in the 0–255 scale. Done literally
this is an N×N matrix (N = H·W pixels) times the N×L matrix Q: O(N²·L) work, fine up to about
64×64 pixels (16.8 million pairs). The matrix is built a block of rows at a time, so memory
stays at a few MB whatever N is.

The inputs are validated and converted by :func:`edu_seg.crf.dense_crf`; the kernel only
computes.
"""
import numpy as np

__all__ = ["dense_crf_messages"]

# Rows of the N×N kernel matrix built at once: BLOCK·N·8 bytes per temporary (2 MB at 64×64).
BLOCK = 64


def _scaled_features(image, theta_alpha, theta_beta, theta_gamma):
    """Pixel features divided by √2·θ, so each kernel is exp(−|f_i − f_j|²) of a plain distance.

    Returns
    -------
    pos_alpha, pos_gamma : ndarray, shape (N, 2)
        (row, column) / (√2·θα) and / (√2·θγ).
    colour : ndarray, shape (N, 3)
        Colour / (√2·θβ).
    """
    _, H, W = image.shape
    dtype = image.dtype
    rows, cols = np.meshgrid(np.arange(H, dtype=dtype), np.arange(W, dtype=dtype), indexing="ij")
    pos = np.stack([rows.ravel(), cols.ravel()], axis=1)                    # (N, 2)
    colour = image.reshape(3, H * W).T                                       # (N, 3)
    root2 = np.sqrt(2.0)
    return (pos / dtype.type(root2 * theta_alpha), pos / dtype.type(root2 * theta_gamma),
            colour / dtype.type(root2 * theta_beta))


def _squared_distances(a_block, a):
    """|a_i − a_j|² for i in the block and every j, from the differences (no |a|²+|b|²−2ab
    shortcut: that cancels catastrophically for near neighbours, the pairs that matter most).

    a_block : (B, D), a : (N, D) -> (B, N)
    """
    return ((a_block[:, None, :] - a[None, :, :]) ** 2).sum(axis=2)


def dense_crf_messages(image, q, theta_alpha, theta_beta, theta_gamma, w1, w2):
    """Weighted Gaussian messages of the dense CRF over all pixel pairs j ≠ i.

    Parameters
    ----------
    image : ndarray, shape (3, H, W), float32 or float64, C-contiguous
        Colours in the 0–255 scale.
    q : ndarray, shape (L, H, W), same dtype, C-contiguous
        The current marginals Q_j(l) (any values; the map is linear in q).
    theta_alpha, theta_beta, theta_gamma : float
        Kernel widths: θα (pixels) and θβ (colour) of the appearance kernel, θγ (pixels) of
        the smoothness kernel; all > 0.
    w1, w2 : float
        Weights of the appearance and smoothness kernels.

    Returns
    -------
    messages : ndarray, shape (L, H, W), same dtype
        m_i(l) = Σ_{j≠i} (w1·k_α(i, j) + w2·k_γ(i, j)) · q_j(l).

    Notes
    -----
    The sum over j ≠ i is the sum over all j minus the self term: k(f_i, f_i) = 1 for both
    kernels, so the self term is (w1 + w2)·q_i(l).
    """
    L, H, W = q.shape
    N = H * W
    pos_a, pos_g, colour = _scaled_features(image, theta_alpha, theta_beta, theta_gamma)
    qn = q.reshape(L, N).T                                                   # (N, L)
    messages = np.empty((N, L), dtype=q.dtype)
    for start in range(0, N, BLOCK):
        rows = slice(start, min(start + BLOCK, N))
        k_alpha = np.exp(-(_squared_distances(pos_a[rows], pos_a)
                           + _squared_distances(colour[rows], colour)))      # (B, N)
        k_gamma = np.exp(-_squared_distances(pos_g[rows], pos_g))
        kernel = w1 * k_alpha + w2 * k_gamma
        messages[rows] = kernel @ qn - (w1 + w2) * qn[rows]
    return np.ascontiguousarray(messages.T).reshape(L, H, W)
