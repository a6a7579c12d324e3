"""``DataLoader``: turn a dataset of sample dicts into shuffled, augmented, stacked batches.

A training loop wants arrays of shape (N, 3, H, W) and (N, H, W), not one sample at a time.
The loader picks the indices of each batch (shuffled once per epoch), fetches and augments the
samples, and stacks them.

Reproducibility is designed in rather than hoped for:

- the order of epoch ``e`` is a permutation drawn from ``np.random.default_rng([seed, e])``;
- sample ``i`` of epoch ``e`` is augmented with its own ``np.random.default_rng([seed, e, i])``,
  so its augmentation does not depend on the batch size or on which samples came before it.

So the batches of epoch 7 are a pure function of ``(dataset, seed, 7)``: a run resumed from a
checkpoint at epoch 7 (``loader.set_epoch(7)``) sees exactly the batches the uninterrupted run
saw. Each ``iter(loader)`` — each ``for batch in loader`` — uses the current epoch and then
advances it by one, so forgetting to call ``set_epoch`` does not silently repeat one order.
"""
import numpy as np

#: Keys stacked into arrays; every other key is returned as a list (its length may vary).
STACKED_KEYS = ("image", "mask")


class DataLoader:
    """Batches from a dataset: ``{"image": (N, 3, H, W) float32, "mask": (N, H, W) int64, ...}``.

    Parameters
    ----------
    dataset : sequence of dict
        Anything with ``len()`` and ``dataset[i]`` returning a dict with ``image`` (C, H, W)
        and ``mask`` (H, W), e.g. ``Shapes`` or ``FolderDataset``.
    batch_size : int
        Samples per batch ``N``; the last batch is smaller unless ``drop_last``.
    shuffle : bool
        Visit the samples in a new random order every epoch (else in index order).
    seed : int
        Seeds the shuffling and the augmentation (see the module docstring).
    transform : callable, optional
        ``transform(sample, rng) -> sample`` applied to every sample, e.g. a
        ``transforms.Compose``; ``rng`` is new for every (epoch, sample).
    drop_last : bool
        Drop a final incomplete batch (keeps batch statistics such as BatchNorm's well-defined).

    Attributes
    ----------
    epoch : int
        The epoch that the next ``iter(loader)`` will produce.

    Notes
    -----
    Each batch dict holds ``image`` (N, C, H, W) and ``mask`` (N, H, W) stacked arrays, ``index``
    (N,) int64 the dataset indices, and any other sample key (``boxes``, ``labels``,
    ``instance_masks``, ...) as a list of N per-sample values. All samples of a batch must have
    the same size: crop or resize them in ``transform`` otherwise.

    Examples
    --------
    >>> from edu_seg.data import Shapes
    >>> loader = DataLoader(Shapes(20), batch_size=8, shuffle=True, seed=0)
    >>> len(loader)
    3
    >>> batch = next(iter(loader))
    >>> batch["image"].shape, batch["mask"].shape
    ((8, 3, 64, 64), (8, 64, 64))
    """

    def __init__(self, dataset, batch_size=8, shuffle=False, seed=0, transform=None,
                 drop_last=False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable(sample, rng), "
                            f"got {transform!r}")
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"DataLoader: dataset needs __len__ and __getitem__, got "
                            f"{type(dataset).__name__}")
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.shuffle, self.seed, self.transform = bool(shuffle), int(seed), transform
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch):
        """Make the next ``iter(loader)`` produce epoch ``epoch`` (e.g. when resuming)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch must be an int >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self):
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else -(-n // b)  # -(-n // b) = ceil(n / b)

    def order(self, epoch):
        """The dataset indices of epoch ``epoch`` in the order they are visited, (len,) int64."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch]).permutation(n).astype(np.int64)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1  # the next iter() gives the next epoch
        return self._batches(epoch)

    def _batches(self, epoch):
        order = self.order(epoch)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            indices = order[start:start + self.batch_size]
            yield self.collate([self._sample(epoch, int(i)) for i in indices], indices)

    def _sample(self, epoch, index):
        sample = self.dataset[index]
        if self.transform is not None:
            sample = self.transform(sample, np.random.default_rng([self.seed, epoch, index]))
        return sample

    @staticmethod
    def collate(samples, indices):
        """Stack a list of sample dicts into one batch dict (see the class Notes).

        Raises ValueError naming the first sample whose image or mask shape differs.
        """
        batch = {}
        for key in samples[0]:
            values = [s[key] for s in samples]
            if key in STACKED_KEYS:
                for i, v in zip(indices, values):
                    if np.shape(v) != np.shape(values[0]):
                        raise ValueError(
                            f"DataLoader: cannot stack {key!r}: sample {int(indices[0])} has "
                            f"shape {np.shape(values[0])} but sample {int(i)} has "
                            f"{np.shape(v)}; make the sizes equal with a transform "
                            f"(e.g. RandomCrop)")
                batch[key] = np.stack(values)
            else:
                batch[key] = values
        batch["index"] = np.asarray(indices, dtype=np.int64)
        return batch

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, seed={self.seed}, "
                f"drop_last={self.drop_last}, epoch={self.epoch})")
