"""Segmentation losses, each a single fused Function with a hand-written backward.

A loss over a (8, 4, 64, 64) batch touches every logit a few times; composed from elementwise
autograd ops it would record a dozen nodes and as many temporaries. Here each loss computes its
value and, in backward, its gradient directly (e.g. ``softmax − onehot`` for cross-entropy).

Shapes: ``logits`` is ``(N, C, *)`` (usually (N, C, H, W), or (N, C) for classification) and an
integer ``target`` is ``(N, *)`` of class indices; pixels equal to ``ignore_index`` (e.g. void or
object boundaries) contribute nothing to the loss or its gradient.

Empty inputs: every loss here refuses an input with a zero-length axis (an empty batch,
zero classes, a 0-pixel image) with a ``ValueError`` that names the empty axis. PyTorch
returns nan for the mean over an empty batch (and fails for zero classes); an error at the
call is easier to trace back to its cause (an empty data split, a head with 0 outputs) than
a nan that surfaces epochs later. A NON-empty batch whose targets are all ``ignore_index``
is different: its mean is nan (0/0), as in PyTorch, with a zero gradient.
"""
import numpy as np

from ..autograd import Function, Tensor
from ..backend import contiguous, get_array_module, is_array, to_host

__all__ = ["cross_entropy", "binary_cross_entropy_with_logits", "dice_loss", "focal_loss",
           "bootstrapped_cross_entropy", "smooth_l1_loss"]

_REDUCTIONS = ("mean", "sum", "none")


# ------------------------------------------------------------------------------------ helpers
def _check_reduction(op, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _floating_tensor(op, name, x):
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be float32 or float64, got dtype {x.dtype}")
    return x


def _check_not_empty(op, name, x, axis_names=None):
    """A ValueError naming the first zero-length axis of ``x`` (see the module doc)."""
    for i, n in enumerate(x.shape):
        if n == 0:
            if axis_names is None:
                what = f"axis {i}"
            else:
                what = axis_names[i] if i < len(axis_names) else f"spatial axis {i}"
            raise ValueError(f"{op}: {name} of shape {x.shape} is empty along {what}; a loss "
                             f"needs at least one element there (check the batch / data "
                             f"split / number of output channels)")


_LOGIT_AXES = ("the batch axis 0 (N = 0 samples)", "the class axis 1 (C = 0 classes)")


def _check_logits(op, logits):
    """(N, C, *) floating, non-empty logits as a Tensor, else a clear error."""
    logits = _floating_tensor(op, "logits", logits)
    if logits.ndim < 2:
        raise ValueError(f"{op}: logits must be (N, C) or (N, C, H, W), got shape {logits.shape}")
    _check_not_empty(op, "logits", logits, _LOGIT_AXES)
    return logits


def _logits_and_target(op, logits, target, ignore_index, num_classes=None):
    """Validate (N, C, *) logits against an (N, *) integer target.

    Returns the logits Tensor, the target as int64 with ignored entries replaced by class 0
    (so gathers stay in range) and the boolean mask of the entries that count.
    ``num_classes`` is the number of valid labels (C, or 2 for a one-channel binary head).
    """
    logits = _check_logits(op, logits)
    target = target.data if isinstance(target, Tensor) else target
    target = target if is_array(target) else np.asarray(target)
    xp = get_array_module(logits.data, target)
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices, got dtype "
                        f"{target.dtype} (convert with .astype(np.int64); probability targets "
                        f"are not supported)")
    expected = (logits.shape[0],) + logits.shape[2:]
    if target.shape != expected:
        raise ValueError(f"{op}: target has shape {target.shape} but logits {logits.shape} "
                         f"need a target of shape {expected} (logits without the class axis)")
    num_classes = logits.shape[1] if num_classes is None else num_classes
    valid = xp.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    bad = valid & ((target < 0) | (target >= num_classes))
    if bad.any():
        ignore = "" if ignore_index is None else f" and is not ignore_index={ignore_index}"
        raise ValueError(f"{op}: target contains {target[bad][0]}, which is outside the class "
                         f"range [0, {num_classes - 1}]{ignore}")
    return logits, xp.where(valid, target, 0).astype(np.int64), valid


def _class_weight(op, weight, logits):
    """A (C,) class-weight vector (an array or list), in the logits' dtype, on their device."""
    C, dtype = logits.shape[1], logits.dtype
    weight = to_host(weight.data if isinstance(weight, Tensor) else weight)
    weight = np.asarray(weight)
    if weight.shape != (C,):
        raise ValueError(f"{op}: weight must have one entry per class, shape ({C},), got "
                         f"{weight.shape}")
    return get_array_module(logits.data).asarray(weight.astype(dtype))


def _float_target(op, target, like, described):
    """A float ``target`` of ``like``'s shape: a float Tensor stays as it is (it may need a
    gradient); any other numeric array becomes a constant Tensor of ``like``'s dtype."""
    if not (isinstance(target, Tensor) and target.dtype.kind == "f"):
        raw = target.data if isinstance(target, Tensor) else target
        raw = raw if is_array(raw) else np.asarray(raw)
        if raw.dtype.kind not in "biuf":
            raise TypeError(f"{op}: target must be numeric, got dtype {raw.dtype}")
        target = Tensor(raw.astype(like.dtype))
    if target.shape != like.shape:
        raise ValueError(f"{op}: target has shape {target.shape} but {described} "
                         f"{like.shape}; they must match")
    return target


def _flatten(logits, target, valid):
    """(N, C, *) logits and (N, *) target/mask as (N, C, L) and (N, L) (L = H·W): one layout
    for every loss, whatever the number of spatial axes. The logits come out C-contiguous."""
    N, C = logits.shape[:2]
    return (contiguous(logits).reshape(N, C, -1), target.reshape(N, -1),
            valid.reshape(N, -1))


def _flat_index(target, C):
    """Where each pixel's target class sits in a C-contiguous (N, C, L) array, flattened.

    Entry (n, l) of class t is element n·C·L + t·L + l, so ``a.reshape(-1)[index]`` gathers
    one value per pixel (and ``-=`` scatters into them; the indices are distinct). This is
    what ``np.take_along_axis`` computes, several times faster here.
    """
    N, L = target.shape
    xp = get_array_module(target)
    return (xp.arange(N)[:, None] * (C * L) + target * L + xp.arange(L)).reshape(-1)


def _softmax(z):
    """Softmax over the class axis of z (N, C, L), with m = max_c z and log Σ_c e^(z − m).

    Subtracting the max makes the largest exponent e⁰ = 1, so exp never overflows and the sum
    is at least 1, so the log never sees 0. Then log p_c = (z_c − m) − log Σ e^(z − m).

    Returns p (N, C, L), m (N, L), log_total (N, L).
    """
    m = z.max(axis=1)
    p = np.exp(z - m[:, None])
    total = p.sum(axis=1)
    p /= total[:, None]
    return p, m, np.log(total)


def _softplus_neg(x):
    """log(1 + e^(−x)), stable for any x: log1p(e^(−|x|)) + max(−x, 0)."""
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0)


def _reduce(loss, reduction, count):
    """Sum, mean over ``count`` (PyTorch's 0/0 = nan when nothing counts) or per element."""
    if reduction == "none":
        return loss
    xp, total = get_array_module(loss), loss.sum()
    if reduction == "sum":
        return xp.asarray(total)
    with np.errstate(invalid="ignore", divide="ignore"):
        return xp.asarray(total / loss.dtype.type(count))


def _grad_scale(dy, reduction, count, dtype):
    """d(reduced loss)/d(element loss) times the incoming gradient, broadcastable."""
    if reduction != "mean":
        return dy
    # Nothing counted (every target ignored): the loss is nan, but no pixel should move.
    return dy / dtype.type(count) if count else dy * 0


# ------------------------------------------------------------------------------ cross-entropy
class CrossEntropyFunction(Function):
    @staticmethod
    def forward(ctx, logits, *, target, valid, weight, reduction, label_smoothing):
        (N, C), dtype, eps = logits.shape[:2], logits.dtype, label_smoothing
        z, t, valid = _flatten(logits, target, valid)                  # (N, C, L), (N, L)
        idx = _flat_index(t, C)
        p, m, log_total = _softmax(z)
        nll = log_total - (z.reshape(-1)[idx].reshape(N, -1) - m)       # −log p_t, (N, L)
        w_t = valid.astype(dtype) if weight is None else weight[t] * valid
        loss = (1 - eps) * w_t * nll
        if eps:
            # Mix in ε·(uniform distribution): (ε/C)·Σ_c w_c·(−log p_c), as PyTorch does;
            # Σ_c w_c·(−log p_c) = W·log_total − Σ_c w_c·(z_c − m) with W = Σ_c w_c.
            w_c = get_array_module(z).ones(C, dtype) if weight is None else weight
            wz = np.einsum("ncl,c->nl", z - m[:, None], w_c)
            loss += (eps / C) * valid * (w_c.sum() * log_total - wz)
        ctx.count = w_t.sum()      # a weighted mean divides by the weights of counted targets
        ctx.save_for_backward(p, idx, valid, w_t)
        ctx.shape, ctx.weight, ctx.reduction, ctx.eps = logits.shape, weight, reduction, eps
        loss = loss.astype(dtype, copy=False).reshape(target.shape)
        return _reduce(loss, reduction, ctx.count)

    @staticmethod
    def backward(ctx, dy):
        p, idx, valid, w_t = ctx.saved_tensors
        (N, C, L), eps = p.shape, ctx.eps
        scale = _grad_scale(dy, ctx.reduction, ctx.count, p.dtype)
        if ctx.reduction == "none":
            scale = scale.reshape(N, L)
        # d/dz of w_t·(−log p_t) is w_t·(p − onehot(t)); of (ε/C)·Σ_c w_c·(−log p_c) it is
        # (ε/C)·(W·p − w). So dz = p·(per-pixel factor) − onehot part − smoothing part.
        hard = scale * (1 - eps) * w_t                                   # (N, L)
        dz = p     # the graph is freed after backward: reuse the saved softmax's memory
        if eps:
            soft = scale * (eps / C) * valid
            w_c = get_array_module(p).ones(C, p.dtype) if ctx.weight is None else ctx.weight
            dz *= (hard + soft * w_c.sum())[:, None]
            dz -= soft[:, None] * w_c[:, None]
        else:
            dz *= hard[:, None]
        dz.reshape(-1)[idx] -= hard.reshape(-1)
        return dz.reshape(ctx.shape)


def cross_entropy(logits, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """Softmax cross-entropy per pixel, fused and numerically stable (``F.cross_entropy``).

    Parameters
    ----------
    logits : Tensor of shape (N, C, H, W) (or (N, C), or ``(N, C, *)``)
        Unnormalised class scores.
    target : int array of shape (N, H, W) (or (N,), or ``(N, *)``)
        Class indices in [0, C), or ``ignore_index``.
    weight : array of shape (C,), optional
        Per-class weights (e.g. inverse class frequency against class imbalance).
    ignore_index : int
        Target value that is skipped (contributes 0 and is not counted in the mean).
    reduction : {"mean", "sum", "none"}
        "mean" divides by the SUM OF WEIGHTS of the counted targets (the number of counted
        pixels when unweighted), exactly like PyTorch; "none" returns the ``(N, *)`` map.
    label_smoothing : float in [0, 1]
        Target distribution (1 − ε)·onehot + ε/C (Szegedy et al., 2016).

    Returns
    -------
    Tensor
        A scalar, or (N, *) for ``reduction="none"``. A mean over no counted target is nan
        (0/0), as in PyTorch.

    Raises
    ------
    ValueError
        If logits are empty along any axis (N = 0, C = 0 or a 0-pixel image): see the module
        doc (PyTorch would give nan for the mean over an empty batch).

    Notes
    -----
    With log p = log_softmax(z) over the class axis, per pixel i with target t:

        ℓ_i = (1 − ε)·w_t·(−log p_t) + (ε/C)·Σ_c w_c·(−log p_c)
        ∂ℓ_i/∂z = (1 − ε)·w_t·(p − onehot(t)) + (ε/C)·(Σ_c w_c · p − w)

    Examples
    --------
    >>> z = Tensor(np.random.randn(2, 3, 4, 4), requires_grad=True)
    >>> t = np.random.randint(0, 3, size=(2, 4, 4))
    >>> cross_entropy(z, t).backward()
    """
    op = "cross_entropy"
    logits, target, valid = _logits_and_target(op, logits, target, ignore_index)
    _check_reduction(op, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if weight is not None:
        weight = _class_weight(op, weight, logits)
    return CrossEntropyFunction.apply(logits, target=target, valid=valid, weight=weight,
                                      reduction=reduction, label_smoothing=float(label_smoothing))


# --------------------------------------------------------------------- binary cross-entropy
class BCEWithLogitsFunction(Function):
    @staticmethod
    def forward(ctx, x, t, *, weight, pos_weight, reduction):
        sp = _softplus_neg(x)                                   # −log σ(x)
        # −[pw·t·log σ(x) + (1 − t)·log(1 − σ(x))], with log(1 − σ(x)) = −x − softplus(−x):
        lw = 1 if pos_weight is None else 1 + (pos_weight - 1) * t
        loss = (1 - t) * x + lw * sp
        if weight is not None:
            loss = loss * weight
        ctx.save_for_backward(x, t, sp)
        ctx.weight, ctx.pos_weight, ctx.reduction = weight, pos_weight, reduction
        return _reduce(loss.astype(x.dtype, copy=False), reduction, x.size)

    @staticmethod
    def backward(ctx, dy):
        x, t, sp = ctx.saved_tensors
        g = _grad_scale(dy, ctx.reduction, x.size, x.dtype)
        if ctx.weight is not None:
            g = g * ctx.weight
        pw = ctx.pos_weight
        dx = dt = None
        if ctx.needs_input_grad[0]:
            sigmoid = np.exp(-sp)                               # σ(x) = e^(−softplus(−x))
            lw = 1 if pw is None else 1 + (pw - 1) * t
            dx = g * (lw * sigmoid - lw + 1 - t)                # = σ(x) − t when pw is None
        if ctx.needs_input_grad[1]:
            dt = g * (-x if pw is None else (pw - 1) * sp - x)
        cast = (lambda a: None if a is None else np.broadcast_to(a, x.shape).astype(x.dtype))
        return cast(dx), cast(dt)


def binary_cross_entropy_with_logits(logits, target, weight=None, pos_weight=None,
                                     reduction="mean"):
    """Sigmoid + binary cross-entropy in one stable step (``F.binary_cross_entropy_with_logits``).

    Parameters
    ----------
    logits : Tensor, any shape, e.g. (N, 1, H, W) or (N, K, H, W) for K independent masks
    target : array or Tensor of the same shape
        Probabilities in [0, 1] (0/1 masks; integer or bool masks are converted). A floating
        Tensor with ``requires_grad`` receives a gradient too.
    weight : array broadcastable to logits, optional
        Per-element rescaling.
    pos_weight : array broadcastable to logits, optional
        Weight of the positive term (> 1 raises recall), e.g. shape (K, 1, 1) per mask channel.
    reduction : {"mean", "sum", "none"}
        "mean" divides by the number of elements (not by the weights), like PyTorch.

    Raises
    ------
    ValueError
        If logits are empty (an axis of length 0), naming the axis (see the module doc).

    Notes
    -----
    ℓ = (1 − t)·x + (1 + (p − 1)·t)·log(1 + e^(−x)), with log(1 + e^(−x)) evaluated as
    log1p(e^(−|x|)) + max(−x, 0) so no exponent overflows. ∂ℓ/∂x = σ(x) − t when p = 1.
    """
    op = "binary_cross_entropy_with_logits"
    _check_reduction(op, reduction)
    logits = _floating_tensor(op, "logits", logits)
    _check_not_empty(op, "logits", logits)
    target = _float_target(op, target, logits, "logits have")
    extra = {}
    for name, v in (("weight", weight), ("pos_weight", pos_weight)):
        if v is not None:
            v = np.asarray(to_host(v.data if isinstance(v, Tensor) else v))
            v = get_array_module(logits.data).asarray(v.astype(logits.dtype))
            try:
                fits = np.broadcast_shapes(v.shape, logits.shape) == logits.shape
            except ValueError:
                fits = False
            if not fits:
                raise ValueError(f"{op}: {name} of shape {v.shape} does not broadcast to the "
                                 f"logits' shape {logits.shape}")
        extra[name] = v
    return BCEWithLogitsFunction.apply(logits, target, reduction=reduction, **extra)


# --------------------------------------------------------------------------------- dice loss
class DiceLossFunction(Function):
    @staticmethod
    def forward(ctx, logits, *, target, valid, smooth):
        K = logits.shape[1]
        z, t, valid = _flatten(logits, target, valid)                  # (N, K, L), (N, L)
        if K == 1:   # binary head: P(foreground) = σ(z), the dice of the foreground only
            p = np.exp(-_softplus_neg(z))
            onehot = (t == 1)[:, None]
        else:
            p = _softmax(z)[0]
            onehot = t[:, None] == get_array_module(t).arange(K)[:, None]  # (N, K, L)
        mask = valid[:, None]                                            # (N, 1, L)
        pm = p * mask
        inter = (pm * onehot).sum(axis=(0, 2), dtype=np.float64)        # (K,) Σ p·g
        union = pm.sum(axis=(0, 2), dtype=np.float64) + (onehot & mask).sum(axis=(0, 2))
        dice = (2 * inter + smooth) / (union + smooth)
        ctx.save_for_backward(p, onehot, mask)
        ctx.shape, ctx.inter, ctx.union, ctx.smooth = logits.shape, inter, union, smooth
        return get_array_module(p).asarray(1 - dice.mean(), dtype=logits.dtype)

    @staticmethod
    def backward(ctx, dy):
        p, onehot, mask = ctx.saved_tensors
        K, dtype = p.shape[1], p.dtype
        a = 1 / (ctx.union + ctx.smooth)                                # (K,)
        b = (2 * ctx.inter + ctx.smooth) * a * a
        # ∂(1 − mean_k dice_k)/∂p = −(1/K)·mask·(2g/(U + s) − (2I + s)/(U + s)²)
        dp = (-dy / K) * mask * (onehot * (2 * a).astype(dtype)[:, None]
                                 - b.astype(dtype)[:, None])
        if K == 1:
            dz = dp * p * (1 - p)                                       # σ' = σ(1 − σ)
        else:
            dz = p * (dp - (p * dp).sum(axis=1, keepdims=True))  # softmax Jacobian-vector
        return dz.astype(dtype, copy=False).reshape(ctx.shape)


def dice_loss(logits, target, num_classes=None, smooth=1.0, ignore_index=None):
    """Soft multiclass Dice loss, 1 − mean over classes of the Dice coefficient (Milletari 2016).

    Parameters
    ----------
    logits : Tensor of shape (N, C, H, W)
        Class scores; softmax gives the soft prediction. With C = 1 the head is binary:
        σ(logits) is P(foreground), the target holds 0/1 and the loss is the foreground's Dice.
    target : int array of shape (N, H, W)
    num_classes : int, optional
        If given, must equal C (a guard against a head that does not match the data).
    smooth : float >= 0
        Added to numerator and denominator: an absent class predicted absent scores 1, and the
        gradient stays finite. With smooth = 0 a class absent from both gives nan.
    ignore_index : int, optional
        Pixels with this target are left out of every sum.

    Returns
    -------
    Tensor, a scalar in [0, 1]

    Raises
    ------
    ValueError
        If logits are empty along any axis (N = 0, C = 0, no pixels), naming the axis.

    Notes
    -----
    Sums run over the whole batch and all pixels, per class k (g = onehot(target)):

        Dice_k = (2·Σ p_k·g_k + s) / (Σ p_k + Σ g_k + s),   L = 1 − (1/K)·Σ_k Dice_k

    Every class counts equally, whatever its pixel count, which helps small classes.
    """
    op = "dice_loss"
    logits = _check_logits(op, logits)
    C = logits.shape[1]
    if num_classes is not None and num_classes != C:
        raise ValueError(f"dice_loss: num_classes={num_classes} but logits have {C} channels")
    logits, target, valid = _logits_and_target(op, logits, target, ignore_index,
                                                num_classes=2 if C == 1 else None)
    if not smooth >= 0:
        raise ValueError(f"dice_loss: smooth must be >= 0, got {smooth!r}")
    return DiceLossFunction.apply(logits, target=target, valid=valid, smooth=float(smooth))


# -------------------------------------------------------------------------------- focal loss
class FocalLossFunction(Function):
    @staticmethod
    def forward(ctx, logits, *, target, valid, gamma, alpha, reduction):
        (N, C), dtype = logits.shape[:2], logits.dtype
        z, t, valid = _flatten(logits, target, valid)                  # (N, C, L), (N, L)
        if C == 1:   # binary: p_t = σ(x) for t = 1 and σ(−x) for t = 0
            sign = np.where(t == 1, 1, -1).astype(dtype)
            logp_t = -_softplus_neg(sign * z[:, 0])
            p = idx = None
        else:
            idx = _flat_index(t, C)
            p, m, log_total = _softmax(z)
            logp_t = (z.reshape(-1)[idx].reshape(N, -1) - m) - log_total
            sign = None
        p_t = np.exp(logp_t)
        q = -np.expm1(logp_t)                                   # 1 − p_t, accurate near p_t = 1
        weight = valid.astype(dtype) if alpha is None else alpha[t] * valid
        loss = -weight * q ** gamma * logp_t                    # (N, L)
        ctx.save_for_backward(p, idx, sign, p_t, q, logp_t, weight)
        ctx.gamma, ctx.reduction, ctx.count = gamma, reduction, int(valid.sum())
        ctx.shape = logits.shape
        loss = loss.astype(dtype, copy=False).reshape(target.shape)
        return _reduce(loss, reduction, ctx.count)

    @staticmethod
    def backward(ctx, dy):
        p, idx, sign, p_t, q, logp_t, weight = ctx.saved_tensors
        gamma, dtype = ctx.gamma, p_t.dtype
        scale = _grad_scale(dy, ctx.reduction, ctx.count, dtype)
        if ctx.reduction == "none":
            scale = scale.reshape(p_t.shape)
        # f(p_t) = −(1 − p_t)^γ·log p_t, and
        # h = p_t·f'(p_t) = γ·(1 − p_t)^(γ−1)·p_t·log p_t − (1 − p_t)^γ
        with np.errstate(divide="ignore", invalid="ignore"):
            first = np.where(q > 0, gamma * q ** (gamma - 1) * p_t * logp_t, 0) if gamma else 0
        g = scale * weight * (first - q ** gamma)              # (N, L)
        if p is None:   # binary: ∂p_t/∂x = sign·p_t·(1 − p_t)
            return (g * q * sign).astype(dtype, copy=False).reshape(ctx.shape)
        # softmax: ∂p_t/∂z_k = p_t·([k = t] − p_k)
        dz = p          # the graph is freed after backward: reuse the saved softmax's memory
        dz *= -g[:, None]
        dz.reshape(-1)[idx] += g.reshape(-1)
        return dz.reshape(ctx.shape)


def focal_loss(logits, target, gamma=2.0, alpha=None, ignore_index=-100, reduction="mean"):
    """Focal loss (Lin et al., 2017): cross-entropy scaled by (1 − p_t)^γ to focus on hard pixels.

    Parameters
    ----------
    logits : Tensor of shape (N, C, H, W)
        C >= 2: softmax over classes (multiclass). C = 1: a binary head, p = σ(logits) is
        P(foreground) and the target holds 0/1 (RetinaNet's sigmoid form, e.g. DFN's border
        network).
    target : int array of shape (N, H, W)
    gamma : float >= 0
        Focusing parameter; 0 gives (α-weighted) cross-entropy.
    alpha : optional
        Class balance α_t. Multiclass: a sequence of C weights. Binary: a float α in [0, 1],
        α for foreground pixels and 1 − α for background ones (RetinaNet uses 0.25).
    ignore_index : int
    reduction : {"mean", "sum", "none"}
        "mean" averages over the counted (non-ignored) pixels (not over the α weights).

    Raises
    ------
    ValueError
        If logits are empty along any axis (N = 0, C = 0, no pixels), naming the axis.

    Notes
    -----
    FL = −α_t·(1 − p_t)^γ·log p_t, with p_t the predicted probability of the true class.
    Well-classified pixels (p_t → 1) are down-weighted, so the many easy background pixels do
    not swamp the few hard ones.
    """
    op = "focal_loss"
    _check_reduction(op, reduction)
    binary = _check_logits(op, logits).shape[1] == 1
    logits, target, valid = _logits_and_target(op, logits, target, ignore_index,
                                                num_classes=2 if binary else None)
    if not gamma >= 0:
        raise ValueError(f"{op}: gamma must be >= 0, got {gamma!r}")
    if alpha is not None:
        if binary:
            if not (np.ndim(alpha) == 0 and 0.0 <= alpha <= 1.0):
                raise ValueError(f"{op}: with a binary (1-channel) head alpha must be a float "
                                 f"in [0, 1], got {alpha!r}")
            alpha = get_array_module(logits.data).asarray([1 - alpha, alpha], dtype=logits.dtype)
        else:
            alpha = _class_weight(op, alpha, logits)
    return FocalLossFunction.apply(logits, target=target, valid=valid, gamma=float(gamma),
                                   alpha=alpha, reduction=reduction)


# --------------------------------------------------------------------- bootstrapped CE (FRRN)
def bootstrapped_cross_entropy(logits, target, top_k, ignore_index=-100):
    """Mean cross-entropy over the K hardest pixels of each image (FRRN, Pohlen et al., 2017).

    Parameters
    ----------
    logits : Tensor of shape (N, C, H, W)
    target : int array of shape (N, H, W)
    top_k : int or float
        int >= 1: K pixels per image. float in (0, 1]: that fraction of each image's H·W
        pixels (K = round(top_k·H·W), at least 1).
    ignore_index : int
        Ignored pixels are never selected; an image with fewer than K counted pixels
        contributes all of them.

    Returns
    -------
    Tensor, a scalar: the mean over all selected pixels of the batch (nan if none counts).

    Raises
    ------
    ValueError
        If logits are empty along any axis (N = 0, C = 0, no pixels), naming the axis.

    Notes
    -----
    Easy pixels (most of a road, most of the sky) soon have near-zero loss and only dilute the
    gradient; averaging over the K largest per-pixel losses keeps training on the hard ones.
    Composed from :func:`cross_entropy` (``reduction="none"``) and a gather: the gradient
    flows only into the selected pixels.
    """
    op = "bootstrapped_cross_entropy"
    logits, clean_target, valid = _logits_and_target(op, logits, target, ignore_index)
    pixel_loss = cross_entropy(logits, clean_target, reduction="none")   # (N, *)
    N = pixel_loss.shape[0]
    P = pixel_loss.size // max(N, 1)
    if isinstance(top_k, (bool, np.bool_)) or not isinstance(top_k, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{op}: top_k must be an int (pixels) or a float (fraction), got "
                        f"{type(top_k).__name__}")
    if isinstance(top_k, (int, np.integer)):
        if top_k < 1:
            raise ValueError(f"{op}: top_k must be >= 1 pixels, got {top_k}")
        K = min(int(top_k), P)
    else:
        if not 0.0 < top_k <= 1.0:
            raise ValueError(f"{op}: a fractional top_k must be in (0, 1], got {top_k}")
        K = max(1, int(round(top_k * P)))
    values = np.where(valid.reshape(N, P), pixel_loss.data.reshape(N, P), -np.inf)
    hardest = np.argpartition(-values, K - 1, axis=1)[:, :K]    # (N, K), unordered
    chosen = np.isfinite(np.take_along_axis(values, hardest, axis=1))
    rows = get_array_module(hardest).arange(N)[:, None]
    flat = (hardest + P * rows)[chosen]                          # indices into the (N·P,) map
    selected = pixel_loss.reshape(-1)[flat]
    # The mean over the selection; nan when nothing counts (as cross_entropy), with no gradient.
    return selected.sum() * (1.0 / flat.size if flat.size else np.nan)


# ------------------------------------------------------------------- smooth L1 (Huber-like)
class SmoothL1LossFunction(Function):
    @staticmethod
    def forward(ctx, x, t, *, beta, reduction):
        xp = get_array_module(x)
        d = x - t
        ad = xp.abs(d)
        if beta == 0:   # the quadratic zone has shrunk to nothing: plain L1
            loss = ad
        else:
            loss = xp.where(ad < beta, (0.5 / beta) * d * d, ad - 0.5 * beta)
        ctx.save_for_backward(d)
        ctx.beta, ctx.reduction = beta, reduction
        if reduction == "none":
            return loss.astype(x.dtype, copy=False)
        # (not _reduce: that one is NumPy-only; this op also runs on CuPy arrays)
        total = loss.sum(dtype=x.dtype)
        if reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                total = total / x.dtype.type(x.size)
        return xp.asarray(total, dtype=x.dtype)

    @staticmethod
    def backward(ctx, dy):
        (d,) = ctx.saved_tensors
        xp = get_array_module(d)
        g = dy / d.dtype.type(d.size) if ctx.reduction == "mean" and d.size else dy
        # Slope of the loss in d: d/β inside |d| < β, ±1 outside; clip(d/β, −1, 1) is both
        # (at |d| = β they agree). β = 0: sign(d), 0 at d = 0, as PyTorch.
        slope = xp.sign(d) if ctx.beta == 0 else xp.clip(d / d.dtype.type(ctx.beta), -1, 1)
        dx = (g * slope).astype(d.dtype, copy=False)
        return (dx if ctx.needs_input_grad[0] else None,
                -dx if ctx.needs_input_grad[1] else None)


def smooth_l1_loss(input, target, beta=1.0, reduction="mean"):
    """Smooth L1 loss: quadratic for small errors, linear for large (``F.smooth_l1_loss``).

    Parameters
    ----------
    input : Tensor, float32 or float64, any shape, e.g. (N, 4) box offsets
    target : array or Tensor of the same shape
        A floating Tensor with ``requires_grad`` receives a gradient too.
    beta : float >= 0
        Where the loss turns from quadratic to linear. 0 gives the L1 loss ``|d|``.
    reduction : {"mean", "sum", "none"}
        "mean" divides by the number of elements.

    Returns
    -------
    Tensor, a scalar, or input's shape for ``reduction="none"``

    Raises
    ------
    ValueError
        If input is empty (an axis of length 0), naming the axis (see the module doc;
        PyTorch gives nan for the mean).

    Notes
    -----
    With d = input − target, per element::

        ℓ = 0.5·d²/β     if |d| < β
        ℓ = |d| − 0.5·β  otherwise

        ∂ℓ/∂d = clip(d/β, −1, 1)   (sign(d) when β = 0),   ∂ℓ/∂target = −∂ℓ/∂d

    Both pieces meet with equal value and slope at ``|d| = β``. The gradient never exceeds 1 in
    size, so outliers (a badly wrong box) cannot blow up training as with the L2 loss
    (Fast R-CNN, Girshick 2015). Note PyTorch's Huber loss is β times this one.

    Examples
    --------
    >>> smooth_l1_loss(Tensor(np.array([0.5, 3.0])), np.zeros(2), reduction="none").data
    array([0.125, 2.5  ])
    """
    op = "smooth_l1_loss"
    _check_reduction(op, reduction)
    input = _floating_tensor(op, "input", input)
    _check_not_empty(op, "input", input)
    target = _float_target(op, target, input, "input has")
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)) \
            or not beta >= 0:
        raise ValueError(f"{op}: beta must be a number >= 0 (0 means L1), got {beta!r}")
    return SmoothL1LossFunction.apply(input, target, beta=float(beta), reduction=reduction)
