"""plot_prediction_comparison draws what it says: each error map is red exactly where that
model's prediction differs from the ground truth, the boundary band is shaded exactly where
``boundary_band`` puts it, and the labels give the measured shares."""
import matplotlib

matplotlib.use("Agg")  # noqa: E402  (headless, whatever the environment says)

import numpy as np
import pytest

from edu_seg.data import Shapes
from edu_seg.metrics import boundary_band
from edu_seg.viz.training import overlay, plot_prediction_comparison

RED = np.array([0.85, 0.1, 0.1])


def _data(n=3):
    data = Shapes(n, size=32, num_classes=4, seed=0)
    images = np.stack([s["image"] for s in data])                 # (N, 3, 32, 32)
    masks = np.stack([s["mask"] for s in data])                   # (N, 32, 32)
    good = masks.copy()
    good[:, :2] = 1                                               # two wrong rows at the top
    bad = np.roll(masks, 2, axis=-1)                              # shifted: wrong at edges
    return data, images, masks, {"good": good, "shifted": bad}


def test_panels_show_each_models_errors_and_the_band():
    data, images, masks, preds = _data()
    fig = plot_prediction_comparison(images, masks, preds, data.class_names, band=1)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 3 * 6                                     # rows x (2 + 2 per model)
    band = boundary_band(masks, 1)
    for i in range(3):
        row = axes[6 * i:6 * i + 6]
        np.testing.assert_allclose(row[1].images[0].get_array(), overlay(images[i], masks[i]))
        for k, (name, pred) in enumerate(preds.items()):
            np.testing.assert_allclose(row[2 + 2 * k].images[0].get_array(),
                                       overlay(images[i], pred[i]))
            errors = np.asarray(row[3 + 2 * k].images[0].get_array())   # (H, W, 3)
            wrong = pred[i] != masks[i]
            red = np.all(np.isclose(errors, RED), axis=-1)
            np.testing.assert_array_equal(red, wrong)
            faded = images[i].transpose(1, 2, 0) * 0.35 + 0.65
            shaded = faded * 0.5 + np.array([0.55, 0.75, 1.0]) * 0.5
            expected = np.where(band[i][..., None], shaded, faded)
            np.testing.assert_allclose(errors[~wrong], expected[~wrong], rtol=1e-6)
            in_band = (wrong & band[i]).sum() / wrong.sum()
            assert row[3 + 2 * k].get_xlabel() == (f"{wrong.mean():.1%} wrong, "
                                                   f"{in_band:.0%} in band")
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == data.class_names + ["wrong", "within 1 px of a true edge"]


def test_without_band_and_a_perfect_prediction():
    _, images, masks, _ = _data(2)
    fig = plot_prediction_comparison(images, masks, {"perfect": masks}, max_rows=1)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 4
    errors = np.asarray(axes[3].images[0].get_array())
    np.testing.assert_allclose(errors, images[0].transpose(1, 2, 0) * 0.35 + 0.65, rtol=1e-6)
    assert axes[3].get_xlabel() == "0.0% wrong"


@pytest.mark.parametrize("predictions, message", [
    ({}, "predictions is empty"),
    ({"small": np.zeros((3, 16, 16), int)}, "predictions\\['small'\\] has shape"),
])
def test_bad_arguments(predictions, message):
    _, images, masks, _ = _data()
    with pytest.raises(ValueError, match=message):
        plot_prediction_comparison(images, masks, predictions)
