"""ExFuse (Zhang et al. 2018) on GCN's framework: the semantic embedding branch multiplies a
stage by its up-sampled higher stages before the GCN, the decoder up-samples by GCN's
transposed convolutions while, in training only, a sub-pixel branch (ECRE) up-samples the
res-5 and res-4 score maps under its own loss, densely adjacent prediction averages k x k
channel groups read at the neighbours, and every backbone stage has a classifier with its own
loss in training."""
import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.models.exfuse import (ECRE_STAGES, DenselyAdjacentPrediction,
                                   SemanticEmbeddingBranch, SubPixelUpsampling)
from edu_seg.models.gcn import STAGES, BoundaryRefinement, GlobalConvolution
from edu_seg.ops.loss import cross_entropy
from edu_seg.ops.resample import interpolate, pixel_shuffle
from helpers import random_images, record_forward


def _build(preset=None, seed=0, **config):
    nn.init.manual_seed(seed)
    return models.create("exfuse", num_classes=4, preset=preset, **config)


def _up(a, size):
    return interpolate(Tensor(a), size=size, mode="bilinear", align_corners=False).data


def _batch(n=2):
    mask = np.zeros((n, 64, 64), np.int64)
    mask[:, 8:40, 16:48] = 1
    mask[:, 44:60, 4:20] = 3
    return {"image": random_images(n), "mask": mask}


# ------------------------------------------------------------------ the GCN framework
def test_it_is_built_from_gcns_own_modules():
    model = _build()
    assert all(isinstance(model.gcn[n], GlobalConvolution) for n in STAGES)
    assert [model.gcn[n].kernel_size for n in STAGES] == [3, 3, 7, 3]
    assert sum(isinstance(m, BoundaryRefinement) for m in model.modules()) == 4 + 3 + 2
    assert not any(isinstance(m, BoundaryRefinement) for m in _build(boundary_refinement=False)
                   .modules())


# ------------------------------------------------------------- semantic embedding branch
def _with_random_gates(model, seed=0):
    """Give every SEB gate's batch norm a random scale: at initialisation each gate is
    exactly 1 (scale 0, shift 1), and a product of ones would not show what is multiplied."""
    rng = np.random.default_rng(seed)
    for seb in model.seb.values():
        for _, bn in seb.gates:
            bn.weight.data[...] = rng.standard_normal(bn.weight.shape)
    return model


@pytest.mark.parametrize("preset,higher", [(None, ("res3",)),
                                           ("seb_all_stages", ("res3", "res4", "res5"))])
def test_seb_multiplies_a_stage_by_the_higher_stages_gates_up_sampled_before_the_gcn(
        preset, higher):
    model = _with_random_gates(_build(preset)).eval()
    seb = model.seb["res2"]
    assert len(seb.gates) == len(higher)
    layers = {"res2": model.backbone.layer1, "res3": model.backbone.layer2,
              "res4": model.backbone.layer3, "res5": model.backbone.layer4}
    modules = {"seb": seb, "gcn": model.gcn["res2"], **layers}
    modules.update({f"gate{i}": gate for i, gate in enumerate(seb.gates)})
    _, seen = record_forward(model, modules, random_images(2))
    low = seen["seb"][0]
    np.testing.assert_array_equal(low, seen["res2"][1].data)        # the stage's features
    expected = low.copy()
    for i, name in enumerate(higher):
        np.testing.assert_array_equal(seen[f"gate{i}"][0], seen[name][1].data)
        assert seen[f"gate{i}"][1].shape == (2, 64, 64 // STAGES[name], 64 // STAGES[name])
        expected = expected * _up(seen[f"gate{i}"][1].data, (16, 16))   # element-wise product
    np.testing.assert_allclose(seen["seb"][1].data, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(seen["gcn"][0], seen["seb"][1].data)  # then the GCN
    assert np.abs(expected - low).max() > 1e-3


def test_seb_gates_start_at_one_so_the_branch_starts_as_the_identity():
    model = _build().eval()
    _, seen = record_forward(model, {n: model.seb[n] for n in model.seb}, random_images(1))
    for low, y in seen.values():
        np.testing.assert_allclose(y.data, low, rtol=1e-6)


def test_seb_sits_on_every_stage_below_res5_and_no_seb_feeds_the_features_straight():
    model = _build()
    assert sorted(model.seb) == ["res2", "res3", "res4"]
    assert model.seb["res4"].gates[0][0].weight.shape == (256, 512, 3, 3)   # res5 -> res4's C
    paper = _build("seb_all_stages")
    assert [len(paper.seb[n].gates) for n in ("res4", "res3", "res2")] == [1, 2, 3]
    ablated = _build("no_seb").eval()
    assert ablated.seb is None
    assert not any(isinstance(m, SemanticEmbeddingBranch) for m in ablated.modules())
    _, seen = record_forward(ablated, {"gcn": ablated.gcn["res3"],
                                       "res3": ablated.backbone.layer2}, random_images(1))
    np.testing.assert_array_equal(seen["gcn"][0], seen["res3"][1].data)


# ------------------------------------------------ explicit channel-resolution embedding
def test_the_main_path_up_samples_by_gcns_transposed_convs_initialised_to_bilinear():
    kernel = nn.init.bilinear_kernel(4, 4)
    for preset in (None, "no_ecre"):
        model = _build(preset)
        for up in [model.up[n] for n in STAGES] + [model.full_up]:
            assert isinstance(up, nn.ConvTranspose2d) and up.stride == (2, 2)
            assert up.weight.shape[2:] == (4, 4) and up.padding == (1, 1)
        for name in STAGES:                                    # class c <- class c only
            np.testing.assert_array_equal(model.up[name].weight.data[1, 1], kernel)
            assert not model.up[name].weight.data[1, 2].any()
        assert model.full_up.weight.shape == (4, 36, 4, 4)     # 9 groups for DAP
        for o in range(36):                                    # group g, class c <- class c
            np.testing.assert_array_equal(model.full_up.weight.data[o % 4, o], kernel)
    # no sub-pixel up-sampling on the main path: the only ones are the two ECRE branches
    assert sum(isinstance(m, SubPixelUpsampling) for m in _build().modules()) == 2


def test_ecre_is_pixel_shuffle_of_a_conv_to_r_squared_times_k_channels_on_the_score_maps():
    model = _build().train()
    assert sorted(model.ecre) == sorted(ECRE_STAGES) == ["res4", "res5"]
    modules = {}
    for name in ECRE_STAGES:
        branch = model.ecre[name]
        assert branch.conv.weight.shape == (2 * 2 * 4, 4, 3, 3)     # r² K out, K in, 3x3
        assert branch.shuffle.upscale_factor == 2
        modules.update({f"{name}.conv": branch.conv, f"{name}.ecre": branch,
                        f"{name}.up": model.up[name]})
    out, seen = record_forward(model, modules, random_images(2))
    for name in ECRE_STAGES:
        s = STAGES[name]
        conv_out = seen[f"{name}.conv"][1].data                        # (N, 4K, H/s, W/s)
        ecre = seen[f"{name}.ecre"][1].data                            # (N, K, 2H/s, 2W/s)
        assert conv_out.shape == (2, 16, 64 // s, 64 // s)
        assert ecre.shape == (2, 4, 128 // s, 128 // s)
        np.testing.assert_array_equal(ecre, pixel_shuffle(Tensor(conv_out), 2).data)
        # it reads the (fused) score map that the main path's deconv up-samples
        np.testing.assert_array_equal(seen[f"{name}.ecre"][0], seen[f"{name}.up"][0])
        np.testing.assert_array_equal(out[f"ecre_{name}"].data, ecre)   # a named output
    # channel c·4 + 2i + j of position (h, w) is the sub-pixel (2h + i, 2w + j) of channel c
    conv_out, ecre = seen["res4.conv"][1].data, seen["res4.ecre"][1].data
    assert ecre[0, 1, 2 * 3 + 1, 2 * 2 + 0] == conv_out[0, 1 * 4 + 2 * 1 + 0, 3, 2]


def test_ecre_starts_as_nearest_neighbour_up_sampling():
    nn.init.manual_seed(0)
    up = SubPixelUpsampling(3, 6, 2)
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 5)).astype(np.float32)
    with no_grad():
        y = up(Tensor(x)).data                                 # (1, 6, 8, 10)
    nearest = x.repeat(2, axis=2).repeat(2, axis=3)
    np.testing.assert_allclose(y, np.concatenate([nearest, nearest], 1), rtol=1e-6)


def test_ecre_has_its_weighted_loss_term_in_training_and_is_not_run_in_eval():
    model = _build(semantic_supervision=False, ecre_weight=0.25)
    assert model.aux_weights == {"ecre_res5": 0.25, "ecre_res4": 0.25}
    assert _build().aux_weights["ecre_res5"] == 0.4                    # the default weight
    batch = _batch()
    outputs = model.forward_train(batch)
    assert set(outputs) == {"out", "ecre_res5", "ecre_res4"}
    total, terms = model.loss(outputs, batch)
    expected = terms["ce"].item()
    for name in ECRE_STAGES:
        scores = interpolate(outputs[f"ecre_{name}"], size=(64, 64), mode="bilinear",
                             align_corners=False)                      # the shared loss path
        term = cross_entropy(scores, batch["mask"]).item()
        np.testing.assert_allclose(terms[f"ecre_{name}"].item(), term, rtol=1e-5)
        expected += 0.25 * term
    np.testing.assert_allclose(total.item(), expected, rtol=1e-5)
    model.eval()
    out, seen = record_forward(model, {n: model.ecre[n] for n in ECRE_STAGES}, batch["image"])
    assert isinstance(out, Tensor) and seen == {}              # not even computed


def test_ecre_does_not_change_the_prediction_and_no_ecre_has_none_of_it():
    images = random_images(2)
    with_branch, without = _build().eval(), _build("no_ecre").eval()
    assert without.ecre is None
    assert not any(isinstance(m, SubPixelUpsampling) for m in without.modules())
    assert not any(k.startswith("ecre_") for k in without.aux_weights)
    # the same seed builds the same main path (the branch is built after it), and in eval
    # the branch is not run: the prediction is the no_ecre model's, bit for bit
    with no_grad():
        np.testing.assert_array_equal(with_branch(Tensor(images)).data,
                                      without(Tensor(images)).data)
    without.train()
    outputs = without.forward_train(_batch())
    assert not any(k.startswith("ecre_") for k in outputs)
    _, terms = without.loss(outputs, _batch())
    assert not any(k.startswith("ecre_") for k in terms)


# --------------------------------------------------------- densely adjacent prediction
def _dap_by_hand(x, k):
    """r[c, i, j] = mean over (l, m) of group l·k + m at (i + l - k//2, j + m - k//2)."""
    N, C, H, W = x.shape
    K, p = C // (k * k), k // 2
    r = np.zeros((N, K, H, W))
    for i in range(H):
        for j in range(W):
            for l in range(k):
                for m in range(k):
                    a, b = i + l - p, j + m - p
                    if 0 <= a < H and 0 <= b < W:
                        g = l * k + m
                        r[:, :, i, j] += x[:, g * K:(g + 1) * K, a, b]
    return r / (k * k)


@pytest.mark.parametrize("k", [3, 5])
def test_dap_averages_the_neighbour_groups(k):
    x = np.random.default_rng(k).standard_normal((2, k * k * 2, 4, 5)).astype(np.float32)
    with no_grad():
        y = DenselyAdjacentPrediction(k)(Tensor(x)).data
    assert y.shape == (2, 2, 4, 5)
    np.testing.assert_allclose(y, _dap_by_hand(x, k), rtol=1e-5, atol=1e-6)


def test_dap_output_i_j_reads_group_l_m_at_i_plus_l_minus_1_j_plus_m_minus_1():
    """An impulse in group (l, m) = (0, 2) at (2, 2) reaches only the output (3, 1), which
    reads that group at (3 + 0 - 1, 1 + 2 - 1) = (2, 2): the position's vote for its
    neighbour one row down and one column left."""
    x = np.zeros((1, 9, 5, 5), np.float32)
    x[0, 0 * 3 + 2, 2, 2] = 9.0
    with no_grad():
        y = DenselyAdjacentPrediction(3)(Tensor(x)).data[0, 0]
    expected = np.zeros((5, 5))
    expected[3, 1] = 1.0
    np.testing.assert_array_equal(y, expected)


def test_dap_sits_after_the_last_up_sampling_and_no_dap_has_one_group():
    model = _build().eval()
    _, seen = record_forward(model, {"dap": model.dap, "up": model.full_up,
                                     "br": model.full_br}, random_images(1))
    np.testing.assert_array_equal(seen["dap"][0], seen["up"][1].data)
    assert seen["dap"][0].shape == (1, 36, 64, 64) and seen["dap"][1].shape == (1, 4, 64, 64)
    np.testing.assert_array_equal(seen["br"][0], seen["dap"][1].data)
    ablated = _build("no_dap")
    assert not any(isinstance(m, DenselyAdjacentPrediction) for m in ablated.modules())
    assert ablated.full_up.weight.shape == (4, 4, 4, 4)
    with pytest.raises(ValueError, match="not k² = 9 groups"):
        DenselyAdjacentPrediction(3)(Tensor(np.zeros((1, 8, 2, 2), np.float32)))


# ------------------------------------------------------------------ semantic supervision
def test_every_stage_has_a_classifier_in_training_with_its_loss_term_and_none_in_eval():
    model = _build()
    batch = _batch()
    outputs = model.forward_train(batch)
    assert set(outputs) == {"out", "ecre_res5", "ecre_res4",
                            "ss_res2", "ss_res3", "ss_res4", "ss_res5"}
    for name, s in STAGES.items():
        assert outputs[f"ss_{name}"].shape == (2, 4, 64 // s, 64 // s)
    total, terms = model.loss(outputs, batch)
    expected = terms["ce"].item()
    for key in [f"ss_{name}" for name in STAGES] + [f"ecre_{n}" for n in ECRE_STAGES]:
        scores = interpolate(outputs[key], size=(64, 64), mode="bilinear",
                             align_corners=False)
        term = cross_entropy(scores, batch["mask"]).item()
        np.testing.assert_allclose(terms[key].item(), term, rtol=1e-5)
        expected += 0.4 * term
    np.testing.assert_allclose(total.item(), expected, rtol=1e-5)
    model.eval()
    out, seen = record_forward(model, {n: model.supervision[n] for n in STAGES},
                               batch["image"])
    assert isinstance(out, Tensor) and seen == {}              # not even computed


def test_the_stage_classifiers_read_the_backbone_stages():
    model = _build()
    _, seen = record_forward(model.train(), {"ss": model.supervision["res3"],
                                             "res3": model.backbone.layer2}, random_images(2))
    np.testing.assert_array_equal(seen["ss"][0], seen["res3"][1].data)


def test_no_semantic_supervision_ablation_has_no_stage_classifiers():
    model = _build("no_semantic_supervision")
    assert model.supervision is None
    assert not any(k.startswith("ss_") for k in model.aux_weights)
    outputs = model.forward_train(_batch())
    assert isinstance(outputs, dict) and set(outputs) == {"out", "ecre_res5", "ecre_res4"}
    _, terms = model.loss(outputs, _batch())
    assert set(terms) == {"ce", "ecre_res5", "ecre_res4"}


# -------------------------------------------------------------------------- config
def test_presets_and_config_errors():
    assert models.presets("exfuse")["paper"] == {"backbone": "resnet50", "kernel_size": 15,
                                                 "seb_stages": 3}
    assert models.presets("exfuse")["no_dap"] == {"dap_kernel": 1}
    assert models.presets("exfuse")["no_ecre"] == {"ecre": False}
    with pytest.raises(ValueError, match="dap_kernel must be odd.*got 2"):
        _build(dap_kernel=2)
    with pytest.raises(ValueError, match="kernel_size must be one odd int"):
        _build(kernel_size=(3, 3, 6, 3))
    with pytest.raises(ValueError, match="seb_stages must be at most 3"):
        _build(seb_stages=4)
    with pytest.raises(ValueError, match="unknown config field.*upsampling"):
        _build(upsampling="deconv")            # not a choice: the main path is always GCN's
