"""GCN (Peng et al. 2017): large separable kernels summed without a nonlinearity, the residual
Boundary Refinement block, and the top-down fusion of the four stages' score maps."""
import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.models.gcn import STAGES, BoundaryRefinement, GlobalConvolution
from helpers import random_images


def _build(preset=None, seed=0, **config):
    nn.init.manual_seed(seed)
    return models.create("gcn", num_classes=4, preset=preset, **config)


def _gcn(k, cin=3, cout=2, seed=0):
    nn.init.manual_seed(seed)
    return GlobalConvolution(cin, cout, k)


def _map_sides(model, size=64):
    """{stage name: side of the backbone map it reads} for a size x size input."""
    with no_grad():
        features = model.backbone.features(Tensor(random_images(1, size)))
    return {name: features[s].shape[-1] for name, s in STAGES.items()}


# ------------------------------------------------------------- the Global Convolution module
def test_every_gcn_has_both_separable_branches_and_the_deep_ones_span_their_map():
    model = _build()
    sides = _map_sides(model)
    assert sides == {"res2": 16, "res3": 8, "res4": 4, "res5": 2}
    channels = model.backbone.channels
    for name, s in STAGES.items():
        g, k, c = model.gcn[name], model.gcn[name].kernel_size, channels[s]
        assert g.left_kx1.weight.shape == (4, c, k, 1)        # k x 1 first ...
        assert g.left_1xk.weight.shape == (4, 4, 1, k)        # ... then 1 x k
        assert g.right_1xk.weight.shape == (4, c, 1, k)       # 1 x k first ...
        assert g.right_kx1.weight.shape == (4, 4, k, 1)       # ... then k x 1
    # On res-4 and res-5 every score sees the whole map: a window of k >= 2n - 1 pixels
    # centred anywhere on an n-pixel map reaches both of its ends.
    for name in ("res4", "res5"):
        assert model.gcn[name].kernel_size >= 2 * sides[name] - 1
    assert model.gcn["res4"].kernel_size >= 7


def test_the_k3_ablation_has_3x3_windows_everywhere_and_the_paper_preset_15():
    k3 = _build("k3")
    assert [k3.gcn[n].kernel_size for n in STAGES] == [3, 3, 3, 3]
    assert all(k3.gcn[n].left_kx1.weight.shape[2:] == (3, 1) for n in STAGES)
    assert all(k3.gcn[n].right_1xk.weight.shape[2:] == (1, 3) for n in STAGES)
    assert k3.gcn["res4"].kernel_size < 2 * _map_sides(k3)["res4"] - 1   # no longer global
    assert models.presets("gcn")["paper"] == {"backbone": "resnet50", "kernel_size": 15}


def test_gcn_output_is_the_sum_of_its_two_branches():
    g = _gcn(7)
    x = Tensor(np.random.default_rng(1).standard_normal((2, 3, 9, 9)).astype(np.float32))
    with no_grad():
        both = g(x).data
        saved = {name: p.data.copy() for name, p in g.named_parameters()}
        for p in (g.right_1xk.weight, g.right_kx1.weight, g.right_kx1.bias):
            p.data[...] = 0                                    # right branch off
        left = g(x).data
        for name, p in g.named_parameters():
            p.data[...] = saved[name]
        for p in (g.left_kx1.weight, g.left_1xk.weight, g.left_1xk.bias):
            p.data[...] = 0                                    # left branch off
        right = g(x).data
    assert np.abs(left).max() > 0 and np.abs(right).max() > 0
    np.testing.assert_allclose(both, left + right, rtol=1e-5, atol=1e-5)


def test_gcn_is_linear_so_negative_values_pass_through_no_relu():
    """f(x) - f(0) is linear: scaling by -2 scales the output by -2, sums give sums."""
    g = _gcn(7)
    rng = np.random.default_rng(2)
    x, y = (rng.standard_normal((1, 3, 9, 9)).astype(np.float32) for _ in range(2))
    with no_grad():
        def f(a):
            return g(Tensor(a)).data - g(Tensor(np.zeros_like(a))).data
        fx = f(x)
        np.testing.assert_allclose(f(-2 * x), -2 * fx, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(f(x + y), fx + f(y), rtol=1e-4, atol=1e-4)
    assert (fx < 0).any()                                      # negatives were not clipped


@pytest.mark.parametrize("k", [3, 7, 15])
def test_one_gcn_output_pixel_depends_on_exactly_a_k_by_k_window(k):
    size, centre = 2 * k + 1, k                                # the window fits inside
    g = _gcn(k)
    x = Tensor(np.random.default_rng(3).standard_normal((1, 3, size, size)).astype(np.float32),
               requires_grad=True)
    g(x)[:, :, centre, centre].sum().backward()
    touched = np.abs(x.grad).sum(axis=(0, 1)) > 0              # (size, size)
    expected = np.zeros((size, size), bool)
    r = k // 2
    expected[centre - r:centre + r + 1, centre - r:centre + r + 1] = True
    np.testing.assert_array_equal(touched, expected)


# ------------------------------------------------------------ the Boundary Refinement block
def test_boundary_refinement_is_residual():
    nn.init.manual_seed(0)
    br = BoundaryRefinement(4)
    s = Tensor(np.random.default_rng(4).standard_normal((2, 4, 8, 8)).astype(np.float32))
    with no_grad():
        refined = br(s).data
        assert np.abs(refined - s.data).max() > 1e-3           # it does change the scores
        for conv in (br.conv1, br.conv2):
            conv.weight.data[...] = 0
            conv.bias.data[...] = 0
        np.testing.assert_array_equal(br(s).data, s.data)      # convs off: the identity


def test_boundary_refinement_sits_after_every_gcn_fusion_and_upsampling_unless_ablated():
    model = _build()
    blocks = [m for m in model.modules() if isinstance(m, BoundaryRefinement)]
    assert len(blocks) == 4 + 3 + 2                            # stages, fusions, last two ups
    assert not any(isinstance(m, BoundaryRefinement) for m in _build("no_br").modules())
    assert _build("no_br").num_parameters() < model.num_parameters()


# ------------------------------------------------------------------------ the whole network
def test_each_gcn_reads_its_stage_and_coarser_scores_are_added_top_down():
    """Hooks record what each module saw: GCN of res-s reads the backbone's stride-s map, and
    the BR after each fusion receives (this stage's BR output) + (the coarser map, up x2)."""
    model = _build().eval()
    seen, hooks = {}, []

    def record(key):
        return lambda m, args, y: seen.__setitem__(key, (args[0].data, y.data))

    for name in STAGES:
        hooks += [model.gcn[name].register_forward_hook(record(("gcn", name))),
                  model.br[name].register_forward_hook(record(("br", name))),
                  model.up[name].register_forward_hook(record(("up", name)))]
    for name in ("res4", "res3", "res2"):
        hooks.append(model.fuse_br[name].register_forward_hook(record(("fuse", name))))
    x = Tensor(random_images(2))
    with no_grad():
        features = model.backbone.features(x)
        model(x)
    for h in hooks:
        h.remove()
    for name, s in STAGES.items():
        np.testing.assert_array_equal(seen["gcn", name][0], features[s].data)
        assert seen["gcn", name][1].shape == (2, 4, 64 // s, 64 // s)
    coarser = {"res4": "res5", "res3": "res4", "res2": "res3"}
    for name, above in coarser.items():
        fused_input = seen["fuse", name][0]
        expected = seen["br", name][1] + seen["up", above][1]
        np.testing.assert_allclose(fused_input, expected, rtol=1e-6, atol=1e-6)
        # the coarser stage's up-sampling reads the FUSED map (res5 reads its own BR output)
        source = seen["br", above][1] if above == "res5" else seen["fuse", above][1]
        np.testing.assert_array_equal(seen["up", above][0], source)


def test_upsamplings_are_learned_transposed_convs_initialised_to_bilinear():
    model = _build()
    ups = [model.up[n] for n in STAGES] + [model.full_up]
    kernel = nn.init.bilinear_kernel(4, 4)
    for up in ups:
        assert isinstance(up, nn.ConvTranspose2d) and up.stride == (2, 2)
        assert up.weight.requires_grad
        for c in range(4):
            np.testing.assert_allclose(up.weight.data[c, c], kernel)


# ----------------------------------------------------------------------------------- config
def test_kernel_size_takes_one_int_or_one_per_stage_and_must_be_odd():
    assert _build(kernel_size=5).config.kernel_size == (5, 5, 5, 5)
    assert [g.kernel_size for g in _build(kernel_size=(9, 7, 5, 3)).gcn.values()] == [9, 7, 5, 3]
    with pytest.raises(ValueError, match=r"kernel_size must be one odd int.*\(15, 14, 7, 3\)"):
        _build(kernel_size=(15, 14, 7, 3))
    with pytest.raises(ValueError, match=r"kernel_size.*\(7, 7\)"):
        _build(kernel_size=(7, 7))
    with pytest.raises(ValueError, match="kernel_size"):
        _build(kernel_size=0)


def test_the_backbone_must_be_a_resnet():
    assert _build(backbone="resnet_bottleneck_tiny").gcn["res5"].left_kx1.weight.shape[1] == 64
    with pytest.raises(ValueError, match="backbone must be one of 'resnet18'"):
        _build(backbone="vgg_bn_tiny")
