"""Data: synthetic and folder datasets, a batching loader, joint image/mask augmentation.

Every dataset returns sample dicts with at least ``image`` (3, H, W) float32 in [0, 1] and
``mask`` (H, W) int64 class ids; ``Shapes`` adds ``instance_masks``, ``boxes`` and ``labels``.

>>> from edu_seg.data import Shapes, DataLoader, Compose, RandomFlip, RandomCrop
>>> train = Shapes(2000, size=64, num_classes=4, seed=1)
>>> loader = DataLoader(train, batch_size=8, shuffle=True, seed=0,
...                     transform=Compose([RandomFlip(), RandomCrop(48)]))
>>> batch = next(iter(loader))
>>> batch["image"].shape, batch["mask"].shape
((8, 3, 48, 48), (8, 48, 48))
"""
from .folder import FolderDataset
from .loader import DataLoader
from .shapes import NONCONVEX, SHAPES, VARIANTS, Shapes
from .transforms import ColorJitter, Compose, RandomCrop, RandomFlip, RandomScale

__all__ = ["Shapes", "SHAPES", "NONCONVEX", "VARIANTS", "FolderDataset", "DataLoader",
           "Compose", "RandomFlip", "RandomCrop", "RandomScale", "ColorJitter"]
