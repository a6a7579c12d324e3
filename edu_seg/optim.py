"""Optimisers and learning-rate schedules, with ``torch.optim``'s exact update rules.

An optimiser is given the model's parameters and, after each ``loss.backward()``, moves every
parameter against its gradient::

    opt = SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = PolyLR(opt, total_steps=1000)
    for x, y in batches:
        opt.zero_grad()
        cross_entropy(model(x), y).backward()
        opt.step()              # p.data updated in place
        sched.step()            # lr for the next iteration

Updates are written into the parameters in place with ``p.sub_``/``p.mul_``, which count as
in-place changes: a graph built before ``step()`` then refuses to backpropagate with the new
weights instead of giving a wrong gradient. ``p.grad`` is only read. Parameters whose
``grad`` is None (frozen, or unused by the loss) are skipped, as in PyTorch.

Both optimisers and schedulers have ``state_dict()``/``load_state_dict()``, so a training run
can be resumed exactly.
"""
import copy
import math

import numpy as np

from .autograd import Tensor
from .backend import device_of, get_array_module, is_array, kernels, to_device

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "LRScheduler", "PolyLR", "CosineLR",
           "StepLR"]


class Optimizer:
    """Base class: holds parameter groups (each a dict of params and hyper-parameters) and a
    per-parameter state (momentum buffers, moment estimates, step counts).

    Parameters
    ----------
    params : iterable of Parameter, or of dicts
        The parameters to optimise, or groups ``{"params": [...], "lr": ...}`` with their own
        hyper-parameters (e.g. no weight decay on BatchNorm parameters).
    defaults : dict
        Hyper-parameters of groups that do not set them.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        self.state = {}          # Parameter -> dict of arrays/numbers
        seen = set()
        for group in groups:
            group = {**self.defaults, **group, "params": list(group["params"])}
            for p in group["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"{type(self).__name__}: can only optimise Tensors "
                                    f"(Parameters), got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError(f"{type(self).__name__}: a parameter appears in more than "
                                     f"one group")
                seen.add(id(p))
            self.param_groups.append(group)

    def zero_grad(self):
        """Set every parameter's ``.grad`` to None (the next backward starts afresh)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self):
        """Update every parameter that has a gradient, once."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, p.grad, self.state.setdefault(p, {}), group)

    def _update(self, p, grad, state, group):
        raise NotImplementedError

    # --------------------------------------------------------------------------------- state
    def state_dict(self):
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}``.

        Parameters are named by their position across the groups (as in PyTorch), so the
        dict can be saved (copies of the arrays) and loaded into a new optimiser built over
        the same parameters in the same order.
        """
        index = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index[id(p)] = len(index)
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[id(p)]: copy.deepcopy(s) for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and per-parameter state from :meth:`state_dict`."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state has "
                             f"{len(groups)} parameter groups, this optimiser "
                             f"{len(self.param_groups)}")
        params = []
        for i, (saved, group) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{type(self).__name__}.load_state_dict: group {i} has "
                                 f"{len(saved['params'])} parameters in the state, "
                                 f"{len(group['params'])} here")
            params.extend(zip(saved["params"], group["params"]))
        by_index = dict(params)
        new_state = {}
        for key, s in state_dict["state"].items():
            p = by_index[int(key)]
            for name, value in s.items():
                if is_array(value) and value.shape != p.shape:
                    raise ValueError(f"{type(self).__name__}.load_state_dict: state {name!r} of "
                                     f"parameter {key} has shape {value.shape}, the parameter "
                                     f"{p.shape}")
            # a saved state holds host arrays: they go where the parameter lives
            new_state[p] = {name: to_device(v, device_of(p.data)).copy() if is_array(v)
                            else copy.deepcopy(v) for name, v in s.items()}
        for saved, group in zip(groups, self.param_groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"  group {i}: {len(group['params'])} parameters, " + ", ".join(
                f"{k}={v}" for k, v in group.items() if k != "params"))
        return "\n".join(lines) + "\n)"


def _check(name, value, high=math.inf):
    """A hyper-parameter must lie in [0, high)."""
    if not 0.0 <= value < high:
        raise ValueError(f"{name} must be in [0, {high}), got {value!r}")


def _with_weight_decay(p, grad, weight_decay):
    """g + λ·p (L2 regularisation folded into the gradient), as a NEW array."""
    return grad + weight_decay * p.data if weight_decay else grad


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and weight decay.

    Parameters
    ----------
    params : iterable
    lr : float
    momentum : float
        0 = plain SGD.
    dampening : float
        Scales the new gradient in the momentum buffer (1 − dampening).
    weight_decay : float
        L2 penalty λ: the gradient becomes g + λ·p.
    nesterov : bool
        Look-ahead momentum (needs momentum > 0 and dampening = 0).

    Notes
    -----
    PyTorch's form (the learning rate multiplies the buffer, not the gradient)::

        g ← ∇ + λ·p
        b ← g                          (first step)
        b ← μ·b + (1 − dampening)·g    (later steps)
        d = g + μ·b  if nesterov  else  b
        p ← p − lr·d
    """

    def __init__(self, params, lr=1e-2, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        _check("SGD: lr", lr)
        _check("SGD: momentum", momentum)
        _check("SGD: weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _update(self, p, grad, state, group):
        g = _with_weight_decay(p, grad, group["weight_decay"])
        mu = group["momentum"]
        if mu:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.astype(p.dtype, copy=True)
            else:
                buf *= mu
                buf += (1 - group["dampening"]) * g
            g = g + mu * buf if group["nesterov"] else buf
        p.sub_(p.dtype.type(group["lr"]) * g)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015): per-parameter step sizes from running moments of the gradient.

    Parameters
    ----------
    params : iterable
    lr : float
    betas : (float, float)
        Decay rates of the first and second moment estimates.
    eps : float
        Added to the denominator.
    weight_decay : float
        L2 penalty folded into the gradient (classic Adam; see :class:`AdamW` for decoupled).
    amsgrad : bool
        Use the maximum of past second moments (Reddi et al., 2018).

    Notes
    -----
    With t the step count (torch.optim's exact form)::

        m ← β₁·m + (1 − β₁)·g          v ← β₂·v + (1 − β₂)·g²
        p ← p − lr/(1 − β₁ᵗ) · m / (sqrt(v)/sqrt(1 − β₂ᵗ) + eps)
    """

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False):
        name = type(self).__name__
        _check(f"{name}: lr", lr)
        _check(f"{name}: betas[0]", betas[0], high=1.0)
        _check(f"{name}: betas[1]", betas[1], high=1.0)
        _check(f"{name}: eps", eps)
        _check(f"{name}: weight_decay", weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad))

    def _update(self, p, grad, state, group):
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], \
            group["weight_decay"]
        if self.decoupled:
            p.mul_(p.dtype.type(1 - lr * wd))          # AdamW: shrink the weights directly
            g = grad
        else:
            g = _with_weight_decay(p, grad, wd)
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(p.data, order="C")
            state["exp_avg_sq"] = np.zeros_like(p.data, order="C")
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = np.zeros_like(p.data, order="C")
        state["step"] += 1
        # The update formula lives with the kernels (edu_seg/reference/optim.py is the NumPy
        # version): one pass over memory instead of a dozen array expressions. The kernels
        # take C-contiguous arrays; a parameter that is a strided view is updated through a
        # contiguous copy that is written back.
        xp = get_array_module(p.data)
        data = xp.ascontiguousarray(p.data)
        g = xp.ascontiguousarray(g, dtype=p.dtype)             # e.g. a transposed matmul result
        kernels("optim", data, g).adam_update(
            data, g, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"),
            state["step"], lr, beta1, beta2, eps)
        if data is not p.data:
            p.data[...] = data
        p._changed_in_place()                 # the kernel wrote p.data: count it as sub_ does


class AdamW(Adam):
    """Adam with DECOUPLED weight decay (Loshchilov & Hutter, 2019): p ← p·(1 − lr·λ) before
    the Adam step, instead of adding λ·p to the gradient (which Adam's scaling would distort).
    Default weight_decay 1e-2, as PyTorch.
    """

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)


class RMSprop(Optimizer):
    """RMSprop (Hinton): divide the gradient by a running root mean square of its history.

    Parameters
    ----------
    params : iterable
    lr : float
    alpha : float
        Smoothing constant of the running mean of g².
    eps : float
        Added to the root mean square.
    weight_decay : float
    momentum : float
    centered : bool
        Divide by an estimate of the gradient's standard deviation instead (subtract the
        squared running mean of g).

    Notes
    -----
    torch.optim's form::

        s ← α·s + (1 − α)·g²;   (centered: a ← α·a + (1 − α)·g,  s̃ = s − a²)
        d = g / (sqrt(s̃) + eps)
        b ← μ·b + d,  p ← p − lr·b   (momentum)   or   p ← p − lr·d
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        _check("RMSprop: lr", lr)
        _check("RMSprop: alpha", alpha)
        _check("RMSprop: eps", eps)
        _check("RMSprop: weight_decay", weight_decay)
        _check("RMSprop: momentum", momentum)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def _update(self, p, grad, state, group):
        g = _with_weight_decay(p, grad, group["weight_decay"])
        alpha = group["alpha"]
        if not state:
            state["step"] = 0
            state["square_avg"] = np.zeros_like(p.data)
            if group["momentum"] > 0:
                state["momentum_buffer"] = np.zeros_like(p.data)
            if group["centered"]:
                state["grad_avg"] = np.zeros_like(p.data)
        state["step"] += 1
        sq = state["square_avg"]
        sq *= alpha
        sq += (1 - alpha) * (g * g)
        if group["centered"]:
            ga = state["grad_avg"]
            ga *= alpha
            ga += (1 - alpha) * g
            avg = np.sqrt(sq - ga * ga)
        else:
            avg = np.sqrt(sq)
        avg += p.dtype.type(group["eps"])
        lr = p.dtype.type(group["lr"])
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            buf *= group["momentum"]
            buf += g / avg
            p.sub_(lr * buf)
        else:
            p.sub_(lr * (g / avg))


# ========================================================================== LR schedules
class LRScheduler:
    """Base class: sets each group's ``lr`` from a closed-form function of the step count.

    The constructor records each group's starting lr as ``initial_lr`` and applies step 0;
    call :meth:`step` once per iteration (or epoch) AFTER ``optimizer.step()``.

    Subclasses define ``_factor(t)``, the multiple of the initial lr at step t (or override
    ``_lr(base, t)``).
    """

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected an Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1
        self.step()

    def _lr(self, base, t):
        return base * self._factor(t)

    def step(self):
        """Advance one step and write the new learning rate into every group."""
        self.last_epoch += 1
        self._apply()

    def _apply(self):
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self._lr(base, self.last_epoch)

    def get_last_lr(self):
        """The learning rate of each group after the last :meth:`step`."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self):
        """The scheduler's position and settings (everything but the optimiser)."""
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict` and re-apply the learning rate of that step."""
        self.__dict__.update(copy.deepcopy(state))
        self._apply()


class PolyLR(LRScheduler):
    """The "poly" schedule of DeepLab and PSPNet: lr = base·(1 − t/T)^power, 0 from t = T on.

    Parameters
    ----------
    optimizer : Optimizer
    total_steps : int
        T, the number of steps over which the lr decays to 0 (PyTorch's ``PolynomialLR``
        calls it ``total_iters``).
    power : float
        0.9 in DeepLab/PSPNet; 1 is a linear decay (``PolynomialLR``'s default).
    """

    def __init__(self, optimizer, total_steps, power=0.9):
        if total_steps < 1:
            raise ValueError(f"PolyLR: total_steps must be >= 1, got {total_steps!r}")
        self.total_steps, self.power = total_steps, power
        super().__init__(optimizer)

    def _factor(self, t):
        return (1 - min(t, self.total_steps) / self.total_steps) ** self.power


class CosineLR(LRScheduler):
    """Cosine annealing (Loshchilov & Hutter, 2017) from base to ``eta_min`` over T steps:
    lr = eta_min + (base − eta_min)·(1 + cos(π·t/T))/2.

    PyTorch's ``CosineAnnealingLR`` with ``T_max = total_steps``; past T the cosine continues
    (rises again), exactly as PyTorch's does.
    """

    def __init__(self, optimizer, total_steps, eta_min=0.0):
        if total_steps < 1:
            raise ValueError(f"CosineLR: total_steps must be >= 1, got {total_steps!r}")
        self.total_steps, self.eta_min = total_steps, eta_min
        super().__init__(optimizer)

    def _lr(self, base, t):
        cosine = (1 + math.cos(math.pi * t / self.total_steps)) / 2
        return self.eta_min + (base - self.eta_min) * cosine


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` steps: lr = base·gamma^⌊t/step_size⌋."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        if step_size < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, got {step_size!r}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def _factor(self, t):
        return self.gamma ** (t // self.step_size)
