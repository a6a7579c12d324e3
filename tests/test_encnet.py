"""EncNet (Zhang et al. 2018): the Encoding Layer's soft-assigned residuals (against a direct
NumPy evaluation of the formula, and by gradcheck), the channel-wise scaling ``Y = X ⊗ γ``,
the SE-loss against the set of classes present in each image, and the two ablations."""
import numpy as np
import pytest

from edu_seg import gradcheck, models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.models.encnet import ContextEncoding, Encoding, present_classes, residual_encoding
from edu_seg.ops.loss import binary_cross_entropy_with_logits, cross_entropy
from helpers import random_images, record_forward


def _build(preset=None, seed=0, **config):
    nn.init.manual_seed(seed)
    return models.create("encnet", num_classes=4, preset=preset, **config)


def _formula(x, codewords, smoothing):
    """The paper's Encoding Layer, term by term: residuals r_ik = x_i - d_k, assignments
    a_ik = softmax_k(-s_k |r_ik|²), encodings e_k = sum_i a_ik r_ik. x: (N, C, H, W)."""
    N, C = x.shape[:2]
    feats = x.reshape(N, C, -1).transpose(0, 2, 1)              # (N, P, C)
    r = feats[:, :, None, :] - codewords[None, None]            # (N, P, K, C)
    logits = -smoothing * (r ** 2).sum(-1)                      # (N, P, K)
    a = np.exp(logits - logits.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    return (a[..., None] * r).sum(1)                            # (N, K, C)


# --------------------------------------------------------------------- the Encoding Layer
def test_encoding_layer_equals_a_direct_evaluation_of_the_formula():
    rng = np.random.default_rng(0)
    nn.init.manual_seed(0)
    layer = Encoding(5, 3)
    layer.codewords.data[...] = rng.standard_normal((3, 5))
    layer.smoothing.data[...] = [0.2, 0.7, 1.5]
    x = rng.standard_normal((2, 5, 3, 4)).astype(np.float32)
    e = layer(Tensor(x))
    assert e.shape == (2, 3, 5)                                  # (N, K, C)
    ref = _formula(x.astype(np.float64), layer.codewords.data.astype(np.float64),
                   layer.smoothing.data.astype(np.float64))
    np.testing.assert_allclose(e.data, ref, rtol=1e-4, atol=1e-5)


def test_encoding_layer_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 3, 2, 3)), requires_grad=True)
    codewords = Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    smoothing = Tensor(rng.uniform(0.1, 1.0, 4), requires_grad=True)
    report = gradcheck(residual_encoding, [x, codewords, smoothing])
    assert len(report.max_abs_error) == 3                        # x, d_k and s_k all checked


def test_encoding_treats_the_map_as_a_bag_of_features():
    """Positions are thrown away: shuffling the pixels leaves the encoding unchanged, while
    moving one feature changes it."""
    nn.init.manual_seed(0)
    layer = Encoding(4, 6)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    shuffled = x.reshape(1, 4, 25)[:, :, rng.permutation(25)].reshape(1, 4, 5, 5)
    with no_grad():
        e, e_shuffled = layer(Tensor(x)).data, layer(Tensor(shuffled)).data
        moved = x.copy()
        moved[0, :, 0, 0] += 1.0
        e_moved = layer(Tensor(moved)).data
    np.testing.assert_allclose(e_shuffled, e, rtol=1e-5, atol=1e-5)
    assert not np.allclose(e_moved, e, atol=1e-3)


# ---------------------------------------------------------- the Context Encoding Module
def test_the_scale_vector_multiplies_the_features_channel_wise():
    model = _build().eval()
    modules = {"head": model.head, "context": model.context, "gate": model.context.gate,
               "classifier": model.classifier}
    _, seen = record_forward(model, modules, random_images(3))
    x = seen["head"][1].data                                     # (3, 64, 16, 16)
    np.testing.assert_array_equal(seen["context"][0], x)
    gamma = seen["gate"][1].data                                 # (3, 64): one per channel
    assert x.shape == (3, 64, 16, 16) and gamma.shape == (3, 64)
    assert (gamma > 0).all() and (gamma < 1).all()               # a sigmoid
    y, e = seen["context"][1]
    np.testing.assert_array_equal(y.data, x * gamma[:, :, None, None])   # Y = X ⊗ γ
    np.testing.assert_array_equal(seen["classifier"][0], y.data)
    assert e.shape == (3, 64)
    assert np.ptp(gamma, axis=0).max() > 1e-4                    # γ depends on the image


def test_the_context_is_the_mean_over_codewords_of_bn_relu_of_the_encodings():
    nn.init.manual_seed(0)
    module = ContextEncoding(8, 5).eval()
    module.norm.running_mean[...] = np.linspace(-1, 1, 5)        # make the BN visible
    module.norm.running_var[...] = np.linspace(0.5, 2, 5)
    x = Tensor(np.random.default_rng(3).standard_normal((2, 8, 4, 4)).astype(np.float32))
    _, seen = record_forward(module, {"encoding": module.encoding, "fc": module.fc}, x.data)
    codes = seen["encoding"][1].data                             # (2, K=5, C=8)
    mean, var = module.norm.running_mean, module.norm.running_var
    normed = ((codes - mean[:, None]) / np.sqrt(var[:, None] + module.norm.eps)
              * module.norm.weight.data[:, None] + module.norm.bias.data[:, None])
    expected = np.maximum(normed, 0).mean(axis=1)                # (2, 8): mean over k
    np.testing.assert_allclose(seen["fc"][0], expected, rtol=1e-5, atol=1e-6)
    assert module.norm.num_features == 5                         # one BN channel per codeword


# ----------------------------------------------------------------------------- SE-loss
def test_se_target_is_exactly_the_set_of_classes_present_in_each_image():
    masks = np.zeros((3, 4, 4), np.int64)                        # image 0: background only
    masks[1, :2, :2] = 2                                         # image 1: {0, 2}
    masks[2] = 1                                                 # image 2: {1, 3}, and an
    masks[2, 3, 3] = 3                                           # ignored pixel
    masks[2, 0, 0] = -100
    expected = np.array([[1, 0, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1]], np.float32)
    np.testing.assert_array_equal(present_classes(masks, 4), expected)
    # One pixel of class 3 is enough; its size does not matter.
    assert present_classes(masks[2:], 4)[0, 3] == 1
    with pytest.raises(ValueError, match="image 1 has label 7"):
        present_classes(np.stack([masks[0], np.full((4, 4), 7)]), 4)


def test_loss_is_cross_entropy_plus_0_2_times_the_se_loss_on_the_classes_present():
    model = _build()
    masks = np.zeros((2, 64, 64), np.int64)
    masks[0, 10:20, 10:20] = 3
    masks[1, 30:40, 5:9] = 1
    batch = {"image": random_images(2), "mask": masks}
    outputs = model.forward_train(batch)
    assert set(outputs) == {"out", "se"} and outputs["se"].shape == (2, 4)
    total, terms = model.loss(outputs, batch)
    target = np.array([[1, 0, 0, 1], [1, 1, 0, 0]], np.float32)
    se = binary_cross_entropy_with_logits(outputs["se"], target)
    ce = cross_entropy(outputs["out"], masks)
    assert set(terms) == {"ce", "se"}
    np.testing.assert_allclose(terms["se"].item(), se.item(), rtol=1e-6)
    np.testing.assert_allclose(total.item(), ce.item() + 0.2 * se.item(), rtol=1e-6)
    # The SE logits come from the encoded context e through one FC layer (training mode).
    _, seen = record_forward(model, {"context": model.context, "se": model.se_head},
                             batch["image"])
    assert seen["se"][0].shape == (2, 64)
    np.testing.assert_array_equal(seen["se"][0], seen["context"][1][1].data)


# ------------------------------------------------------------------ modes and ablations
def test_eval_returns_the_plain_scores_and_the_se_head_exists_only_in_training():
    model = _build().eval()
    with no_grad():
        out = model(Tensor(random_images(2)))
    assert isinstance(out, Tensor) and out.shape == (2, 4, 64, 64)


def test_no_se_loss_keeps_the_module_but_drops_the_se_head_and_term():
    model = _build("no_se_loss")
    assert isinstance(model.context, ContextEncoding) and model.se_head is None
    batch = {"image": random_images(2), "mask": np.zeros((2, 64, 64), np.int64)}
    outputs = model.forward_train(batch)
    assert isinstance(outputs, Tensor)
    assert set(model.loss(outputs, batch)[1]) == {"ce"}


def test_no_encoding_feeds_the_head_straight_to_the_classifier():
    model = _build("no_encoding").eval()
    assert model.context is None and model.se_head is None
    assert not any(isinstance(m, Encoding) for m in model.modules())
    _, seen = record_forward(model, {"head": model.head, "classifier": model.classifier},
                             random_images(1))
    np.testing.assert_array_equal(seen["classifier"][0], seen["head"][1].data)
    full = _build()
    assert full.num_parameters() - model.num_parameters() == (
        64 * 64 + 2 * 64                 # the 1x1 conv-BN before the encoding
        + 32 * 64 + 32                   # codewords and smoothing factors
        + 2 * 32                         # BN over the 32 encodings
        + 64 * 64 + 64                   # FC to γ
        + 64 * 4 + 4)                    # the SE head


def test_backbone_predicts_at_stride_4_and_the_paper_preset_at_8():
    model = _build()
    assert model.output_stride == 4 and model.backbone.stage_strides == [2, 4, 4, 4, 4]
    assert models.presets("encnet")["paper"] == {
        "backbone": "resnet50", "backbone_widths": None, "output_stride": 8,
        "head_channels": 512, "num_codes": 32}
    paper = _build("paper")
    assert paper.backbone.stage_strides == [2, 4, 8, 8, 8]
    assert paper.head.conv.weight.shape == (512, 2048, 3, 3)
    assert paper.context.encoding.codewords.shape == (32, 512)


def test_se_loss_without_the_encoding_is_refused_by_name():
    with pytest.raises(ValueError, match="se_loss=True needs encoding=True"):
        _build(encoding=False)
    with pytest.raises(ValueError, match="output_stride must be one of 4, 8"):
        _build(output_stride=16)
