"""The fully connected CRF: exact messages (a brute-force pair loop, NumPy, Cython), the
bilateral-grid approximation against them, mean-field behaviour, errors, and ``predict --crf``.

Tolerances:

- Cython vs NumPy exact messages: float64 relative 1e-10 (they differ only by the order of the
  sums and exp(a)·exp(b) vs exp(a + b)); float32 relative 1e-4 of the largest message (4096
  float32 terms summed in different orders).
- Approximate vs exact messages: relative L2 error ≤ 0.15 (measured 0.03 on random colours,
  0.09–0.11 on piecewise-constant ones, where many pixels share one position in a grid cell);
  refined labels: ≤ 2% of pixels whose argmax differs on the denoising image (measured 0).
"""
import re

import numpy as np
import pytest

import edu_seg
from edu_seg import cli
from edu_seg.crf import _ApproximateMessages, dense_crf
from edu_seg.reference import crf as reference

compiled = pytest.importorskip("edu_seg._kernels.crf")

THETAS = dict(theta_alpha=80.0, theta_beta=13.0, theta_gamma=3.0)


def random_case(rng, L, H, W, dtype=np.float64):
    image = (rng.random((3, H, W)) * 255).astype(dtype)
    q = rng.random((L, H, W)).astype(dtype)
    return image, q / q.sum(axis=0)


def two_regions(rng, size, noise):
    """A dark left half and a bright right half (with pixel noise), and noisy probabilities.

    Returns image (3, S, S) in 0–255, probs (2, S, S), the true labels (S, S).
    """
    labels = np.zeros((size, size), dtype=np.int64)
    labels[:, size // 2:] = 1
    image = np.where(labels == 1, 200.0, 60.0)[None].repeat(3, axis=0)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255)
    logits = 1.0 * np.stack([labels == 0, labels == 1]) + rng.normal(0, noise, (2, size, size))
    e = np.exp(logits - logits.max(axis=0))
    return image, e / e.sum(axis=0), labels


def brute_force_messages(image, q, theta_alpha, theta_beta, theta_gamma, w1, w2):
    """m_i(l) = Σ_{j≠i} (w1·k_α + w2·k_γ)·q_j(l), one pair at a time, straight from the paper."""
    L, H, W = q.shape
    out = np.zeros_like(q)
    for yi in range(H):
        for xi in range(W):
            for yj in range(H):
                for xj in range(W):
                    if (yi, xi) == (yj, xj):
                        continue
                    dp = (yi - yj) ** 2 + (xi - xj) ** 2
                    dc = ((image[:, yi, xi] - image[:, yj, xj]) ** 2).sum()
                    k = (w1 * np.exp(-dp / (2 * theta_alpha ** 2) - dc / (2 * theta_beta ** 2))
                         + w2 * np.exp(-dp / (2 * theta_gamma ** 2)))
                    out[:, yi, xi] += k * q[:, yj, xj]
    return out


# ======================================================================= exact messages
def test_reference_equals_a_brute_force_pair_loop():
    image, q = random_case(np.random.default_rng(0), 3, 4, 5)
    image[:, 1:3, 1:4] = 120.0                          # a few identical colours: large k_α
    params = dict(theta_alpha=2.0, theta_beta=30.0, theta_gamma=1.5, w1=2.0, w2=0.7)
    np.testing.assert_allclose(reference.dense_crf_messages(image, q, **params),
                               brute_force_messages(image, q, **params), rtol=1e-12)


@pytest.mark.parametrize("L, H, W", [(1, 7, 9), (3, 16, 12), (5, 20, 23)])
def test_compiled_equals_reference(L, H, W):
    rng = np.random.default_rng(L)
    for dtype, rtol in ((np.float64, 1e-10), (np.float32, 1e-4)):
        image, q = random_case(rng, L, H, W, dtype)
        args = (image, q, 40.0, 20.0, 2.0, 5.0, 3.0)
        got, want = compiled.dense_crf_messages(*args), reference.dense_crf_messages(*args)
        assert got.dtype == want.dtype == dtype and got.shape == (L, H, W)
        assert np.abs(got - want).max() <= rtol * np.abs(want).max()


def test_compiled_result_does_not_depend_on_the_thread_count():
    image, q = random_case(np.random.default_rng(1), 4, 24, 24)   # 24⁴ pairs: above the grain
    before = edu_seg.get_num_threads()
    try:
        edu_seg.set_num_threads(1)
        one = compiled.dense_crf_messages(image, q, 80.0, 13.0, 3.0, 10.0, 3.0)
        edu_seg.set_num_threads(2)
        two = compiled.dense_crf_messages(image, q, 80.0, 13.0, 3.0, 10.0, 3.0)
    finally:
        edu_seg.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


# ================================================================= approximate messages
@pytest.mark.parametrize("size", [32, 48])
@pytest.mark.parametrize("image_kind", ["random", "two_regions"])
def test_approximate_messages_are_close_to_exact(size, image_kind):
    rng = np.random.default_rng(size)
    image, q = random_case(rng, 4, size, size)
    if image_kind == "two_regions":
        image = two_regions(rng, size, noise=1.0)[0]
    exact = compiled.dense_crf_messages(image, q, 80.0, 13.0, 3.0, 10.0, 3.0)
    approx = _ApproximateMessages(image, 4, 80.0, 13.0, 3.0, 10.0, 3.0)(q)
    assert np.linalg.norm(approx - exact) / np.linalg.norm(exact) <= 0.15


def test_approximate_labels_match_exact_labels():
    image, probs, _ = two_regions(np.random.default_rng(2), 48, noise=1.5)
    exact = dense_crf(image, probs, method="exact").argmax(axis=0)
    approx = dense_crf(image, probs, method="approximate").argmax(axis=0)
    assert (exact != approx).mean() <= 0.02


# =========================================================================== mean field
def test_without_pairwise_terms_the_result_is_the_unary_softmax():
    image, probs = random_case(np.random.default_rng(3), 3, 10, 11)
    for method in ("exact", "approximate"):
        q = dense_crf(image, probs, w1=0.0, w2=0.0, method=method)
        np.testing.assert_allclose(q, probs, rtol=1e-12, atol=1e-15)


def test_float32_in_float32_out_and_backends_agree():
    image, probs = random_case(np.random.default_rng(4), 3, 12, 12, np.float32)
    q = dense_crf(image, probs)
    assert q.dtype == np.float32 and q.shape == probs.shape
    np.testing.assert_allclose(q.sum(axis=0), 1.0, rtol=1e-5)
    with edu_seg.use_backend("numpy"):
        np.testing.assert_allclose(dense_crf(image, probs), q, atol=1e-4)


@pytest.mark.parametrize("method", ["exact", "approximate"])
def test_crf_removes_label_noise_on_two_regions(method):
    image, probs, labels = two_regions(np.random.default_rng(5), 48, noise=1.5)
    before = (probs.argmax(axis=0) != labels).mean()
    after = (dense_crf(image, probs, method=method).argmax(axis=0) != labels).mean()
    assert before > 0.15 and after < before / 5


def test_float_image_in_0_1_is_scaled_to_0_255():
    image, probs = random_case(np.random.default_rng(6), 2, 9, 9)
    np.testing.assert_allclose(dense_crf(image / 255, probs), dense_crf(image, probs),
                               rtol=1e-10)
    np.testing.assert_allclose(dense_crf(image.astype(np.uint8), probs),
                               dense_crf(np.floor(image), probs), rtol=1e-10)


# =============================================================================== errors
GOOD_IMAGE = np.full((3, 6, 7), 100.0)
GOOD_PROBS = np.full((2, 6, 7), 0.5)


@pytest.mark.parametrize("kwargs, words", [
    (dict(image=np.zeros((6, 7, 3))), "image must have shape (3, H, W)"),
    (dict(probs=np.full((2, 6, 8), 0.5)), "same height and width"),
    (dict(probs=np.full((6, 7), 1.0)), "probs must have shape (C, H, W)"),
    (dict(probs=np.full((2, 6, 7), 2.0)), "probabilities in [0, 1]"),
    (dict(probs=np.full((2, 6, 7), 0.4)), "sum to 1"),
    (dict(image=np.full((3, 6, 7), np.nan)), "image must be finite"),
    (dict(iterations=-1), "iterations must be an integer >= 0, got -1"),
    (dict(iterations=2.5), "iterations"),
    (dict(theta_alpha=0.0), "theta_alpha must be a finite number > 0, got 0.0"),
    (dict(theta_beta=-1.0), "theta_beta"),
    (dict(theta_gamma=float("inf")), "theta_gamma"),
    (dict(w1=-1.0), "w1 must be a finite number >= 0, got -1.0"),
    (dict(w2=-0.5), "w2"),
    (dict(method="fast"), "method must be 'auto', 'exact' or 'approximate', got 'fast'"),
])
def test_bad_arguments_raise_named_errors(kwargs, words):
    args = {"image": GOOD_IMAGE, "probs": GOOD_PROBS, **kwargs}
    with pytest.raises(ValueError, match=r"dense_crf: .*" + re.escape(words)):
        dense_crf(args.pop("image"), args.pop("probs"), **args)


def test_exact_refuses_large_images_and_points_to_approximate():
    image, probs = np.zeros((3, 129, 128)), np.full((2, 129, 128), 0.5)
    with pytest.raises(ValueError, match="129x128.*method='approximate'"):
        dense_crf(image, probs, method="exact")


# ================================================================================== CLI
def test_predict_with_crf_writes_a_label_png(tmp_path):
    from PIL import Image

    from edu_seg.data import Shapes

    run = tmp_path / "run"
    assert cli.main(["train", "--model", "unet", "--model-config", "depth=1", "base_width=4",
                     "--epochs", "1", "--train-samples", "32", "--val-samples", "8",
                     "--size", "32", "--out", str(run), "--no-progress"]) in (0, None)
    image = (Shapes(1, size=40, seed=3)[0]["image"].transpose(1, 2, 0) * 255).astype(np.uint8)
    Image.fromarray(image[:, :37]).save(tmp_path / "in.png")
    out = tmp_path / "mask.png"
    assert cli.main(["predict", "--checkpoint", str(run / "best.npz"), "--image",
                     str(tmp_path / "in.png"), "--out", str(out), "--crf"]) in (0, None)
    with Image.open(out) as mask:
        assert mask.size == (37, 40)
