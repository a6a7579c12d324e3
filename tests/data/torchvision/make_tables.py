"""Write the state-dict tables of torchvision's full-size models that tests/test_backbones.py
compares our full-size backbones with (so that test runs without torch).

Run from the repository root, with torch and torchvision installed::

    python tests/data/torchvision/make_tables.py

Each ``<model>.txt`` has a header line ``# torchvision <version> <model>(): <P> parameters,
<E> state_dict entries``, then one line ``key shape`` per state-dict entry in order, the
shape's sizes joined by commas (``-`` for a 0-d buffer such as ``num_batches_tracked``), e.g.
``layer1.0.conv1.weight 64,64,3,3``.
"""
import pathlib

import torchvision

MODELS = ["vgg16", "vgg16_bn", "resnet18", "resnet50", "mobilenet_v2", "densenet121"]


def table(name):
    model = getattr(torchvision.models, name)()          # random weights: only shapes matter
    state = model.state_dict()
    params = sum(p.numel() for p in model.parameters())
    lines = [f"# torchvision {torchvision.__version__} {name}(): {params} parameters, "
             f"{len(state)} state_dict entries"]
    for key, value in state.items():
        lines.append(f"{key} {','.join(map(str, value.shape)) or '-'}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    here = pathlib.Path(__file__).parent
    for name in MODELS:
        (here / f"{name}.txt").write_text(table(name))
        print("wrote", here / f"{name}.txt")
