"""The segmentation losses: values against hand-written formulas and PyTorch, gradients against
finite differences, and every documented error."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edu_seg import Tensor, gradcheck, losses
from edu_seg.ops.loss import (binary_cross_entropy_with_logits, bootstrapped_cross_entropy,
                              cross_entropy, dice_loss, focal_loss)


def randn(*shape, seed=0, dtype=np.float64, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def labels(shape, C, seed=0, ignore=None, n_ignored=0):
    t = np.random.default_rng(seed).integers(0, C, size=shape)
    if n_ignored:
        t.reshape(-1)[np.random.default_rng(seed + 1).choice(t.size, n_ignored, False)] = ignore
    return t


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def naive_cross_entropy(z, t, weight=None, ignore_index=-100, eps=0.0):
    """Per-pixel loss and its weight (0 where ignored), pixel by pixel, for (N, C, H, W)."""
    logp = log_softmax(z)
    N, C, H, W = z.shape
    w = np.ones(C) if weight is None else weight
    loss, counted = np.zeros((N, H, W)), np.zeros((N, H, W))
    for n in range(N):
        for i in range(H):
            for j in range(W):
                c = t[n, i, j]
                if c == ignore_index:
                    continue
                loss[n, i, j] = ((1 - eps) * -w[c] * logp[n, c, i, j]
                                 + eps / C * -(w * logp[n, :, i, j]).sum())
                counted[n, i, j] = w[c]
    return loss, counted


# ============================================================================ cross-entropy
@pytest.mark.parametrize("options", [
    {}, {"ignore_index": 255}, {"weight": [0.2, 1.0, 3.0, 0.5]}, {"label_smoothing": 0.2},
    {"weight": [0.2, 1.0, 3.0, 0.5], "ignore_index": -1, "label_smoothing": 0.1},
    {"reduction": "sum", "ignore_index": 255}, {"reduction": "none", "ignore_index": 255,
                                                "label_smoothing": 0.3},
])
def test_cross_entropy_gradcheck_and_naive_value(options):
    z = randn(2, 4, 3, 3)
    ignore = options.get("ignore_index", -100)
    t = labels((2, 3, 3), 4, ignore=ignore, n_ignored=3)
    gradcheck(lambda x: cross_entropy(x, t, **options), [Tensor(z, requires_grad=True)])
    weight = None if "weight" not in options else np.array(options["weight"])
    loss, counted = naive_cross_entropy(z, t, weight, ignore, options.get("label_smoothing", 0))
    want = {"mean": loss.sum() / counted.sum(), "sum": loss.sum(),
            "none": loss}[options.get("reduction", "mean")]
    np.testing.assert_allclose(cross_entropy(Tensor(z), t, **options).data, want, rtol=1e-12)


def test_cross_entropy_classification_shape_and_float32():
    z = randn(5, 3, dtype=np.float32)
    t = np.array([0, 2, 1, 1, 0])
    y = cross_entropy(Tensor(z), t)
    assert y.shape == () and y.dtype == np.float32
    want = -log_softmax(z.astype(np.float64))[np.arange(5), t].mean()
    np.testing.assert_allclose(y.data, want, rtol=1e-6)
    gradcheck(lambda x: cross_entropy(x, t, label_smoothing=0.1),
              [Tensor(z, requires_grad=True)])


def test_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 3e4]], dtype=np.float32)
    x = Tensor(z, requires_grad=True)
    y = cross_entropy(x, np.array([0, 1]))
    y.backward()
    np.testing.assert_allclose(y.data, (0 + 2e4) / 2)
    np.testing.assert_allclose(x.grad, [[0, 0, 0], [0, -0.5, 0.5]])


def test_cross_entropy_all_ignored_is_nan_with_zero_gradient():
    x = Tensor(randn(1, 3, 2, 2), requires_grad=True)
    y = cross_entropy(x, np.full((1, 2, 2), -100))
    y.backward()
    assert np.isnan(y.data)
    np.testing.assert_array_equal(x.grad, 0)


@settings(max_examples=20, deadline=None)
@given(N=st.integers(1, 3), C=st.integers(1, 5), H=st.integers(1, 4), W=st.integers(1, 4),
       smoothing=st.sampled_from([0.0, 0.25]), weighted=st.booleans(),
       reduction=st.sampled_from(["mean", "sum", "none"]), seed=st.integers(0, 999),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_cross_entropy_matches_pytorch(N, C, H, W, smoothing, weighted, reduction, seed, dtype):
    torch = pytest.importorskip("torch")
    z = randn(N, C, H, W, seed=seed, dtype=dtype, scale=3.0)
    t = labels((N, H, W), C, seed=seed, ignore=7, n_ignored=min(2, N * H * W - 1))
    w = np.random.default_rng(seed).random(C).astype(dtype) + 0.1 if weighted else None
    options = dict(ignore_index=7, reduction=reduction, label_smoothing=smoothing)
    x, xt = Tensor(z, requires_grad=True), torch.tensor(z, requires_grad=True)
    y = cross_entropy(x, t, weight=w, **options)
    yt = torch.nn.functional.cross_entropy(
        xt, torch.from_numpy(t), weight=None if w is None else torch.from_numpy(w), **options)
    dy = randn(*y.shape, seed=seed + 1, dtype=dtype)
    y.backward(dy)
    yt.backward(torch.from_numpy(np.asarray(dy)))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=tol, atol=tol)
    assert y.dtype == dtype and x.grad.dtype == dtype


@pytest.mark.parametrize("call, error, match", [
    (lambda: cross_entropy(Tensor(randn(2, 3, 4, 4)), np.full((2, 4, 4), 3)), ValueError,
     r"target contains 3, which is outside the class range \[0, 2\]"),
    (lambda: cross_entropy(Tensor(randn(2, 3, 4, 4)), np.full((2, 4, 4), -1)), ValueError,
     "target contains -1"),
    (lambda: cross_entropy(Tensor(randn(2, 3, 4, 4)), np.zeros((2, 4, 5), int)), ValueError,
     r"target has shape \(2, 4, 5\) .* need a target of shape \(2, 4, 4\)"),
    (lambda: cross_entropy(Tensor(randn(2, 3, 4, 4)), np.zeros((2, 4, 4))), TypeError,
     "integer class indices, got dtype float64"),
    (lambda: cross_entropy(Tensor(np.zeros((2, 3), int)), np.zeros(2, int)), TypeError,
     "logits must be float32 or float64"),
    (lambda: cross_entropy(Tensor(randn(3)), np.zeros(3, int)), ValueError, "logits must be"),
    (lambda: cross_entropy(Tensor(randn(2, 3)), np.zeros(2, int), reduction="avg"),
     ValueError, "reduction"),
    (lambda: cross_entropy(Tensor(randn(2, 3)), np.zeros(2, int), weight=[1, 2]), ValueError,
     r"weight must have one entry per class, shape \(3,\)"),
    (lambda: cross_entropy(Tensor(randn(2, 3)), np.zeros(2, int), label_smoothing=1.5),
     ValueError, "label_smoothing"),
])
def test_cross_entropy_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ===================================================================== binary cross-entropy
@pytest.mark.parametrize("options", [
    {}, {"weight": np.array([[[0.5]], [[2.0]]])}, {"pos_weight": np.array([[[3.0]], [[0.5]]])},
    {"reduction": "sum", "pos_weight": np.array([[[3.0]], [[0.5]]])}, {"reduction": "none"}])
def test_bce_with_logits_gradcheck_and_value(options):
    z = randn(2, 2, 3, 3, scale=4.0)
    t = np.random.default_rng(1).random((2, 2, 3, 3))
    gradcheck(lambda x, y: binary_cross_entropy_with_logits(x, y, **options),
              [Tensor(z, requires_grad=True), Tensor(t, requires_grad=True)])
    p = 1 / (1 + np.exp(-z))
    pw = options.get("pos_weight", 1.0)
    loss = -(pw * t * np.log(p) + (1 - t) * np.log(1 - p)) * options.get("weight", 1.0)
    want = {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[options.get("reduction",
                                                                            "mean")]
    got = binary_cross_entropy_with_logits(Tensor(z), t, **options).data
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_bce_with_logits_is_stable_and_takes_integer_masks():
    x = Tensor(np.array([-1e4, 1e4, 0.0], np.float32), requires_grad=True)
    y = binary_cross_entropy_with_logits(x, np.array([1, 0, 1]), reduction="none")
    np.testing.assert_allclose(y.data, [1e4, 1e4, np.log(2)], rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [-1, 1, -0.5])


def test_bce_with_logits_matches_pytorch():
    torch = pytest.importorskip("torch")
    z = randn(3, 2, 4, 5, scale=3.0, dtype=np.float32)
    t = (np.random.default_rng(2).random(z.shape) > 0.5).astype(np.float32)
    pw = np.array([2.0, 0.3], np.float32).reshape(2, 1, 1)
    w = np.random.default_rng(3).random((4, 5)).astype(np.float32)
    x, xt = Tensor(z, requires_grad=True), torch.tensor(z, requires_grad=True)
    y = binary_cross_entropy_with_logits(x, t, weight=w, pos_weight=pw)
    yt = torch.nn.functional.binary_cross_entropy_with_logits(
        xt, torch.from_numpy(t), weight=torch.from_numpy(w), pos_weight=torch.from_numpy(pw))
    y.backward()
    yt.backward()
    np.testing.assert_allclose(y.data, yt.item(), rtol=1e-6)
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("call, error, match", [
    (lambda: binary_cross_entropy_with_logits(Tensor(randn(2, 3)), np.zeros((3, 2))),
     ValueError, r"target has shape \(3, 2\) but logits have \(2, 3\)"),
    (lambda: binary_cross_entropy_with_logits(Tensor(randn(2, 3)), np.zeros((2, 3)),
                                              pos_weight=np.ones(2)), ValueError,
     r"pos_weight of shape \(2,\) does not broadcast"),
    (lambda: binary_cross_entropy_with_logits(Tensor(randn(2, 3)), np.array([["a"] * 3] * 2)),
     TypeError, "target must be numeric"),
])
def test_bce_with_logits_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ================================================================================ dice loss
def naive_dice(p, onehot, mask, smooth):
    inter = (p * onehot * mask).sum(axis=(0, 2, 3))
    union = (p * mask).sum(axis=(0, 2, 3)) + (onehot * mask).sum(axis=(0, 2, 3))
    return 1 - ((2 * inter + smooth) / (union + smooth)).mean()


def test_dice_loss_value_and_gradcheck_multiclass():
    z = randn(2, 3, 4, 4)
    t = labels((2, 4, 4), 3, ignore=9, n_ignored=4)
    p = np.exp(log_softmax(z))
    onehot = (t[:, None] == np.arange(3)[None, :, None, None]).astype(float)
    mask = (t != 9)[:, None]
    np.testing.assert_allclose(dice_loss(Tensor(z), t, smooth=0.5, ignore_index=9).data,
                               naive_dice(p, onehot, mask, 0.5), rtol=1e-12)
    gradcheck(lambda x: dice_loss(x, t, num_classes=3, smooth=0.5, ignore_index=9),
              [Tensor(z, requires_grad=True)])


def test_dice_loss_binary_head():
    z = randn(2, 1, 3, 5)
    t = labels((2, 3, 5), 2)
    p = 1 / (1 + np.exp(-z))
    want = naive_dice(p, (t == 1)[:, None].astype(float), np.ones_like(p), 1.0)
    np.testing.assert_allclose(dice_loss(Tensor(z), t).data, want, rtol=1e-12)
    gradcheck(lambda x: dice_loss(x, t), [Tensor(z, requires_grad=True)])


def test_dice_loss_is_zero_for_a_perfect_prediction_and_ignores_ignored_pixels():
    t = labels((2, 6, 6), 3)
    z = 50.0 * (t[:, None] == np.arange(3)[None, :, None, None])    # confident and right
    assert dice_loss(Tensor(z), t).item() < 1e-12
    t2 = t.copy()
    t2[:, 0] = 255
    z2 = z.copy()
    z2[:, :, 0] = randn(2, 3, 6, seed=4)       # wrong where ignored: no effect
    assert dice_loss(Tensor(z2), t2, ignore_index=255).item() < 1e-12
    assert dice_loss(Tensor(z2), np.where(t2 == 255, 0, t2)).item() > 0.01


@pytest.mark.parametrize("call, error, match", [
    (lambda: dice_loss(Tensor(randn(2, 3, 2, 2)), np.zeros((2, 2, 2), int), num_classes=4),
     ValueError, "num_classes=4 but logits have 3 channels"),
    (lambda: dice_loss(Tensor(randn(2, 1, 2, 2)), np.full((2, 2, 2), 2)), ValueError,
     r"target contains 2, which is outside the class range \[0, 1\]"),
    (lambda: dice_loss(Tensor(randn(2, 3, 2, 2)), np.zeros((2, 2, 2), int), smooth=-1),
     ValueError, "smooth"),
])
def test_dice_loss_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# =============================================================================== focal loss
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_loss_gradcheck(gamma):
    z = randn(2, 3, 3, 3, scale=2.0)
    t = labels((2, 3, 3), 3, ignore=-100, n_ignored=2)
    gradcheck(lambda x: focal_loss(x, t, gamma=gamma, alpha=[0.2, 0.3, 0.5]),
              [Tensor(z, requires_grad=True)])
    tb = labels((2, 3, 3), 2, ignore=-1, n_ignored=2)
    gradcheck(lambda x: focal_loss(x, tb, gamma=gamma, alpha=0.25, ignore_index=-1,
                                   reduction="none"),
              [Tensor(z[:, :1], requires_grad=True)])


def test_focal_loss_values():
    z = randn(2, 3, 3, 4, scale=2.0)
    t = labels((2, 3, 4), 3, ignore=-100, n_ignored=3)
    # gamma = 0 and no alpha: exactly cross-entropy
    np.testing.assert_allclose(focal_loss(Tensor(z), t, gamma=0).data,
                               cross_entropy(Tensor(z), t).data, rtol=1e-12)
    # the formula, pixel by pixel
    alpha = np.array([0.2, 0.3, 0.5])
    logp = log_softmax(z)
    valid = t != -100
    tc = np.where(valid, t, 0)
    logp_t = np.take_along_axis(logp, tc[:, None], axis=1)[:, 0]
    want = (-alpha[tc] * (1 - np.exp(logp_t)) ** 2 * logp_t)[valid].mean()
    np.testing.assert_allclose(focal_loss(Tensor(z), t, alpha=alpha).data, want, rtol=1e-12)
    # binary head: RetinaNet's sigmoid focal loss
    zb, tb = z[:, :1], labels((2, 3, 4), 2)
    p = 1 / (1 + np.exp(-zb[:, 0]))
    p_t = np.where(tb == 1, p, 1 - p)
    a_t = np.where(tb == 1, 0.25, 0.75)
    want = (-a_t * (1 - p_t) ** 2 * np.log(p_t)).sum()
    np.testing.assert_allclose(focal_loss(Tensor(zb), tb, alpha=0.25, reduction="sum").data,
                               want, rtol=1e-12)


def test_focal_loss_matches_torchvision_sigmoid_focal_loss():
    torch = pytest.importorskip("torch")
    try:
        from torchvision import ops
    except Exception as exc:  # not installed, or a build that does not match this PyTorch
        pytest.skip(f"torchvision is not usable here ({type(exc).__name__}: {exc})"[:200])
    z = randn(2, 1, 5, 5, scale=3.0)
    t = labels((2, 5, 5), 2)
    x, xt = Tensor(z, requires_grad=True), torch.tensor(z, requires_grad=True)
    y = focal_loss(x, t, alpha=0.25)
    yt = ops.sigmoid_focal_loss(xt, torch.from_numpy(t[:, None].astype(float)), alpha=0.25,
                                reduction="mean")
    y.backward()
    yt.backward()
    np.testing.assert_allclose(y.data, yt.item(), rtol=1e-10)
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("call, error, match", [
    (lambda: focal_loss(Tensor(randn(2, 3, 2, 2)), np.zeros((2, 2, 2), int), gamma=-1),
     ValueError, "gamma"),
    (lambda: focal_loss(Tensor(randn(2, 1, 2, 2)), np.zeros((2, 2, 2), int), alpha=[0.5]),
     ValueError, "alpha must be a float in"),
    (lambda: focal_loss(Tensor(randn(2, 3, 2, 2)), np.zeros((2, 2, 2), int), alpha=[1, 2]),
     ValueError, r"weight must have one entry per class"),
    (lambda: focal_loss(Tensor(randn(2, 3, 2, 2)), np.full((2, 2, 2), 5)), ValueError,
     "target contains 5"),
])
def test_focal_loss_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# =========================================================================== bootstrapped CE
def test_bootstrapped_cross_entropy_selects_the_hardest_pixels():
    z = randn(2, 3, 4, 4, scale=2.0)
    t = labels((2, 4, 4), 3, ignore=-100, n_ignored=5)
    per_pixel, _ = naive_cross_entropy(z, t)
    valid = t != -100
    picked = []
    for n in range(2):
        values = np.sort(per_pixel[n][valid[n]])[::-1]
        picked.extend(values[:6])
    np.testing.assert_allclose(bootstrapped_cross_entropy(Tensor(z), t, top_k=6).data,
                               np.mean(picked), rtol=1e-12)
    # K = all pixels: plain cross-entropy; a fraction: round(f·H·W) per image
    np.testing.assert_allclose(bootstrapped_cross_entropy(Tensor(z), t, top_k=16).data,
                               cross_entropy(Tensor(z), t).data, rtol=1e-12)
    np.testing.assert_allclose(bootstrapped_cross_entropy(Tensor(z), t, top_k=0.375).data,
                               np.mean(picked), rtol=1e-12)
    gradcheck(lambda x: bootstrapped_cross_entropy(x, t, top_k=5),
              [Tensor(z, requires_grad=True)])
    x = Tensor(z, requires_grad=True)
    bootstrapped_cross_entropy(x, t, top_k=3).backward()
    assert ((np.abs(x.grad).sum(axis=1) > 0).sum(axis=(1, 2)) == 3).all()   # 3 pixels each


@pytest.mark.parametrize("top_k, error, match", [
    (0, ValueError, ">= 1"), (1.5, ValueError, r"\(0, 1\]"), (0.0, ValueError, r"\(0, 1\]"),
    ("all", TypeError, "top_k must be"), (True, TypeError, "top_k must be"),
])
def test_bootstrapped_cross_entropy_errors(top_k, error, match):
    with pytest.raises(error, match=match):
        bootstrapped_cross_entropy(Tensor(randn(1, 2, 2, 2)), np.zeros((1, 2, 2), int), top_k)
    with pytest.raises(ValueError, match="bootstrapped_cross_entropy: target contains 4"):
        bootstrapped_cross_entropy(Tensor(randn(1, 2, 2, 2)), np.full((1, 2, 2), 4), 2)


# ============================================================================ losses module
def test_losses_module_reexports_and_classes():
    assert losses.cross_entropy is cross_entropy
    z, t = Tensor(randn(2, 3, 2, 2)), labels((2, 2, 2), 3)
    loss_fn = losses.CrossEntropyLoss(weight=[1.0, 2.0, 0.5], label_smoothing=0.1)
    np.testing.assert_array_equal(loss_fn(z, t).data,
                                  cross_entropy(z, t, weight=[1.0, 2.0, 0.5],
                                                label_smoothing=0.1).data)
    assert "label_smoothing=0.1" in repr(loss_fn)
    np.testing.assert_array_equal(losses.DiceLoss(smooth=2.0)(z, t).data,
                                  dice_loss(z, t, smooth=2.0).data)
    np.testing.assert_array_equal(losses.FocalLoss(gamma=1.0)(z, t).data,
                                  focal_loss(z, t, gamma=1.0).data)
    np.testing.assert_array_equal(losses.BootstrappedCrossEntropyLoss(3)(z, t).data,
                                  bootstrapped_cross_entropy(z, t, 3).data)
    tb = (t > 0).astype(np.float64)
    np.testing.assert_array_equal(losses.BCEWithLogitsLoss()(z[:, 0], tb).data,
                                  binary_cross_entropy_with_logits(z[:, 0], tb).data)
