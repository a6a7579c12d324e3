"""Size limits every op checks BEFORE it allocates or loops, so bad input fails fast.

A typo such as ``stride=2**31``, ``size=10**9`` or ``sampling_ratio=30000`` should give a
``ValueError`` that names the op and the argument, not an ``OverflowError``, NumPy's "array is
too big", tens of GiB of swap, the OOM killer, or minutes in a kernel that ignores Ctrl-C.

=====================  ==========================================================================
limit                  why
=====================  ==========================================================================
``MAX_GEOMETRY``       2**24: largest stride, padding, kernel size, dilation or spatial output
                       size. Far above any real image or network (a 16M-pixel side), small
                       enough that the kernels' index arithmetic (products of two of them, in
                       64-bit, and float32 coordinates, exact up to 2**24) cannot overflow.
``max_bytes()``        largest single array (output, or a conv's im2col workspace): 8 GiB, or
                       half the physical memory if that is smaller. Beyond it the allocation
                       either fails or pushes the machine into swap / the OOM killer.
``MAX_ROI_SAMPLES``    2 * 10**9 bilinear samples per ``roi_align`` call: tens of seconds on a
                       laptop core; real detectors take ~10**7.
=====================  ==========================================================================
"""
import functools
import math
import os

import numpy as np

__all__ = ["MAX_GEOMETRY", "MAX_BYTES", "MAX_ROI_SAMPLES", "max_bytes", "check_geometry",
           "check_output_size", "check_workspace", "format_bytes"]

#: Largest single geometry value (stride, padding, kernel size, dilation, output side).
MAX_GEOMETRY = 2 ** 24

#: Upper bound on one array's bytes (the effective limit is :func:`max_bytes`).
MAX_BYTES = 8 * 2 ** 30

#: Most bilinear samples one ``roi_align`` call may take (K · C · PH · PW · gh · gw).
MAX_ROI_SAMPLES = 2 * 10 ** 9


@functools.lru_cache(maxsize=None)
def _physical_memory():
    """Bytes of RAM, or None where sysconf cannot tell. Asked once: every conv checks its
    sizes against it, and two system calls per check were a tenth of a small conv's time."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def max_bytes():
    """The largest array an op may allocate: ``MAX_BYTES`` or half the RAM, whichever is less."""
    ram = _physical_memory()
    return MAX_BYTES if not ram or ram <= 0 else min(MAX_BYTES, ram // 2)


def format_bytes(n):
    """``n`` bytes in GiB, e.g. ``'37.3 GiB'``."""
    return f"{n / 2 ** 30:.1f} GiB"


def check_geometry(op, name, values):
    """Raise ValueError if any int in ``values`` exceeds :data:`MAX_GEOMETRY`."""
    for v in values:
        if v > MAX_GEOMETRY:
            raise ValueError(f"{op}: {name}={tuple(values)!r} has a value {v} above the limit "
                             f"of 2**24 = {MAX_GEOMETRY} (edu_seg.ops.limits.MAX_GEOMETRY); no "
                             f"image is that large, so this is most likely a typo")


def _nbytes(shape, dtype):
    return math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize


def _describe(what):
    """``what`` itself, or what it returns if it is a function: a caller on a hot path passes a
    function, so that the description is formatted only for the message of an error."""
    return what() if callable(what) else what


def check_output_size(op, shape, dtype, what):
    """Raise ValueError if an array of ``shape`` and ``dtype`` would exceed :func:`max_bytes`.

    ``what`` names the argument(s) that set the size, e.g. ``"size=(100000, 100000)"`` (or is a
    function that returns that text, called only to raise).
    """
    for v in shape[2:]:
        if v > MAX_GEOMETRY:
            raise ValueError(f"{op}: the output would be {tuple(shape)}, whose spatial size "
                             f"{v} is above the limit of 2**24 = {MAX_GEOMETRY}; it comes from "
                             f"{_describe(what)}")
    need, limit = _nbytes(shape, dtype), max_bytes()
    if need > limit:
        raise ValueError(f"{op}: the output would be {tuple(shape)} {np.dtype(dtype).name}, "
                         f"{format_bytes(need)}, more than the {format_bytes(limit)} limit "
                         f"(edu_seg.ops.limits.max_bytes()); it comes from {_describe(what)}: "
                         f"reduce it, or process the batch in pieces")


def check_workspace(op, shape, dtype, what):
    """As :func:`check_output_size`, for a scratch buffer such as a convolution's im2col."""
    need, limit = _nbytes(shape, dtype), max_bytes()
    if need > limit:
        raise ValueError(f"{op}: the work buffer would be {tuple(shape)} {np.dtype(dtype).name}, "
                         f"{format_bytes(need)}, more than the {format_bytes(limit)} limit "
                         f"(edu_seg.ops.limits.max_bytes()); it comes from {_describe(what)}: "
                         f"reduce it")
