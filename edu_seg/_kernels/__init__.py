"""The compiled core: one extension module per ``kernels/<name>.pyx`` (built by ``setup.py``).

Nothing here is imported directly by user code; :mod:`edu_seg.backend` loads these modules and
falls back to :mod:`edu_seg.reference` when they are missing.
"""
