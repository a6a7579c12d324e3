"""Measuring the models against each other.

- :mod:`edu_seg.bench.zoo`: every registered model trained with one fixed recipe on the
  Shapes variants, and the table that compares them (``edu-seg zoo``).
"""
