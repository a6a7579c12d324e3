"""Check a backward pass against finite differences: the test every hand-written gradient needs.

For a function f and an input x, the analytic gradient from ``backward`` must match the
central difference

    ∂L/∂x_i ≈ (L(x + ε e_i) − L(x − ε e_i)) / (2ε),     L(x) = Σ r ⊙ f(x)

where r is a fixed random array (so every output element is checked, not just their sum).
Everything runs in float64: in float32 the rounding error of the difference quotient (~1e-7/ε)
would swamp the comparison.
"""
import numpy as np

from .autograd import Tensor, no_grad

__all__ = ["gradcheck", "GradcheckError", "GradcheckReport"]


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` when an analytic gradient disagrees with finite differences."""


class GradcheckReport:
    """Per-input worst errors of a passed :func:`gradcheck`.

    Attributes
    ----------
    max_abs_error, max_rel_error : list of float
        One entry per input that requires grad, in order.
    """

    def __init__(self, names, max_abs_error, max_rel_error):
        self.names = names
        self.max_abs_error = max_abs_error
        self.max_rel_error = max_rel_error

    def __repr__(self):
        rows = [f"  {n:<10} max abs err {a:.2e}   max rel err {r:.2e}"
                for n, a, r in zip(self.names, self.max_abs_error, self.max_rel_error)]
        return "GradcheckReport (passed)\n" + "\n".join(rows)


def _outputs(result):
    items = result if isinstance(result, (tuple, list)) else (result,)
    return [t for t in items if isinstance(t, Tensor) and t.dtype.kind == "f"]


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Compare ``fn``'s analytic gradients with central differences, in float64.

    Parameters
    ----------
    fn : callable
        ``fn(*inputs)`` returns a Tensor (or a tuple of Tensors; all floating ones are checked).
    inputs : sequence
        Tensors (those with ``requires_grad=True`` are checked) and any other arguments, which
        are passed through unchanged. Floating tensors are copied to float64 first.
    eps : float
        Step of the central difference.
    atol, rtol : float
        An element passes if ``|analytic − numeric| <= atol + rtol·|numeric|``.
    seed : int
        Seed of the random output weights r.

    Returns
    -------
    GradcheckReport
        The worst absolute and relative error for each checked input.

    Raises
    ------
    GradcheckError
        Naming the input, the worst element's index and both values.

    Examples
    --------
    >>> x = Tensor(np.random.randn(3, 4), requires_grad=True)
    >>> gradcheck(lambda t: (t * t).sum(axis=1), [x])  # doctest: +ELLIPSIS
    GradcheckReport (passed)...
    """
    args = []
    for a in inputs:
        if isinstance(a, Tensor) and a.dtype.kind == "f":
            a = Tensor(np.array(a.numpy(), dtype=np.float64), requires_grad=a.requires_grad)
        args.append(a)
    checked = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True; nothing to check")

    outs = _outputs(fn(*args))
    if not outs:
        raise ValueError("gradcheck: fn returned no floating Tensor")
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(o.shape) for o in outs]

    def objective():
        with no_grad():
            return sum(float((o.numpy() * r).sum()) for o, r in zip(_outputs(fn(*args)), weights))

    # Analytic: one backward pass of L = Σ r ⊙ f.
    loss = sum((o * Tensor(r)).sum() for o, r in zip(outs, weights))
    for i in checked:
        args[i].grad = None
    loss.backward()

    names, abs_errs, rel_errs = [], [], []
    for i in checked:
        x = args[i]
        analytic = x.grad if x.grad is not None else np.zeros_like(x.data)
        numeric = np.zeros_like(x.data)
        flat = x.data.reshape(-1)  # a view: perturbing it perturbs x
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            up = objective()
            flat[j] = old - eps
            down = objective()
            flat[j] = old
            numeric.reshape(-1)[j] = (up - down) / (2 * eps)
        err = np.abs(analytic - numeric)
        bad = err > atol + rtol * np.abs(numeric)
        name = f"input {i}"
        if bad.any():
            worst = np.unravel_index(np.argmax(np.where(bad, err, -1)), err.shape)
            raise GradcheckError(
                f"gradcheck: gradient of {name} (shape {x.shape}) is wrong at index {worst}: "
                f"analytic {analytic[worst]:.8g}, numeric {numeric[worst]:.8g} "
                f"(|diff| {err[worst]:.3g} > atol {atol} + rtol {rtol}·|numeric|); "
                f"{int(bad.sum())} of {bad.size} elements fail")
        names.append(name)
        abs_errs.append(float(err.max()) if err.size else 0.0)
        rel_errs.append(float((err / np.maximum(np.abs(numeric), 1e-12)).max()) if err.size else 0.0)
    return GradcheckReport(names, abs_errs, rel_errs)
