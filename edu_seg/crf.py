"""The fully connected CRF (Krähenbühl & Koltun, NIPS 2011) as post-processing of a model's
probabilities — the "CRF" of DeepLab-CRF.

A segmentation network labels each pixel on its own, from a blurry, downsampled view; its
boundaries wander across object edges. The dense CRF adds one prior: pixels that are close and
look alike should take the same label. It is a Gibbs energy over the labelling x of all N
pixels,

    E(x) = Σ_i ψ_u(x_i) + Σ_{i<j} ψ_p(x_i, x_j),

- unary ψ_u(x_i) = −log P(x_i), the network's own opinion of pixel i;
- pairwise, between EVERY pair of pixels (hence "fully connected")::

      ψ_p(x_i, x_j) = μ(x_i, x_j) · [ w1·exp(−|p_i−p_j|²/(2θα²) − |I_i−I_j|²/(2θβ²))
                                     + w2·exp(−|p_i−p_j|²/(2θγ²)) ],

  p the position in pixels and I the colour. The first ("appearance") kernel says that nearby
  pixels of similar colour are likely in the same class; the second ("smoothness") kernel
  removes small isolated regions. The Potts compatibility μ(l, l') = [l ≠ l'] charges the
  penalty only when the labels differ.

Inference is mean field (the paper's Algorithm 1): approximate the distribution by a product of
per-pixel distributions Q_i(l), and repeat

    Q̃_i(l)  = Σ_{j≠i} [w1·k_α(i, j) + w2·k_γ(i, j)] · Q_j(l)     message passing (a filtering)
    E_i(l)  = Σ_{l'} μ(l, l')·Q̃_i(l') = Σ_{l'≠l} Q̃_i(l')         compatibility transform
    Q_i(l)  ∝ exp(−ψ_u(l) − E_i(l))                               local update (a softmax)

starting from Q = softmax(−ψ_u) = P. A label then gets cheaper at pixel i the more of the
similar-looking pixels around i already favour it.

Message passing over all pairs is O(N²): exact for small images (``method="exact"``, the
compiled or NumPy kernels of ``edu_seg.reference.crf``), and a fast approximation otherwise
(``method="approximate"``): the appearance kernel with the bilateral grid of Paris & Durand
("A fast approximation of the bilateral filter using a signal processing approach", ECCV 2006;
Chen, Paris & Durand, SIGGRAPH 2007), the smoothness kernel with a separable Gaussian, exact up
to the truncation of its tails. (The CRF paper itself uses the permutohedral lattice of Adams,
Baek & Davis, Eurographics 2010; the grid is the simpler idea of the two and fast enough at 3
colour + 2 position dimensions.)

Default parameters, roughly where they come from (check the papers before quoting numbers):
θα = 80, θβ = 13, w1 = 10 for the appearance kernel and θγ = 3, w2 = 3 for the smoothness
kernel are the setting commonly used with DeepLab-CRF post-processing (e.g. the examples of the
``pydensecrf`` wrapper); DeepLab (Chen et al., ICLR 2015) cross-validated w1, θα and θβ per
data set, while Krähenbühl & Koltun kept the smoothness kernel fixed (w2 = θγ = 3 in their
implementation). 5 mean-field iterations: the paper's Q settles within about ten iterations and
most of the change happens in the first few; DeepLab ran about ten.
"""
import math
import numbers

import numpy as np
from scipy.ndimage import correlate1d

from .backend import kernels

__all__ = ["dense_crf", "EXACT_MAX_PIXELS", "AUTO_EXACT_MAX_PIXELS"]

#: ``method="exact"`` refuses images with more pixels than this (128×128: 268 million pairs,
#: about 2 s per iteration on two cores).
EXACT_MAX_PIXELS = 128 * 128
#: ``method="auto"`` runs the exact messages up to this many pixels (64×64), the grid above.
AUTO_EXACT_MAX_PIXELS = 64 * 64
#: Probabilities must sum to 1 over the classes within this tolerance.
SUM_TOLERANCE = 1e-3
#: The bilateral grid may hold at most this many cells × labels (256 MB in float64).
GRID_MAX_VALUES = 2 ** 25


def dense_crf(image, probs, iterations=5, theta_alpha=80.0, theta_beta=13.0, theta_gamma=3.0,
              w1=10.0, w2=3.0, method="auto"):
    """Refine one image's class probabilities with the fully connected CRF (mean field).

    Parameters
    ----------
    image : array, shape (3, H, W)
        The RGB image the probabilities belong to. uint8 / integer images are in 0–255; float
        images whose values all lie in [0, 1] are taken as 0–1 and scaled by 255, any other
        float image as 0–255 already. The default θβ = 13 assumes the 0–255 scale.
    probs : array, shape (C, H, W)
        Per-pixel class probabilities: values in [0, 1] summing to 1 over C (within 1e-3).
        Pass a network's softmax, not its logits. float32 in gives float32 out (and float32
        arithmetic); anything else runs in float64. One image only: loop over a batch.
    iterations : int
        Mean-field iterations, >= 0 (0 returns the probabilities renormalised).
    theta_alpha, theta_beta : float
        Position (pixels) and colour (0–255 units) widths of the appearance kernel, > 0.
    theta_gamma : float
        Position width (pixels) of the smoothness kernel, > 0.
    w1, w2 : float
        Weights of the appearance and smoothness kernels, >= 0.
    method : {"auto", "exact", "approximate"}
        "exact" sums over all pixel pairs (O(N²), refused above 128×128 pixels);
        "approximate" uses the bilateral grid + separable Gaussian (O(N));
        "auto" is exact up to 64×64 pixels and approximate above.

    Returns
    -------
    ndarray, shape (C, H, W), float32 or float64
        The mean-field marginals Q; ``.argmax(axis=0)`` is the refined label map.

    Raises
    ------
    ValueError
        For a bad argument; the message names it, says what it got and what it needs.

    Examples
    --------
    >>> q = dense_crf(image, probs)                       # doctest: +SKIP
    >>> labels = q.argmax(axis=0)                         # doctest: +SKIP
    """
    image, probs = _check_arrays(image, probs)
    _check_options(iterations, theta_alpha, theta_beta, theta_gamma, w1, w2)
    C, H, W = probs.shape
    messages = _message_function(image, C, method, float(theta_alpha), float(theta_beta),
                                 float(theta_gamma), float(w1), float(w2))

    # ψ_u = −log P. Zero probabilities are clipped to the smallest normal number of the dtype:
    # the unary becomes large but finite, so the softmax below never sees inf − inf.
    log_p = np.log(np.maximum(probs, np.finfo(probs.dtype).tiny))
    q = _softmax(log_p)
    for _ in range(iterations):
        m = messages(q)                            # Q̃: (C, H, W), weights folded in
        compat = m.sum(axis=0) - m                 # Potts: Σ_{l'≠l} Q̃(l')
        q = _softmax(log_p - compat)
    return q


def _softmax(z):
    """Softmax over the class axis 0, shifted by the max so exp never overflows."""
    e = np.exp(z - z.max(axis=0))
    return e / e.sum(axis=0)


# =============================================================================== validation
def _check_arrays(image, probs):
    """Both arrays as C-contiguous float arrays of the compute dtype; image in 0–255."""
    probs_in = np.asarray(probs)
    image_in = np.asarray(image)
    if probs_in.ndim != 3 or probs_in.shape[0] < 1:
        raise ValueError(f"dense_crf: probs must have shape (C, H, W), got {probs_in.shape}")
    if image_in.ndim != 3 or image_in.shape[0] != 3:
        raise ValueError(f"dense_crf: image must have shape (3, H, W) (RGB, channels first), "
                         f"got {image_in.shape}")
    if image_in.shape[1:] != probs_in.shape[1:]:
        raise ValueError(f"dense_crf: image {image_in.shape} and probs {probs_in.shape} must "
                         "have the same height and width")
    if not (np.issubdtype(probs_in.dtype, np.floating) or
            np.issubdtype(probs_in.dtype, np.integer)):
        raise ValueError(f"dense_crf: probs must be a real array, got dtype {probs_in.dtype}")
    dtype = np.float32 if probs_in.dtype == np.float32 else np.float64
    probs = np.ascontiguousarray(probs_in, dtype=dtype)
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"dense_crf: probs must be probabilities in [0, 1], got values in "
                         f"[{probs.min()}, {probs.max()}] (pass softmax(logits), not logits)")
    sums = probs.sum(axis=0, dtype=np.float64)
    worst = np.abs(sums - 1).max()
    if worst > SUM_TOLERANCE:
        raise ValueError(f"dense_crf: probs must sum to 1 over the classes (axis 0) within "
                         f"{SUM_TOLERANCE}, got sums off by up to {worst:.3g}")
    if not (np.issubdtype(image_in.dtype, np.floating) or
            np.issubdtype(image_in.dtype, np.integer)):
        raise ValueError(f"dense_crf: image must be a real array, got dtype {image_in.dtype}")
    image = image_in.astype(np.float64)
    if not np.isfinite(image).all():
        raise ValueError("dense_crf: image must be finite, got NaN or inf")
    if np.issubdtype(image_in.dtype, np.floating) and image.size and image.max() <= 1.0:
        image = image * 255.0                      # a [0, 1] float image: θβ assumes 0–255
    return np.ascontiguousarray(image, dtype=dtype), probs


def _is_number(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _check_options(iterations, theta_alpha, theta_beta, theta_gamma, w1, w2):
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) \
            or iterations < 0:
        raise ValueError(f"dense_crf: iterations must be an integer >= 0, got {iterations!r}")
    for name, value in (("theta_alpha", theta_alpha), ("theta_beta", theta_beta),
                        ("theta_gamma", theta_gamma)):
        if not _is_number(value) or value <= 0:
            raise ValueError(f"dense_crf: {name} must be a finite number > 0, got {value!r}")
    for name, value in (("w1", w1), ("w2", w2)):
        if not _is_number(value) or value < 0:
            raise ValueError(f"dense_crf: {name} must be a finite number >= 0, got {value!r}")


def _message_function(image, num_classes, method, theta_alpha, theta_beta, theta_gamma, w1, w2):
    """q (C, H, W) -> messages Q̃ (C, H, W) for the chosen method (the image is fixed)."""
    _, H, W = image.shape
    if method not in ("auto", "exact", "approximate"):
        raise ValueError(f"dense_crf: method must be 'auto', 'exact' or 'approximate', "
                         f"got {method!r}")
    if method == "exact" and H * W > EXACT_MAX_PIXELS:
        raise ValueError(f"dense_crf: method='exact' sums over all pixel pairs and is limited "
                         f"to {EXACT_MAX_PIXELS} pixels (128x128), got {H}x{W}; use "
                         "method='approximate' (or 'auto')")
    if method == "exact" or (method == "auto" and H * W <= AUTO_EXACT_MAX_PIXELS):
        K = kernels("crf", image)
        return lambda q: K.dense_crf_messages(image, q, theta_alpha, theta_beta, theta_gamma,
                                              w1, w2)
    return _ApproximateMessages(image, num_classes, theta_alpha, theta_beta, theta_gamma,
                                w1, w2)


# ====================================================================== approximate messages
class _ApproximateMessages:
    """Q̃ of the dense CRF in O(N): bilateral grid for k_α, separable Gaussian for k_γ.

    Bilateral grid (Paris & Durand 2006). Give each pixel the 5-D feature
    u = (row/θα, column/θα, R/θβ, G/θβ, B/θβ): the appearance kernel is then exp(−|u_i−u_j|²/2),
    an ordinary Gaussian of width 1 in feature space, and Σ_j k_α(i, j)·q_j is a Gaussian blur
    of the "image" that has mass q_j at u_j. A blur is smooth, so it can be done on a coarse
    grid with one cell per unit of u (the grid is mostly empty, yet small: 5×5×21³ cells at
    256×256 with the defaults):

    1. splat: each pixel adds q_j into the 2⁵ = 32 corners of its grid cell with multilinear
       ("tent") weights;
    2. blur: a sampled Gaussian along each of the 5 axes in turn (separable);
    3. slice: each pixel reads its value back from the same 32 corners with the same weights.

    Splat and slice are tent filters of variance 1/6 cell² each, so the blur gets variance
    1 − 2/6 = 2/3 and the three together have the kernel's variance 1 along each axis. The
    composite kernel integrates to 1 (a density), whose peak is (2π)^(−5/2); the exact kernel
    peaks at 1, so the result is multiplied by (2π)^(5/2).

    The approximation errs where the true kernel is not Gaussian-shaped to the grid (the tent
    shape depends on where u falls in its cell): measured 3% relative L2 error of the messages
    on random colours, 9–11% on piecewise-constant ones, which changed no label of the
    two-region test image (``tests/test_crf.py``).
    The self term j = i, which the CRF excludes, is removed exactly: (w1 + w2)·q_i.

    The grid's geometry (corner indices and weights) depends on the image only, so it is
    computed once per ``dense_crf`` call and reused by every iteration.
    """

    def __init__(self, image, num_classes, theta_alpha, theta_beta, theta_gamma, w1, w2):
        _, H, W = image.shape
        self.dtype = image.dtype
        self.w1, self.w2 = w1, w2
        rows, cols = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
        u = np.concatenate([np.stack([rows.ravel(), cols.ravel()]) / theta_alpha,
                            image.reshape(3, H * W).astype(np.float64) / theta_beta])  # (5, N)
        u -= u.min(axis=1, keepdims=True)
        base = np.floor(u).astype(np.int64)
        frac = u - base
        self.shape = tuple(int(s) for s in base.max(axis=1) + 2)      # corners up to base + 1
        cells = math.prod(self.shape)
        if cells * num_classes > GRID_MAX_VALUES:
            raise ValueError(f"dense_crf: the bilateral grid for theta_alpha={theta_alpha}, "
                             f"theta_beta={theta_beta} on this {H}x{W} image needs "
                             f"{cells} cells x {num_classes} classes, more than "
                             f"{GRID_MAX_VALUES}; use larger thetas (or a smaller image)")
        strides = np.array([math.prod(self.shape[d + 1:]) for d in range(5)], dtype=np.int64)
        # The 32 corners c ∈ {0, 1}⁵: flat cell index and weight Π_d (c_d ? frac_d : 1 − frac_d).
        corners = (np.arange(32)[:, None] >> np.arange(5)[None, :]) & 1         # (32, 5)
        self.index = (corners @ strides)[:, None] + strides @ base                # (32, N)
        weight = np.ones((32, H * W))
        for d in range(5):
            weight *= np.where(corners[:, d:d + 1] == 1, frac[d], 1 - frac[d])
        self.weight = weight.astype(self.dtype)
        self.num_cells = cells
        radius = 3                                         # tail weight e^(−6.75) ≈ 1e-3
        taps = np.exp(-0.75 * np.arange(-radius, radius + 1) ** 2)   # variance 2/3: 1/(2·2/3)
        self.blur_taps = (taps / taps.sum()).astype(self.dtype)
        self.scale = (2 * np.pi) ** 2.5
        # Smoothness kernel: exp(−d²/(2θγ²)) per axis, unnormalised (peak 1 like the exact
        # kernel), cut where it falls below 1e-6 (|d| > 5.26·θγ).
        r = int(math.ceil(5.26 * theta_gamma))
        d = np.arange(-r, r + 1)
        self.spatial_taps = np.exp(-d * d / (2.0 * theta_gamma ** 2)).astype(self.dtype)

    def __call__(self, q):
        """q (C, H, W) -> messages (C, H, W)."""
        C, H, W = q.shape
        qn = q.reshape(C, H * W)
        grid = np.empty((C,) + self.shape, dtype=self.dtype)
        flat_index = self.index.ravel()
        for c in range(C):                                            # 1. splat
            grid[c].reshape(-1)[:] = np.bincount(flat_index, (self.weight * qn[c]).ravel(),
                                                 minlength=self.num_cells)
        for axis in range(1, 6):                                      # 2. blur
            grid = correlate1d(grid, self.blur_taps, axis=axis, mode="constant")
        grid = grid.reshape(C, -1)
        appearance = np.empty_like(qn)
        for c in range(C):                                            # 3. slice
            appearance[c] = (grid[c][self.index] * self.weight).sum(axis=0)
        smooth = correlate1d(q, self.spatial_taps, axis=1, mode="constant")
        smooth = correlate1d(smooth, self.spatial_taps, axis=2, mode="constant")
        messages = (self.w1 * self.scale) * appearance.reshape(C, H, W) + self.w2 * smooth
        return messages - (self.w1 + self.w2) * q
