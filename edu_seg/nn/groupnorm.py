"""GroupNorm: normalise each sample over groups of channels, then scale and shift (Wu & He,
2018)."""
import numpy as np

from ..ops.norm import group_norm
from .module import Module, Parameter

__all__ = ["GroupNorm"]


class GroupNorm(Module):
    """Group normalisation of (N, C, H, W) feature maps: one mean and variance per sample and
    group of C/G channels.

    The statistics never mix samples, so the layer computes the same thing in training and in
    evaluation, keeps no running estimates, and works for batches of 1 or 2, where batch norm's
    batch statistics are too noisy (large segmentation crops often allow no more).

    Parameters
    ----------
    num_groups : int
        G, dividing ``num_channels``. 1 normalises over all of (C, H, W) (LayerNorm-like);
        C normalises each channel alone (InstanceNorm-like). 32 is the paper's default.
    num_channels : int
        C.
    eps : float
        Added to the variance for stability.
    affine : bool
        Learn a per-channel scale ``weight`` (γ, init 1) and shift ``bias`` (β, init 0).

    Attributes
    ----------
    weight, bias : Parameter of shape (C,) or None
        State-dict keys ``weight`` and ``bias``, as PyTorch's ``nn.GroupNorm``.

    Notes
    -----
    y = γ·(x − μ_(n,g))/sqrt(σ²_(n,g) + ε) + β, see :func:`edu_seg.functional.group_norm` for
    the backward formula.

    Examples
    --------
    >>> gn = GroupNorm(4, 16)
    >>> y = gn(Tensor(np.random.randn(1, 16, 8, 8).astype(np.float32)))
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        for name, v in (("num_groups", num_groups), ("num_channels", num_channels)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"GroupNorm: {name} must be a positive integer, got {v!r}")
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_groups={num_groups} must divide "
                             f"num_channels={num_channels}")
        if not eps > 0:
            raise ValueError(f"GroupNorm: eps must be positive, got {eps!r}")
        self.num_groups, self.num_channels = int(num_groups), int(num_channels)
        self.eps, self.affine = eps, affine
        C = self.num_channels
        self.weight = Parameter(np.ones(C, np.float32)) if affine else None
        self.bias = Parameter(np.zeros(C, np.float32)) if affine else None

    def forward(self, x):
        return group_norm(x, self.num_groups, self.weight, self.bias, eps=self.eps)

    def flops(self, x, y):
        """5 FLOPs per element for the normalisation, 2 more with ``affine``.

        Counted per element: 1 add for the mean's sum, 1 subtract (x − μ), 1 multiply-add
        (2 FLOPs) for the sum of squares, 1 multiply by 1/σ; the affine γ·x̂ + β is one more
        multiply-add. The N·G square roots are not counted.
        """
        return (5 + (2 if self.affine else 0)) * int(y.size)

    def window(self):
        """Pointwise in space: each output pixel comes from the input pixel at the same place
        (the group statistics are a global input, not a window)."""
        return ((1, 1), (1, 1), (0, 0), (1, 1))

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
