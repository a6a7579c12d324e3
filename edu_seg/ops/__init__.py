"""The differentiable ops, one module per family; gathered in :mod:`edu_seg.functional`."""
