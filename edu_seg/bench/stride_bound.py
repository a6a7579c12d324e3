"""How sharp can a model be that predicts at output stride ``s`` and up-samples bilinearly?

Many segmentation networks end the same way: class scores on a map ``s`` times smaller than
the image (FCN-32s: ``s = 32``; DeepLab and PSPNet: 8; RefineNet, DeepLabV3+, DDSC: 4), then
a fixed bilinear up-sampling x``s`` and an argmax. Whatever the network learned, that last step
can only draw what a bilinear interpolation of a coarse grid of scores can draw.
:func:`output_stride_bound` measures it on a set of ground-truth masks by building the best
coarse scores one can hope for and scoring what the decoder makes of them::

    one-hot ground truth (N, K, H, W)
      ─ average pool s x s  ─>  (N, K, H/s, W/s)   the class proportions of every cell
      ─ bilinear x s         ─>  (N, K, H, W)      align_corners=False, as the models do
      ─ argmax               ─>  (N, H, W)         scored against the masks (mIoU)

The pooled map is what an ideal model outputs at stride ``s``: for every cell, the share of
its ``s x s`` pixels that belong to each class (the probabilities a perfectly calibrated model
would give a pixel it can only locate to within its cell). Any real model's coarse scores are
estimates of the same thing, so on the same masks it scores at most about this mIoU.

Why the decoder cannot do better: the geometry of bilinear up-sampling
    With ``align_corners=False`` the coarse sample ``i`` sits at the centre of its cell (input
    pixel ``(i + 1/2) s - 1/2``), and between two neighbouring centres every up-sampled score
    is a LINEAR function of the position (bilinear is linear along each axis). The
    difference of two classes' scores is linear too, so along that segment the winner
    between two classes switches AT MOST ONCE. Hence:

    - if one class wins at two neighbouring sample centres, it wins on the whole segment
      between them: nothing narrower than ``s`` that lies between them (a 1-pixel stripe, a
      1-pixel gap between two objects) can be drawn. At ``s = 8`` a 1-pixel stripe has 1/8
      of every cell it crosses and the background 7/8; it vanishes;
    - corners are rounded. In a pixel's 2x2 neighbourhood of samples its own cell has the
      weight ``(1 - dx/s)(1 - dy/s)``, ``dx, dy`` its distances to the cell's centre; at a
      corner of an object the three other samples belong to the background, so the pixel is
      lost whenever that weight is below 1/2. An aligned ``s x s`` block keeps all of its
      pixels at ``s = 2`` (weight >= 9/16), loses 1 pixel per corner at ``s = 4`` and 6
      per corner at ``s = 8``. Boundaries without such corners (straight bands of whole
      cells, a checkerboard of cells) survive exactly;
    - boundaries inside a cell can only be where interpolated scores cross: smooth curves,
      one crossing per pair of classes between two samples.

    One honest caveat: the pooled map is the ideal CALIBRATED map, not the best of all coarse
    maps. A model whose coarse scores exaggerate a thin class (a stripe's 1/8 made larger
    than the background's 7/8) would draw a band about ``s`` pixels wide over the stripe,
    wrong on the background pixels beside it but right on the stripe, and could score a
    little above this value on such data. It still cannot draw anything thinner than the
    rules above allow; the value is the bound in the sense that matters for a trained model,
    whose scores estimate class proportions.

What beats it
    The bound belongs to the LAST, fixed up-sampling of ``K`` scores. A network escapes it by
    making its last prediction at a finer stride:

    - a LEARNED up-sampling (a transposed convolution, PixelShuffle, DUpsampling) maps the
      coarse FEATURE vector (``C`` channels, many more than ``K``) to a whole ``s x s``
      patch of outputs, so one coarse cell can encode "a stripe at column 3 of this cell"
      and draw it: the fine pattern is learned, not interpolated;
    - a SKIP connection from a finer encoder map (U-Net, RefineNet, DeepLabV3+, DDSC) brings
      back positions the coarse map lost, and the bound applies only at the stride where the
      scores are finally computed (stride 4 for those decoders, stride 1 for U-Net).

Values on the zoo's validation set (``Shapes(256, size=64, num_classes=4, variant=v,
seed=1)``; ``python -m edu_seg.bench.stride_bound`` prints this table)::

    variant    s=2    s=4    s=8    s=16
    default    0.988  0.947  0.811  0.460
    scale      0.991  0.962  0.887  0.744
    context    0.985  0.937  0.721  0.262
    thin       0.589  0.312  0.241  0.237
    boundary   0.982  0.927  0.765  0.385

So a model that predicts at stride 8 cannot reach 0.85 mIoU on ``default``, whatever its
encoder. ``scale`` suffers least (many of its objects are large), ``thin`` most: its 1-2
pixel strokes and gaps are the structures the first rule forbids, and its bound is 0.59
already at stride 2.

>>> import numpy as np
>>> stripe = np.zeros((1, 32, 32), np.int64)
>>> stripe[:, :, 13] = 1                                   # a vertical line, 1 pixel wide
>>> output_stride_bound(stripe, 2, stride=1)
1.0
>>> output_stride_bound(stripe, 2, stride=8)    # the stripe is gone: (31/32 + 0) / 2
0.484375
"""
import numpy as np

from ..metrics import ConfusionMatrix
from ..ops.resample import interpolate

__all__ = ["output_stride_bound", "pooled_upsampled_prediction"]


def pooled_upsampled_prediction(masks, num_classes, stride):
    """The label map of the ideal stride-``stride`` model with a bilinear up-sampling.

    Parameters
    ----------
    masks : array of int, shape (N, H, W)
        Ground-truth class ids in ``[0, num_classes)``; ``H`` and ``W`` multiples of
        ``stride``.
    num_classes : int
    stride : int
        The output stride ``s`` (1 returns the masks themselves).

    Returns
    -------
    ndarray of int, shape (N, H, W)
        ``argmax`` over classes of ``bilinear_up_s(avg_pool_s(one_hot(masks)))``.

    Raises
    ------
    ValueError
        Masks not (N, H, W), a size not divisible by ``stride``, a stride < 1, or class ids
        outside ``[0, num_classes)``.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"output_stride_bound: masks must have shape (N, H, W), got "
                         f"{masks.shape}")
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"output_stride_bound: stride must be an int >= 1, got {stride!r}")
    N, H, W = masks.shape
    if H % stride or W % stride:
        raise ValueError(f"output_stride_bound: masks of {H}x{W} are not divisible by stride "
                         f"{stride}; crop or pad them to multiples of {stride}")
    if masks.size and (masks.min() < 0 or masks.max() >= num_classes):
        raise ValueError(f"output_stride_bound: class ids must lie in [0, {num_classes}), got "
                         f"{masks.min()} .. {masks.max()}")
    classes = np.arange(num_classes)[None, :, None, None]
    one_hot = (masks[:, None] == classes).astype(np.float32)          # (N, K, H, W)
    h, w = H // stride, W // stride
    cells = one_hot.reshape(N, num_classes, h, stride, w, stride)    # (N, K, h, s, w, s)
    pooled = cells.mean(axis=(3, 5))                                 # (N, K, h, w)
    scores = interpolate(pooled, size=(H, W), mode="bilinear",
                         align_corners=False)                        # (N, K, H, W)
    return scores.data.argmax(axis=1)                                # (N, H, W)


def output_stride_bound(masks, num_classes, stride):
    """mIoU of the ideal model that predicts at ``stride`` and up-samples bilinearly.

    Average-pools the one-hot ground truth to ``H/stride x W/stride``, up-samples the result
    bilinearly (:func:`edu_seg.ops.resample.interpolate`, ``align_corners=False``), takes the
    argmax and scores it with one :class:`~edu_seg.metrics.ConfusionMatrix` over all masks
    (see the module docstring for why no such model can draw more).

    Parameters
    ----------
    masks : array of int, shape (N, H, W)
        Ground-truth class ids in ``[0, num_classes)``; ``H`` and ``W`` multiples of
        ``stride``.
    num_classes : int
    stride : int
        The output stride ``s``.

    Returns
    -------
    float
        The mIoU (mean over the classes that occur in the masks or the prediction); 1.0 at
        ``stride = 1``.

    Examples
    --------
    >>> from edu_seg.data import Shapes
    >>> masks = np.stack([s["mask"] for s in Shapes(16, size=64, num_classes=4, seed=1)])
    >>> [round(output_stride_bound(masks, 4, s), 2) for s in (1, 4, 16)]
    [1.0, 0.95, 0.47]
    """
    prediction = pooled_upsampled_prediction(masks, num_classes, stride)
    cm = ConfusionMatrix(num_classes)
    cm.update(prediction, np.asarray(masks))
    return float(cm.miou())


def _main():
    """Print the bound for strides 2, 4, 8, 16 on every Shapes variant (the zoo's val set)."""
    from ..data import Shapes
    from ..data.shapes import VARIANTS
    strides = (2, 4, 8, 16)
    print("variant   " + "".join(f"  s={s:<4}" for s in strides))
    for variant in VARIANTS:
        data = Shapes(256, size=64, num_classes=4, variant=variant, seed=1)
        masks = np.stack([data[i]["mask"] for i in range(len(data))])   # (256, 64, 64)
        values = [output_stride_bound(masks, 4, s) for s in strides]
        print(f"{variant:<10}" + "".join(f"  {v:.3f} " for v in values))


if __name__ == "__main__":
    _main()
