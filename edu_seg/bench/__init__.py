"""Measuring the models against each other.

- :mod:`edu_seg.bench.zoo`: every registered model trained with one fixed recipe on the
  Shapes variants, and the table that compares them (``edu-seg zoo``).
- :mod:`edu_seg.bench.speed`: each model's inference time per image at 64x64 and 256x256,
  against its zoo mIoU (``edu-seg zoo --plot``).
- :mod:`edu_seg.bench.stride_bound`: the best mIoU a model that predicts at output stride
  ``s`` and up-samples bilinearly can reach on a data set (``python -m
  edu_seg.bench.stride_bound``).
"""
