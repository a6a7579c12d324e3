"""The Adam update, NumPy reference (the compiled twin is ``kernels/optim.pyx``).

One Adam step (Kingma & Ba, 2015) in torch.optim's exact form, on one parameter array p with
gradient g, running moments m and v, and step count t >= 1::

    m ← β₁·m + (1 − β₁)·g                      first moment: a running mean of g
    v ← β₂·v + (1 − β₂)·g²                     second moment: a running mean of g²
    v̂ = max(v̂, v)  (AMSGrad only; v̂ is then used in place of v)
    p ← p − lr/(1 − β₁ᵗ) · m / (sqrt(v)/sqrt(1 − β₂ᵗ) + eps)

The two bias corrections undo the zeros m and v start from: after t steps of a constant
gradient g, m = (1 − β₁ᵗ)·g, so m/(1 − β₁ᵗ) = g.

Every line below is a NumPy expression, and each one reads its operands and writes its result:
about a dozen passes over arrays the size of p. The compiled twin does the same arithmetic, in
the same dtype, in ONE pass. Weight decay is not here: the optimiser folds it into g (Adam) or
into p (AdamW) before calling.

Conventions shared with the twins: all arrays are C-contiguous, of p's shape and of one dtype,
float32 or float64; the scalars are Python floats and ints; the arrays are updated in place.
"""
import math

import numpy as np

__all__ = ["adam_update"]


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps):
    """One Adam step, in place.

    Parameters
    ----------
    param : ndarray (any shape), float32 or float64
        p, updated in place.
    grad : ndarray like param
        g, only read.
    exp_avg, exp_avg_sq : ndarray like param
        m and v, updated in place.
    max_exp_avg_sq : ndarray like param, or None
        v̂ for AMSGrad (updated in place), or None for plain Adam.
    step : int
        t, the number of this step (1 for the first).
    lr, beta1, beta2, eps : float
        The hyper-parameters.
    """
    m, v = exp_avg, exp_avg_sq
    m *= beta1
    m += (1 - beta1) * grad
    v *= beta2
    v += (1 - beta2) * (grad * grad)
    if max_exp_avg_sq is not None:
        np.maximum(max_exp_avg_sq, v, out=max_exp_avg_sq)
        v = max_exp_avg_sq
    dtype = param.dtype.type
    denom = np.sqrt(v) / dtype(math.sqrt(1 - beta2 ** step)) + dtype(eps)
    param -= dtype(lr / (1 - beta1 ** step)) * (m / denom)
