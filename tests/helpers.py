"""Small helpers shared by the model tests (pytest puts this folder on ``sys.path``)."""
import pathlib
import sys

import numpy as np

import edu_seg
from edu_seg.autograd import Tensor, no_grad


def random_images(n, size=64, seed=0, channels=3):
    """``n`` standard-normal float32 images ``(n, channels, size, size)``, the same for a seed."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, channels, size, size)).astype(np.float32)


def record_forward(model, modules, x):
    """Run ``model`` on ``x`` without gradients; return (output, seen) where ``seen[key]`` is
    ``(first input array, output)`` of ``modules[key]`` at its FIRST call."""
    seen = {}

    def hook(key):
        return lambda m, args, y: seen.setdefault(key, (args[0].data, y))
    handles = [m.register_forward_hook(hook(k)) for k, m in modules.items()]
    try:
        with no_grad():
            out = model(Tensor(x))
    finally:
        for h in handles:
            h.remove()
    return out, seen


def assert_same_network_trained_on_the_final_ce(full, plain, heads, num_classes):
    """``plain`` (a ``no_deep_supervision`` preset) is ``full`` without its auxiliary
    ``heads`` (attribute names): no such modules, no ``aux_weights``, exactly the heads'
    parameters fewer, the same state-dict keys otherwise; in training it returns the scores
    alone, its loss is their plain cross-entropy; with ``full``'s shared weights loaded, the
    two give identical test-time scores."""
    from edu_seg.ops.loss import cross_entropy

    assert not any(hasattr(plain, h) for h in heads) and plain.aux_weights == {}
    assert full.aux_weights                              # the class's weights are untouched
    assert full.num_parameters() - plain.num_parameters() == \
        sum(getattr(full, h).num_parameters() for h in heads)
    shared = {k: v for k, v in full.state_dict().items()
              if not k.startswith(tuple(f"{h}." for h in heads))}
    assert list(plain.state_dict()) == list(shared)     # the same network, minus the heads

    x = random_images(2)
    scores, _ = record_forward(plain.train(), {}, x)
    assert isinstance(scores, Tensor) and scores.shape == (2, num_classes, 64, 64)
    mask = np.random.default_rng(1).integers(0, num_classes, (2, 64, 64))
    total, terms = plain.loss(scores, {"mask": mask})
    assert set(terms) == {"ce"}
    np.testing.assert_allclose(total.item(), cross_entropy(scores, mask).item(), rtol=1e-6)

    plain.load_state_dict(shared)                       # same weights -> same test-time scores
    np.testing.assert_array_equal(record_forward(plain.eval(), {}, x)[0].data,
                                  record_forward(full.eval(), {}, x)[0].data)


def assert_state_dict_is_torchvisions(model, name):
    """``model``'s state dict has torchvision's keys, order and shapes for model ``name``, and
    the same parameter count (the tables in ``tests/data/torchvision``)."""
    tables = str(pathlib.Path(__file__).parent / "data" / "torchvision")
    if tables not in sys.path:
        sys.path.insert(0, tables)
    from make_tables import read_table
    params, entries = read_table(name)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == entries
    assert model.num_parameters() == params


#: The label colours of :func:`make_camvid_folder`'s classes void, a, b, c.
CAMVID_COLOURS = [(0, 0, 0), (200, 30, 30), (30, 200, 30), (30, 30, 200)]


def make_camvid_folder(root, n_train, n_val, size=32, seed=4):
    """A CamVid-layout folder from Shapes scenes: ``train/``, ``val/``, their ``*_labels/``
    (RGB label images ``img<i>_L.png`` in :data:`CAMVID_COLOURS`) and ``class_dict.csv``."""
    from PIL import Image

    from edu_seg.data import Shapes

    root = pathlib.Path(root)
    root.mkdir(parents=True)
    (root / "class_dict.csv").write_text("name,r,g,b\n" + "".join(
        f"{name},{r},{g},{b}\n" for name, (r, g, b) in zip(("void", "a", "b", "c"),
                                                         CAMVID_COLOURS)))
    shapes = Shapes(n_train + n_val, size=size, seed=seed)
    for split, indices in (("train", range(n_train)), ("val", range(n_train, n_train + n_val))):
        (root / split).mkdir()
        (root / f"{split}_labels").mkdir()
        for i in indices:
            s = shapes[i]
            Image.fromarray((s["image"].transpose(1, 2, 0) * 255).astype(np.uint8)).save(
                root / split / f"img{i}.png")
            Image.fromarray(np.array(CAMVID_COLOURS, np.uint8)[s["mask"]]).save(
                root / f"{split}_labels" / f"img{i}_L.png")
    return root


def assert_thread_count_independent(compute):
    """``compute()`` returns a tuple of arrays; they must be bit-identical on 1 and 2 threads
    (the kernels' work items and the order of every sum depend on the shapes alone). Returns
    the 1-thread results."""
    out = {}
    for n in (1, 2):
        edu_seg.set_num_threads(n)
        out[n] = compute()
    for a, b in zip(out[1], out[2]):
        np.testing.assert_array_equal(a, b)
    return out[1]
