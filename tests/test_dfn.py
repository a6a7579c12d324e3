"""DFN (Yu et al. 2018): the Channel Attention Block reweights the low-level channels and adds
the high-level features, the Smooth network is supervised at every stage, and the Border
network, trained only, learns the semantic boundaries of the labels with the focal loss; the
``"no_deep_supervision"`` ablation keeps only the prediction's classifier."""
import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.models.dfn import STAGES, ChannelAttentionBlock, semantic_boundaries
from edu_seg.ops.loss import cross_entropy, focal_loss
from edu_seg.ops.resample import interpolate
from helpers import random_images, record_forward


def _build(preset=None, seed=0, **config):
    nn.init.manual_seed(seed)
    return models.create("dfn", num_classes=4, preset=preset, **config)


def _up(a, size):
    return interpolate(Tensor(a), size=size, mode="bilinear", align_corners=False).data


def _batch(n=2, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros((n, 64, 64), np.int64)
    mask[:, 10:30, 20:50] = 1                     # two rectangles: boundaries to learn
    mask[:, 35:60, 5:25] = rng.integers(2, 4)
    return {"image": random_images(n, seed=seed), "mask": mask}


# -------------------------------------------------------------- Channel Attention Block
def test_cab_output_is_low_times_the_sigmoid_vector_plus_high():
    model = _build().eval()
    cab = model.cab["stage4"]
    _, seen = record_forward(model, {"cab": cab, "w": cab.sigmoid,
                                     "low": model.smooth_in["stage4"],
                                     "above": model.smooth_out["stage5"]}, random_images(2))
    low, out = seen["cab"][0], seen["cab"][1].data
    w = seen["w"][1].data
    np.testing.assert_array_equal(low, seen["low"][1].data)     # the stage's own RRB output
    assert w.shape == (2, 64, 1, 1) and ((w > 0) & (w < 1)).all()   # one gate per channel
    assert np.ptp(w) > 1e-3                                    # ... and they differ
    high = _up(seen["above"][1].data, low.shape[-2:])          # stage 5, up-sampled x2
    np.testing.assert_allclose(out, low * w + high, rtol=1e-5, atol=1e-5)
    assert np.abs(out - (low + high)).max() > 1e-3             # not the plain sum


def test_the_cab_gate_is_computed_from_both_levels():
    """w = sigmoid(fc2(relu(fc1(pool(concat(low, high)))))): changing high changes w."""
    nn.init.manual_seed(0)
    cab = ChannelAttentionBlock(3)
    rng = np.random.default_rng(0)
    low, high = (Tensor(rng.standard_normal((1, 3, 4, 4)).astype(np.float32)) for _ in range(2))
    with no_grad():
        pooled = np.concatenate([low.data, high.data], 1).mean(axis=(2, 3), keepdims=True)
        h = np.maximum(0, np.einsum("oi,nihw->nohw", cab.fc1.weight.data[:, :, 0, 0], pooled)
                       + cab.fc1.bias.data[None, :, None, None])
        z = (np.einsum("oi,nihw->nohw", cab.fc2.weight.data[:, :, 0, 0], h)
             + cab.fc2.bias.data[None, :, None, None])
        w = 1 / (1 + np.exp(-z))
        np.testing.assert_allclose(cab(low, high).data, low.data * w + high.data,
                                   rtol=1e-5, atol=1e-6)


def test_the_first_cab_fuses_res5_with_its_global_average_pool():
    model = _build().eval()
    _, seen = record_forward(model, {"pool": model.global_pool, "cab": model.cab["stage5"],
                                     "res5": model.backbone.layer4}, random_images(2))
    pooled = seen["pool"][1].data                              # (2, 64, 2, 2)
    np.testing.assert_array_equal(seen["pool"][0], seen["res5"][1].data)
    assert pooled.shape == (2, 64, 2, 2) and np.ptp(pooled, axis=(2, 3)).max() == 0


def test_no_cab_ablation_sums_the_two_levels():
    model = _build("no_cab").eval()
    assert model.cab is None
    assert not any(isinstance(m, ChannelAttentionBlock) for m in model.modules())
    _, seen = record_forward(model, {"low": model.smooth_in["stage3"],
                                     "above": model.smooth_out["stage4"],
                                     "after": model.smooth_out["stage3"]}, random_images(2))
    low = seen["low"][1].data
    high = _up(seen["above"][1].data, low.shape[-2:])
    np.testing.assert_allclose(seen["after"][0], low + high, rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------- the Smooth network's heads
def test_deep_supervision_every_stage_has_a_prediction_and_a_loss_term_in_training():
    model = _build()
    batch = _batch()
    outputs = model.forward_train(batch)
    assert set(outputs) == {"out", "stage5", "stage4", "stage3", "border"}
    for name in ("stage5", "stage4", "stage3"):
        assert outputs[name].shape == (2, 4, 64 // STAGES[name], 64 // STAGES[name])
    total, terms = model.loss(outputs, batch)
    assert set(terms) == {"ce", "stage5", "stage4", "stage3", "border"}
    for name in ("stage5", "stage4", "stage3"):                # each scored against the mask
        scores = interpolate(outputs[name], size=(64, 64), mode="bilinear",
                             align_corners=False)
        np.testing.assert_allclose(terms[name].item(),
                                   cross_entropy(scores, batch["mask"]).item(), rtol=1e-5)
    expected = (terms["ce"].item() + sum(terms[n].item() for n in ("stage5", "stage4", "stage3"))
                + 0.1 * terms["border"].item())
    np.testing.assert_allclose(total.item(), expected, rtol=1e-5)


def test_the_prediction_comes_from_stage2_at_stride_4_up_sampled_x4():
    model = _build().eval()
    out, seen = record_forward(model, {"head": model.classifier["stage2"]}, random_images(1))
    assert seen["head"][1].shape == (1, 4, 16, 16)
    np.testing.assert_allclose(out.data, _up(seen["head"][1].data, (64, 64)),
                               rtol=1e-5, atol=1e-6)


def test_eval_returns_a_tensor_and_never_runs_the_border_network():
    model = _build().eval()
    out, seen = record_forward(model, {"border": model.border_classifier,
                                       "stage3": model.classifier["stage3"]}, random_images(2))
    assert isinstance(out, Tensor) and out.shape == (2, 4, 64, 64)
    assert seen == {}                                          # no border, no stage-3 head


# ------------------------------------------------------------------- the Border network
def test_border_target_marks_the_pixels_whose_3x3_neighbourhood_has_another_label():
    mask = np.array([[0, 0, 0, 0, 0, 0],
                     [0, 0, 0, 0, 0, 0],
                     [0, 0, 1, 1, 0, 0],
                     [0, 0, 1, 1, 0, 0],
                     [0, 0, 0, 0, 0, 2],
                     [0, 0, 0, 0, 2, 2]])
    expected = np.array([[0, 0, 0, 0, 0, 0],
                         [0, 1, 1, 1, 1, 0],
                         [0, 1, 1, 1, 1, 0],
                         [0, 1, 1, 1, 1, 1],
                         [0, 1, 1, 1, 1, 1],
                         [0, 0, 0, 1, 1, 1]])
    np.testing.assert_array_equal(semantic_boundaries(mask), expected)
    np.testing.assert_array_equal(semantic_boundaries(np.stack([mask, 0 * mask])),
                                  np.stack([expected, 0 * expected]))   # batched (N, H, W)


def test_border_target_ignores_the_ignored_pixels_and_the_image_edge():
    mask = np.array([[1, 1, 1, 1],
                     [1, 255, 1, 1],
                     [1, 1, 1, 1]])
    np.testing.assert_array_equal(semantic_boundaries(mask, ignore_index=255),
                                  [[0, 0, 0, 0], [0, 255, 0, 0], [0, 0, 0, 0]])


def test_border_loss_is_the_focal_loss_of_the_border_logits_against_the_label_boundaries():
    model = _build()
    batch = _batch()
    outputs = model.forward_train(batch)
    assert outputs["border"].shape == (2, 1, 64, 64)           # one logit per pixel
    _, terms = model.loss(outputs, batch)
    target = semantic_boundaries(batch["mask"])
    focal = focal_loss(outputs["border"], target, gamma=2.0).item()
    np.testing.assert_allclose(terms["border"].item(), focal, rtol=1e-6)
    plain = focal_loss(outputs["border"], target, gamma=0.0).item()   # = binary cross-entropy
    assert abs(focal - plain) > 1e-3 * plain                   # easy pixels down-weighted


def test_border_network_merges_the_stages_bottom_up_at_stride_4():
    model = _build()
    batch = _batch()
    _, seen = record_forward(model.train(), {"b2": model.border_in["stage2"],
                                             "b3": model.border_in["stage3"],
                                             "merge3": model.border_out["stage3"],
                                             "merge4": model.border_out["stage4"],
                                             "b4": model.border_in["stage4"]}, batch["image"])
    assert seen["b2"][1].shape == (2, 16, 16, 16) and seen["b3"][1].shape == (2, 16, 8, 8)
    np.testing.assert_allclose(seen["merge3"][0],
                               seen["b2"][1].data + _up(seen["b3"][1].data, (16, 16)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(seen["merge4"][0],
                               seen["merge3"][1].data + _up(seen["b4"][1].data, (16, 16)),
                               rtol=1e-5, atol=1e-6)


def test_border_gradient_reaches_the_backbone_but_not_the_smooth_network():
    model = _build()
    batch = _batch()
    outputs = model.forward_train(batch)
    outputs["border"].mean().backward()
    assert np.abs(model.backbone.layer1[0].conv1.weight.grad).max() > 0
    assert np.abs(model.border_in["stage5"].reduce.weight.grad).max() > 0
    assert model.classifier["stage2"].weight.grad is None or \
        np.abs(model.classifier["stage2"].weight.grad).max() == 0


# -------------------------------------------------------------------------- presets
def test_no_border_ablation_has_no_border_network_output_or_loss():
    model = _build("no_border")
    assert not hasattr(model, "border_classifier")
    outputs = model.forward_train(_batch())
    assert set(outputs) == {"out", "stage5", "stage4", "stage3"}
    _, terms = model.loss(outputs, _batch())
    assert "border" not in terms
    assert model.num_parameters() < _build().num_parameters()


def test_no_deep_supervision_drops_the_stage_heads_but_keeps_the_prediction_and_border():
    full, plain = _build(), _build("no_deep_supervision")
    assert list(plain.classifier) == ["stage2"]         # the prediction's classifier stays
    assert plain.aux_weights == {} and full.aux_weights == {"stage5": 1.0, "stage4": 1.0,
                                                            "stage3": 1.0}
    dropped = sum(full.classifier[n].num_parameters() for n in ("stage3", "stage4", "stage5"))
    assert full.num_parameters() - plain.num_parameters() == dropped
    stage_heads = ("classifier.stage3.", "classifier.stage4.", "classifier.stage5.")
    shared = {k: v for k, v in full.state_dict().items() if not k.startswith(stage_heads)}
    assert list(plain.state_dict()) == list(shared)     # the Border network included

    batch = _batch()
    outputs = plain.forward_train(batch)
    assert set(outputs) == {"out", "border"}
    total, terms = plain.loss(outputs, batch)
    assert set(terms) == {"ce", "border"}
    ce = cross_entropy(outputs["out"], batch["mask"]).item()
    np.testing.assert_allclose(total.item(), ce + 0.1 * terms["border"].item(), rtol=1e-5)

    plain.load_state_dict(shared)                       # same weights -> same test-time scores
    plain.eval(), full.eval()
    np.testing.assert_array_equal(record_forward(plain, {}, batch["image"])[0].data,
                                  record_forward(full, {}, batch["image"])[0].data)


def test_without_deep_supervision_and_border_training_gives_the_plain_scores_and_ce():
    model = _build("no_deep_supervision", border_network=False)
    batch = _batch()
    scores = model.forward_train(batch)
    assert isinstance(scores, Tensor) and scores.shape == (2, 4, 64, 64)
    total, terms = model.loss(scores, batch)
    assert set(terms) == {"ce"}
    np.testing.assert_allclose(total.item(), cross_entropy(scores, batch["mask"]).item(),
                               rtol=1e-6)


def test_paper_preset_and_config_errors():
    assert models.presets("dfn")["paper"] == {"backbone": "resnet50", "smooth_channels": 512}
    assert _build("paper").cab["stage2"].fc2.weight.shape == (512, 512, 1, 1)
    with pytest.raises(ValueError, match="border_weight"):
        _build(border_weight=-1.0)
    with pytest.raises(ValueError, match="backbone must be one of 'resnet18'"):
        _build(backbone="vgg_bn_tiny")
