"""Chapter 8's pictures: the pyramid's bins, ASPP's taps, the ablation bars."""
import numpy as np
import pytest
from matplotlib.figure import Figure

from edu_seg.viz.sota import atrous_taps, plot_ablations, plot_atrous_taps, plot_pyramid_bins


def test_atrous_taps_land_rate_pixels_apart_and_outside_a_small_map():
    taps, inside = atrous_taps(rate=2, output_stride=16, feature_size=(4, 4), position=(2, 2))
    assert taps.tolist()[0] == [0, 0] and taps.tolist()[-1] == [4, 4]
    assert inside.sum() == 4                           # rows/cols 0 and 2 only; 4 is outside
    # DeepLabV3's rate 6 on the 4x4 map of a 64x64 image: only the centre tap reads the map
    assert atrous_taps(6, 16, (4, 4), (2, 2))[1].sum() == 1
    assert atrous_taps(1, 16, (4, 4), (2, 2))[1].all()


def test_the_pictures_draw():
    assert isinstance(plot_pyramid_bins(np.random.rand(8, 8)), Figure)
    assert isinstance(plot_atrous_taps(np.random.rand(3, 64, 64), (1, 2, 3), 16), Figure)
    rows = [{"model": "m", "variant": "context", "miou": "0.9"},
            {"model": "m:ablated", "variant": "context", "miou": "0.5"}]
    fig = plot_ablations(rows, [("m", "m:ablated", "context")])
    assert [round(p.get_height(), 2) for p in fig.axes[0].patches] == [0.9, 0.5]


def test_bad_inputs_get_named_errors():
    with pytest.raises(ValueError, match=r"feature must be a 2-D map \(H, W\), got shape"):
        plot_pyramid_bins(np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="no zoo row for m:ablated on context; run `edu-seg zoo"):
        plot_ablations([{"model": "m", "variant": "context", "miou": "0.9"}],
                       [("m", "m:ablated", "context")])
