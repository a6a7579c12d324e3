"""Pictures drawn from the library's own computations (headless-safe: Agg, no pyplot state).

- :mod:`edu_seg.viz.palette`: one colour per class, shared by every plot (``colorize``).
- :mod:`edu_seg.viz.training`: loss/mIoU curves, prediction grids, the confusion matrix.
- :mod:`edu_seg.viz.conv_anim`: conv / dilated / transposed-conv animations from the kernels'
  index maps.
- :mod:`edu_seg.viz.receptive_field`: theoretical and effective (gradient) receptive fields.
- :mod:`edu_seg.viz.roi`: RoIPool's bins vs RoIAlign's sample points for one box.
- :mod:`edu_seg.viz.segmentation`: masks over images with a legend; one scene as three tasks.
- :mod:`edu_seg.viz.fcn`: chapter 6 (unpooling by indices, gridding, the dense CRF).
- :mod:`edu_seg.viz.sota`: chapter 8 (pyramid bins, ASPP's taps, idea-vs-ablation bars).
- :mod:`edu_seg.viz.speed`: chapter 9 (the zoo's speed against its accuracy).
- :mod:`edu_seg.viz.detection`: chapter 5 (detections, anchors, proposals, sampled RoIs,
  RoI ops on real features, the mask head), drawn from Mask R-CNN's own code.
- :mod:`edu_seg.viz.weak`: chapter 7 (what a box tells, a box's candidate segments and their
  costs, BoxSup's estimated masks round by round).
"""
from .animation import animation_html
from .conv_anim import (animate_conv, animate_transposed_scatter, conv_index_map, show_step,
                        show_transposed_views, transposed_scatter_map)
from .detection import (draw_detections, render_detections, show_anchors, show_detections,
                        show_mask_head, show_proposals, show_roi_ops_on_features,
                        show_sampled_rois)
from .fcn import plot_crf_comparison, plot_gridding, plot_unpooling
from .palette import IGNORE_COLOR, PALETTE, colorize
from .receptive_field import dilated_stack, layer_arithmetic, plot_receptive_fields, receptive_field
from .roi import roi_sampling, roi_sampling_geometry
from .segmentation import show_segmentation, show_tasks
from .sota import atrous_taps, plot_ablations, plot_atrous_taps, plot_pyramid_bins
from .speed import plot_speed_accuracy
from .training import (loss_terms, overlay, plot_compare, plot_confusion_matrix, plot_history,
                       plot_predictions, plot_run)
from .weak import show_box_supervision, show_candidates, show_estimates

__all__ = ["animation_html", "PALETTE", "IGNORE_COLOR", "colorize", "overlay", "plot_history", "plot_predictions",
           "plot_confusion_matrix", "plot_run", "animate_conv", "animate_transposed_scatter",
           "conv_index_map", "show_step", "show_transposed_views", "transposed_scatter_map",
           "dilated_stack", "layer_arithmetic", "plot_receptive_fields", "receptive_field",
           "roi_sampling", "roi_sampling_geometry", "show_segmentation", "show_tasks",
           "loss_terms", "plot_compare", "plot_unpooling", "plot_gridding",
           "plot_crf_comparison", "plot_pyramid_bins", "atrous_taps", "plot_atrous_taps",
           "plot_ablations", "plot_speed_accuracy", "draw_detections", "show_detections",
           "render_detections", "show_anchors", "show_proposals", "show_sampled_rois",
           "show_roi_ops_on_features", "show_mask_head", "show_box_supervision",
           "show_candidates", "show_estimates"]
