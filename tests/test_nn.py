"""edu_seg.nn: Module bookkeeping, the layers, BatchNorm2d (kernels, gradients, running stats),
dropout, leaky ReLU and initialisation."""
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edu_seg
from edu_seg import Tensor, gradcheck, nn
from edu_seg.backend import compiled_core_available
from edu_seg.ops.misc import dropout, dropout2d, leaky_relu
from edu_seg.ops.norm import batch_norm
from edu_seg.reference import norm as norm_reference

BACKENDS = ["numpy"] + (["cython"] if compiled_core_available() else [])


def randn(*shape, seed=0, dtype=np.float64, scale=1.0, shift=0.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale + shift).astype(dtype)


def compiled_norm():
    if not compiled_core_available():
        pytest.skip("compiled core not built")
    from edu_seg._kernels import norm   # built by `make build`; a missing module is a failure
    return norm


# ====================================================================== batch-norm kernels
shapes = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 7), st.integers(1, 7))


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16), shift=st.sampled_from([0.0, 5.0, -1e3]))
def test_norm_kernels_match_reference(shape, seed, shift):
    K = compiled_norm()
    x = randn(*shape, seed=seed, scale=2.0, shift=shift)
    dy = randn(*shape, seed=seed + 1)
    C = shape[1]
    mean, var = norm_reference.batch_norm_stats(x)
    mean_k, var_k = K.batch_norm_stats(x)
    np.testing.assert_allclose(mean_k, mean, rtol=1e-12, atol=1e-12 * (1 + abs(shift)))
    np.testing.assert_allclose(var_k, var, rtol=1e-9, atol=1e-12)
    invstd = 1 / np.sqrt(var + 1e-5)
    weight, bias = randn(C, seed=seed + 2), randn(C, seed=seed + 3)
    np.testing.assert_allclose(K.batch_norm_forward(x, mean, invstd, weight, bias),
                               norm_reference.batch_norm_forward(x, mean, invstd, weight, bias),
                               rtol=1e-12, atol=1e-9)
    for training in (True, False):
        got = K.batch_norm_backward(dy, x, mean, invstd, weight, training)
        want = norm_reference.batch_norm_backward(dy, x, mean, invstd, weight, training)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9)


def test_norm_kernels_float32_and_thread_count_independent():
    K = compiled_norm()
    assert 2 * 6 * 48 * 65 > K.GRAIN   # big enough for the kernels to use both threads
    x = randn(2, 6, 48, 65, dtype=np.float32, shift=3.0)
    dy = randn(2, 6, 48, 65, seed=1, dtype=np.float32)
    results = []
    for threads in (1, 2):
        edu_seg.set_num_threads(threads)
        mean, var = K.batch_norm_stats(x)
        invstd = 1 / np.sqrt(var + 1e-5)
        y = K.batch_norm_forward(x, mean, invstd, np.ones(6), np.zeros(6))
        results.append((mean, var, y) + K.batch_norm_backward(dy, x, mean, invstd,
                                                              np.ones(6), True))
    for a, b in zip(*results):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert results[0][2].dtype == np.float32 and results[0][3].dtype == np.float32
    mean64, var64 = norm_reference.batch_norm_stats(x.astype(np.float64))
    np.testing.assert_allclose(results[0][0], mean64, rtol=1e-12)   # float64 accumulation
    np.testing.assert_allclose(results[0][1], var64, rtol=1e-10)


# ==================================================================== batch_norm, the op
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradcheck(backend, training):
    edu_seg.set_backend(backend)
    C = 3
    x = Tensor(randn(2, C, 3, 4, shift=1.0), requires_grad=True)
    w = Tensor(randn(C, seed=1), requires_grad=True)
    b = Tensor(randn(C, seed=2), requires_grad=True)
    rm, rv = randn(C, seed=3), np.abs(randn(C, seed=4)) + 0.5

    def f(x, w, b):  # fresh copies: training updates the running stats on every call
        return batch_norm(x, rm.copy(), rv.copy(), w, b, training=training, eps=1e-3)

    gradcheck(f, [x, w, b], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_without_affine_and_without_running_stats(backend):
    edu_seg.set_backend(backend)
    x = Tensor(randn(3, 2, 2, 3), requires_grad=True)
    gradcheck(lambda x: batch_norm(x, None, None, training=True), [x])
    y = batch_norm(x, None, None, training=True).data
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-3)   # var/(var + eps)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_is_stable_far_from_zero(backend):
    """float32 with |mean| = 1e4·std: a one-pass E[x²] − E[x]² in float32 would give garbage."""
    edu_seg.set_backend(backend)
    x64 = randn(4, 3, 8, 8, shift=1e4)
    y = batch_norm(Tensor(x64.astype(np.float32)), None, None, training=True).data
    x32 = x64.astype(np.float32).astype(np.float64)   # what the float32 input really holds
    want = (x32 - x32.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(
        x32.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, want, atol=2e-3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm2d_matches_pytorch(backend, dtype):
    torch = pytest.importorskip("torch")
    edu_seg.set_backend(backend)
    C = 5
    ours = nn.BatchNorm2d(C, momentum=0.2).to_dtype(dtype)
    theirs = torch.nn.BatchNorm2d(C, momentum=0.2).to(getattr(torch, np.dtype(dtype).name))
    ours.weight.data[:] = randn(C, seed=9)
    ours.bias.data[:] = randn(C, seed=10)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.data))
        theirs.bias.copy_(torch.from_numpy(ours.bias.data))
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for step in range(3):   # training steps: outputs, gradients, running statistics
        x = randn(4, C, 6, 7, seed=step, dtype=dtype, scale=3.0, shift=2.0)
        dy = randn(4, C, 6, 7, seed=10 + step, dtype=dtype)
        ours.zero_grad()
        xt, xo = torch.tensor(x, requires_grad=True), Tensor(x, requires_grad=True)
        yo, yt = ours(xo), theirs(xt)
        yo.backward(dy)
        yt.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(yo.data, yt.detach().numpy(), **tol)
        np.testing.assert_allclose(xo.grad, xt.grad.numpy(), **tol)
        np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), **tol)
        np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), **tol)
        theirs.weight.grad = theirs.bias.grad = None
    np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), **tol)
    np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), **tol)
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 3
    ours.eval()
    theirs.eval()
    x = randn(2, C, 3, 3, seed=99, dtype=dtype)
    xt, xo = torch.tensor(x, requires_grad=True), Tensor(x, requires_grad=True)
    yo, yt = ours(xo), theirs(xt)
    yo.backward(np.ones_like(x))
    yt.backward(torch.ones_like(xt))
    np.testing.assert_allclose(yo.data, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), **tol)


def test_batchnorm2d_cumulative_average_when_momentum_is_none():
    bn = nn.BatchNorm2d(2, momentum=None)
    xs = [randn(3, 2, 4, 4, seed=s, dtype=np.float32, shift=s) for s in range(4)]
    for x in xs:
        bn(Tensor(x))
    means = [x.mean(axis=(0, 2, 3)) for x in xs]
    np.testing.assert_allclose(bn.running_mean, np.mean(means, axis=0), rtol=1e-5)
    # eval uses them and no longer updates them
    before = bn.running_mean.copy()
    bn.eval()(Tensor(xs[0]))
    np.testing.assert_array_equal(bn.running_mean, before)


def test_batchnorm2d_without_running_stats_uses_batch_stats_in_eval():
    bn = nn.BatchNorm2d(2, track_running_stats=False, affine=False).eval()
    assert bn.running_mean is None and list(bn.state_dict()) == []
    y = bn(Tensor(randn(3, 2, 4, 4, shift=7.0))).data
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-9)


@pytest.mark.parametrize("call, error, match", [
    (lambda: batch_norm(Tensor(randn(2, 3, 4)), None, None, training=True), ValueError,
     r"\(N, C, H, W\)"),
    (lambda: batch_norm(Tensor(np.ones((2, 3, 2, 2), np.int64)), None, None, training=True),
     TypeError, "int64"),
    (lambda: batch_norm(Tensor(randn(2, 3, 2, 2)), np.zeros(4), np.ones(4)), ValueError,
     r"running_mean must have shape \(3,\)"),
    (lambda: batch_norm(Tensor(randn(2, 3, 2, 2)), None, None, training=False), ValueError,
     "required when training=False"),
    (lambda: batch_norm(Tensor(randn(2, 3, 2, 2)), np.zeros(3), None, training=True),
     ValueError, "both"),
    (lambda: batch_norm(Tensor(randn(2, 3, 2, 2)), None, None, weight=np.ones(2),
                        training=True), ValueError, r"weight must have shape \(3,\)"),
    (lambda: batch_norm(Tensor(randn(2, 3, 2, 2)), None, None, bias=np.ones(3, np.int32),
                        training=True), TypeError, "bias must be a floating array"),
    (lambda: batch_norm(Tensor(randn(1, 3, 1, 1)), None, None, training=True), ValueError,
     "more than 1 value per channel"),
    (lambda: batch_norm(Tensor(randn(2, 3, 2, 2)), None, None, training=True, eps=0),
     ValueError, "eps must be positive"),
    (lambda: batch_norm(Tensor(randn(2, 3, 2, 2)), None, None, training=True, momentum=2),
     ValueError, "momentum"),
    (lambda: nn.BatchNorm2d(0), ValueError, "num_features"),
])
def test_batch_norm_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ========================================================================= Module basics
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.scale = nn.Parameter(np.ones(1, np.float32))

    def forward(self, x):
        return self.bn(self.conv(x)) * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = Block()
        self.stages = nn.ModuleList([nn.Sequential(nn.ReLU(), nn.Conv2d(3, 3, 1))])
        self.head = nn.Conv2d(3, 2, 1, bias=False)

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


def test_registration_order_and_dotted_names():
    net = Net()
    # a module's own parameters come before its children's, as in PyTorch
    assert [n for n, _ in net.named_parameters()] == [
        "stem.scale", "stem.conv.weight", "stem.conv.bias", "stem.bn.weight", "stem.bn.bias",
        "stages.0.1.weight", "stages.0.1.bias", "head.weight"]
    assert list(net.state_dict()) == [
        "stem.scale", "stem.conv.weight", "stem.conv.bias", "stem.bn.weight", "stem.bn.bias",
        "stem.bn.running_mean", "stem.bn.running_var", "stem.bn.num_batches_tracked",
        "stages.0.1.weight", "stages.0.1.bias", "head.weight"]
    assert [n for n, _ in net.named_children()] == ["stem", "stages", "head"]
    assert list(net.children())[0] is net.stem
    assert [type(m).__name__ for m in net.modules()] == [
        "Net", "Block", "Conv2d", "BatchNorm2d", "ModuleList", "Sequential", "ReLU", "Conv2d",
        "Conv2d"]
    assert net.head.bias is None
    assert net.num_parameters() == 2 * 3 * 9 + 3 + 3 + 3 + 1 + 9 + 3 + 6


def test_state_dict_keys_match_pytorch():
    torch = pytest.importorskip("torch")

    class TorchBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(3)
            self.scale = torch.nn.Parameter(torch.ones(1))

    theirs = torch.nn.Sequential(TorchBlock(), torch.nn.ConvTranspose2d(3, 2, 2, stride=2))
    ours = nn.Sequential(Block(), nn.ConvTranspose2d(3, 2, 2, stride=2))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (k, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert a.shape == tuple(b.shape), k


def test_train_eval_zero_grad_and_shared_parameters():
    net = Net()
    assert net.eval() is net and not net.stem.bn.training and not net.stages[0][0].training
    net.train()
    assert all(m.training for m in net.modules())
    y = net(Tensor(randn(2, 2, 5, 5, dtype=np.float32)))
    y.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    shared = nn.Conv2d(1, 1, 1)
    twice = nn.Sequential(shared, shared)
    assert len(list(twice.parameters())) == 2     # each parameter once


def test_state_dict_round_trip_is_exact_and_a_copy():
    nn.init.manual_seed(1)
    a = Net()
    a(Tensor(randn(2, 2, 4, 4, dtype=np.float32)))          # move the running stats
    nn.init.manual_seed(2)
    b = Net()
    state = a.state_dict()
    state_before = {k: v.copy() for k, v in state.items()}
    result = b.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(va, vb, err_msg=k)
        assert va.dtype == vb.dtype
    a.eval()
    b.eval()
    x = Tensor(randn(1, 2, 4, 4, seed=5, dtype=np.float32))
    np.testing.assert_array_equal(a(x).data, b(x).data)
    # the state dict holds copies: changing the model later does not change it
    a.head.weight.data += 1
    np.testing.assert_array_equal(state["head.weight"], state_before["head.weight"])
    # loading keeps the Parameter objects (an optimiser's references stay valid)
    w = b.head.weight
    b.load_state_dict(a.state_dict())
    assert b.head.weight is w
    np.testing.assert_array_equal(w.data, a.head.weight.data)


def test_load_state_dict_errors_name_the_keys():
    net = Net()
    state = net.state_dict()
    del state["stem.bn.running_var"]
    state["stem.extra"] = np.zeros(3)
    state["head.weight"] = np.zeros((2, 4, 1, 1))
    with pytest.raises(nn.StateDictError) as info:
        Net().load_state_dict(state)
    message = str(info.value)
    assert "missing keys: stem.bn.running_var" in message
    assert "unexpected keys: stem.extra" in message
    assert "head.weight: checkpoint has shape (2, 4, 1, 1), model has (2, 3, 1, 1)" in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    # nothing was loaded
    fresh = Net()
    before = fresh.state_dict()
    with pytest.raises(ValueError):
        fresh.load_state_dict(state)
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    # non-strict: missing/unexpected tolerated and reported, shapes still checked
    state["head.weight"] = np.zeros((2, 3, 1, 1))
    result = fresh.load_state_dict(state, strict=False)
    assert result.missing_keys == ["stem.bn.running_var"]
    assert result.unexpected_keys == ["stem.extra"]
    np.testing.assert_array_equal(fresh.head.weight.data, 0)


def test_attribute_rules():
    block = Block()
    with pytest.raises(TypeError, match="parameter 'scale'"):
        block.scale = np.ones(1)
    with pytest.raises(TypeError, match="buffer"):
        block.bn.running_mean = [0.0, 0.0, 0.0]
    block.bn.running_mean = np.full(3, 2.0, np.float32)       # arrays replace buffers
    assert block.bn.state_dict()["running_mean"][0] == 2.0
    block.conv = None                                         # None unregisters
    assert "conv.weight" not in block.state_dict() and block.conv is None
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        block.missing

    class Forgetful(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(1))

    with pytest.raises(AttributeError, match="super"):
        Forgetful()
    seq = nn.ModuleList([nn.ReLU(), nn.Sigmoid()])
    seq[0] = nn.Identity()                                    # replacement keeps its place
    assert [type(m).__name__ for m in seq] == ["Identity", "Sigmoid"]
    with pytest.raises(TypeError, match="Module"):
        nn.Sequential(nn.ReLU(), "relu")


def test_sequential_indexing_and_named_construction():
    seq = nn.Sequential(OrderedDict([("conv", nn.Conv2d(1, 2, 3)), ("act", nn.ReLU())]))
    assert [n for n, _ in seq.named_children()] == ["conv", "act"]
    assert isinstance(seq[0], nn.Conv2d) and isinstance(seq[-1], nn.ReLU)
    head = seq[:1]
    assert isinstance(head, nn.Sequential) and len(head) == 1 and head[0] is seq[0]
    seq.append(nn.Sigmoid())
    assert len(seq) == 3


def test_repr_is_nested_with_parameter_counts():
    text = repr(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                              nn.ReLU(), nn.Sequential(nn.Conv2d(8, 2, 1, dilation=2))))
    assert text == (
        "Sequential(\n"
        "  (0): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)"
        "  # 216 parameters\n"
        "  (1): BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
        "  # 16 parameters\n"
        "  (2): ReLU()\n"
        "  (3): Sequential(\n"
        "    (0): Conv2d(8, 2, kernel_size=(1, 1), stride=(1, 1), dilation=(2, 2))"
        "  # 18 parameters\n"
        "  )  # 18 parameters\n"
        ")  # 250 parameters")


def test_to_dtype_casts_parameters_and_buffers():
    net = Net().to_dtype(np.float64)
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.stem.bn.running_mean.dtype == np.float64
    assert net.stem.bn.num_batches_tracked.dtype == np.int64
    assert net(Tensor(randn(1, 2, 3, 3))).dtype == np.float64
    with pytest.raises(TypeError, match="floating"):
        net.astype(np.int32)


def test_small_network_gradcheck_in_float64():
    """A whole conv-BN-ReLU-conv network, every parameter, through Module and the ops."""
    nn.init.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2), nn.LeakyReLU(0.1),
                        nn.Conv2d(2, 2, 1)).to_dtype(np.float64)
    slots = [(m, name) for m in net.modules() for name in m._parameters]
    x = Tensor(randn(2, 2, 3, 3), requires_grad=True)

    def f(x, *values):   # run the network with gradcheck's copies as its parameters
        for (module, name), v in zip(slots, values):
            module._parameters[name] = v
        return net(x)

    values = [Tensor(m._parameters[name].data, requires_grad=True) for m, name in slots]
    assert len(values) == 6
    gradcheck(f, [x] + values, atol=1e-6)


# ===================================================================== conv layers, init
def test_conv_layers_default_init_is_seeded_and_bounded():
    nn.init.manual_seed(3)
    a = nn.Conv2d(4, 6, (3, 5), groups=2)
    nn.init.manual_seed(3)
    b = nn.Conv2d(4, 6, (3, 5), groups=2)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert a.weight.shape == (6, 2, 3, 5) and a.weight.dtype == np.float32
    bound = 1 / np.sqrt(2 * 3 * 5)          # PyTorch: kaiming_uniform(a=√5) = U(±1/√fan_in)
    assert np.abs(a.weight.data).max() <= bound and np.abs(a.weight.data).max() > 0.8 * bound
    assert np.abs(a.bias.data).max() <= bound
    t = nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2)
    assert t.weight.shape == (4, 3, 2, 2)
    assert np.abs(t.weight.data).max() <= 1 / np.sqrt(3 * 4)   # fan_in from weight.shape[1]


def test_conv_layers_match_pytorch_with_the_same_weights():
    torch = pytest.importorskip("torch")
    pairs = [
        (nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2),
         torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)),
        (nn.Conv2d(4, 2, (1, 3), padding="same", dilation=2, bias=False),
         torch.nn.Conv2d(4, 2, (1, 3), padding="same", dilation=2, bias=False)),
        (nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1),
         torch.nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)),
    ]
    x = randn(2, 4, 7, 6, dtype=np.float32)
    for ours, theirs in pairs:
        ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
        xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        yo, yt = ours(xo), theirs(xt)
        np.testing.assert_allclose(yo.data, yt.detach().numpy(), rtol=1e-4, atol=1e-5)
        yo.sum().backward()
        yt.sum().backward()
        np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-4,
                                   atol=1e-4)
        assert repr(ours).split("  #")[0] == repr(theirs).replace("padding=same",
                                                                  "padding=(0, 2)")


@pytest.mark.parametrize("call, error, match", [
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError, "groups=2 must divide"),
    (lambda: nn.Conv2d(0, 4, 3), ValueError, "in_channels"),
    (lambda: nn.Conv2d(3, 4, 2.5), TypeError, "kernel_size"),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding="same"), ValueError, "stride 1"),
    (lambda: nn.Conv2d(3, 4, 2, padding="same"), ValueError, "even"),
    (lambda: nn.ConvTranspose2d(3, 4, 2, groups=3), ValueError, "groups=3"),
])
def test_conv_layer_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_same_padding_keeps_the_size():
    conv = nn.Conv2d(2, 3, (3, 5), padding="same", dilation=(2, 1))
    assert conv.padding == (2, 2)
    assert conv(Tensor(randn(1, 2, 9, 7, dtype=np.float32))).shape == (1, 3, 9, 7)
    assert nn.Conv2d(2, 3, 3, padding="valid").padding == (0, 0)


def test_init_functions():
    rng_w = nn.Parameter(np.empty((64, 32, 3, 3), np.float32))
    nn.init.kaiming_normal_(rng_w, mode="fan_out", nonlinearity="relu")
    assert abs(rng_w.data.std() - np.sqrt(2 / (64 * 9))) < 0.02 * np.sqrt(2 / (64 * 9))
    nn.init.xavier_uniform_(rng_w)
    bound = np.sqrt(6 / (32 * 9 + 64 * 9))
    assert bound * 0.95 < np.abs(rng_w.data).max() <= bound
    assert nn.init.zeros_(rng_w).data.sum() == 0 and nn.init.ones_(rng_w).data.min() == 1
    assert nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(np.sqrt(2 / 1.04))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.init.calculate_gain("swish")
    with pytest.raises(ValueError, match="mode"):
        nn.init.kaiming_normal_(rng_w, mode="fan")
    # FCN's kernel for k = 4 (×2 up-sampling): the outer product of (1, 3, 3, 1)/4
    np.testing.assert_allclose(nn.init.bilinear_kernel(4, 4),
                               np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25]))
    np.testing.assert_allclose(nn.init.bilinear_kernel(3, 1), [[0.5], [1.0], [0.5]])
    with pytest.raises(ValueError, match="bilinear_"):
        nn.init.bilinear_(nn.Parameter(np.zeros((3, 2, 4, 4))))


def test_bilinear_transposed_conv_is_bilinear_upsampling():
    """k = 4, stride 2, padding 1 with bilinear_ weights == bilinear ×2 (align_corners=False)
    away from the border, where the transposed conv sees zero padding instead of clamping."""
    up = nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1, bias=False)
    nn.init.bilinear_(up.weight)
    x = Tensor(randn(1, 3, 6, 5, dtype=np.float64))
    up.to_dtype(np.float64)
    y = up(x).data
    want = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)(x).data
    np.testing.assert_allclose(y[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], atol=1e-12)
    depthwise = nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1, groups=3, bias=False)
    nn.init.bilinear_(depthwise.weight)
    np.testing.assert_allclose(depthwise.to_dtype(np.float64)(x).data, y, atol=1e-12)


# ================================================================== the other layers
def test_pooling_and_resampling_layers_match_pytorch():
    torch = pytest.importorskip("torch")
    x = randn(2, 3, 9, 8, dtype=np.float32)
    pairs = [
        (nn.MaxPool2d(2), torch.nn.MaxPool2d(2)),
        (nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
         torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)),
        (nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
         torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)),
        (nn.AdaptiveAvgPool2d(3), torch.nn.AdaptiveAvgPool2d(3)),
        (nn.AdaptiveMaxPool2d((2, 3)), torch.nn.AdaptiveMaxPool2d((2, 3))),
        (nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
         torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)),
        (nn.Upsample(size=(5, 11)), torch.nn.Upsample(size=(5, 11))),
        (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
        (nn.Sigmoid(), torch.nn.Sigmoid()),
        (nn.ReLU(), torch.nn.ReLU()),
        (nn.Identity(), torch.nn.Identity()),
    ]
    for ours, theirs in pairs:
        xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        yo, yt = ours(xo), theirs(xt)
        np.testing.assert_allclose(yo.data, yt.detach().numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=repr(ours))
        dy = randn(*yo.shape, seed=1, dtype=np.float32)
        yo.backward(dy)
        yt.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=repr(ours))
    shuffled = nn.PixelShuffle(2)(Tensor(randn(1, 8, 3, 3, dtype=np.float32)))
    assert shuffled.shape == (1, 2, 6, 6)


def test_max_unpool_layer_inverts_max_pool_positions():
    x = Tensor(randn(2, 3, 6, 6, dtype=np.float32))
    y, idx = nn.MaxPool2d(2, return_indices=True)(x)
    back = nn.MaxUnpool2d(2)(y, idx).data
    assert back.shape == x.shape
    np.testing.assert_array_equal(back[back != 0], x.data[back != 0])
    assert (back != 0).sum() == y.size


def test_leaky_relu_gradcheck_and_slope():
    x = Tensor(randn(3, 4) + 0.05, requires_grad=True)
    gradcheck(lambda t: leaky_relu(t, 0.3), [x])
    np.testing.assert_allclose(leaky_relu(Tensor(np.array([-2.0, 3.0])), 0.1).data, [-0.2, 3.0])
    with pytest.raises(TypeError, match="leaky_relu"):
        leaky_relu(Tensor(np.array([1, 2])))


def test_dropout_training_and_evaluation():
    layer = nn.Dropout(0.25)
    x = Tensor(np.ones((100, 100), np.float32), requires_grad=True)
    nn.init.manual_seed(0)
    y = layer(x)
    kept = y.data != 0
    assert 0.72 < kept.mean() < 0.78                      # keep probability 0.75
    np.testing.assert_allclose(y.data[kept], 1 / 0.75)    # survivors scaled by 1/(1 − p)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, y.data)          # d(x·mask)/dx = mask
    nn.init.manual_seed(0)
    np.testing.assert_array_equal(layer(x).data, y.data)  # reproducible from the seed
    assert layer.eval()(x) is x                            # identity in evaluation
    assert dropout(x, 1.0).data.max() == 0
    gen = np.random.default_rng(1)
    gradcheck(lambda t: dropout(t, 0.5, generator=np.random.default_rng(1)),
              [Tensor(randn(4, 5), requires_grad=True)])
    assert dropout(x, 0.5, generator=gen).shape == x.shape
    with pytest.raises(ValueError, match="p must be"):
        dropout(x, 1.5)
    with pytest.raises(ValueError, match="p must be"):
        nn.Dropout(-0.1)


def test_dropout2d_drops_whole_channels():
    x = Tensor(np.ones((8, 50, 4, 4), np.float32))
    nn.init.manual_seed(1)
    y = nn.Dropout2d(0.5)(x).data
    per_map = y.reshape(8, 50, 16)
    assert np.all((per_map == 0).all(axis=2) | (per_map == 2.0).all(axis=2))
    assert 0.4 < (per_map[:, :, 0] == 0).mean() < 0.6
    with pytest.raises(ValueError, match="dropout2d"):
        dropout2d(Tensor(np.ones((2, 3), np.float32)))
