"""``FolderDataset``: real images and colour-coded label PNGs in the CamVid layout.

The layout used by CamVid and the Semantic Segmentation Suite::

    root/
      class_dict.csv          name,r,g,b  -- one line per class, in class-id order
      train/  val/  test/     images (.png, .jpg, ...)
      train_labels/ ...       one label image per image, same stem (``0001TP_006690.png`` or
                              ``0001TP_006690_L.png``), every pixel painted in its class colour

A label image stores a class as a colour so that people can look at it. The model needs class
ids, so every pixel's ``(r, g, b)`` is looked up in ``class_dict.csv``: pack the colour into one
integer ``r * 65536 + g * 256 + b`` and find it among the sorted class colours with
``np.searchsorted`` — one vectorised lookup for the whole image.

Images are read with Pillow (it comes with matplotlib) by :func:`read_rgb`: grayscale, palette
and RGBA images are converted to RGB (alpha is dropped), 16-bit images scaled to 8 bits.
"""
import csv
import os

import numpy as np

#: File extensions read as images (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_rgb(path):
    """An image file as an (H, W, 3) uint8 array, at the real range of its values.

    Grayscale, palette and RGBA images become RGB (alpha is dropped). 16-bit images (mode
    ``I;16`` and friends, or ``I`` with values in 0..65535) are scaled to 8 bits (``/ 257``):
    Pillow's ``convert("RGB")`` would clip them at 255, turning almost every pixel white.

    Raises
    ------
    ValueError
        The file cannot be read as an image (truncated, not an image), or holds 32-bit or
        floating-point values; the message names the file.
    """
    from PIL import Image  # imported here so that `import edu_seg.data` does not need Pillow

    try:
        with Image.open(path) as im:
            im.load()                       # decode now: a truncated file fails here
            if im.mode.startswith("I;16") or im.mode == "I":
                values = np.asarray(im).astype(np.int64)
                if values.size and (values.min() < 0 or values.max() > 65535):
                    raise ValueError(f"{path}: a 32-bit integer image (values {values.min()} "
                                     f".. {values.max()}); save it as an 8- or 16-bit image")
                grey = np.round(values / 257).astype(np.uint8)          # 0..65535 -> 0..255
                return np.repeat(grey[..., None], 3, axis=-1)
            if im.mode == "F":
                raise ValueError(f"{path}: a floating-point image; save it as an 8- or "
                                 f"16-bit image")
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError) as exc:     # Pillow's errors for unreadable files
        raise ValueError(f"cannot read image {path}: {exc}") from None


def read_class_dict(path):
    """Class names and colours from a ``class_dict.csv`` (header ``name,r,g,b``).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    names : list of str, length C
    colours : ndarray of uint8, shape (C, 3)
        Class ``c`` is painted ``colours[c]`` in the label images.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Wrong header, a row without 4 fields, a channel that is not an integer in 0..255, a
        colour used by two classes, or no classes; the message names the file and the line.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FolderDataset: class_dict.csv not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: tolerate a BOM
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as exc:
        raise ValueError(f"FolderDataset: {path} is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start}); save it as UTF-8") from None
    if not rows or [c.strip().lower() for c in rows[0]] != ["name", "r", "g", "b"]:
        got = ",".join(rows[0]) if rows else "an empty file"
        raise ValueError(f"FolderDataset: {path}: the header must be 'name,r,g,b', got {got!r}")
    names, colours, seen = [], [], {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 4:
            raise ValueError(f"FolderDataset: {path}, line {line}: expected 4 fields "
                             f"name,r,g,b, got {len(row)}: {row}")
        name = row[0].strip()
        try:
            rgb = tuple(int(v) for v in row[1:])
        except ValueError:
            raise ValueError(f"FolderDataset: {path}, line {line}: r,g,b must be integers, "
                             f"got {row[1:]}") from None
        if not all(0 <= v <= 255 for v in rgb):
            raise ValueError(f"FolderDataset: {path}, line {line}: r,g,b must be in 0..255, "
                             f"got {rgb}")
        if rgb in seen:
            raise ValueError(f"FolderDataset: {path}, line {line}: colour {rgb} of {name!r} "
                             f"is already used by {seen[rgb]!r}")
        seen[rgb] = name
        names.append(name)
        colours.append(rgb)
    if not names:
        raise ValueError(f"FolderDataset: {path} lists no classes")
    return names, np.array(colours, dtype=np.uint8)


class FolderDataset:
    """Images and colour-coded labels from a CamVid-style folder (see the module docstring).

    Parameters
    ----------
    root : str or os.PathLike
        The folder that holds ``class_dict.csv`` and the split folders.
    split : str
        ``"train"``, ``"val"`` or ``"test"`` (any name with folders ``root/<split>`` and
        ``root/<split>_labels`` works).
    transform : callable, optional
        ``transform(sample, rng) -> sample``, e.g. a ``RandomCrop`` from
        ``edu_seg.data.transforms``. It gets ``np.random.default_rng(index)``, so
        ``dataset[i]`` is the same every time: use it for fixed preprocessing. Augmentation
        that should change every epoch belongs in the ``DataLoader``'s ``transform``.

    Attributes
    ----------
    class_names : list of str
        From ``class_dict.csv``, in class-id order.
    colours : ndarray of uint8, shape (C, 3)
        The label colour of each class.
    images, labels : list of str
        Paired file paths, sorted by image file name.

    Raises
    ------
    FileNotFoundError
        A missing ``root``, split folder, label folder, ``class_dict.csv``, or an image
        without its label (named, with the label names tried).
    ValueError
        A malformed ``class_dict.csv``; an empty split. When a sample is read: an unknown
        label colour (the file, the colour and a pixel position) or an image and label of
        different sizes.

    Notes
    -----
    Pairs are found when the dataset is made (a directory listing); pixels are read only in
    ``dataset[i]``, so a wrong colour or size is reported by the sample that has it.
    ``dataset[i]`` returns ``{"image": (3, H, W) float32 in [0, 1], "mask": (H, W) int64}``,
    the same keys and types as ``Shapes``.

    Examples
    --------
    >>> ds = FolderDataset("data/CamVid", split="train")          # doctest: +SKIP
    >>> ds.class_names[:3], ds[0]["image"].shape                   # doctest: +SKIP
    (['Animal', 'Archway', 'Bicyclist'], (3, 720, 960))
    """

    def __init__(self, root, split="train", transform=None):
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"FolderDataset: root folder not found: {root}")
        self.root, self.split, self.transform = root, split, transform
        image_dir = os.path.join(root, split)
        label_dir = os.path.join(root, f"{split}_labels")
        for d in (image_dir, label_dir):
            if not os.path.isdir(d):
                have = sorted(e for e in os.listdir(root)
                              if os.path.isdir(os.path.join(root, e)))
                raise FileNotFoundError(f"FolderDataset: split {split!r}: folder not found: {d} "
                                        f"(folders in {root}: {have})")
        self.class_names, self.colours = read_class_dict(os.path.join(root, "class_dict.csv"))
        # Colour -> class lookup: packed 24-bit colours, sorted for np.searchsorted.
        packed = self._pack(self.colours)
        self._order = np.argsort(packed)
        self._sorted_packed = packed[self._order]

        label_files = {}  # stem (with a trailing "_L" removed) -> label path
        for name in sorted(os.listdir(label_dir)):
            stem, ext = os.path.splitext(name)
            if ext.lower() in IMAGE_EXTENSIONS:
                label_files.setdefault(stem, os.path.join(label_dir, name))
        self.images, self.labels = [], []
        for name in sorted(os.listdir(image_dir)):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            label = label_files.get(stem) or label_files.get(stem + "_L")
            if label is None:
                raise FileNotFoundError(
                    f"FolderDataset: image {os.path.join(image_dir, name)} has no label: "
                    f"expected {stem}.png or {stem}_L.png in {label_dir}")
            self.images.append(os.path.join(image_dir, name))
            self.labels.append(label)
        if not self.images:
            raise ValueError(f"FolderDataset: split {split!r}: no images in {image_dir} "
                             f"(extensions {IMAGE_EXTENSIONS})")

    @property
    def num_classes(self):
        """Number of classes listed in ``class_dict.csv``."""
        return len(self.class_names)

    def __len__(self):
        return len(self.images)

    def __repr__(self):
        return (f"FolderDataset(root={self.root!r}, split={self.split!r}, n={len(self)}, "
                f"num_classes={self.num_classes})")

    @staticmethod
    def _pack(rgb):
        """(..., 3) uint8 colours -> (...) int64 ``r * 65536 + g * 256 + b``."""
        rgb = rgb.astype(np.int64)
        return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]

    def colour_to_class(self, label_rgb, path="label"):
        """Class ids of an (H, W, 3) uint8 colour label image, shape (H, W) int64.

        Raises ValueError naming ``path``, the first unknown colour and where it is.
        """
        packed = self._pack(label_rgb)
        pos = np.searchsorted(self._sorted_packed, packed)
        pos = np.minimum(pos, len(self._sorted_packed) - 1)  # beyond the last -> checked below
        known = self._sorted_packed[pos] == packed
        if not known.all():
            y, x = np.argwhere(~known)[0]
            colour = tuple(int(v) for v in label_rgb[y, x])
            raise ValueError(f"FolderDataset: {path}: unknown label colour {colour} at pixel "
                             f"(row {y}, col {x}); {int((~known).sum())} pixels have colours "
                             f"missing from class_dict.csv")
        return self._order[pos].astype(np.int64)

    def __getitem__(self, index):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"FolderDataset: index must be an int, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"FolderDataset: index {index} out of range for {len(self)} "
                             f"samples")
        index = int(index) % len(self)
        image_path, label_path = self.images[index], self.labels[index]
        image, label = read_rgb(image_path), read_rgb(label_path)
        if image.shape[:2] != label.shape[:2]:
            raise ValueError(f"FolderDataset: image {image_path} is {image.shape[1]}x"
                             f"{image.shape[0]} (WxH) but its label {label_path} is "
                             f"{label.shape[1]}x{label.shape[0]}")
        sample = {"image": np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
                  / np.float32(255.0),                                  # (3, H, W) in [0, 1]
                  "mask": self.colour_to_class(label, label_path)}      # (H, W) int64
        if self.transform is not None:
            sample = self.transform(sample, np.random.default_rng(index))
        return sample
