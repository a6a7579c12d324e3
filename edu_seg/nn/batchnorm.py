"""BatchNorm2d: normalise each channel over the batch, then scale and shift (Ioffe & Szegedy,
2015)."""
import numpy as np

from ..ops.norm import batch_norm
from .module import Module, Parameter

__all__ = ["BatchNorm2d"]


class BatchNorm2d(Module):
    """Batch normalisation of (N, C, H, W) feature maps, one mean and variance per channel.

    In training each channel is normalised with the mean and (biased) variance of the current
    batch, and running estimates are updated; in evaluation (``model.eval()``) the running
    estimates are used, so a prediction does not depend on the rest of the batch.

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps : float
        Added to the variance for stability.
    momentum : float or None
        Running update ``r ← (1 − momentum)·r + momentum·batch_stat`` (PyTorch's convention;
        the running variance uses the unbiased batch variance). None: a cumulative average
        over all batches seen (momentum = 1/num_batches_tracked).
    affine : bool
        Learn a per-channel scale ``weight`` (γ, init 1) and shift ``bias`` (β, init 0).
    track_running_stats : bool
        False: no running estimates; batch statistics are used in evaluation too.

    Attributes
    ----------
    weight, bias : Parameter of shape (C,) or None
    running_mean, running_var : ndarray of shape (C,) (buffers; init 0 and 1) or None
    num_batches_tracked : 0-d int64 ndarray (buffer)

    Notes
    -----
    y = γ·(x − μ_B)/sqrt(σ²_B + ε) + β. The backward pass is written by hand in
    :func:`edu_seg.functional.batch_norm` (see ``edu_seg/reference/norm.py``).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) \
                or num_features < 1:
            raise ValueError(f"BatchNorm2d: num_features must be a positive integer, got "
                             f"{num_features!r}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNorm2d: momentum must be in [0, 1] or None, got {momentum!r}")
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        C = self.num_features
        self.weight = Parameter(np.ones(C, np.float32)) if affine else None
        self.bias = Parameter(np.zeros(C, np.float32)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(C, np.float32))
            self.register_buffer("running_var", np.ones(C, np.float32))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self):
        """Running mean 0, running variance 1, no batch seen."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def forward(self, x):
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if momentum is None:   # cumulative moving average of all batches so far
                momentum = 1.0 / float(self.num_batches_tracked)
        # Batch statistics in training, and always when no running estimates are kept; the
        # running buffers (None when not tracked) are updated in place by batch_norm.
        return batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                          training=self.training or not self.track_running_stats,
                          momentum=0.0 if momentum is None else momentum, eps=self.eps)

    def flops(self, x, y):
        """y = x · scale + shift per element once the statistics are known: 2 FLOPs."""
        return 2 * y.size

    def window(self):
        return (1, 1), (1, 1), (0, 0), (1, 1)      # per pixel: no spatial extent

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")
