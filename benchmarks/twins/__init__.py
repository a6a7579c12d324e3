"""PyTorch twins of the zoo's models: the same network built in PyTorch, for two checks.

A twin is a module ``benchmarks/twins/<model>.py`` with one function::

    def build(torch, num_classes, preset=None) -> torch.nn.Module

and a tuple ``CHECKED_PRESETS`` of the presets (the ablations) to check and time beside
the default. ``build`` builds the model ``edu_seg.models.create(<model>, num_classes=...,
preset=...)`` in PyTorch: the same layers under the same state-dict keys, and a forward that returns what
ours returns (the score Tensor; in training mode the same dict of named outputs). Loading our
weights into the twin must give the same scores, which

- checks our model against an independent implementation of the paper's network
  (``tests/test_twins.py``), and
- makes the speed comparison honest: ``benchmarks/bench_models.py`` times one training step
  of exactly the same network in both libraries.

The twin takes ``torch`` as an argument so that importing it needs no PyTorch, and it never
imports edu_seg: it is written from the paper, not derived from our code.
"""
import importlib.util
import pathlib

import numpy as np

HERE = pathlib.Path(__file__).parent

__all__ = ["available", "load", "checked_presets", "build_pair", "torch_loss"]


def available():
    """Names of the models that have a twin (the ``<model>.py`` files here; ``_name.py``
    files are shared parts), sorted."""
    return sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))


def load(name):
    """The twin module of model ``name``."""
    path = HERE / f"{name}.py"
    if not path.exists():
        raise ValueError(f"twins: no PyTorch twin for {name!r}; twins exist for "
                         f"{', '.join(available())}")
    spec = importlib.util.spec_from_file_location(f"twin_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def checked_presets(name):
    """``[None, *CHECKED_PRESETS]`` of model ``name``'s twin: the configs to check and time."""
    return [None, *load(name).CHECKED_PRESETS]


def build_pair(torch, name, num_classes=4, preset=None, seed=0):
    """Our model and its twin holding the same weights: ``(ours, twin)``.

    Our model is built with weight seed ``seed``; its state dict is copied into the twin with
    ``strict=True``, so a missing, extra or misshapen tensor is an error, not a silent skip.
    """
    from edu_seg import models, nn

    nn.init.manual_seed(seed)
    ours = models.create(name, preset=preset, num_classes=num_classes)
    twin = load(name).build(torch, num_classes, preset=preset)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ours.state_dict().items()}
    twin.load_state_dict(state, strict=True)
    return ours, twin


def torch_loss(torch, model, outputs, target):
    """Our default loss in PyTorch: CE on ``"out"`` + ``aux_weights[k]`` x CE of each head.

    ``model`` is OUR model (for its ``aux_weights``); heads coarser than the target are
    resized bilinearly, as :meth:`edu_seg.models.SegmentationModel.loss` does.
    """
    F = torch.nn.functional
    outputs = outputs if isinstance(outputs, dict) else {"out": outputs}
    total = F.cross_entropy(outputs["out"], target)
    for key, scores in outputs.items():
        if key == "out":
            continue
        if scores.shape[-2:] != target.shape[-2:]:
            scores = F.interpolate(scores, size=target.shape[-2:], mode="bilinear",
                                   align_corners=False)
        total = total + model.aux_weights[key] * F.cross_entropy(scores, target)
    return total
