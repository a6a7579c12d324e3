"""The NumPy reference: the readable textbook twin of every compiled kernel.

Each module here has a compiled twin ``edu_seg._kernels.<same name>`` with the same functions,
signatures and results; :func:`edu_seg.backend.kernels` chooses between them.
"""
