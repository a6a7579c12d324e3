"""Write the state-dict tables of torchvision's full-size segmentation models that
tests/test_torchvision_segmentation.py compares ours with (so that test runs without torch).

Run from the repository root, with torch and torchvision installed::

    python tests/data/torchvision/make_segmentation_tables.py

Each ``<model>.txt`` is the model built as ``<model>(weights=None, weights_backbone=None,
num_classes=21, aux_loss=True)``, in the format of make_tables.py here: a header line
``# torchvision <version> <model>(num_classes=21, aux_loss=True): <P> parameters, <E>
state_dict entries``, then one line ``key shape`` per state-dict entry in order (``-`` for a
0-d buffer).
"""
import pathlib

import torchvision

MODELS = ["deeplabv3_resnet50", "fcn_resnet50"]


def table(name):
    # random weights: only the names and shapes matter
    model = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None,
                                                            num_classes=21, aux_loss=True)
    state = model.state_dict()
    params = sum(p.numel() for p in model.parameters())
    lines = [f"# torchvision {torchvision.__version__} {name}(num_classes=21, aux_loss=True): "
             f"{params} parameters, {len(state)} state_dict entries"]
    for key, value in state.items():
        lines.append(f"{key} {','.join(map(str, value.shape)) or '-'}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    here = pathlib.Path(__file__).parent
    for name in MODELS:
        (here / f"{name}.txt").write_text(table(name))
        print("wrote", here / f"{name}.txt")
