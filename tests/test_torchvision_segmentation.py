"""torchvision's deeplabv3_resnet50 and fcn_resnet50, layer for layer: state-dict keys and
shapes (against tables written by tests/data/torchvision/make_tables.py, so no
torch is needed), the heads on layer3 and layer4, and, where torch is installed, the same
scores as torchvision's models for the same weights."""
import functools
import pathlib
import sys


import numpy as np
import pytest

from edu_seg import models, nn
from edu_seg.autograd import Tensor, no_grad
from edu_seg.models import load_torchvision_state_dict
from edu_seg.models.backbones import TorchvisionWeightsError
from edu_seg.models.torchvision_segmentation import (IMAGENET_MEAN, IMAGENET_STD, DeepLabHead,
                                                  FCNHead, segment_photo)
from edu_seg.ops.resample import interpolate

NAMES = ["deeplabv3_resnet50", "fcn_resnet50"]
# the torchvision state-dict tables and their reader (tests/data/torchvision/make_tables.py)
sys.path.insert(0, str(pathlib.Path(__file__).parent / "data" / "torchvision"))
from make_tables import read_table  # noqa: E402
from helpers import assert_state_dict_is_torchvisions  # noqa: E402


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@functools.lru_cache(maxsize=None)
def full(name):
    """Each model is built once: 21 classes and the auxiliary head, as the tables."""
    nn.init.manual_seed(0)
    return models.create(name, num_classes=21, aux_loss=True)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_keys_order_shapes_and_parameter_count_equal_torchvisions(name):
    assert_state_dict_is_torchvisions(full(name), name)


def test_heads_are_torchvisions_and_the_backbone_is_resnet50_at_output_stride_8():
    deeplab, fcn = full("deeplabv3_resnet50"), full("fcn_resnet50")
    assert isinstance(deeplab.classifier, DeepLabHead) and isinstance(fcn.classifier, FCNHead)
    assert deeplab.classifier[0].atrous_rates == (12, 24, 36)
    assert [type(m).__name__ for m in fcn.aux_classifier] == [
        "Conv2d", "BatchNorm2d", "ReLU", "Dropout", "Conv2d"]
    assert fcn.aux_classifier[0].weight.shape == (256, 1024, 3, 3)      # layer3's channels
    assert fcn.classifier[0].weight.shape == (512, 2048, 3, 3)          # layer4's channels
    backbone = deeplab.backbone                         # replace_stride_with_dilation F, T, T
    assert backbone.stage_strides == [2, 4, 8, 8, 8] and deeplab.output_stride == 8
    assert [backbone.layer3[0].conv2.dilation, backbone.layer3[1].conv2.dilation,
            backbone.layer4[0].conv2.dilation, backbone.layer4[1].conv2.dilation] == \
        [(1, 1), (2, 2), (2, 2), (4, 4)]
    assert deeplab.aux_weights == {"aux": 0.5}


def test_training_returns_the_aux_scores_of_layer3_and_eval_only_the_main_scores():
    model = full("fcn_resnet50")
    seen = {}
    hooks = [model.backbone.layer3.register_forward_hook(
                 lambda m, args, y: seen.setdefault("layer3", y.data)),
             model.aux_classifier.register_forward_hook(
                 lambda m, args, y: seen.setdefault("aux_in", args[0].data))]
    x = Tensor(rand(2, 3, 16, 16))
    model.train()
    outputs = model(x)
    for h in hooks:
        h.remove()
    assert set(outputs) == {"out", "aux"}
    assert outputs["out"].shape == outputs["aux"].shape == (2, 21, 16, 16)
    np.testing.assert_array_equal(seen["aux_in"], seen["layer3"])
    assert seen["layer3"].shape == (2, 1024, 2, 2)                      # stride 8, dilated
    model.eval()
    with no_grad():
        assert isinstance(model(x), Tensor)


def test_without_aux_loss_only_the_aux_classifier_is_missing_and_loading_says_so():
    _, entries = read_table("fcn_resnet50")
    nn.init.manual_seed(0)
    model = models.create("fcn_resnet50", num_classes=21)
    assert list(model.state_dict()) == [k for k, _ in entries
                                        if not k.startswith("aux_classifier.")]
    with pytest.raises(TorchvisionWeightsError, match="aux_classifier.0.weight"):
        load_torchvision_state_dict(model, full("fcn_resnet50").state_dict())


# ------------------------------------------------------------------ torchvision, if present
def randomised_torchvision(name):
    """torchvision's model (weights=None) in eval mode with random batch-norm statistics."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = getattr(torchvision.models.segmentation, name)(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=True).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            C = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(C))
            m.running_var.copy_(0.5 + torch.rand(C))
            m.weight.data.copy_(0.5 + torch.rand(C))
            m.bias.data.copy_(0.1 * torch.randn(C))
    return model


def assert_close(got, expected, rtol=1e-4):
    """Equal up to ``rtol`` of the largest magnitude (float32 sums of many terms)."""
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= rtol * scale, (np.abs(got - expected).max(), scale)


@pytest.mark.parametrize("name", NAMES)
def test_torchvisions_weights_give_torchvisions_scores(name):
    torch = pytest.importorskip("torch")
    reference = randomised_torchvision(name)
    model = load_torchvision_state_dict(full(name), reference.state_dict()).eval()
    x = rand(1, 3, 64, 96, seed=1)                    # not square: H and W kept apart
    with torch.no_grad():
        expected = reference(torch.from_numpy(x))
    with no_grad():
        out = model(Tensor(x)).numpy()
        # torchvision returns "aux" in eval too; ours computes it only in training, so
        # compare its head on our layer3 directly
        aux = model.aux_classifier(model.backbone.stage_features(Tensor(x))[3])
        aux = interpolate(aux, size=(64, 96), mode="bilinear", align_corners=False).numpy()
    assert out.shape == (1, 21, 64, 96)
    assert_close(out, expected["out"].numpy())
    assert_close(aux, expected["aux"].numpy())


def test_segment_photo_normalises_pads_to_the_stride_and_crops_back():
    model = full("fcn_resnet50").eval()
    photo = np.random.default_rng(0).integers(0, 256, (21, 30, 3), dtype=np.uint8)
    labels = segment_photo(model, photo)
    assert labels.shape == (21, 30) and labels.dtype == np.int64
    x = np.zeros((1, 3, 24, 32), np.float32)           # padded to multiples of 8 with zeros
    x[0, :, :21, :30] = ((photo / 255 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    with no_grad():
        expected = model(Tensor(x)).data[0, :, :21, :30].argmax(axis=0)
    np.testing.assert_array_equal(labels, expected)


def test_segment_photo_refuses_what_it_cannot_read():
    model = full("fcn_resnet50").eval()
    with pytest.raises(ValueError, match=r"image must be an \(H, W, 3\) uint8 RGB array"):
        segment_photo(model, np.zeros((8, 8, 3), np.float32))
    model.train()
    try:
        with pytest.raises(ValueError, match="call model.eval"):
            segment_photo(model, np.zeros((8, 8, 3), np.uint8))
    finally:
        model.eval()
