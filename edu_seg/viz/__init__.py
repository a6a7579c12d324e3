"""Pictures drawn from the library's own computations (headless-safe: Agg, no pyplot state).

- :mod:`edu_seg.viz.palette`: one colour per class, shared by every plot (``colorize``).
- :mod:`edu_seg.viz.training`: loss/mIoU curves, prediction grids, the confusion matrix.
"""
from .palette import IGNORE_COLOR, PALETTE, colorize
from .training import overlay, plot_confusion_matrix, plot_history, plot_predictions

__all__ = ["PALETTE", "IGNORE_COLOR", "colorize", "overlay", "plot_history", "plot_predictions",
           "plot_confusion_matrix"]
