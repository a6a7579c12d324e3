"""Chapter 7's pictures show what BoxSup computes.

- box supervision: four panels; one box drawn per object, at its own coordinates; the
  filled-box panel is :func:`edu_seg.weak.filled_box_masks`'s mask;
- candidates: one panel per candidate shown (plus the box), cheapest first when costs are given,
  each titled with :func:`edu_seg.weak.box_overlap`'s IoU;
- estimates: (1 + rounds + truth) rows x N columns, each round's mIoU in its row label;
- bad input gets a ValueError that names the argument.
"""
import matplotlib

matplotlib.use("Agg")  # noqa: E402  (headless, whatever the environment says)

import numpy as np
import pytest
from matplotlib.figure import Figure

from edu_seg.data import Shapes
from edu_seg.metrics import ConfusionMatrix
from edu_seg.viz.weak import show_box_supervision, show_candidates, show_estimates
from edu_seg.weak import box_overlap, filled_box_masks

DATA = Shapes(3, size=32, variant="nonconvex", seed=0)


def _boxes_drawn(ax):
    return np.array([[p.get_x(), p.get_y(), p.get_x() + p.get_width(),
                      p.get_y() + p.get_height()] for p in ax.patches
                     if p.get_gid() == "box"]).reshape(-1, 4)


def _ring_candidates(size=16):
    """A ring in a 16x16 image, its box, and three candidates: ring, disc, the left half."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    d = np.hypot(xx - 8, yy - 8)
    ring, disc = (d <= 6) & (d >= 3), d <= 6
    half = disc & (xx < 8)
    image = np.repeat(ring[None].astype(np.float32), 3, axis=0)
    return image, np.array([2.0, 2.0, 14.0, 14.0]), np.stack([ring, disc, half])


def test_box_supervision_draws_every_box_and_the_filled_boxes():
    s = DATA[0]
    fig = show_box_supervision(s, DATA.class_names)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4
    np.testing.assert_allclose(_boxes_drawn(fig.axes[2]), s["boxes"])
    filled = filled_box_masks(s["boxes"], s["labels"], s["mask"].shape)
    assert f"{(filled == s['mask']).mean():.1%}" in fig.axes[3].get_title()


def test_candidates_one_panel_each_cheapest_first():
    image, box, cands = _ring_candidates()
    fig = show_candidates(image, box, cands)
    assert isinstance(fig, Figure) and len(fig.axes) == 1 + 3
    iou = box_overlap(box, cands)
    assert f"IoU(B,S) {iou[0]:.2f}" in fig.axes[1].get_title()      # passed order kept
    fig = show_candidates(image, box, cands, costs=[0.7, 0.2, 0.9])
    titles = [ax.get_title() for ax in fig.axes[1:]]
    assert "chosen" in titles[0] and f"{iou[1]:.2f}" in titles[0]  # the disc costs least
    assert "E = 0.900" in titles[2]
    # More candidates than max_show: only the first max_show are drawn; rows of 5 panels.
    many = np.repeat(cands, 4, axis=0)
    assert len(show_candidates(image, box, many, max_show=7).axes) == 8


def test_estimates_rows_are_rounds_and_truth():
    images = np.stack([DATA[i]["image"] for i in range(3)])
    truth = np.stack([DATA[i]["mask"] for i in range(3)])
    filled = np.stack([filled_box_masks(DATA[i]["boxes"], DATA[i]["labels"], (32, 32))
                       for i in range(3)])
    fig = show_estimates(images, [filled, truth], truth=truth)
    assert isinstance(fig, Figure) and len(fig.axes) == (1 + 2 + 1) * 3
    cm = ConfusionMatrix(4)
    cm.update(filled, truth)
    assert f"mIoU {cm.miou():.3f}" in fig.axes[3].get_ylabel()        # row 2, column 1
    assert "mIoU 1.000" in fig.axes[6].get_ylabel()
    fig = show_estimates(images[:2], np.stack([filled[:2]] * 3), titles=["a", "b", "c"])
    assert len(fig.axes) == (1 + 3) * 2 and fig.axes[2].get_ylabel() == "a"


def test_bad_inputs_get_named_errors():
    s = DATA[0]
    with pytest.raises(ValueError, match="show_box_supervision: sample must be a dict"):
        show_box_supervision({"image": s["image"]})
    with pytest.raises(ValueError, match=r"sample\['mask'\] must be \(H, W\)"):
        show_box_supervision(dict(s, mask=s["mask"][:5]))
    with pytest.raises(ValueError, match=r"sample\['labels'\] must hold one int class"):
        show_box_supervision(dict(s, labels=s["labels"][:0]))
    image, box, cands = _ring_candidates()
    with pytest.raises(ValueError, match=r"show_candidates: image must be one \(3, H, W\)"):
        show_candidates(image[0], box, cands)
    with pytest.raises(ValueError, match="show_candidates: box must be"):
        show_candidates(image, [4, 4, 2, 2], cands)
    with pytest.raises(ValueError, match="show_candidates: candidates must be a non-empty"):
        show_candidates(image, box, cands.astype(np.uint8))
    with pytest.raises(ValueError, match="show_candidates: costs must hold one finite number"):
        show_candidates(image, box, cands, costs=[0.1, 0.2])
    with pytest.raises(ValueError, match="show_candidates: max_show must be an int >= 1"):
        show_candidates(image, box, cands, max_show=0)
    images = np.stack([DATA[i]["image"] for i in range(2)])
    masks = np.stack([DATA[i]["mask"] for i in range(2)])
    with pytest.raises(ValueError, match=r"show_estimates: images must be a non-empty"):
        show_estimates(images[0], [masks])
    with pytest.raises(ValueError, match="show_estimates: snapshots must be a non-empty"):
        show_estimates(images, [masks, masks[:1]])
    with pytest.raises(ValueError, match="show_estimates: snapshots must be a non-empty"):
        show_estimates(images, [])
    with pytest.raises(ValueError, match="show_estimates: truth must be"):
        show_estimates(images, [masks], truth=masks[0])
    with pytest.raises(ValueError, match="show_estimates: titles must be"):
        show_estimates(images, [masks, masks], titles=["only one"])
