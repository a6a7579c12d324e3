"""edu_seg.data: Shapes, FolderDataset, DataLoader and the joint image/mask transforms."""
import os

import numpy as np
import pytest

from edu_seg.data import (NONCONVEX, SHAPES, VARIANTS, ColorJitter, Compose, DataLoader,
                          FolderDataset, RandomCrop, RandomFlip, RandomScale, Shapes)
from edu_seg.boxes import masks_to_boxes
from edu_seg.data.folder import read_rgb
from edu_seg.data.transforms import resize_bilinear, resize_nearest

Image = pytest.importorskip("PIL.Image")


# ------------------------------------------------------------------------------- helpers
def boxes_by_loops(masks):
    """Tight (x1, y1, x2, y2) pixel-edge boxes computed the slow, obvious way."""
    out = []
    for m in masks:
        ys, xs = np.nonzero(m)
        out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.array(out, np.float32).reshape(-1, 4)


def check_consistent(s, num_classes):
    """The invariants every sample with instances must satisfy."""
    image, mask, inst = s["image"], s["mask"], s["instance_masks"]
    H, W = mask.shape
    K = len(s["labels"])
    assert image.dtype == np.float32 and image.shape == (3, H, W)
    assert mask.dtype == np.int64 and inst.dtype == np.bool_ and inst.shape == (K, H, W)
    assert s["boxes"].dtype == np.float32 and s["boxes"].shape == (K, 4)
    assert s["labels"].dtype == np.int64
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert ((mask >= 0) & (mask < num_classes)).all()
    assert ((s["labels"] >= 1) & (s["labels"] < num_classes)).all()
    # Visible instance masks are disjoint, non-empty, and their union by class IS the mask.
    assert (inst.sum(axis=0) <= 1).all()
    assert inst.reshape(K, -1).any(axis=1).all()
    rebuilt = np.zeros((H, W), np.int64)
    for m, c in zip(inst, s["labels"]):
        rebuilt[m] = c
    np.testing.assert_array_equal(rebuilt, mask)
    np.testing.assert_array_equal(s["boxes"], boxes_by_loops(inst))


def erode3x3(m):
    """Pixels whose whole 3x3 neighbourhood is inside the mask (H, W)."""
    out = np.zeros_like(m)
    H, W = m.shape
    core = np.ones((H - 2, W - 2), bool)
    for dy in range(3):
        for dx in range(3):
            core &= m[dy:dy + H - 2, dx:dx + W - 2]
    out[1:-1, 1:-1] = core
    return out


def touches(a, b):
    """True if a pixel of mask a is 4-adjacent to a pixel of mask b."""
    return bool((a[1:] & b[:-1]).any() or (a[:-1] & b[1:]).any()
                or (a[:, 1:] & b[:, :-1]).any() or (a[:, :-1] & b[:, 1:]).any())


# -------------------------------------------------------------------------------- Shapes
def test_masks_to_boxes_uses_pixel_edges():
    full = np.ones((1, 5, 7), bool)
    np.testing.assert_array_equal(masks_to_boxes(full), [[0, 0, 7, 5]])
    m = np.zeros((2, 6, 6), bool)
    m[0, 2, 3] = True
    m[1, 1:4, 0:2] = True
    np.testing.assert_array_equal(masks_to_boxes(m), [[3, 2, 4, 3], [0, 1, 2, 4]])
    assert masks_to_boxes(np.zeros((0, 4, 4), bool)).shape == (0, 4)


def test_shapes_is_deterministic_per_seed_and_index():
    a, b = Shapes(10, seed=3), Shapes(500, seed=3)
    for i in (0, 4, 9):
        sa, sb, again = a[i], b[i], a[i]
        for key in sa:  # the same whether made alone, in a bigger dataset, or twice
            np.testing.assert_array_equal(sa[key], sb[key])
            np.testing.assert_array_equal(sa[key], again[key])
    assert not np.array_equal(a[0]["image"], a[1]["image"])
    assert not np.array_equal(a[0]["image"], Shapes(10, seed=4)[0]["image"])
    np.testing.assert_array_equal(a[-1]["image"], a[9]["image"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_generates_consistent_samples(variant):
    C = 4
    ds = Shapes(60, size=48, num_classes=C, variant=variant, seed=1)
    counts = np.zeros(C, int)
    for i in range(len(ds)):
        s = ds[i]
        check_consistent(s, C)
        assert s["image"].shape == (3, 48, 48)
        counts += np.bincount(s["mask"].ravel(), minlength=C)
    assert (counts > 0).all(), f"{variant}: every class should appear, got pixel counts {counts}"


@pytest.mark.parametrize("variant,num_classes", [("default", 2), ("default", 1 + len(SHAPES)),
                                                 ("context", 3), ("context", len(SHAPES) + 1),
                                                 ("thin", 7), ("boundary", 7), ("scale", 7)])
def test_class_counts_at_the_limits(variant, num_classes):
    ds = Shapes(30, num_classes=num_classes, variant=variant)
    assert len(ds.class_names) == num_classes and ds.class_names[0] == "background"
    seen = set()
    for i in range(len(ds)):
        s = ds[i]
        check_consistent(s, num_classes)
        seen.update(s["labels"].tolist())
    assert seen == set(range(1, num_classes))


def test_default_objects_and_colour_do_not_give_away_the_class():
    ds = Shapes(300, num_classes=4, seed=0, max_objects=4)
    colours, labels, counts = [], [], []
    for i in range(len(ds)):
        s = ds[i]
        counts.append(len(s["labels"]))
        for m, c in zip(s["instance_masks"], s["labels"]):
            colours.append(s["image"][:, m].mean(axis=1))
            labels.append(c)
    colours, labels = np.array(colours), np.array(labels)
    assert 1 <= min(counts) and max(counts) <= 4
    # Nearest class-mean colour must do little better than chance (1/3): shape decides.
    centroids = np.stack([colours[labels == c].mean(axis=0) for c in (1, 2, 3)])
    guess = 1 + np.argmin(((colours[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (guess == labels).mean() < 0.5


def test_scale_variant_spans_tiny_to_huge_objects():
    ds = Shapes(200, size=64, variant="scale", seed=0)
    areas = [m.sum() for i in range(len(ds)) for m in ds[i]["instance_masks"]]
    assert min(areas) <= 12            # a 3 px object is about 7-9 pixels
    assert max(areas) >= 0.4 * 64 * 64


def test_context_twins_look_alike_and_depend_on_the_region():
    ds = Shapes(200, size=64, num_classes=4, variant="context", seed=0)
    both = 0
    for i in range(len(ds)):
        s = ds[i]
        twins = [(m, c) for m, c in zip(s["instance_masks"], s["labels"]) if c in (1, 2)]
        if {c for _, c in twins} == {1, 2}:
            both += 1
            means = np.array([s["image"][:, m].mean(axis=1) for m, _ in twins])
            # same colour: differences are only the noise averaged over the object
            assert np.abs(means - means[0]).max() < 0.02
            # same shape: circles, so the area fills about pi/4 of the box
            for m, _ in twins:
                x1, y1, x2, y2 = masks_to_boxes(m[None])[0]
                assert 0.7 < m.sum() / ((x2 - x1) * (y2 - y1)) < 0.9
    assert both >= 10  # scenes that hold both twins are common


def test_thin_variant_has_only_thin_strokes():
    ds = Shapes(60, size=64, variant="thin", seed=0)
    nested = 0
    for i in range(len(ds)):
        s = ds[i]
        for m, c in zip(s["instance_masks"], s["labels"]):
            # A stroke 1-2 px wide contains no 3x3 block, except in the sharp corners of a
            # triangle, where the bands along its two edges meet and fill the tip.
            thick = erode3x3(m).sum()
            assert thick == 0 if c != 3 else thick <= 0.05 * m.sum()
        boxes = s["boxes"]
        for a in range(len(boxes)):
            for b in range(len(boxes)):
                inside = (boxes[b, :2] > boxes[a, :2]).all() and (boxes[b, 2:] < boxes[a, 2:]).all()
                nested += a != b and inside
    assert nested >= 10  # nested copies (separated by 1-2 px gaps) are common


def test_boundary_variant_objects_touch():
    ds = Shapes(100, size=64, variant="boundary", seed=0)
    scenes = ok = 0
    for i in range(len(ds)):
        inst = ds[i]["instance_masks"]
        if len(inst) < 2:
            continue
        scenes += 1
        ok += all(any(touches(inst[a], inst[b]) for b in range(len(inst)) if b != a)
                  for a in range(len(inst)))
    assert scenes >= 80 and ok >= 0.95 * scenes


def test_nonconvex_variant_objects_fill_half_their_box():
    # What makes the variant useful for weak supervision: a filled box is a poor mask.
    ds = Shapes(100, size=64, variant="nonconvex", seed=0)
    assert ds.class_names == ["background", *NONCONVEX]
    fill = {c: [] for c in range(1, 4)}
    for i in range(len(ds)):
        s = ds[i]
        for m, (x1, y1, x2, y2), c in zip(s["instance_masks"], s["boxes"].astype(int),
                                           s["labels"]):
            if m.sum() >= 20:                      # occluded slivers say nothing
                fill[int(c)].append(m.sum() / ((x2 - x1) * (y2 - y1)))
    for c, values in fill.items():
        assert len(values) >= 40 and 0.3 < np.median(values) < 0.65, (c, np.median(values))


def test_shapes_validation():
    with pytest.raises(ValueError, match=r"variant must be one of"):
        Shapes(5, variant="tiny")
    with pytest.raises(ValueError, match=r"supports num_classes up to 8, got 9"):
        Shapes(5, num_classes=9)
    with pytest.raises(ValueError, match=r"supports num_classes up to 4, got 5"):
        Shapes(5, num_classes=5, variant="nonconvex")
    with pytest.raises(ValueError, match=r"num_classes must be an int >= 3, got 2"):
        Shapes(5, num_classes=2, variant="context")
    with pytest.raises(ValueError, match=r"size must be an int >= 16, got 8"):
        Shapes(5, size=8)
    with pytest.raises(ValueError, match=r"max_objects must be an int >= 1"):
        Shapes(5, max_objects=0)
    ds = Shapes(5)
    with pytest.raises(IndexError, match=r"index 5 out of range for 5 samples"):
        ds[5]
    with pytest.raises(TypeError, match=r"index must be an int"):
        ds[1.0]


# ------------------------------------------------------------------------- FolderDataset
CLASSES = [("Sky", (128, 128, 128)), ("Road", (128, 64, 128)), ("Car", (64, 0, 128))]


def write_png(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path)


def make_camvid(root, H=5, W=6):
    """A tiny dataset: train (2 RGB images, one label with the _L suffix), val (grayscale
    image, palette label), test (RGBA image). Returns the expected class-id masks by stem."""
    rng = np.random.default_rng(0)
    colours = np.array([c for _, c in CLASSES], np.uint8)
    with open(root / "class_dict.csv", "w") as f:
        f.write("name,r,g,b\n" + "".join(f"{n},{r},{g},{b}\n" for n, (r, g, b) in CLASSES))
    expected = {}
    for split in ("train", "val", "test"):
        (root / split).mkdir()
        (root / f"{split}_labels").mkdir()
    for split, stem, label_name, kind in [("train", "a", "a.png", "rgb"),
                                          ("train", "b", "b_L.png", "rgb"),
                                          ("val", "c", "c.png", "gray"),
                                          ("test", "d", "d_L.png", "rgba")]:
        ids = rng.integers(0, 3, size=(H, W))
        expected[stem] = ids
        if kind == "gray":
            write_png(root / split / f"{stem}.png", rng.integers(0, 256, (H, W), dtype=np.uint8))
            pal = Image.fromarray(ids.astype(np.uint8), mode="P")  # a palette label image
            pal.putpalette(colours.ravel().tolist())
            pal.save(root / f"{split}_labels" / label_name)
            continue
        channels = 4 if kind == "rgba" else 3
        write_png(root / split / f"{stem}.png",
                  rng.integers(0, 256, (H, W, channels), dtype=np.uint8))
        write_png(root / f"{split}_labels" / label_name, colours[ids])
    (root / "train" / "notes.txt").write_text("not an image")  # ignored
    return expected


def test_folder_dataset_reads_images_and_labels(tmp_path):
    expected = make_camvid(tmp_path)
    ds = FolderDataset(tmp_path, "train")
    assert len(ds) == 2 and ds.class_names == ["Sky", "Road", "Car"] and ds.num_classes == 3
    for i, stem in enumerate("ab"):  # "b" has its label as b_L.png
        s = ds[i]
        raw = np.asarray(Image.open(tmp_path / "train" / f"{stem}.png"))
        assert s["image"].dtype == np.float32 and s["image"].shape == (3, 5, 6)
        assert s["image"].flags.c_contiguous
        np.testing.assert_allclose(s["image"], raw.transpose(2, 0, 1) / 255.0, atol=1e-7)
        assert s["mask"].dtype == np.int64
        np.testing.assert_array_equal(s["mask"], expected[stem])


def test_folder_dataset_grayscale_palette_and_rgba(tmp_path):
    expected = make_camvid(tmp_path)
    val = FolderDataset(tmp_path, "val")[0]  # grayscale image, palette-mode label
    assert val["image"].shape == (3, 5, 6)
    np.testing.assert_array_equal(val["image"][0], val["image"][1])
    np.testing.assert_array_equal(val["mask"], expected["c"])
    test = FolderDataset(tmp_path, "test")[0]  # RGBA image: alpha dropped
    raw = np.asarray(Image.open(tmp_path / "test" / "d.png"))
    assert test["image"].shape == (3, 5, 6)
    np.testing.assert_allclose(test["image"], raw[..., :3].transpose(2, 0, 1) / 255.0,
                               atol=1e-7)
    np.testing.assert_array_equal(test["mask"], expected["d"])


def test_folder_dataset_transform_is_fixed_per_index(tmp_path):
    make_camvid(tmp_path)
    ds = FolderDataset(tmp_path, "train", transform=RandomCrop(3))
    a, b = ds[0], ds[0]
    assert a["image"].shape == (3, 3, 3) and a["mask"].shape == (3, 3)
    np.testing.assert_array_equal(a["image"], b["image"])


def test_folder_missing_split_names_the_folder(tmp_path):
    make_camvid(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"split 'valid'.*valid"):
        FolderDataset(tmp_path, "valid")
    os.rename(tmp_path / "val_labels", tmp_path / "val_lbl")
    with pytest.raises(FileNotFoundError, match=r"val_labels"):
        FolderDataset(tmp_path, "val")
    with pytest.raises(FileNotFoundError, match=r"root folder not found"):
        FolderDataset(tmp_path / "nowhere")


def test_folder_image_without_label_is_named(tmp_path):
    make_camvid(tmp_path)
    os.remove(tmp_path / "train_labels" / "b_L.png")
    with pytest.raises(FileNotFoundError, match=r"image .*b\.png has no label: expected b\.png "
                                                r"or b_L\.png"):
        FolderDataset(tmp_path, "train")


def test_folder_unknown_label_colour_names_file_and_colour(tmp_path):
    make_camvid(tmp_path)
    label = np.asarray(Image.open(tmp_path / "train_labels" / "a.png")).copy()
    label[2, 4] = (1, 2, 3)
    write_png(tmp_path / "train_labels" / "a.png", label)
    ds = FolderDataset(tmp_path, "train")
    with pytest.raises(ValueError, match=r"a\.png: unknown label colour \(1, 2, 3\) at pixel "
                                         r"\(row 2, col 4\)"):
        ds[0]
    label[2, 4] = (255, 255, 255)  # larger than every class colour (the searchsorted edge)
    write_png(tmp_path / "train_labels" / "a.png", label)
    with pytest.raises(ValueError, match=r"unknown label colour \(255, 255, 255\)"):
        ds[0]


def test_folder_size_mismatch(tmp_path):
    make_camvid(tmp_path)
    write_png(tmp_path / "train_labels" / "a.png", np.full((4, 6, 3), 128, np.uint8))
    with pytest.raises(ValueError, match=r"image .*a\.png is 6x5 \(WxH\) but its label "
                                         r".*a\.png is 6x4"):
        FolderDataset(tmp_path, "train")[0]


@pytest.mark.parametrize("content,message", [
    ("", r"header must be 'name,r,g,b', got 'an empty file'"),
    ("label,red,green,blue\nSky,1,2,3\n", r"header must be 'name,r,g,b'"),
    ("name,r,g,b\n", r"lists no classes"),
    ("name,r,g,b\nSky,1,2\n", r"line 2: expected 4 fields"),
    ("name,r,g,b\nSky,1,2,x\n", r"line 2: r,g,b must be integers"),
    ("name,r,g,b\nSky,1,2,300\n", r"line 2: r,g,b must be in 0..255"),
    ("name,r,g,b\nSky,1,2,3\nRoad,1,2,3\n", r"line 3: colour \(1, 2, 3\) of 'Road' is already "
                                            r"used by 'Sky'"),
])
def test_folder_malformed_class_dict(tmp_path, content, message):
    make_camvid(tmp_path)
    (tmp_path / "class_dict.csv").write_text(content)
    with pytest.raises(ValueError, match=r"class_dict\.csv.*" + message):
        FolderDataset(tmp_path, "train")


def test_folder_class_dict_that_is_not_utf8_is_named(tmp_path):
    make_camvid(tmp_path)
    (tmp_path / "class_dict.csv").write_bytes("name,r,g,b\nCaf\u00e9,1,2,3\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"class_dict\.csv is not UTF-8 text.*save it as UTF-8"):
        FolderDataset(tmp_path, "train")


def test_read_rgb_scales_16_bit_images_instead_of_clipping_them(tmp_path):
    from PIL import Image

    values = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)     # 0 .. 65520
    Image.fromarray(values).save(tmp_path / "deep.png")
    rgb = read_rgb(tmp_path / "deep.png")
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], np.round(values / 257).astype(np.uint8))
    assert (rgb == 255).mean() < 0.01                 # clipping would make ~99.6% white


def test_read_rgb_names_the_file_it_cannot_read(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read image .*cut\.png"):
        read_rgb(tmp_path / "cut.png")
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(ValueError, match=r"float\.tiff: a floating-point image"):
        read_rgb(tmp_path / "float.tiff")


def test_folder_missing_class_dict(tmp_path):
    make_camvid(tmp_path)
    os.remove(tmp_path / "class_dict.csv")
    with pytest.raises(FileNotFoundError, match=r"class_dict\.csv not found"):
        FolderDataset(tmp_path, "train")


def test_folder_empty_split(tmp_path):
    make_camvid(tmp_path)
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra_labels").mkdir()
    with pytest.raises(ValueError, match=r"no images in"):
        FolderDataset(tmp_path, "extra")


# --------------------------------------------------------------------------- DataLoader
def test_loader_batches_shapes_and_lengths():
    ds = Shapes(10, size=32)
    loader = DataLoader(ds, batch_size=4)
    assert len(loader) == 3 and len(DataLoader(ds, batch_size=4, drop_last=True)) == 2
    batches = list(loader)
    assert [len(b["index"]) for b in batches] == [4, 4, 2]
    b = batches[0]
    assert b["image"].shape == (4, 3, 32, 32) and b["image"].dtype == np.float32
    assert b["mask"].shape == (4, 32, 32) and b["mask"].dtype == np.int64
    np.testing.assert_array_equal(b["index"], [0, 1, 2, 3])
    np.testing.assert_array_equal(b["mask"][2], ds[2]["mask"])
    # ragged keys come as lists, one entry per sample
    assert isinstance(b["boxes"], list) and len(b["boxes"]) == 4
    np.testing.assert_array_equal(b["boxes"][1], ds[1]["boxes"])
    assert [len(x["index"]) for x in DataLoader(ds, batch_size=4, drop_last=True)] == [4, 4]


def test_loader_shuffle_is_a_permutation_that_changes_per_epoch():
    loader = DataLoader(Shapes(13, size=16), batch_size=5, shuffle=True, seed=7)
    e0 = np.concatenate([b["index"] for b in loader])
    e1 = np.concatenate([b["index"] for b in loader])  # each iteration advances the epoch
    assert sorted(e0) == list(range(13)) and sorted(e1) == list(range(13))
    assert not np.array_equal(e0, e1) and loader.epoch == 2
    np.testing.assert_array_equal(e0, loader.order(0))


def test_loader_resumes_identically_with_augmentation():
    ds = Shapes(12, size=32)
    aug = Compose([RandomScale((0.8, 1.2)), RandomCrop(24, mask_fill=0), RandomFlip(),
                   ColorJitter()])
    run = DataLoader(ds, batch_size=4, shuffle=True, seed=3, transform=aug)
    epochs = [list(run) for _ in range(3)]
    resumed = DataLoader(ds, batch_size=4, shuffle=True, seed=3, transform=aug)
    resumed.set_epoch(2)
    for a, b in zip(epochs[2], resumed):
        np.testing.assert_array_equal(a["index"], b["index"])
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["mask"], b["mask"])
    # augmentation is new every epoch: the same sample looks different in epochs 0 and 1
    first = {int(i): img for b in epochs[0] for i, img in zip(b["index"], b["image"])}
    second = {int(i): img for b in epochs[1] for i, img in zip(b["index"], b["image"])}
    assert not np.array_equal(first[0], second[0])
    other_seed = DataLoader(ds, batch_size=4, shuffle=True, seed=4)
    assert not np.array_equal(next(iter(other_seed))["index"], epochs[0][0]["index"])


def test_loader_augmentation_does_not_depend_on_batch_size():
    ds = Shapes(8, size=32)
    aug = Compose([RandomCrop(20), RandomFlip()])
    a = np.concatenate([b["image"] for b in DataLoader(ds, batch_size=3, transform=aug)])
    b = np.concatenate([b["image"] for b in DataLoader(ds, batch_size=8, transform=aug)])
    np.testing.assert_array_equal(a, b)


def test_loader_errors():
    with pytest.raises(ValueError, match=r"batch_size must be a positive int, got 0"):
        DataLoader(Shapes(4), batch_size=0)
    with pytest.raises(TypeError, match=r"transform must be callable"):
        DataLoader(Shapes(4), transform=3)
    with pytest.raises(ValueError, match=r"epoch must be an int >= 0"):
        DataLoader(Shapes(4)).set_epoch(-1)
    uneven = [{"image": np.zeros((3, 4, 4), np.float32), "mask": np.zeros((4, 4), np.int64)},
              {"image": np.zeros((3, 5, 4), np.float32), "mask": np.zeros((5, 4), np.int64)}]
    with pytest.raises(ValueError, match=r"cannot stack 'image': sample 0 has shape \(3, 4, 4\) "
                                         r"but sample 1 has \(3, 5, 4\)"):
        next(iter(DataLoader(uneven, batch_size=2)))


# --------------------------------------------------------------------------- transforms
def coordinate_sample(H=9, W=11):
    """A sample whose pixels say where they came from: image channels hold the row and the
    column, the mask holds row * W + col, instance masks are two rectangles."""
    rows, cols = np.mgrid[0:H, 0:W]
    image = np.stack([rows / H, cols / W, np.zeros((H, W))]).astype(np.float32)
    inst = np.zeros((2, H, W), bool)
    inst[0, 1:4, 2:9] = True
    inst[1, 5:8, 0:3] = True
    present = inst.any(axis=(1, 2))  # a small sample may not reach the second rectangle
    return {"image": image, "mask": (rows * W + cols).astype(np.int64),
            "instance_masks": inst[present], "boxes": masks_to_boxes(inst[present]),
            "labels": np.array([1, 2], np.int64)[present], "name": "keep me"}


def test_flip_twice_is_the_identity_and_keeps_everything_aligned():
    s = coordinate_sample()
    f = RandomFlip(p=1.0)(s, np.random.default_rng(0))
    np.testing.assert_array_equal(f["mask"], s["mask"][:, ::-1])
    np.testing.assert_array_equal(f["image"], s["image"][:, :, ::-1])
    np.testing.assert_array_equal(f["boxes"], boxes_by_loops(f["instance_masks"]))
    np.testing.assert_array_equal(f["boxes"][0], [11 - 9, 1, 11 - 2, 4])  # (W - x2, y1, W - x1, y2)
    back = RandomFlip(p=1.0)(f, np.random.default_rng(1))
    for key in ("image", "mask", "instance_masks", "boxes", "labels"):
        np.testing.assert_array_equal(back[key], s[key])
    assert back["name"] == "keep me"
    same = RandomFlip(p=0.0)(s, np.random.default_rng(0))
    np.testing.assert_array_equal(same["image"], s["image"])


def test_flip_moves_boxes_without_instance_masks():
    s = coordinate_sample()
    del s["instance_masks"]
    f = RandomFlip(p=1.0)(s, np.random.default_rng(0))
    np.testing.assert_array_equal(f["boxes"], [[2, 1, 9, 4], [8, 5, 11, 8]])


def test_crop_cuts_the_same_window_from_image_mask_and_instances():
    s = coordinate_sample()
    for seed in range(10):
        c = RandomCrop((5, 4))(s, np.random.default_rng(seed))
        assert c["image"].shape == (3, 5, 4) and c["mask"].shape == (5, 4)
        top, left = divmod(int(c["mask"][0, 0]), 11)
        np.testing.assert_array_equal(c["mask"], s["mask"][top:top + 5, left:left + 4])
        np.testing.assert_array_equal(c["image"], s["image"][:, top:top + 5, left:left + 4])
        kept = [k for k in range(2) if s["instance_masks"][k, top:top + 5, left:left + 4].any()]
        np.testing.assert_array_equal(c["labels"], s["labels"][kept])  # empty ones dropped
        np.testing.assert_array_equal(c["instance_masks"],
                                      s["instance_masks"][kept, top:top + 5, left:left + 4])
        np.testing.assert_array_equal(c["boxes"], boxes_by_loops(c["instance_masks"]))


def test_crop_pads_a_small_sample_only_when_asked():
    s = coordinate_sample(4, 5)
    with pytest.raises(ValueError, match=r"sample is 4x5 \(HxW\), smaller than the crop 6x6"):
        RandomCrop(6)(s, np.random.default_rng(0))
    c = RandomCrop(6, mask_fill=-100)(s, np.random.default_rng(0))
    assert c["image"].shape == (3, 6, 6)
    np.testing.assert_array_equal(c["mask"][:4, :5], s["mask"])
    assert (c["mask"][4:] == -100).all() and (c["mask"][:, 5] == -100).all()
    assert (c["image"][:, 4:] == 0).all()


def test_resize_matches_hand_computed_values():
    x = np.array([[[0.0, 1.0]]])
    # output centres 0.5, 1.5, 2.5, 3.5 map to input coordinates -0.25, 0.25, 0.75, 1.25,
    # clamped to [0, 1]
    np.testing.assert_allclose(resize_bilinear(x, 1, 4), [[[0.0, 0.25, 0.75, 1.0]]])
    y = np.arange(6).reshape(1, 6)
    np.testing.assert_array_equal(resize_nearest(y, 1, 3), [[1, 3, 5]])  # centres 1, 3, 5
    np.testing.assert_array_equal(resize_nearest(y, 1, 12), [np.repeat(np.arange(6), 2)])
    z = np.random.default_rng(0).random((2, 5, 7))
    np.testing.assert_allclose(resize_bilinear(z, 5, 7), z)  # same size: identity
    np.testing.assert_array_equal(resize_nearest(z, 5, 7), z)


def test_resize_bilinear_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).random((2, 3, 7, 9))
    for size in [(11, 4), (3, 13), (14, 18)]:
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear",
                                              align_corners=False).numpy()
        np.testing.assert_allclose(resize_bilinear(x, *size), ref, atol=1e-12)


def test_scale_keeps_image_and_mask_aligned():
    s = Shapes(1, size=64, seed=5)[0]
    # An image that is the one-hot of the mask: after scaling, its arg-max must be the
    # nearest-neighbour mask except within a pixel of a boundary.
    onehot = (s["mask"][None] == np.arange(4)[:, None, None]).astype(np.float32)
    sample = dict(s, image=onehot)
    for seed in range(4):
        out = RandomScale((0.6, 1.4))(sample, np.random.default_rng(seed))
        OH, OW = out["mask"].shape
        assert out["image"].shape == (4, OH, OW) and out["mask"].dtype == np.int64
        assert (out["image"].argmax(axis=0) == out["mask"]).mean() > 0.97
        check_consistent(dict(out, image=out["image"][:3].clip(0, 1)), 4)


def test_pipeline_on_shapes_keeps_instances_consistent():
    ds = Shapes(20, size=48, seed=2)
    aug = Compose([RandomScale((0.5, 1.5)), RandomCrop(40, mask_fill=0), RandomFlip(),
                   ColorJitter(0.3, 0.3, 0.3)])
    for i in range(len(ds)):
        out = aug(ds[i], np.random.default_rng(i))
        assert out["image"].shape == (3, 40, 40)
        check_consistent(out, 4)


def test_transforms_do_not_modify_their_input():
    s = coordinate_sample()
    before = {k: np.copy(v) for k, v in s.items() if isinstance(v, np.ndarray)}
    aug = Compose([RandomScale(), RandomCrop(6), RandomFlip(1.0), ColorJitter(0.5, 0.5, 0.5)])
    aug(s, np.random.default_rng(0))
    for k, v in before.items():
        np.testing.assert_array_equal(s[k], v)


def test_color_jitter():
    s = Shapes(1, size=32)[0]
    same = ColorJitter(0, 0, 0)(s, np.random.default_rng(0))
    np.testing.assert_array_equal(same["image"], s["image"])
    out = ColorJitter(0.5, 0.5, 0.5)(s, np.random.default_rng(0))
    assert out["image"].dtype == np.float32 and not np.array_equal(out["image"], s["image"])
    assert 0 <= out["image"].min() and out["image"].max() <= 1
    assert out["mask"] is s["mask"]  # labels untouched
    # brightness alone: a uniform scale (before clipping), the factor in [0.5, 1.5]
    bright = ColorJitter(0.5, 0, 0)(dict(s, image=s["image"] * 0.5), np.random.default_rng(3))
    ratio = bright["image"] / np.maximum(s["image"] * 0.5, 1e-6)
    sel = s["image"] > 0.1
    assert np.ptp(ratio[sel]) < 1e-4 and 0.5 <= ratio[sel].mean() <= 1.5
    # saturation 0 factor range includes gray: with saturation alone, the luma is unchanged
    sat = ColorJitter(0, 0, 0.9)(s, np.random.default_rng(1))
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    inside = (sat["image"] > 0.001).all(0) & (sat["image"] < 0.999).all(0)
    np.testing.assert_allclose(np.tensordot(luma, sat["image"], 1)[inside],
                               np.tensordot(luma, s["image"], 1)[inside], atol=1e-5)


def test_compose_is_deterministic_for_a_given_rng():
    s = Shapes(1, size=32)[0]
    aug = Compose([RandomScale(), RandomCrop(20, mask_fill=0), RandomFlip(), ColorJitter()])
    a, b = aug(s, np.random.default_rng(9)), aug(s, np.random.default_rng(9))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_transform_validation():
    with pytest.raises(ValueError, match=r"RandomFlip: p must be in \[0, 1\], got 2"):
        RandomFlip(2)
    with pytest.raises(ValueError, match=r"RandomCrop: size must be a positive int"):
        RandomCrop(0)
    with pytest.raises(ValueError, match=r"RandomScale: scales must be \(low, high\)"):
        RandomScale((0.0, 1.0))
    with pytest.raises(ValueError, match=r"RandomScale: scales must be"):
        RandomScale((1.5, 1.0))
    with pytest.raises(ValueError, match=r"ColorJitter: contrast must be >= 0"):
        ColorJitter(contrast=-1)
    with pytest.raises(TypeError, match=r"Compose: every transform must be callable"):
        Compose([RandomFlip(), 3])
    bad = {"image": np.zeros((3, 4, 4), np.float32), "mask": np.zeros((4, 5), np.int64)}
    with pytest.raises(ValueError, match=r"RandomCrop: needs image \(C, H, W\) and mask \(H, W\) "
                                         r"of the same H, W; got image \(3, 4, 4\) and mask "
                                         r"\(4, 5\)"):
        RandomCrop(2)(bad, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"saturation needs a 3-channel RGB image"):
        ColorJitter()(dict(bad, image=np.zeros((1, 4, 5), np.float32), mask=np.zeros((4, 5))),
                      np.random.default_rng(0))
