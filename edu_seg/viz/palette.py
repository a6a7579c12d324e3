"""One colour per class, shared by every picture the library draws.

Class 0 is the background in the synthetic data sets, so it gets black; the next colours are
the first entries of the PASCAL VOC palette (the bit-interleaving scheme every segmentation
codebase prints its masks with), which keeps neighbouring class ids visually distinct.
"""
import numpy as np

__all__ = ["PALETTE", "IGNORE_COLOR", "colorize"]


def _voc_palette(n):
    """The PASCAL VOC colour map: class ``i``'s bits are spread over the high bits of R, G, B."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):  # bit j of the class id -> bit (7 - j//3) of one channel
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[i] = (r, g, b)
    return palette


#: (256, 3) uint8: the colour of class ``i`` is ``PALETTE[i]``.
PALETTE = _voc_palette(256)

#: Colour of pixels whose label is outside ``[0, 256)`` (e.g. an ``ignore_index`` of -100).
IGNORE_COLOR = np.array([255, 255, 255], dtype=np.uint8)


def colorize(mask, palette=None):
    """Turn a label map into an RGB image.

    Parameters
    ----------
    mask : array of int, shape (H, W)
        Class ids. Ids outside the palette (ignored pixels, e.g. -100 or 255 with a short
        palette) are drawn in :data:`IGNORE_COLOR`.
    palette : array of uint8, shape (K, 3), optional
        Colours to use instead of :data:`PALETTE`, e.g. a data set's own class colours.

    Returns
    -------
    rgb : array of uint8, shape (H, W, 3)

    Examples
    --------
    >>> colorize(np.array([[0, 1], [2, -100]]))[0, 1]
    array([128,   0,   0], dtype=uint8)
    """
    palette = PALETTE if palette is None else np.asarray(palette, dtype=np.uint8)
    mask = np.asarray(mask)
    inside = (mask >= 0) & (mask < len(palette))
    rgb = np.empty(mask.shape + (3,), dtype=np.uint8)
    rgb[...] = IGNORE_COLOR
    rgb[inside] = palette[mask[inside]]
    return rgb
