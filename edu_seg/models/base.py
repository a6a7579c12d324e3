"""The base classes every model of the zoo derives from, and the contract they keep.

Two kinds of model share one training loop:

- :class:`SegmentationModel` (semantic segmentation: one class per pixel). ``forward(x)``
  returns the class scores ``(N, num_classes, H, W)`` at the input's resolution. A model with
  extra heads (an auxiliary classifier, a boundary branch) returns, in TRAINING mode only, a
  dict of named outputs ``{"out": scores, "aux": ..., ...}``; in eval mode it always returns
  the plain score Tensor, so evaluation, prediction and export never see the extra heads.
- :class:`InstanceSegmentationModel` (one mask per object): in training ``forward(x,
  targets)`` returns a dict of named loss Tensors; in eval ``forward(x)`` returns one dict per
  image ``{"boxes": (K, 4), "labels": (K,), "scores": (K,), "masks": (K, H, W)}``.

Either way the model owns its loss, as nanoGPT's model and torchvision's detection models do.
The Trainer runs exactly two calls per step::

    outputs = model.forward_train(batch)                 # what forward gives in training mode
    total, terms = model.loss(outputs, batch)            # total: a scalar Tensor to backprop
                                                         # terms: {"ce": ..., "aux": ...} to log

and never looks inside ``outputs``. A new architecture with new heads overrides ``loss`` (and,
for instance models, ``forward_train``) in its own file; nothing else changes.
"""
import math


from .. import nn
from ..backend import contiguous
from ..autograd import Tensor
from ..ops.loss import cross_entropy
from ..ops.resample import interpolate
from .config import validate_config

__all__ = ["SegmentationModel", "InstanceSegmentationModel", "crop_target"]


class SegmentationModel(nn.Module):
    """Base class of the semantic models: an ``nn.Module`` with a config and an output stride.

    A model maps images ``x: (N, in_channels, H, W)`` to class scores
    ``(N, num_classes, H, W)``. Subclasses set :attr:`config_class` (a dataclass whose
    defaults are the small CPU-trainable version) and :attr:`output_stride`, call
    :meth:`check_input_size` first thing in ``forward``, and override :meth:`loss` only if the
    default below does not fit their heads.

    Attributes
    ----------
    name : str
        The registry name (set by :func:`edu_seg.models.register`); saved in checkpoints.
    config_class : type
        The dataclass of the model's hyper-parameters; its defaults are the small version.
    presets : dict of str to dict
        Named configs, e.g. ``{"paper": {"depth": 4, "base_width": 64}}``:
        ``create(name, num_classes=K, preset="paper")``.
    config : dataclass instance
        The hyper-parameters this model was built with; saved in checkpoints.
    output_stride : int
        How many input pixels one step of the coarsest feature map spans. ``H`` and ``W``
        must be multiples of it, or the down- and up-sampling paths would produce maps of
        different sizes where they meet.
    aux_weights : dict of str to float
        Weight of each extra named output in the default :meth:`loss` (``{"aux": 0.4}`` is
        PSPNet's choice). A named output without a weight is an error, not a silent zero.
    task : str
        ``"semantic"`` here, ``"instance"`` for :class:`InstanceSegmentationModel`.
    small_version : bool
        True when ``create(name, num_classes=K)`` gives a model that trains on a CPU in
        minutes (every model of the course). False for models that exist only at full size
        to load published weights (``deeplabv3_resnet50``); the zoo does not train those.
    """

    name = None
    config_class = None
    presets = {}
    output_stride = 1
    aux_weights = {}
    task = "semantic"
    small_version = True

    def __init__(self, config):
        super().__init__()
        validate_config(config)
        self.config = config

    # ------------------------------------------------------------------------ the contract
    def forward_train(self, batch):
        """What the Trainer calls in training mode: ``self(images)`` for a semantic model.

        Parameters
        ----------
        batch : dict
            ``image``: (N, C, H, W) float array, ``mask``: (N, H, W) int array.
        """
        return self(Tensor(batch["image"]))

    def loss(self, outputs, batch, ignore_index=-100):
        """Cross-entropy on the main scores plus the weighted terms of the extra heads.

        Parameters
        ----------
        outputs : Tensor or dict of Tensors
            What ``forward`` returned: scores ``(N, K, OH, OW)``, or ``{"out": scores,
            name: scores, ...}`` in training mode. Every extra output is scored against the
            same mask, resized to the mask's size bilinearly if it is smaller.
        batch : dict
            ``mask``: (N, H, W) int class indices (centre-cropped to OH x OW when the scores
            are smaller, as with a U-Net of valid convolutions).
        ignore_index : int
            Mask value that contributes nothing.

        Returns
        -------
        total : Tensor, shape ()
            ``ce + sum(aux_weights[name] * term[name])``.
        terms : dict of str to Tensor
            The unweighted terms: ``{"ce": ..., "aux": ...}`` (what the Trainer logs).
        """
        outputs = outputs if isinstance(outputs, dict) else {"out": outputs}
        masks = crop_target(batch["mask"], outputs["out"].shape[-2:])
        terms = {"ce": cross_entropy(outputs["out"], masks, ignore_index=ignore_index)}
        total = terms["ce"]
        for key, scores in outputs.items():
            if key == "out":
                continue
            if key not in self.aux_weights:
                raise ValueError(f"{self.name}.loss: output {key!r} has no weight; add it to "
                                 f"{type(self).__name__}.aux_weights or override loss()")
            if scores.shape[-2:] != masks.shape[-2:]:
                scores = interpolate(scores, size=masks.shape[-2:], mode="bilinear",
                                     align_corners=False)
            terms[key] = cross_entropy(scores, masks, ignore_index=ignore_index)
            total = total + self.aux_weights[key] * terms[key]
        return total, terms

    # ------------------------------------------------------------------------- input sizes
    def check_input_size(self, shape):
        """Raise a ``ValueError`` unless ``shape = (N, C, H, W)`` fits the model.

        The message names the size to pad to, e.g. ``unet: input 64x60 is not divisible by
        the model's output stride 8: pad to 64x64``.
        """
        if len(shape) != 4:
            raise ValueError(f"{self.name}: expected an input of shape (N, C, H, W), "
                             f"got shape {tuple(shape)}")
        C, H, W = shape[1:]
        expected = getattr(self.config, "in_channels", C)
        if C != expected:
            raise ValueError(f"{self.name}: input has {C} channels but the model was built "
                             f"with in_channels={expected}")
        s = self.output_stride
        if H % s or W % s:
            raise ValueError(f"{self.name}: input {H}x{W} is not divisible by the model's "
                             f"output stride {s}: pad to {self.input_size_for(H)}x"
                             f"{self.input_size_for(W)}")

    def output_size(self, size):
        """Height (or width) of the score map for an input of height (or width) ``size``."""
        return size

    def input_size_for(self, size):
        """The smallest input size the model accepts whose score map covers ``size`` pixels."""
        return math.ceil(size / self.output_stride) * self.output_stride


class InstanceSegmentationModel(SegmentationModel):
    """Base class of the instance models (one mask per object, e.g. Mask R-CNN).

    In training, ``forward(x, targets)`` returns a dict of named loss Tensors (the model
    samples anchors and proposals against ``targets``, so it needs them in forward); in eval,
    ``forward(x)`` returns one dict per image: ``boxes`` (K, 4) float ``(x1, y1, x2, y2)``,
    ``labels`` (K,) int, ``scores`` (K,) float and ``masks`` (K, H, W) float in [0, 1].

    Attributes
    ----------
    loss_weights : dict of str to float
        Weight of each named loss term in :meth:`loss` (default 1 for terms not listed).
    """

    task = "instance"
    loss_weights = {}

    def forward_train(self, batch):
        """``self(images, targets)`` with the batch's per-image ``boxes``, ``labels`` and
        ``instance_masks`` (what :class:`edu_seg.data.Shapes` yields), given to the model as
        ``{"boxes", "labels", "masks"}``."""
        targets = [{"boxes": batch["boxes"][i], "labels": batch["labels"][i],
                    "masks": batch["instance_masks"][i]} for i in range(len(batch["image"]))]
        return self(Tensor(batch["image"]), targets)

    def loss(self, outputs, batch, ignore_index=-100):
        """The weighted sum of the loss dict that ``forward`` returned in training mode."""
        terms = dict(outputs)
        total = None
        for key, term in terms.items():
            weighted = self.loss_weights.get(key, 1.0) * term
            total = weighted if total is None else total + weighted
        return total, terms


def crop_target(masks, size):
    """Centre-crop masks ``(N, H, W)`` to the score map's ``size = (OH, OW)``.

    Only models whose output is smaller than their input need it (a U-Net of valid
    convolutions predicts the centre of its input tile).
    """
    H, W = masks.shape[-2:]
    h, w = size
    if (h, w) == (H, W):
        return masks
    top, left = (H - h) // 2, (W - w) // 2
    return contiguous(masks[..., top:top + h, left:left + w])

