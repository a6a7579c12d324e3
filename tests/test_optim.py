"""Optimisers and schedules: torch.optim's update rules step by step, hand-computed values,
state_dict resumption, and a small conv net that actually learns."""
import math

import numpy as np
import pytest

from edu_seg import Tensor, nn
from edu_seg.ops.loss import cross_entropy
from edu_seg.optim import SGD, Adam, AdamW, CosineLR, PolyLR, RMSprop, StepLR

CONFIGS = [
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.1, momentum=0.9)),
    (SGD, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=1e-2)),
    (SGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3)),
    (Adam, dict(lr=1e-2)),
    (Adam, dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True)),
    (AdamW, dict(lr=1e-2)),
    (AdamW, dict(lr=1e-2, weight_decay=0.3, amsgrad=True)),
    (RMSprop, dict(lr=1e-2)),
    (RMSprop, dict(lr=1e-2, alpha=0.9, weight_decay=0.1, momentum=0.5, centered=True)),
]


def make_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(rng.standard_normal(s).astype(dtype)) for s in [(3, 4), (5,)]]


def gradients(params, step):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def run(cls, options, steps, params=None, opt=None, start=0):
    params = make_params() if params is None else params
    opt = cls(params, **options) if opt is None else opt
    for step in range(start, start + steps):
        for p, g in zip(params, gradients(params, step)):
            p.grad = g
        opt.step()
    return params, opt


@pytest.mark.parametrize("cls, options", CONFIGS)
def test_matches_torch_optim_step_by_step(cls, options):
    torch = pytest.importorskip("torch")
    params = make_params()
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    torch_cls = getattr(torch.optim, cls.__name__)
    opt, topt = cls(params, **options), torch_cls(theirs, **options)
    for step in range(6):
        for p, t, g in zip(params, theirs, gradients(params, step)):
            p.grad = g
            t.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        for p, t in zip(params, theirs):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-14,
                                       err_msg=f"{cls.__name__} {options} step {step}")


@pytest.mark.parametrize("cls, options", CONFIGS)
def test_step_reads_grad_without_changing_it_and_skips_params_without_grad(cls, options):
    params = make_params()
    frozen = params[1]
    before = frozen.data.copy()
    opt = cls(params, **options)
    g = np.ones((3, 4))
    for _ in range(3):
        params[0].grad = g
        opt.step()
    np.testing.assert_array_equal(g, 1.0)          # the gradient array is untouched
    np.testing.assert_array_equal(frozen.data, before)
    assert not np.array_equal(params[0].data, make_params()[0].data)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_update_keeps_the_parameter_dtype_and_object(dtype):
    for cls, options in CONFIGS:
        params = make_params(dtype=dtype)
        arrays = [p.data for p in params]
        run(cls, options, 2, params)
        assert all(p.data is a and p.dtype == dtype for p, a in zip(params, arrays))


def test_sgd_and_adam_by_hand():
    p = nn.Parameter(np.array([1.0, -2.0]))
    opt = SGD([p], lr=0.1, momentum=0.5, weight_decay=0.1)
    for grad, want in [([1.0, 1.0], [0.89, -2.08]),       # b = g + 0.1·p = (1.1, 0.8)
                       ([0.0, 2.0], [0.8261, -2.2992])]:  # b = 0.5·b + (0.089, 1.792)
        p.grad = np.array(grad)
        opt.step()
        np.testing.assert_allclose(p.data, want, rtol=1e-12)
    # Adam's first step moves every coordinate by lr·g/(|g| + eps·...) ≈ lr·sign(g)
    q = nn.Parameter(np.array([0.0, 0.0, 0.0]))
    adam = Adam([q], lr=0.01)
    q.grad = np.array([3.0, -1e-3, 0.0])
    adam.step()
    np.testing.assert_allclose(q.data, [-0.01, 0.01, 0.0], rtol=1e-4)


@pytest.mark.parametrize("cls, options", CONFIGS)
def test_state_dict_resumes_exactly(cls, options):
    straight, _ = run(cls, options, 7)
    params, opt = run(cls, options, 4)
    saved_params = [p.data.copy() for p in params]
    saved = opt.state_dict()
    opt.state.clear()                                  # the saved dict must not alias it
    resumed = [nn.Parameter(a) for a in saved_params]
    new_opt = cls(resumed, **{**options, "lr": 123.0})   # lr comes back from the state
    new_opt.load_state_dict(saved)
    run(cls, options, 3, resumed, new_opt, start=4)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a.data, b.data)


def test_param_groups_and_load_errors():
    a, b = make_params()
    opt = SGD([{"params": [a], "lr": 0.5}, {"params": [b]}], lr=0.1, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.1]
    a.grad, b.grad = np.ones(a.shape), np.ones(b.shape)
    opt.step()
    np.testing.assert_allclose(a.data, make_params()[0].data - 0.5)
    with pytest.raises(ValueError, match="1 parameter groups, this optimiser 2"):
        opt.load_state_dict(SGD([a, b]).state_dict())
    with pytest.raises(ValueError, match="group 0 has 2 parameters in the state, 1 here"):
        SGD([a]).load_state_dict(SGD([a, b]).state_dict())
    with pytest.raises(ValueError, match="more than one group"):
        SGD([{"params": [a]}, {"params": [a]}])
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    assert "group 0: 1 parameters, lr=0.5" in repr(opt)


@pytest.mark.parametrize("call, match", [
    (lambda: SGD(make_params(), lr=-1), "SGD: lr must be in"),
    (lambda: SGD(make_params(), lr=0.1, nesterov=True), "nesterov needs momentum"),
    (lambda: SGD([], lr=0.1), "empty parameter list"),
    (lambda: Adam(make_params(), betas=(0.9, 1.0)), r"betas\[1\]"),
    (lambda: AdamW(make_params(), eps=-1), "eps"),
    (lambda: RMSprop(make_params(), momentum=-0.1), "momentum"),
    (lambda: PolyLR(SGD(make_params()), total_steps=0), "total_steps"),
    (lambda: CosineLR(SGD(make_params()), total_steps=0), "total_steps"),
    (lambda: StepLR(SGD(make_params()), step_size=0), "step_size"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
    with pytest.raises(TypeError, match="Tensors"):
        SGD([np.zeros(3)])
    with pytest.raises(TypeError, match="Optimizer"):
        PolyLR("sgd", 10)


# =============================================================================== schedules
def lrs(scheduler, steps):
    values = [scheduler.get_last_lr()[0]]
    for _ in range(steps):
        scheduler.optimizer.step()
        scheduler.step()
        values.append(scheduler.get_last_lr()[0])
    return values


def test_schedule_values():
    poly = lrs(PolyLR(SGD(make_params(), lr=0.1), total_steps=4, power=0.9), 6)
    np.testing.assert_allclose(poly, [0.1 * (1 - min(t, 4) / 4) ** 0.9 for t in range(7)])
    assert poly[4:] == [0.0, 0.0, 0.0]
    cosine = lrs(CosineLR(SGD(make_params(), lr=0.1), total_steps=4, eta_min=0.01), 4)
    np.testing.assert_allclose(cosine, [0.1, 0.01 + 0.09 * (1 + math.cos(math.pi / 4)) / 2,
                                        0.055, 0.01 + 0.09 * (1 - math.cos(math.pi / 4)) / 2,
                                        0.01])
    step = lrs(StepLR(SGD(make_params(), lr=1.0), step_size=2, gamma=0.5), 5)
    np.testing.assert_allclose(step, [1, 1, 0.5, 0.5, 0.25, 0.25])


def test_schedules_match_torch():
    torch = pytest.importorskip("torch")

    def torch_lrs(make, steps):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched = make(opt)
        values = [sched.get_last_lr()[0]]
        for _ in range(steps):
            opt.step()
            sched.step()
            values.append(sched.get_last_lr()[0])
        return values

    sched = torch.optim.lr_scheduler
    np.testing.assert_allclose(
        lrs(PolyLR(SGD(make_params(), lr=0.1), 10, power=0.9), 12),
        torch_lrs(lambda o: sched.PolynomialLR(o, total_iters=10, power=0.9), 12), atol=1e-12)
    np.testing.assert_allclose(
        lrs(CosineLR(SGD(make_params(), lr=0.1), 8, eta_min=1e-3), 12),
        torch_lrs(lambda o: sched.CosineAnnealingLR(o, T_max=8, eta_min=1e-3), 12), atol=1e-12)
    np.testing.assert_allclose(
        lrs(StepLR(SGD(make_params(), lr=0.1), 3, gamma=0.3), 10),
        torch_lrs(lambda o: sched.StepLR(o, 3, gamma=0.3), 10), atol=1e-12)


def test_scheduler_state_dict_resumes():
    opt = SGD(make_params(), lr=0.1)
    sched = PolyLR(opt, total_steps=10)
    lrs(sched, 3)
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
    new_opt = SGD(make_params(), lr=0.1)
    new_sched = PolyLR(new_opt, total_steps=10)
    new_opt.load_state_dict(saved_opt)
    new_sched.load_state_dict(saved_sched)
    assert new_sched.last_epoch == 3 and new_opt.param_groups[0]["lr"] == sched.get_last_lr()[0]
    assert lrs(new_sched, 4) == lrs(sched, 4)


# ============================================================================ learning
@pytest.mark.parametrize("cls, options", [(SGD, dict(lr=0.1, momentum=0.9)),
                                          (Adam, dict(lr=0.02))])
def test_two_layer_conv_net_learns(cls, options):
    """Segment bright squares from dark background: the loss must fall well below its start."""
    nn.init.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, (4, 1, 12, 12)).astype(np.float32)
    target = np.zeros((4, 12, 12), np.int64)
    for n in range(4):
        r, c = rng.integers(0, 8, size=2)
        x[n, 0, r:r + 4, c:c + 4] += 1.0
        target[n, r:r + 4, c:c + 4] = 1
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 2, 3, padding=1))
    opt = cls(net.parameters(), **options)
    history = []
    for _ in range(25):
        opt.zero_grad()
        loss = cross_entropy(net(Tensor(x)), target)
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.3 * history[0], history
    net.eval()
    accuracy = (net(Tensor(x)).data.argmax(axis=1) == target).mean()
    assert accuracy > 0.9
