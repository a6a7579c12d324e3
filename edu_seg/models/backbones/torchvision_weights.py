"""Load torchvision's (ImageNet-pretrained) weights into the full-size backbones.

The full-size presets are built so that their ``state_dict()`` has EXACTLY torchvision's keys
and shapes, so loading is mostly copying arrays. :func:`load_torchvision_state_dict` is the
one place where the two naming schemes would be reconciled; today it only needs to know
what old checkpoints on disk look like.
"""
import re

import numpy as np

from ...nn import StateDictError

__all__ = ["load_torchvision_state_dict", "TorchvisionWeightsError"]


class TorchvisionWeightsError(StateDictError):
    """The checkpoint does not fit the backbone: the message names every missing, unexpected
    and mis-shaped key (with both shapes). A KeyError and a ValueError, like StateDictError."""


# DenseNet checkpoints saved before PyTorch 0.4 named the dense layers' modules "norm.1",
# "conv.2" ...; a dot is no longer allowed in a module name, so torchvision renames them to
# "norm1", "conv2" when it loads them (torchvision.models.densenet._load_state_dict). Its
# published densenet121 weights are such a checkpoint.
_OLD_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                               r"((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _to_numpy(key, value):
    """A NumPy array from an ndarray, a torch tensor (without importing torch) or a Tensor."""
    if hasattr(value, "detach"):              # a torch tensor: leave autograd and the GPU
        value = value.detach().cpu()
    if hasattr(value, "numpy"):
        try:
            value = value.numpy()
        except TypeError as err:              # e.g. bfloat16, which NumPy has no dtype for
            raise TypeError(f"load_torchvision_state_dict: cannot convert {key!r} to a NumPy "
                            f"array ({err}); convert the tensors with .float() first") from None
    return np.asarray(value)


def load_torchvision_state_dict(model, state_dict):
    """Copy torchvision's weights (a state dict) into a full-size backbone of this package.

    Parameters
    ----------
    model : Backbone or SegmentationModel
        Built by :func:`create_backbone` with a torchvision name (``resnet18``, ``resnet50``,
        ``vgg16``, ``vgg16_bn``, ``mobilenet_v2``, ``densenet121``; the config may change
        anything that does not change a weight's shape: ``output_stride``,
        ``replace_stride_with_dilation``, ``multi_grid``, ``num_classes=None``), or one of
        torchvision's segmentation models built by ``create("deeplabv3_resnet50", ...)`` or
        ``create("fcn_resnet50", ...)``.
    state_dict : mapping of str to array
        The state dict of the matching torchvision classification model: NumPy arrays (an
        ``.npz`` opened with ``np.load``), or torch tensors (converted with
        ``.detach().cpu().numpy()``; torch itself is not imported here). It may be the
        state dict of the FULL model even when the backbone was built without a classifier
        (``num_classes=None``): the classifier's keys (``fc.*`` or ``classifier.*``) are
        then skipped. Two features of older checkpoints are handled as PyTorch and
        torchvision do: DenseNet keys ``denselayerN.norm.1.weight`` become
        ``denselayerN.norm1.weight``, and a missing BatchNorm ``num_batches_tracked`` (saved
        before PyTorch 0.4.1) is set to 0.

    Returns
    -------
    model
        The same backbone, its parameters and buffers now torchvision's values, cast to the
        model's dtype. Call ``model.eval()`` before using it: in training mode batch norm
        would use the statistics of your batch instead of ImageNet's running ones.

    Raises
    ------
    TorchvisionWeightsError
        (a :class:`edu_seg.nn.StateDictError`) naming every missing and unexpected key and
        every shape mismatch with both shapes; nothing is loaded then.

    Examples
    --------
    Get the weights once, with torch installed (from torchvision, or a ``.pth`` file)::

        import numpy as np, torch, torchvision
        weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
        state = torchvision.models.resnet50(weights=weights).state_dict()
        # or: state = torch.load("resnet50-11ad3fa6.pth")
        np.savez("resnet50.npz", **{k: v.numpy() for k, v in state.items()})

    (``state`` itself can be passed too.) Then, with or without torch, a real pretrained
    network runs in from-scratch code::

        import numpy as np
        from edu_seg import Tensor
        from edu_seg.models.backbones import create_backbone, load_torchvision_state_dict

        model = create_backbone("resnet50")
        load_torchvision_state_dict(model, np.load("resnet50.npz"))
        model.eval()
        # images: (N, 3, 224, 224) RGB in [0, 1], normalised as ImageNet's training was
        mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
        std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
        x = Tensor((images - mean) / std)
        model.classify(x).argmax(axis=1)      # ImageNet class indices
        model.features(x)[32].shape           # (N, 2048, 7, 7): what a decoder reads

    For a segmentation backbone at output stride 8, build
    ``create_backbone("resnet50", output_stride=8, num_classes=None)`` and load the same
    file: dilation changes no weight, and the classifier's keys are skipped.
    """
    own = {name: p.data for name, p in model.named_parameters()}
    own.update(model.named_buffers())
    # torchvision's names -> ours: the identity, except for old DenseNet keys.
    arrays = {}
    for key, value in state_dict.items():
        arrays[_OLD_DENSENET_KEY.sub(r"\1\2", key)] = _to_numpy(key, value)
    # The classifier of a full model, when the backbone was built without one.
    head = model.torchvision_head
    if head is not None and head not in dict(model.named_children()):
        arrays = {k: v for k, v in arrays.items() if not k.startswith(head + ".")}
    # num_batches_tracked of a batch norm whose statistics the checkpoint does have.
    for key, value in own.items():
        if key.endswith(".num_batches_tracked") and key not in arrays \
                and key.replace("num_batches_tracked", "running_mean") in arrays:
            arrays[key] = np.zeros_like(value)
    arrays = {k: v.astype(own[k].dtype, copy=False) if k in own else v
              for k, v in arrays.items()}
    try:
        model.load_state_dict(arrays)
    except StateDictError as err:
        name = model.name or type(model).__name__
        raise TorchvisionWeightsError(
            f"load_torchvision_state_dict: the checkpoint does not fit {name} (is it the "
            f"state dict of the matching torchvision model, with as many classes and input "
            f"channels?): {err}") from None
    return model
