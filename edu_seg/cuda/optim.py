"""The Adam update on the GPU (CUDA twin of :mod:`edu_seg.reference.optim`).

Same function, signature and effect as the reference, on CuPy arrays: param, grad, exp_avg,
exp_avg_sq (and max_exp_avg_sq for AMSGrad) are C-contiguous arrays of one shape and dtype,
updated in place by one elementwise kernel (``optim.cu``) instead of the reference's dozen
array expressions.
"""
import math

from ._raw import launch

__all__ = ["adam_update"]


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps):
    """One Adam step, in place (see the reference for the formula and the parameters)."""
    has_max = max_exp_avg_sq is not None
    launch("optim", "adam_update", param.dtype, param.size, param, grad, exp_avg, exp_avg_sq,
           max_exp_avg_sq if has_max else exp_avg_sq, has_max, float(1 - beta1), float(beta1),
           float(1 - beta2), float(beta2), lr / (1 - beta1 ** step),
           math.sqrt(1 - beta2 ** step), float(eps), param.size)
