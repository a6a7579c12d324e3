"""Write the state-dict tables of torchvision's full-size models that tests/test_backbones.py
and tests/test_torchvision_segmentation.py compare ours with (so those tests run without torch).

Run from the repository root, with torch and torchvision installed::

    python tests/data/torchvision/make_tables.py

Each ``<model>.txt`` has a header line ``# torchvision <version> <model>(<arguments>): <P>
parameters, <E> state_dict entries``, then one line ``key shape`` per state-dict entry in
order, the shape's sizes joined by commas (``-`` for a 0-d buffer such as
``num_batches_tracked``), e.g. ``layer1.0.conv1.weight 64,64,3,3``. :func:`read_table` reads
one back.
"""
import pathlib
import re

HERE = pathlib.Path(__file__).parent

#: Classification models, built with their defaults (1000 ImageNet classes).
CLASSIFIERS = ["vgg16", "vgg16_bn", "resnet18", "resnet50", "mobilenet_v2", "densenet121"]
#: Segmentation models, built as torchvision's pretrained ones are: 21 classes, aux head.
SEGMENTERS = ["deeplabv3_resnet50", "fcn_resnet50"]


def table(name):
    import torchvision

    if name in SEGMENTERS:
        arguments = "num_classes=21, aux_loss=True"
        model = getattr(torchvision.models.segmentation, name)(
            weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    else:
        arguments = ""
        model = getattr(torchvision.models, name)()      # random weights: only shapes matter
    state = model.state_dict()
    params = sum(p.numel() for p in model.parameters())
    lines = [f"# torchvision {torchvision.__version__} {name}({arguments}): {params} "
             f"parameters, {len(state)} state_dict entries"]
    for key, value in state.items():
        lines.append(f"{key} {','.join(map(str, value.shape)) or '-'}")
    return "\n".join(lines) + "\n"


def read_table(name):
    """``(parameters, [(key, shape), ...])`` of ``<name>.txt``, in state-dict order."""
    lines = (HERE / f"{name}.txt").read_text().splitlines()
    params = int(re.search(r"(\d+) parameters", lines[0]).group(1))
    entries = []
    for line in lines[1:]:
        key, shape = line.split()
        entries.append((key, () if shape == "-" else tuple(map(int, shape.split(",")))))
    return params, entries


if __name__ == "__main__":
    for name in CLASSIFIERS + SEGMENTERS:
        (HERE / f"{name}.txt").write_text(table(name))
        print("wrote", HERE / f"{name}.txt")
