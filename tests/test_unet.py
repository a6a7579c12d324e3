"""U-Net, the model registry and ``models.summary``."""
import numpy as np
import pytest

import edu_seg
from edu_seg import models, nn
from edu_seg.autograd import Tensor
from edu_seg.models.blocks import center_crop
from edu_seg.models.unet import UNet, UNetConfig, unet_valid_output_size
from edu_seg.ops.loss import cross_entropy
from edu_seg.optim import Adam


def tiny_unet(depth=2, width=4, padding="same", num_classes=3, seed=0):
    nn.init.manual_seed(seed)
    return models.create("unet", num_classes=num_classes, depth=depth, base_width=width,
                         padding=padding)


def rand(*shape, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


# --------------------------------------------------------------------------- valid arithmetic
def test_valid_arithmetic_of_the_paper():
    assert unet_valid_output_size(572, depth=4) == 388       # Figure 1 of the paper
    # 188 -4-> 184 /2-> 92 -4-> 88 /2-> 44 -4-> 40, then x2-4: 76, 148
    assert unet_valid_output_size(188, depth=2) == 148


@pytest.mark.parametrize("size, depth", [(571, 4), (570, 4), (10, 1), (14, 1), (60, 4)])
def test_valid_arithmetic_rejects_sizes_that_do_not_fit(size, depth):
    with pytest.raises(ValueError, match=f"input {size}"):
        unet_valid_output_size(size, depth)


# ---------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("hw", [(8, 8), (16, 8), (8, 24), (32, 40)])
def test_same_padding_output_shape(depth, hw):
    H, W = hw
    if H % 2 ** depth or W % 2 ** depth:
        pytest.skip("not a multiple of the output stride")
    model = tiny_unet(depth=depth, width=2).eval()   # eval: BN works on 1x1 maps too
    for n in (1, 2):
        y = model(rand(n, 3, H, W))
        assert y.shape == (n, 3, H, W)
        assert y.dtype == np.float32


@pytest.mark.parametrize("depth", [1, 2])
def test_valid_padding_output_shape(depth):
    model = tiny_unet(depth=depth, width=2, padding="valid").eval()
    sizes = [s for s in range(1, 90) if _fits(s, depth)][:3]
    assert len(sizes) == 3
    for H, W in [(sizes[0], sizes[0]), (sizes[1], sizes[2])]:
        y = model(rand(1, 3, H, W))
        OH, OW = unet_valid_output_size(H, depth), unet_valid_output_size(W, depth)
        assert y.shape == (1, 3, OH, OW)
        assert (model.output_size(H), model.output_size(W)) == (OH, OW)


def _fits(size, depth):
    try:
        unet_valid_output_size(size, depth)
        return True
    except ValueError:
        return False


def test_divisibility_error_names_the_size_to_pad_to():
    model = tiny_unet(depth=3, width=2)
    with pytest.raises(ValueError, match=r"unet: input 64x60 is not divisible by the model's "
                                         r"output stride 8: pad to 64x64"):
        model(rand(1, 3, 64, 60))
    with pytest.raises(ValueError, match="pad to 24x16"):
        model(rand(1, 3, 17, 9))


def test_valid_mode_error_names_a_size_that_works():
    model = tiny_unet(depth=2, width=2, padding="valid")
    with pytest.raises(ValueError, match=r"input 45x45 .* pad to (\d+)x\1") as info:
        model(rand(1, 3, 45, 45))
    suggested = int(str(info.value).rsplit("pad to ", 1)[1].split("x")[0])
    assert _fits(suggested, 2) and not any(_fits(s, 2) for s in range(45, suggested))


def test_wrong_rank_is_an_error():
    with pytest.raises(ValueError, match=r"expected an input of shape \(N, C, H, W\)"):
        tiny_unet()(rand(3, 8, 8))


def test_input_size_for_covers_the_image():
    same, valid = tiny_unet(depth=3), tiny_unet(depth=2, padding="valid")
    assert [same.input_size_for(s) for s in (1, 8, 9, 60)] == [8, 8, 16, 64]
    for s in (5, 30, 64):
        n = valid.input_size_for(s)
        assert _fits(n, 2) and valid.output_size(n) >= s


def test_center_crop():
    x = Tensor(np.arange(2 * 6 * 7, dtype=np.float32).reshape(1, 2, 6, 7), requires_grad=True)
    y = center_crop(x, (2, 3))
    np.testing.assert_array_equal(y.data, x.data[:, :, 2:4, 2:5])
    y.sum().backward()
    assert x.grad.sum() == 2 * 2 * 3 and x.grad[0, 0, 2, 2] == 1 and x.grad[0, 0, 0, 0] == 0
    assert center_crop(x, (6, 7)) is x
    with pytest.raises(ValueError, match="cannot crop 6x7 to a larger 8x7"):
        center_crop(x, (8, 7))


# ---------------------------------------------------------------------------------- registry
def test_registry():
    assert "unet" in models.available()
    model = models.create("unet", num_classes=5, depth=2, base_width=3)
    assert isinstance(model, UNet) and model.name == "unet"
    assert model.config == UNetConfig(num_classes=5, depth=2, base_width=3)
    assert model.output_stride == 4
    with pytest.raises(ValueError, match="unknown model 'nope'; available models: .*unet"):
        models.create("nope", num_classes=2)
    with pytest.raises(ValueError, match="unknown config field.*widht.*base_width"):
        models.create("unet", num_classes=2, widht=3)
    with pytest.raises(ValueError, match="missing required config field.*num_classes"):
        models.create("unet")
    with pytest.raises(ValueError, match="padding must be one of 'same', 'valid', got 'full'"):
        models.create("unet", num_classes=2, padding="full")
    with pytest.raises(ValueError, match="depth must be an int >= 1, got 0"):
        models.create("unet", num_classes=2, depth=0)


def test_structure_follows_the_paper():
    model = tiny_unet(depth=3, width=4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    # 2 convs per level (3 down + bottleneck + 3 up) + the 1x1 head
    assert len(convs) == 2 * 7 + 1
    assert [u.weight.shape for u in ups] == [(32, 16, 2, 2), (16, 8, 2, 2), (8, 4, 2, 2)]
    assert model.head.weight.shape == (3, 4, 1, 1)
    # the decoder's first conv sees the concatenation: 2 * width channels
    assert [d[0].conv.weight.shape[1] for d in model.decoder] == [32, 16, 8]


# ------------------------------------------------------------------------------- PyTorch oracle
def test_matches_pytorch_forward_and_backward():
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    class TConvBNReLU(tnn.Module):
        def __init__(self, i, o):
            super().__init__()
            self.conv = tnn.Conv2d(i, o, 3, padding=1, bias=False)
            self.bn = tnn.BatchNorm2d(o)
            self.relu = tnn.ReLU()

        def forward(self, x):
            return self.relu(self.bn(self.conv(x)))

    class TUNet(tnn.Module):
        def __init__(self, depth, w, nc):
            super().__init__()
            ws = [w * 2 ** i for i in range(depth + 1)]
            dc = lambda i, o: tnn.Sequential(TConvBNReLU(i, o), TConvBNReLU(o, o))  # noqa: E731
            self.encoder = tnn.ModuleList([dc(3 if i == 0 else ws[i - 1], ws[i])
                                           for i in range(depth)])
            self.bottleneck = dc(ws[depth - 1], ws[depth])
            self.up = tnn.ModuleList([tnn.ConvTranspose2d(ws[i + 1], ws[i], 2, stride=2)
                                      for i in reversed(range(depth))])
            self.decoder = tnn.ModuleList([dc(2 * ws[i], ws[i]) for i in reversed(range(depth))])
            self.head = tnn.Conv2d(ws[0], nc, 1)

        def forward(self, x):
            skips = []
            for block in self.encoder:
                x = block(x)
                skips.append(x)
                x = tnn.functional.max_pool2d(x, 2)
            x = self.bottleneck(x)
            for up, block, skip in zip(self.up, self.decoder, reversed(skips)):
                x = block(torch.cat([skip, up(x)], 1))
            return self.head(x)

    ours = tiny_unet(depth=2, width=4, num_classes=3)
    ours.to_dtype(np.float64)
    theirs = TUNet(2, 4, 3).double()
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()
                            if not k.endswith("num_batches_tracked")}, strict=False)
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16))
    target = np.random.default_rng(2).integers(0, 3, (2, 16, 16))

    y = ours(Tensor(x))
    loss = cross_entropy(y, target)
    loss.backward()
    ty = theirs(torch.from_numpy(x))
    tloss = tnn.functional.cross_entropy(ty, torch.from_numpy(target))
    tloss.backward()
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-9, atol=1e-9)
    tparams = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), rtol=1e-7, atol=1e-9,
                                   err_msg=name)
    # batch norm's running statistics were updated identically
    tbuf = dict(theirs.named_buffers())
    for name, b in ours.named_buffers():
        if name in tbuf and b.dtype.kind == "f":
            np.testing.assert_allclose(b, tbuf[name].numpy(), rtol=1e-9, err_msg=name)


# -------------------------------------------------------------------------------- training
def test_overfits_one_small_batch():
    """A U-Net can memorise 2 images: the loss goes to nearly zero (the model can learn)."""
    from edu_seg.data import Shapes

    edu_seg.set_num_threads(1)     # small ops: 1 thread is as fast and immune to a busy machine

    ds = Shapes(2, size=32, num_classes=4, seed=3)
    x = Tensor(np.stack([ds[i]["image"] for i in range(2)]))
    target = np.stack([ds[i]["mask"] for i in range(2)])
    model = tiny_unet(depth=2, width=16, num_classes=4)
    opt = Adam(list(model.parameters()), lr=1e-2)
    losses = []
    for _ in range(50):
        loss = cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0.8
    assert losses[-1] < 0.03, losses[-10:]
    model.eval()
    pred = model(x).data.argmax(axis=1)
    assert (pred == target).mean() > 0.99


# ---------------------------------------------------------------------------------- summary
def test_summary_table():
    model = tiny_unet(depth=2, width=4)
    bn = model.encoder[0][0].bn
    before = bn.running_mean.copy()
    s = models.summary(model, (3, 16, 16))
    assert s.total_params == model.num_parameters()
    first = s.rows[0]
    assert first["name"] == "encoder.0.0.conv" and first["type"] == "Conv2d"
    assert first["output_shape"] == (1, 4, 16, 16)
    assert first["params"] == 4 * 3 * 9
    assert first["flops"] == 2 * 16 * 16 * 4 * 3 * 9          # no bias: BN follows
    head = s.rows[-1]
    assert head["name"] == "head" and head["output_shape"] == (1, 3, 16, 16)
    assert head["flops"] == 2 * 16 * 16 * 3 * 4 + 16 * 16 * 3  # multiply-adds + bias
    pools = [r for r in s.rows if r["name"] == "pool"]
    assert len(pools) == 2 and pools[0]["params"] == 0 and pools[1]["params"] is None
    # the model is untouched: still in training mode, BN statistics not updated
    assert model.training and bn.training
    np.testing.assert_array_equal(bn.running_mean, before)
    assert nn.Module.__call__ is not None and "recording" not in nn.Module.__call__.__name__
    text = str(s)
    assert "encoder.0.0.conv" in text and f"{model.num_parameters():,}" in text
