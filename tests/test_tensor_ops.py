"""Whole-tensor ops (where, abs, clip, maximum/minimum, gather, take_along_axis, split/chunk,
var), softmax/log_softmax, smooth_l1_loss and group norm: gradients against finite
differences, the adjoint identity of the linear ones, every documented error, both backends,
and PyTorch as an oracle (skipped without it), ties and repeated indices included."""
import numpy as np
import pytest

import edu_seg
import edu_seg.functional as F
from edu_seg import Tensor, gradcheck, nn
from edu_seg.backend import compiled_core_available
from edu_seg.ops import tensor as tensor_ops


def randn(*shape, seed=0, dtype=np.float64, scale=1.0):
    return np.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, dtype=dtype)


def leaf(*shape, seed=0, dtype=np.float64):
    return Tensor(randn(*shape, seed=seed, dtype=dtype), requires_grad=True)


def away_from(a, points, gap=0.1):
    """``a`` with every entry moved at least ``gap`` away from each of ``points`` (kinks),
    so a finite difference never straddles one."""
    a = a.copy()
    for p in points:
        close = np.abs(a - p) < gap
        a[close] = p + np.where(a[close] >= p, gap, -gap) * 2
    return a


def outputs(result):
    return result if isinstance(result, tuple) else (result,)


def run(fn, arrays, seed=1):
    """Forward ``fn`` on Tensors of ``arrays`` (all requiring grad), backward a random dy into
    every output; returns (output arrays, input gradients)."""
    xs = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    outs = outputs(fn(*xs))
    dys = [randn(*o.shape, seed=seed + i) for i, o in enumerate(outs)]
    sum((o * Tensor(dy.astype(o.dtype))).sum() for o, dy in zip(outs, dys)).backward()
    return [o.data for o in outs], [x.grad for x in xs], dys


# ================================================================================ gradcheck
cond = randn(3, 4, seed=5) > 0
index = np.array([[[0, 3, 3, 1], [2, 2, 0, 0], [1, 1, 1, 1]],
                  [[3, 0, 0, 2], [0, 0, 0, 0], [2, 3, 1, 0]]])        # (2, 3, 4), repeats

GRADCHECKS = {
    "where": (lambda a, b: F.where(cond, a, b), [leaf(3, 4), leaf(4, seed=1)]),
    "where scalar b": (lambda a: F.where(cond, a, 0.5), [leaf(3, 4)]),
    "where broadcast cond": (lambda a, b: F.where(cond[:, :1], a, b), [leaf(4), leaf(3, 1)]),
    "abs": (F.abs, [Tensor(away_from(randn(3, 5), [0]), requires_grad=True)]),
    "clip": (lambda x: F.clip(x, -0.5, 0.5),
             [Tensor(away_from(randn(4, 5), [-0.5, 0.5]), requires_grad=True)]),
    "clip min only": (lambda x: F.clip(x, min=0.2),
                      [Tensor(away_from(randn(4, 5), [0.2]), requires_grad=True)]),
    "clip max only": (lambda x: F.clip(x, max=-0.1),
                      [Tensor(away_from(randn(4, 5), [-0.1]), requires_grad=True)]),
    "maximum": (F.maximum, [leaf(3, 4), leaf(4, seed=1)]),
    "minimum": (F.minimum, [leaf(2, 1, 4), leaf(3, 1, seed=1)]),
    "maximum scalar": (lambda a: F.maximum(0.1, a), [leaf(3, 4)]),
    "gather axis 1": (lambda x: F.gather(x, 1, index[:, :, :2] % 3), [leaf(2, 3, 2)]),
    "gather axis -1": (lambda x: F.gather(x, -1, index), [leaf(2, 4, 5)]),
    "gather axis 0 (smaller index)": (lambda x: F.gather(x, 0, index[:, :2, :3] % 2),
                                      [leaf(3, 4, 5)]),
    "take_along_axis": (lambda x: F.take_along_axis(x, index - 2, axis=2), [leaf(2, 3, 4)]),
    "take_along_axis broadcast": (lambda x: F.take_along_axis(x, index[:1, :, :2], axis=1),
                                  [leaf(2, 4, 2)]),
    "take_along_axis None": (lambda x: F.take_along_axis(x, np.array([5, 0, 5, -1]), None),
                             [leaf(2, 3)]),
    "split sizes": (lambda x: F.split(x, [1, 0, 3, 2], axis=1), [leaf(2, 6, 2)]),
    "split int": (lambda x: F.split(x, 2, axis=-1), [leaf(2, 3, 5)]),
    "chunk": (lambda x: F.chunk(x, 3, axis=0), [leaf(7, 2)]),
    "var all": (F.var, [leaf(3, 4)]),
    "var axis": (lambda x: F.var(x, axis=1, correction=0), [leaf(3, 4, 2)]),
    "var axes keepdims": (lambda x: F.var(x, axis=(0, -1), keepdims=True, correction=2.5),
                          [leaf(3, 4, 2)]),
    "softmax": (lambda x: F.softmax(x, axis=1), [leaf(2, 4, 3)]),
    "softmax last": (lambda x: F.softmax(x, axis=-1), [leaf(3, 5)]),
    "log_softmax": (lambda x: F.log_softmax(x, axis=1), [leaf(2, 4, 3)]),
    "smooth_l1 mean": (lambda x, t: F.smooth_l1_loss(x, t),
                       [Tensor(away_from(randn(3, 4, scale=2), [-1, 1]), requires_grad=True),
                        Tensor(np.zeros((3, 4)), requires_grad=True)]),
    "smooth_l1 beta 0.5 sum": (lambda x: F.smooth_l1_loss(x, np.ones((3, 4)), 0.5, "sum"),
                               [Tensor(away_from(randn(3, 4), [0.5, 1.5]),
                                       requires_grad=True)]),
    "smooth_l1 L1 none": (lambda x: F.smooth_l1_loss(x, np.zeros(5), 0.0, "none"),
                          [Tensor(away_from(randn(5), [0]), requires_grad=True)]),
    "group_norm affine": (lambda x, w, b: F.group_norm(x, 3, w, b),
                          [leaf(2, 6, 3, 2), leaf(6, seed=1), leaf(6, seed=2)]),
    "group_norm G=1": (lambda x: F.group_norm(x, 1), [leaf(2, 4, 2, 2)]),
    "group_norm G=C, 3-D x": (lambda x, w: F.group_norm(x, 4, weight=w),
                              [leaf(2, 4, 5), leaf(4, seed=1)]),
}


@pytest.mark.parametrize("name", list(GRADCHECKS))
def test_gradcheck(name):
    fn, inputs = GRADCHECKS[name]
    gradcheck(fn, inputs)


# ===================================================================== adjoint identities
def adjoint_sides(fn, arrays, seed=7):
    """<A x, y> and <x, Aᵀ y> for a linear ``fn``: Aᵀ y is the op's backward with output
    gradient y (one per output), the inputs' .grad after backward."""
    out_arrays, grads, ys = run(fn, arrays, seed=seed)
    lhs = sum(float((o * y).sum()) for o, y in zip(out_arrays, ys))
    rhs = sum(float((x * g).sum()) for x, g in zip(arrays, grads))
    return lhs, rhs


LINEAR = {
    "gather (repeated indices)": (lambda x: F.gather(x, 2, index), [randn(2, 3, 5)]),
    "gather axis 0": (lambda x: F.gather(x, 0, index[:, :2, :3] % 2), [randn(3, 4, 5)]),
    "take_along_axis": (lambda x: F.take_along_axis(x, index - 2, axis=2), [randn(2, 3, 4)]),
    "take_along_axis broadcast": (lambda x: F.take_along_axis(x, index[:, :1] % 4, axis=2),
                                  [randn(1, 5, 4)]),
    "split": (lambda x: F.split(x, [2, 1, 3], axis=1), [randn(3, 6, 2)]),
    "chunk": (lambda x: F.chunk(x, 4, axis=-1), [randn(2, 3, 7)]),
    "where in (a, b)": (lambda a, b: F.where(cond, a, b), [randn(3, 4), randn(3, 1)]),
}


@pytest.mark.parametrize("name", list(LINEAR))
def test_linear_ops_satisfy_the_adjoint_identity(name):
    fn, arrays = LINEAR[name]
    lhs, rhs = adjoint_sides(fn, arrays)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


# ========================================================================= named behaviour
def test_gather_scatter_adds_repeated_indices():
    x = Tensor(np.arange(4.0), requires_grad=True)
    y = F.gather(x, 0, np.array([1, 1, 1, 3]))
    np.testing.assert_array_equal(y.data, [1, 1, 1, 3])
    y.backward(np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(x.grad, [0, 6, 0, 4])


def test_split_backward_fills_zeros_only_for_unused_pieces(monkeypatch):
    x = leaf(2, 6, 3)
    a, b, c = F.split(x, [1, 2, 3], axis=1)
    (b * 2.0).sum().backward()                           # a and c are never used
    expected = np.zeros((2, 6, 3))
    expected[:, 1:3] = 2.0
    np.testing.assert_array_equal(x.grad, expected)

    # All pieces used: backward is one concatenation, with no zero array at all.
    zeros_made = []

    class CountingNumpy:
        def __getattr__(self, name):
            return getattr(np, name)

        def zeros(self, *args, **kwargs):
            zeros_made.append(args[0])
            return np.zeros(*args, **kwargs)

    monkeypatch.setattr(tensor_ops, "get_array_module", lambda *a: CountingNumpy())
    x = leaf(2, 6, 3)
    left, right = F.chunk(x, 2, axis=1)
    (left * 3.0 + right * 5.0).sum().backward()
    assert zeros_made == []
    np.testing.assert_array_equal(x.grad[:, :3], 3.0)
    np.testing.assert_array_equal(x.grad[:, 3:], 5.0)
    x = leaf(2, 6, 3)
    left, right = F.chunk(x, 2, axis=1)
    left.sum().backward()
    assert zeros_made == [(2, 3, 3)]                     # only the unused half


def test_split_and_chunk_piece_shapes_follow_torch():
    x = Tensor(np.arange(30.0).reshape(5, 6))
    assert [p.shape for p in F.split(x, 2)] == [(2, 6), (2, 6), (1, 6)]
    assert [p.shape for p in F.split(x, [4, 2], axis=1)] == [(5, 4), (5, 2)]
    assert [p.shape for p in F.chunk(x, 4, axis=1)] == [(5, 2), (5, 2), (5, 2)]  # fewer
    assert [p.shape for p in F.chunk(x, 5)] == [(1, 6)] * 5
    assert [p.shape for p in F.chunk(Tensor(np.zeros((0, 2))), 3)] == [(0, 2)] * 3
    assert [p.shape for p in F.split(Tensor(np.zeros((0, 2))), 2)] == [(0, 2)]
    np.testing.assert_array_equal(F.cat(F.split(x, [1, 3, 2], axis=1), axis=1).data, x.data)


def test_ties_and_boundaries_share_or_pass_the_gradient_like_torch():
    a = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    b = Tensor(np.array([1.0, 1.0, 4.0]), requires_grad=True)
    F.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.5, 1, 0])
    np.testing.assert_array_equal(b.grad, [0.5, 0, 1])
    x = Tensor(np.array([-1.0, 0.0, 0.5, 1.0, 2.0]), requires_grad=True)
    F.clip(x, 0.0, 1.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 1, 1, 1, 0])       # bounds included
    x.grad = None
    F.abs(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [-1, 0, 1, 1, 1])


def test_dtypes_are_kept():
    x = leaf(2, 4, 3, dtype=np.float32)
    for y in [F.where(np.ones((2, 4, 3), bool), x, 0.0),
              F.abs(x), F.clip(x, 0.0, 1.0), F.maximum(x, 0.5), F.var(x, axis=1),
              F.softmax(x, 1), F.log_softmax(x, 1), F.group_norm(x, 2),
              F.smooth_l1_loss(x, np.zeros((2, 4, 3))), *F.chunk(x, 2, 1),
              F.gather(x, 1, np.zeros((2, 1, 3), int))]:
        assert y.dtype == np.float32
    y = F.where(np.array([True, False]), 1.0, 0.0)               # two numbers: float32
    assert y.dtype == np.float32 and list(y.data) == [1, 0]
    a = Tensor(np.ones(3, np.float32), requires_grad=True)
    F.where(np.ones(3, bool), a, Tensor(np.zeros(3))).sum().backward()   # float64 result
    assert a.grad.dtype == np.float32


def test_softmax_is_stable_and_normalised():
    x = Tensor(np.array([[1e4, 0.0, -1e4], [3e4, 3e4, 0.0]], np.float32))
    y = F.softmax(x, axis=1).data
    np.testing.assert_allclose(y, [[1, 0, 0], [0.5, 0.5, 0]])
    np.testing.assert_allclose(F.log_softmax(x, axis=1).data,
                               [[0, -1e4, -2e4], [-np.log(2), -np.log(2), -3e4 - np.log(2)]],
                               rtol=1e-6)
    s = F.softmax(Tensor(randn(2, 5, 3)), axis=1).data.sum(axis=1)
    np.testing.assert_allclose(s, 1.0, rtol=1e-14)


def test_var_matches_numpy_and_group_norm_normalises():
    x = randn(3, 4, 5, scale=2.0) + 7
    np.testing.assert_allclose(F.var(Tensor(x), axis=(0, 2), correction=0).data,
                               x.var(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(F.var(Tensor(x)).data, x.var(ddof=1), rtol=1e-12)
    y = F.group_norm(Tensor(x.reshape(1, 6, 2, 5)), 2).data.reshape(1, 2, -1)
    np.testing.assert_allclose(y.mean(axis=2), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=2), 1, rtol=1e-5)       # var/(var + eps)


# ================================================================================= errors
x34 = Tensor(randn(3, 4))


@pytest.mark.parametrize("call, error, match", [
    (lambda: F.where(randn(3, 4), x34, 0.0), TypeError,
     "where: cond must be a boolean array .* got dtype float64"),
    (lambda: F.where(np.ones((2, 4), bool), x34, 0.0), ValueError,
     r"where: shapes do not broadcast together: cond \(2, 4\), a \(3, 4\)"),
    (lambda: F.maximum(x34, np.ones(3)), ValueError, r"maximum: shapes do not broadcast"),
    (lambda: F.minimum(x34, "1"), TypeError, "minimum: b must be a Tensor"),
    (lambda: F.clip(x34, 2.0, 1.0), ValueError,
     "clip: min=2.0 is greater than max=1.0; need min <= max"),
    (lambda: F.clip(x34), ValueError, "clip: got min=None and max=None"),
    (lambda: F.clip(x34, np.ones(3)), TypeError, "clip: min must be a number"),
    (lambda: F.gather(x34, 2, np.zeros((3, 4), int)), ValueError,
     r"gather: axis=2 is out of range for x of shape \(3, 4\) \(2 dims\); axis must be in "
     r"\[-2, 1\]"),
    (lambda: F.gather(x34, 1, np.array([[0, 4]])), ValueError,
     r"gather: index contains 4, out of range for axis 1 of x \(size 4\); index must be in "
     r"\[0, 3\]"),
    (lambda: F.gather(x34, 1, np.array([[0, -1]])), ValueError, "gather: index contains -1"),
    (lambda: F.gather(x34, 1, np.array([[0.0, 1.0]])), TypeError,
     "gather: index must be an integer array, got dtype float64"),
    (lambda: F.gather(x34, 1, np.array([[True]])), TypeError, "got dtype bool"),
    (lambda: F.gather(x34, 1, np.array([0, 1])), ValueError,
     r"gather: index has 1 dims \(shape \(2,\)\) but x has 2"),
    (lambda: F.gather(x34, 1, np.zeros((4, 1), int)), ValueError,
     r"index may not be longer than x \(axis 0\)"),
    (lambda: F.take_along_axis(x34, np.array([[-5]]), 1), ValueError,
     r"take_along_axis: indices contains -5, .* must be in \[-4, 3\]"),
    (lambda: F.take_along_axis(x34, np.array([[1.5]]), 1), TypeError,
     "take_along_axis: indices must be an integer array"),
    (lambda: F.take_along_axis(x34, np.zeros((2, 1), int), 1), ValueError,
     r"take_along_axis: indices of shape \(2, 1\) do not broadcast against x of shape "
     r"\(3, 4\) on axis 0"),
    (lambda: F.take_along_axis(x34, np.zeros((1, 1), int), -3), ValueError,
     "take_along_axis: axis=-3 is out of range"),
    (lambda: F.split(x34, [1, 2], axis=1), ValueError,
     r"split: sizes \[1, 2\] sum to 3 but axis 1 of x \(shape \(3, 4\)\) has length 4"),
    (lambda: F.split(x34, 0), ValueError, "split: a piece size must be >= 1, got 0"),
    (lambda: F.split(x34, [2, -1, 3], axis=1), ValueError, "split: sizes must be"),
    (lambda: F.split(x34, 2.0), TypeError, "split: sizes_or_size must be an int"),
    (lambda: F.split(x34, 2, axis=5), ValueError, "split: axis=5 is out of range"),
    (lambda: F.chunk(x34, 0), ValueError, "chunk: chunks must be >= 1, got 0"),
    (lambda: F.chunk(x34, 2, axis=-3), ValueError, "chunk: axis=-3 is out of range"),
    (lambda: F.var(x34, axis=1, correction=4), ValueError,
     r"var: correction=4 but only 4 value\(s\) are reduced .* the variance is undefined"),
    (lambda: F.var(Tensor(np.ones(1))), ValueError, "variance is undefined"),
    (lambda: F.var(Tensor(np.ones((2, 3), np.int64))), TypeError,
     "var: x must be float32 or float64, got dtype int64"),
    (lambda: F.var(x34, axis=(0, 2)), ValueError, "var: axis=2 is out of range"),
    (lambda: F.var(x34, axis=(1, -1)), ValueError, "names an axis twice"),
    (lambda: F.var(x34, correction=-1), ValueError, "var: correction must be a number >= 0"),
    (lambda: F.softmax(x34, axis=2), ValueError, "softmax: axis=2 is out of range"),
    (lambda: F.softmax(Tensor(np.ones((2, 3), np.int32)), 1), TypeError,
     "softmax: x must be float32 or float64, got dtype int32"),
    (lambda: F.log_softmax(Tensor(np.ones((2, 0))), 1), ValueError,
     "log_softmax: axis 1 of x .* has length 0"),
    (lambda: F.log_softmax(x34, axis=1.0), TypeError, "log_softmax: axis must be an int"),
    (lambda: F.smooth_l1_loss(x34, np.zeros((3, 4)), beta=-1), ValueError,
     "smooth_l1_loss: beta must be a number >= 0 .* got -1"),
    (lambda: F.smooth_l1_loss(x34, np.zeros(4)), ValueError,
     r"smooth_l1_loss: target has shape \(4,\) but input has \(3, 4\)"),
    (lambda: F.smooth_l1_loss(Tensor(np.ones(3, int)), np.zeros(3)), TypeError,
     "smooth_l1_loss: input must be float32 or float64, got dtype int64"),
    (lambda: F.smooth_l1_loss(x34, np.zeros((3, 4)), reduction="avg"), ValueError,
     "smooth_l1_loss: reduction must be one of"),
    (lambda: F.group_norm(Tensor(randn(2, 6, 3, 3)), 4), ValueError,
     "group_norm: num_groups=4 must be a positive divisor of the 6 channels"),
    (lambda: F.group_norm(Tensor(randn(2, 6, 3, 3)), 0), ValueError, "num_groups=0"),
    (lambda: F.group_norm(Tensor(randn(2, 6, 3, 3)), 2.0), TypeError,
     "group_norm: num_groups must be an int"),
    (lambda: F.group_norm(Tensor(randn(2, 6, 3, 3)), 2, weight=np.ones(3)), ValueError,
     r"group_norm: weight must have shape \(6,\) .* got \(3,\)"),
    (lambda: F.group_norm(Tensor(randn(2, 6, 3, 3)), 2, bias=np.ones(6, int)), TypeError,
     r"group_norm: bias must be a floating array of shape \(6,\), got dtype int64"),
    (lambda: F.group_norm(Tensor(np.ones((2, 6, 3, 3), np.int64)), 2), TypeError,
     "group_norm: x must be float32 or float64, got dtype int64"),
    (lambda: F.group_norm(Tensor(randn(6)), 2), ValueError,
     r"group_norm: x must be \(N, C, H, W\)"),
    (lambda: F.group_norm(Tensor(randn(2, 6, 3, 3)), 2, eps=0), ValueError,
     "group_norm: eps must be positive"),
    (lambda: nn.GroupNorm(4, 6), ValueError, "GroupNorm: num_groups=4 must divide "
                                              "num_channels=6"),
    (lambda: nn.GroupNorm(0, 6), ValueError, "GroupNorm: num_groups must be a positive"),
])
def test_errors_name_the_op_the_argument_and_the_value(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ========================================================================== both backends
BACKEND_CASES = {
    "where": lambda a, b: F.where(cond, a, b),
    "abs": lambda a, b: F.abs(a),
    "clip": lambda a, b: F.clip(a, -0.3, 0.4),
    "maximum": F.maximum,
    "minimum": F.minimum,
    "gather": lambda a, b: F.gather(a, 1, index[0, :, :4] % 4),
    "take_along_axis": lambda a, b: F.take_along_axis(a, index[0, :, :2] - 2, axis=1),
    "split": lambda a, b: F.split(a, [1, 3], axis=1),
    "chunk": lambda a, b: F.chunk(b, 2, axis=0),
    "var": lambda a, b: F.var(a, axis=0),
    "softmax": lambda a, b: F.softmax(a, axis=1),
    "log_softmax": lambda a, b: F.log_softmax(a, axis=0),
    "smooth_l1_loss": lambda a, b: F.smooth_l1_loss(a, b, beta=0.5),
    "group_norm": lambda a, b: F.group_norm(a.reshape(1, 4, 3), 2, weight=b[0] * 1.0),
}


@pytest.mark.parametrize("name", list(BACKEND_CASES))
def test_numpy_and_cython_backends_give_identical_results(name):
    if not compiled_core_available():
        pytest.skip("compiled core not built: only one backend")
    arrays = [away_from(randn(3, 4, seed=2), [0]), randn(3, 4, seed=3)]
    arrays[1][0, 0] = arrays[0][0, 0]                    # a tie for maximum/minimum
    results = {}
    for backend in ("numpy", "cython"):
        with edu_seg.use_backend(backend):
            outs, grads, _ = run(BACKEND_CASES[name], arrays)
        results[backend] = outs + [g for g in grads if g is not None]
    for ours, theirs in zip(results["numpy"], results["cython"]):
        np.testing.assert_array_equal(ours, theirs)


# ======================================================================== PyTorch oracle
def torch_run(torch, fn, arrays, seed=1):
    """Like ``run``, in PyTorch, with the same random output gradients."""
    xs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    outs = outputs(fn(*xs))
    dys = [randn(*o.shape, seed=seed + i) for i, o in enumerate(outs)]
    sum((o * torch.from_numpy(dy).to(o.dtype)).sum() for o, dy in zip(outs, dys)).backward()
    zero = (lambda x: np.zeros(x.shape) if x.grad is None else x.grad.numpy())
    return [o.detach().numpy() for o in outs], [zero(x) for x in xs]


def with_ties(seed=0):
    """a and b of shape (3, 4) and (4,) with a few exact ties, and some exact zeros in a."""
    a, b = randn(3, 4, seed=seed), randn(4, seed=seed + 1)
    a[0] = b
    a[1, 2] = b[2]
    a[2, :2] = 0.0
    return a, b


def oracle_cases(torch):
    tF = torch.nn.functional
    c = torch.from_numpy(cond)
    a, b = with_ties()
    x = np.array([[-1.0, -0.5, 0.0, 0.25], [0.5, 0.7, 1.0, 2.0], [0.0, -0.5, 0.5, 3.0]])
    idx = index[:, :2] % 3                               # (2, 2, 4), repeated entries
    return {
        "where": ((lambda p, q: F.where(cond, p, q)), (lambda p, q: torch.where(c, p, q)),
                  [a, b]),
        "abs": (F.abs, torch.abs, [x]),
        "clip both (at the bounds)": ((lambda p: F.clip(p, -0.5, 0.5)),
                                      (lambda p: torch.clamp(p, -0.5, 0.5)), [x]),
        "clip min": ((lambda p: F.clip(p, min=0.0)), (lambda p: torch.clamp(p, min=0.0)), [x]),
        "clip max": ((lambda p: F.clip(p, max=1.0)), (lambda p: torch.clamp(p, max=1.0)), [x]),
        "maximum (ties)": (F.maximum, torch.maximum, [a, b]),
        "minimum (ties)": (F.minimum, torch.minimum, [a, b]),
        "gather (repeats)": ((lambda p: F.gather(p, 1, idx)),
                             (lambda p: torch.gather(p, 1, torch.from_numpy(idx))),
                             [randn(2, 3, 5)]),
        "gather axis 0": ((lambda p: F.gather(p, 0, idx[:, :, :3] % 2)),
                          (lambda p: torch.gather(p, 0, torch.from_numpy(idx[:, :, :3] % 2))),
                          [randn(3, 4, 5)]),
        "take_along_axis": ((lambda p: F.take_along_axis(p, idx[:1] - 2, axis=2)),
                            (lambda p: torch.take_along_dim(p, torch.from_numpy(idx[:1] - 2),
                                                            dim=2)),
                            [randn(2, 2, 4)]),
        "split (unused piece)": ((lambda p: F.split(p, [2, 1, 3], axis=1)[::2]),
                                 (lambda p: torch.split(p, [2, 1, 3], dim=1)[::2]),
                                 [randn(2, 6, 2)]),
        "split int": ((lambda p: F.split(p, 2, axis=-1)),
                      (lambda p: torch.split(p, 2, dim=-1)), [randn(2, 5)]),
        "chunk": ((lambda p: F.chunk(p, 4, axis=0)), (lambda p: torch.chunk(p, 4, dim=0)),
                  [randn(7, 3)]),
        "var": ((lambda p: F.var(p, axis=(0, 2))), (lambda p: torch.var(p, dim=(0, 2))),
                [randn(3, 4, 5)]),
        "var keepdims correction 0": (
            (lambda p: F.var(p, axis=1, keepdims=True, correction=0)),
            (lambda p: torch.var(p, dim=1, keepdim=True, correction=0)), [randn(3, 4, 5)]),
        "var all": (F.var, torch.var, [randn(3, 4)]),
        "softmax": ((lambda p: F.softmax(p, 1)), (lambda p: torch.softmax(p, 1)),
                    [randn(2, 4, 3, scale=5)]),
        "log_softmax": ((lambda p: F.log_softmax(p, -1)),
                        (lambda p: torch.log_softmax(p, -1)), [randn(2, 4, 3, scale=5)]),
    }


def test_ops_match_pytorch_forward_and_backward():
    torch = pytest.importorskip("torch")
    for name, (ours, theirs, arrays) in oracle_cases(torch).items():
        our_outs, our_grads, _ = run(ours, arrays)
        their_outs, their_grads = torch_run(torch, theirs, arrays)
        assert len(our_outs) == len(their_outs), name
        for o, t in zip(our_outs, their_outs):
            np.testing.assert_allclose(o, t, rtol=1e-12, atol=1e-14, err_msg=name)
        for g, t in zip(our_grads, their_grads):
            g = np.zeros_like(t) if g is None else g
            np.testing.assert_allclose(g, t, rtol=1e-12, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_smooth_l1_loss_matches_pytorch(beta, reduction):
    torch = pytest.importorskip("torch")
    x = randn(3, 4, scale=2)
    t = randn(3, 4, seed=1)
    x[0, :3] = t[0, :3] + np.array([0.0, beta, -beta])  # d = 0 and |d| = beta exactly
    ours = (lambda p, q: F.smooth_l1_loss(p, q, beta=beta, reduction=reduction))
    theirs = (lambda p, q: torch.nn.functional.smooth_l1_loss(p, q, beta=beta,
                                                              reduction=reduction))
    (our_y,), our_grads, _ = run(ours, [x, t])
    (their_y,), their_grads = torch_run(torch, theirs, [x, t])
    np.testing.assert_allclose(our_y, their_y, rtol=1e-12)
    for g, tg in zip(our_grads, their_grads):
        np.testing.assert_allclose(g, tg, rtol=1e-12, atol=1e-15)


# ============================================================================ group norm
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_groups, affine", [(2, True), (1, True), (6, False)])
def test_group_norm_layer_matches_pytorch(dtype, num_groups, affine):
    torch = pytest.importorskip("torch")
    C = 6
    ours = nn.GroupNorm(num_groups, C, affine=affine).to_dtype(dtype)
    theirs = torch.nn.GroupNorm(num_groups, C, affine=affine).to(
        getattr(torch, np.dtype(dtype).name))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    if affine:
        ours.weight.data[:] = randn(C, seed=9)
        ours.bias.data[:] = randn(C, seed=10)
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = randn(2, C, 5, 4, seed=3, dtype=dtype, scale=3.0) + 2
    dy = randn(2, C, 5, 4, seed=4, dtype=dtype)
    xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), theirs(xt)
    yo.backward(dy)
    yt.backward(torch.from_numpy(dy))
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    assert yo.dtype == dtype and xo.grad.dtype == dtype
    np.testing.assert_allclose(yo.data, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), **tol)
    if affine:
        np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), **tol)
        np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), **tol)


def test_group_norm_layer_parameters_state_dict_and_declarations():
    gn = nn.GroupNorm(2, 4)
    assert list(gn.state_dict()) == ["weight", "bias"]
    np.testing.assert_array_equal(gn.weight.data, np.ones(4, np.float32))
    np.testing.assert_array_equal(gn.bias.data, np.zeros(4, np.float32))
    assert gn.weight.dtype == np.float32
    assert list(nn.GroupNorm(2, 4, affine=False).state_dict()) == []
    assert repr(gn).startswith("GroupNorm(2, 4, eps=1e-05, affine=True)")
    x = np.zeros((2, 4, 3, 3), np.float32)
    assert gn.window() == ((1, 1), (1, 1), (0, 0), (1, 1))
    assert gn.flops(x, x) == 7 * x.size
    assert nn.GroupNorm(2, 4, affine=False).flops(x, x) == 5 * x.size
    y = gn(Tensor(x))
    assert y.shape == x.shape and np.isfinite(y.data).all()       # constant input: y = β
