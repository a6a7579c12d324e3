"""The autograd: every op's gradient against finite differences, broadcasting, the engine."""
import numpy as np
import pytest

import edu_seg
from edu_seg import Tensor, gradcheck
from edu_seg.gradcheck import GradcheckError

rng = np.random.default_rng(0)


def t(*shape, positive=False):
    a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.5
    return Tensor(a, requires_grad=True)


# ---------------------------------------------------------------- gradients of every op
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((4,), (3, 4)),
                                    ((2, 1, 4), (3, 1)), ((1,), (2, 3))])
def test_binary_ops_broadcast_both_ways(op, shapes):
    a, b = t(*shapes[0]), t(*shapes[1], positive=(op == "div"))
    fn = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b,
          "mul": lambda a, b: a * b, "div": lambda a, b: a / b}[op]
    gradcheck(fn, [a, b])


@pytest.mark.parametrize("fn", [lambda a: 2.0 + a, lambda a: 2.0 - a, lambda a: 3.0 * a,
                                lambda a: 1.0 / a, lambda a: -a, lambda a: a ** 3,
                                lambda a: a ** 0.5, lambda a: 2.0 ** a])
def test_ops_with_python_scalars(fn):
    gradcheck(fn, [t(3, 2, positive=True)])


def test_pow_with_tensor_exponent():
    gradcheck(lambda a, b: a ** b, [t(3, positive=True), t(3)])


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "relu", "sigmoid", "tanh"])
def test_unary(name):
    x = t(4, 5, positive=name in ("log", "sqrt"))
    if name == "relu":  # keep away from the kink at 0, where the derivative jumps
        x.data[np.abs(x.data) < 0.1] += 0.3
    gradcheck(lambda a: getattr(a, name)(), [x])


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (4, 5)),
                                    ((3, 4), (4,)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4,)),
                                    ((4,), (2, 4, 3)), ((2, 3, 4), (4,))])
def test_matmul(shapes):
    gradcheck(lambda a, b: a @ b, [t(*shapes[0]), t(*shapes[1])])


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 2), False),
                                           (-1, True)])
def test_reductions(reduce, axis, keepdims):
    gradcheck(lambda a: getattr(a, reduce)(axis=axis, keepdims=keepdims), [t(3, 4, 5)])


def test_max_splits_gradient_between_ties():
    x = Tensor(np.array([1.0, 3.0, 3.0]), requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.5, 0.5])


def test_reshape_permute_transpose_flatten():
    gradcheck(lambda a: a.reshape(4, 6).permute(1, 0) * 2, [t(2, 3, 4)])
    gradcheck(lambda a: a.transpose(0, 2).flatten(1), [t(2, 3, 4)])


@pytest.mark.parametrize("index", [(slice(1, 3),), (Ellipsis, 1), (slice(None), slice(None, None, 2)),
                                   (np.array([0, 2, 0]),), (np.array([1, 1]), slice(0, 2))])
def test_getitem(index):
    gradcheck(lambda a: a[index], [t(3, 4)])


def test_repeated_integer_index_accumulates():
    x = Tensor(np.zeros(3), requires_grad=True)
    x[np.array([0, 0, 2])].sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 0.0, 1.0])


def test_cat_stack_pad():
    a, b = t(2, 3, 4), t(2, 1, 4)
    gradcheck(lambda a, b: edu_seg.cat([a, b, a], axis=1), [a, b])
    gradcheck(lambda a, b: edu_seg.stack([a, b], axis=2), [t(2, 3), t(2, 3)])
    gradcheck(lambda a: edu_seg.pad(a, (1, 2, 0, 3)), [t(2, 3, 4)])
    assert edu_seg.pad(Tensor(np.ones((1, 1, 2, 2))), (1, 1, 2, 2)).shape == (1, 1, 6, 4)


def test_composite_two_layer_perceptron_learns():
    """A two-layer perceptron on a random regression task: gradcheck, then loss decreases."""
    r = np.random.default_rng(1)
    x = Tensor(r.standard_normal((32, 5)))
    y = Tensor(r.standard_normal((32, 1)))
    w1, b1 = Tensor(r.standard_normal((5, 16)) * 0.5, requires_grad=True), t(16)
    w2, b2 = Tensor(r.standard_normal((16, 1)) * 0.5, requires_grad=True), t(1)

    def loss_fn(w1, b1, w2, b2):
        h = (x @ w1 + b1).tanh()
        return ((h @ w2 + b2 - y) ** 2).mean()

    gradcheck(loss_fn, [w1, b1, w2, b2])
    params = [w1, b1, w2, b2]
    first = None
    for _ in range(100):
        for p in params:
            p.grad = None
        loss = loss_fn(*params)
        loss.backward()
        first = first if first is not None else loss.item()
        for p in params:
            p.data -= 0.1 * p.grad
    assert loss.item() < 0.5 * first


# ------------------------------------------------------------------------ the engine
def test_gradients_accumulate_over_paths_and_calls():
    x = Tensor([2.0], requires_grad=True)
    y = x * x + x * 3.0          # dy/dx = 2x + 3 = 7
    y.backward()
    np.testing.assert_allclose(x.grad, [7.0])
    (x * 2.0).sum().backward()   # a second backward adds 2
    np.testing.assert_allclose(x.grad, [9.0])


def test_diamond_graph_runs_each_node_once_with_complete_gradient():
    x = Tensor([1.5], requires_grad=True)
    h = x.exp()
    y = h * h + h                 # d/dx = (2h + 1)·h
    y.backward()
    h0 = np.exp(1.5)
    np.testing.assert_allclose(x.grad, [(2 * h0 + 1) * h0], rtol=1e-6)


def test_deep_chain_does_not_hit_recursion_limit():
    x = Tensor([1.0], requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0
    y.backward()
    assert x.grad[0] == 1.0


def test_dtypes_are_kept():
    assert Tensor([1, 2]).dtype == np.float32          # Python lists become float32
    assert Tensor(3.5).dtype == np.float32
    x64 = Tensor(np.ones(3), requires_grad=True)
    (x64 * 2).sum().backward()
    assert x64.grad.dtype == np.float64
    x32 = Tensor(np.ones(3, np.float32), requires_grad=True)
    y = (x32 * 2.0).exp().sum()
    assert y.dtype == np.float32
    y.backward()
    assert x32.grad.dtype == np.float32
    assert Tensor(np.arange(3)).dtype.kind == "i"       # integer arrays (labels) stay integer


def test_no_grad_records_nothing():
    x = Tensor([1.0], requires_grad=True)
    with edu_seg.no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf
    assert edu_seg.is_grad_enabled()


def test_detach_and_numpy():
    x = Tensor([1.0, 2.0], requires_grad=True)
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf
    assert isinstance(d.numpy(), np.ndarray)


def test_graph_is_freed_after_backward():
    x = Tensor([1.0], requires_grad=True)
    h = x * 2
    y = h * 3
    y.backward()
    with pytest.raises(RuntimeError, match="already backpropagated"):
        (h * 1.0 + y).backward()


# ------------------------------------------------------------------------- bad input
def test_matmul_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) and \(5, 2\)"):
        Tensor(np.ones((3, 4))) @ Tensor(np.ones((5, 2)))


def test_backward_on_non_scalar_without_grad():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="only for a one-element tensor"):
        (x * 2).backward()


def test_backward_grad_shape_mismatch():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match="grad has shape"):
        (x * 2).backward(np.ones(4))


def test_backward_without_requires_grad():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).sum().backward()


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="only floating tensors"):
        Tensor(np.arange(3), requires_grad=True)


def test_cat_stack_pad_errors():
    with pytest.raises(ValueError, match="cat: tensor 1 has shape"):
        edu_seg.cat([Tensor(np.ones((2, 3))), Tensor(np.ones((3, 3)))], axis=1)
    with pytest.raises(ValueError, match="stack: tensor 1"):
        edu_seg.stack([Tensor(np.ones(2)), Tensor(np.ones(3))])
    with pytest.raises(ValueError, match="pad: widths must be non-negative"):
        edu_seg.pad(Tensor(np.ones((2, 2))), (-1, 0))
    with pytest.raises(ValueError, match="permute"):
        Tensor(np.ones((2, 2))).permute(0, 0)


# -------------------------------------------------------------------------- gradcheck
def test_gradcheck_reports_and_catches_a_wrong_gradient():
    class WrongSquare(edu_seg.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, dy):
            (x,) = ctx.saved_tensors
            return dy * x  # should be 2·x·dy

    x = t(3, 2)
    report = gradcheck(lambda a: a * a, [x])
    assert report.max_abs_error[0] < 1e-6
    with pytest.raises(GradcheckError, match=r"input 0 \(shape \(3, 2\)\) is wrong at index"):
        gradcheck(lambda a: WrongSquare.apply(a), [x])


def test_gradcheck_needs_an_input_requiring_grad():
    with pytest.raises(ValueError, match="no input has requires_grad"):
        gradcheck(lambda a: a * 2, [Tensor(np.ones(2))])


def test_gradients_summed_in_place_never_touch_arrays_that_others_hold():
    """Fan-out sums are accumulated in place, but only into arrays the engine itself created:
    the caller's grad, a previous pass's .grad and arrays an op returned twice stay intact."""
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    g0 = np.full((2, 3), 2.0)
    y = x + x + x + x                      # Add returns dy for both inputs: shared arrays
    y.backward(g0)
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 8.0))
    np.testing.assert_array_equal(g0, np.full((2, 3), 2.0))
    first = x.grad
    h = x * 1.0                            # one non-leaf feeding four consumers
    (h.sum() + h.mean() * 6.0 + (h * 2.0).sum() + h[0].sum()).backward()
    # dh = 1 (sum) + 1 (mean·6 over 6 elements) + 2 (2h) = 4, plus 1 on row 0; added to 8
    np.testing.assert_array_equal(x.grad, [[13.0, 13.0, 13.0], [12.0, 12.0, 12.0]])
    np.testing.assert_array_equal(first, np.full((2, 3), 8.0))      # the old .grad untouched


def test_a_later_pass_sums_into_a_new_grad_of_the_tensors_dtype():
    """Each later backward pass leaves the previous .grad array as it was (the user may hold
    it), whether its gradient is dense or picks elements (an index), and keeps the dtype."""
    x = Tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    (x * 2.0).sum().backward()
    first = x.grad
    x[1].sum().backward()                  # an indexed gradient into a .grad from before
    second = x.grad
    (x * 3.0).sum().backward()             # a dense one
    np.testing.assert_array_equal(first, np.full((2, 3), 2.0))
    np.testing.assert_array_equal(second, [[2.0] * 3, [3.0] * 3])
    np.testing.assert_array_equal(x.grad, [[5.0] * 3, [6.0] * 3])
    assert x.grad.dtype == np.float32 and second.dtype == np.float32


# --------------------------------------------------------------------- engine guarantees
def _conv_graph(seed=0):
    """A small conv net whose loss is returned; weak references to two intermediate tensors."""
    import weakref

    from edu_seg import functional as F
    g = np.random.default_rng(seed)
    x = Tensor(g.standard_normal((2, 3, 8, 8)).astype(np.float32))
    w1 = Tensor(g.standard_normal((4, 3, 3, 3)).astype(np.float32), requires_grad=True)
    w2 = Tensor(g.standard_normal((2, 4, 3, 3)).astype(np.float32), requires_grad=True)
    h = F.relu(F.conv2d(x, w1, padding=1))
    y = F.conv2d(h, w2, padding=1)
    loss = (y * y).mean()
    return loss, (w1, w2), [weakref.ref(h), weakref.ref(y)]


def test_backward_frees_activations_while_the_loss_is_still_referenced():
    import gc
    loss, _, refs = _conv_graph()
    gc.collect()
    assert all(r() is not None for r in refs)          # the graph holds them for backward
    loss.backward()
    gc.collect()
    assert all(r() is None for r in refs), "activations outlived their backward"
    with pytest.raises(RuntimeError, match="already backpropagated"):
        loss.backward()


def test_second_backward_of_a_loss_made_straight_from_leaves_is_refused():
    a, b = t(3), t(3)
    loss = (a * b).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="already backpropagated"):
        loss.backward()


def test_in_place_change_of_a_saved_input_is_detected_and_names_the_op():
    from edu_seg.optim import SGD
    loss, (w1, w2), _ = _conv_graph()
    SGD([w1, w2], lr=0.1)
    w2.sub_(0.5)                                       # e.g. an optimiser step too early
    with pytest.raises(RuntimeError, match=r"input 1 of Conv2dFunction .*modified in place"):
        loss.backward()


def test_optimizer_step_between_forward_and_backward_is_detected():
    from edu_seg.optim import Adam
    loss, (w1, w2), _ = _conv_graph()
    opt = Adam([w1, w2], lr=0.1)
    for w in (w1, w2):
        w.grad = np.ones_like(w.data)
    opt.step()
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


def test_in_place_change_of_an_input_an_op_did_not_save_is_fine():
    a, b = t(3), t(3)
    y = (a + b).sum()                                  # Add saves neither input
    a.add_(1.0)
    y.backward()
    np.testing.assert_array_equal(a.grad, np.ones(3))


def test_in_place_methods_count_changes():
    a = t(2)
    assert a._version == 0
    a.add_(1.0).sub_(1.0).mul_(2.0).copy_(np.zeros(2))
    assert a._version == 4
    np.testing.assert_array_equal(a.data, np.zeros(2))


def test_grad_is_a_fresh_writable_array_owned_by_its_tensor():
    a, b = t(2, 3), t(2, 3)
    (a + b).sum().backward()                           # Add hands dy to both; sum broadcasts
    for x in (a, b):
        assert x.grad.flags.writeable and x.grad.flags.owndata
    assert not np.shares_memory(a.grad, b.grad)
    a.grad[...] = 7.0                                  # changing one touches nothing else
    np.testing.assert_array_equal(b.grad, np.ones((2, 3)))
    c = t(4)
    g = np.ones(4)
    c.backward(g)                                      # a leaf's own gradient is copied too
    assert c.grad is not g and not np.shares_memory(c.grad, g)


def test_backward_runs_on_the_backend_that_ran_the_forward(monkeypatch):
    import edu_seg.reference.conv as reference_conv
    calls = []
    original = reference_conv.conv2d_backward_weight

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(reference_conv, "conv2d_backward_weight", counting)
    with edu_seg.use_backend("numpy"):
        loss, _, _ = _conv_graph()
    loss.backward()                                    # outside the block: still NumPy
    assert len(calls) == 2


def test_many_slices_of_one_tensor_make_one_dense_gradient(monkeypatch):
    from edu_seg.autograd import IndexedGradient
    dense_calls = []
    original = IndexedGradient.dense

    def counting(self, dtype=None):
        dense_calls.append(self.shape)
        return original(self, dtype)

    monkeypatch.setattr(IndexedGradient, "dense", counting)
    x = t(2, 32, 5)
    h = x * 1.0                                        # a non-leaf sliced 32 times
    loss = sum((h[:, c] * float(c)).sum() for c in range(32))
    loss.backward()
    assert len(dense_calls) == 1                       # one full-size array, not 32
    expected = np.broadcast_to(np.arange(32.0)[None, :, None], (2, 32, 5))
    np.testing.assert_array_equal(x.grad, expected)


def test_slices_mixed_with_other_consumers_and_repeated_indices():
    x = t(4, 3)
    h = x * 2.0
    loss = h[1:3].sum() + (h * h).sum() + h[np.array([0, 0, 3])].sum() + h[:, 0].sum()
    loss.backward()
    expected = 2 * (2 * h.data)                        # d(h·h)/dx = 2h · 2
    expected[1:3] += 2
    expected[0] += 4                                   # row 0 picked twice
    expected[3] += 2
    expected[:, 0] += 2
    np.testing.assert_allclose(x.grad, expected)
    gradcheck(lambda a: (a[1:3] * a[np.array([0, 0, 3])][:2]).sum() + a[:, 0].sum(), [t(4, 3)])
