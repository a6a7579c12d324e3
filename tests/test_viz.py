"""The pictures must be true: every frame and every point is checked against the real ops.

- conv / dilated / transposed animations: the input cells each frame highlights are exactly
  the inputs with a non-zero gradient when the library's op is differentiated at that output
  pixel (and, where PyTorch is installed, PyTorch's op);
- output grids follow the size formulas; GIF export works headless;
- receptive fields: the theoretical numbers (127 for DenseASPP) and the gradient support;
- RoI sampling: the drawn points are where RoIAlign reads (its gradient), the drawn bins are
  where RoIPool takes its maximum (its argmax).
"""
import gc
import warnings

import matplotlib

matplotlib.use("Agg")  # noqa: E402  (headless, whatever the environment says)

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image

import edu_seg
from edu_seg import nn
from edu_seg.autograd import Tensor
from edu_seg.data import Shapes
from edu_seg.ops.conv import conv2d, conv_transpose2d
from edu_seg.ops.roi import roi_align, roi_pool
from edu_seg.viz.conv_anim import (animate_conv, animate_transposed_scatter, conv_index_map,
                                   show_step, show_transposed_views, transposed_scatter_map)
from edu_seg.viz.receptive_field import (dilated_stack, layer_arithmetic, plot_receptive_fields,
                                         receptive_field)
from edu_seg.viz.roi import roi_sampling, roi_sampling_geometry
from edu_seg.viz.segmentation import show_segmentation, show_tasks


@pytest.fixture(autouse=True)
def _collect_unrendered_animations():
    """Animations built only to inspect their frames are never rendered, and matplotlib warns
    when such an animation is garbage-collected: collect them here, with that warning off."""
    yield
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Animation was deleted without rendering")
        gc.collect()


# (kind, input, kernel, stride, padding, dilation, output_padding)
CONV_CASES = [
    ("conv", 5, 3, 1, 0, 1, 0),
    ("conv", 5, 3, 2, 1, 1, 0),                  # strided + padded: border windows in padding
    ("conv", 6, 4, 3, 3, 2, 0),                  # windows entirely in the padding exist
    ("dilated", 7, 3, 1, 0, 2, 0),               # 9 weights over a 5x5 field
    ("dilated", 9, 3, 2, 2, 3, 0),
    ("conv", (5, 7), (2, 3), (2, 1), (1, 0), (1, 2), 0),   # everything rectangular
]
TRANSPOSED_CASES = [
    ("transposed", 3, 3, 2, 0, 1, 0),            # the checkerboard case
    ("transposed", 3, 3, 2, 1, 1, 1),            # padding crops, output_padding adds a row
    ("transposed", 4, 3, 2, 3, 1, 0),            # p > d(k-1): the canvas is cropped
    ("transposed", 3, 2, 3, 0, 2, 1),            # dilated, stride 3
    ("transposed", (2, 3), (3, 2), (1, 2), (0, 1), 1, (0, 1)),
]


@pytest.fixture(params=["cython", "numpy"])
def backend(request):
    if request.param == "cython" and not edu_seg.backend.compiled_core_available():
        pytest.skip("compiled core not built")
    with edu_seg.use_backend(request.param):
        yield request.param


def _pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


def _influence(kind, size, k, s, p, d, op):
    """For every output pixel (row-major), the flat indices of the inputs whose gradient there
    is non-zero when the real op is differentiated (one batch item per output pixel)."""
    H, W = _pair(size)
    KH, KW = _pair(k)
    rng = np.random.default_rng(0)
    w = Tensor(rng.uniform(0.5, 1.5, (1, 1, KH, KW)))     # positive: nothing can cancel

    def op_(x):
        if kind == "transposed":
            return conv_transpose2d(x, w, stride=s, padding=p, output_padding=op, dilation=d)
        return conv2d(x, w, stride=s, padding=p, dilation=d)

    OH, OW = op_(Tensor(np.zeros((1, 1, H, W)))).shape[2:]
    x = Tensor(rng.uniform(0.5, 1.5, (OH * OW, 1, H, W)), requires_grad=True)
    y = op_(x)
    dy = np.zeros(y.shape)
    dy[np.arange(OH * OW), 0, np.arange(OH * OW) // OW, np.arange(OH * OW) % OW] = 1
    y.backward(dy)
    return [np.flatnonzero(g) for g in x.grad]


# ------------------------------------------------------------------------- index maps / frames
@pytest.mark.parametrize("case", CONV_CASES + TRANSPOSED_CASES, ids=str)
def test_frames_highlight_exactly_the_inputs_with_gradient(case, backend):
    kind, size, k, s, p, d, op = case
    anim = animate_conv(kind, size, k, s, p, d, op)
    scene, m = anim.scene, anim.scene.map
    OH, OW = m.output_size
    assert scene.n_frames == OH * OW
    influence = _influence(kind, size, k, s, p, d, op)
    assert len(influence) == OH * OW
    for i, expected in enumerate(influence):
        np.testing.assert_array_equal(scene.highlighted(i), expected, err_msg=f"frame {i}")
        # ... and the picture colours exactly those canvas cells as "read".
        img = scene.canvas_image(i)
        read = np.all(np.isclose(img, matplotlib.colors.to_rgb("#1f78b4")), axis=-1)
        cells = m.input_at.reshape(-1, 2)[expected]
        want = np.zeros(m.canvas_size, bool)
        want[cells[:, 0], cells[:, 1]] = True
        np.testing.assert_array_equal(read, want, err_msg=f"frame {i}")


@pytest.mark.parametrize("case", CONV_CASES + TRANSPOSED_CASES, ids=str)
def test_footprint_agrees_with_the_taps(case):
    """The kernel outline drawn on the canvas sits on the inputs the taps read, and only
    padding or inserted zeros lie under the other taps."""
    kind, size, k, s, p, d, op = case
    m = conv_index_map(kind, size, k, s, p, d, op)
    inputs = m.input_at.reshape(-1, 2)
    is_input = np.zeros(m.canvas_size, bool)
    is_input[inputs[:, 0], inputs[:, 1]] = True
    real = m.taps >= 0
    np.testing.assert_array_equal(m.footprint[real], inputs[m.taps[real]])
    zeros = m.footprint[~real]
    assert not is_input[zeros[:, 0], zeros[:, 1]].any()
    assert (m.footprint >= 0).all()
    assert (m.footprint[..., 0] < m.canvas_size[0]).all()
    assert (m.footprint[..., 1] < m.canvas_size[1]).all()
    # The footprint is the (dilated) kernel: taps d apart.
    dh, dw = _pair(d)
    np.testing.assert_array_equal(np.diff(m.footprint[..., 0], axis=2), dh)
    np.testing.assert_array_equal(np.diff(m.footprint[..., 1], axis=3), dw)


def test_frames_agree_with_pytorch():
    torch = pytest.importorskip("torch")
    for kind, size, k, s, p, d, op in [CONV_CASES[2], CONV_CASES[4], TRANSPOSED_CASES[1]]:
        m = conv_index_map(kind, size, k, s, p, d, op)
        x = torch.ones((1, 1) + _pair(size), dtype=torch.float64, requires_grad=True)
        w = torch.ones((1, 1) + _pair(k), dtype=torch.float64)
        if kind == "transposed":
            y = torch.nn.functional.conv_transpose2d(x, w, None, s, p, op, 1, d)
        else:
            y = torch.nn.functional.conv2d(x, w, None, s, p, d)
        assert tuple(y.shape[2:]) == m.output_size
        for oh in range(m.output_size[0]):
            for ow in range(m.output_size[1]):
                x.grad = None
                y[0, 0, oh, ow].backward(retain_graph=True)
                np.testing.assert_array_equal(m.inputs_of(oh, ow),
                                              np.flatnonzero(x.grad.numpy()))


def test_scatter_map_rebuilds_conv_transpose2d():
    """Σ_j x[j] · w[tap(j, o)] over the scatter map is the transposed conv itself."""
    rng = np.random.default_rng(1)
    for size, k, s, p, op, d in [(3, 3, 2, 0, 0, 1), (4, 3, 2, 1, 1, 1),
                                 ((2, 3), (2, 3), 3, 0, 2, 1), (3, 3, 1, 2, 0, 2)]:
        scatter = transposed_scatter_map(size, k, s, p, op, d)
        H, W, OH, OW = scatter.shape
        KH, KW = _pair(k)
        x, w = rng.standard_normal((H, W)), rng.standard_normal((KH, KW))
        w_of_tap = np.concatenate([[0.0], w.ravel()])           # tap id 0 = "no write"
        rebuilt = np.einsum("rc,rcij->ij", x, w_of_tap[scatter])
        y = conv_transpose2d(x[None, None], w[None, None], stride=s, padding=p,
                             output_padding=op, dilation=d).data[0, 0]
        np.testing.assert_allclose(rebuilt, y, rtol=1e-12, atol=1e-12)


def test_checkerboard_counts():
    anim = animate_transposed_scatter(4, kernel_size=3, stride=2)
    counts = anim.scene.counts[-1]
    ones = conv_transpose2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), stride=2).data[0, 0]
    np.testing.assert_array_equal(counts, ones)
    assert set(np.unique(counts[1:-1, 1:-1])) == {1, 2, 4}           # uneven: a checkerboard
    even = transposed_scatter_map(4, 4, 2, 1)                         # k divisible by s
    interior = (even > 0).sum(axis=(0, 1))[1:-1, 1:-1]
    assert np.unique(interior).tolist() == [4]


# ------------------------------------------------------------------------- sizes and export
def test_output_grid_follows_the_formula():
    rng = np.random.default_rng(2)
    checked = 0
    while checked < 60:
        i, k, s, p, d = (int(v) for v in rng.integers([1, 1, 1, 0, 1], [12, 5, 4, 3, 4]))
        kind = ["conv", "dilated", "transposed"][checked % 3]
        if kind == "dilated":
            d = max(d, 2)
        op = int(rng.integers(0, max(s, d))) if kind == "transposed" else 0
        if kind == "transposed":
            o = (i - 1) * s - 2 * p + d * (k - 1) + op + 1
        else:
            o = (i + 2 * p - d * (k - 1) - 1) // s + 1
        if o < 1:
            with pytest.raises(ValueError, match="empty"):
                conv_index_map(kind, i, k, s, p, d, op)
            continue
        m = conv_index_map(kind, i, k, s, p, d, op)
        assert m.output_size == (o, o), (kind, i, k, s, p, d, op)
        assert m.taps.shape == (o, o, k, k)
        checked += 1
    anim = animate_conv("conv", (6, 9), 3, stride=(2, 3), padding=1)
    assert anim.scene.map.output_size == (3, 3)
    fig = show_step(anim, 0)
    assert fig.axes[1].images[0].get_array().shape[:2] == (3, 3)      # the drawn output grid


def test_gif_export_and_jshtml_headless(tmp_path):
    assert matplotlib.get_backend().lower() == "agg"
    anim = animate_conv("transposed", 2, 1, stride=2)                  # 3x3 output: 9 frames
    path = tmp_path / "transposed.gif"
    anim.save(path, writer="pillow", fps=4, dpi=40)
    with Image.open(path) as gif:
        assert gif.n_frames == anim.scene.n_frames == 9
    small = animate_transposed_scatter(2, 2, 2)
    html = small.to_jshtml(fps=2)
    assert "<script" in html and html.count("data:image/png") == small.scene.n_frames == 4


def test_show_step_and_views():
    anim = animate_conv("dilated", 7, 3, dilation=2)
    last = show_step(anim, -1)
    assert isinstance(last, Figure)
    assert last.axes[0].images[0].get_array().shape[:2] == anim.scene.map.canvas_size
    with pytest.raises(ValueError, match="frame"):
        show_step(anim, anim.scene.n_frames)
    with pytest.raises(TypeError, match="animate_conv"):
        show_step(object(), 0)
    fig = show_transposed_views(3, 3, 2, output_pixel=(2, 3))
    assert len(fig.axes) == 4
    with pytest.raises(ValueError, match="output_pixel"):
        show_transposed_views(3, 3, 2, output_pixel=(7, 0))


@pytest.mark.parametrize("size, k, s, p, d, op, pixel", [
    (3, 3, 2, 0, 1, 0, (3, 2)), (4, 3, 2, 1, 1, 1, (4, 5)), (3, 2, 3, 0, 2, 1, (5, 1))])
def test_views_show_the_same_output_cell(size, k, s, p, d, op, pixel):
    """Both pairs frame the same output cell, and light up the same inputs: those with a
    non-zero gradient at that cell."""
    fig = show_transposed_views(size, k, s, p, op, d, output_pixel=pixel)
    ax_in, ax_counts, ax_canvas, ax_out = fig.axes
    m = conv_index_map("transposed", size, k, s, p, d, op)
    x = Tensor(np.ones((1, 1, size, size)), requires_grad=True)
    y = conv_transpose2d(x, Tensor(np.ones((1, 1, k, k))), stride=s, padding=p,
                         output_padding=op, dilation=d)
    seed = np.zeros(y.shape)
    seed[(0, 0) + pixel] = 1.0
    y.backward(seed)
    expected = np.flatnonzero(x.grad)
    dark = np.flatnonzero(np.all(ax_in.images[0].get_array() == to_rgb("#1f78b4"), axis=-1))
    np.testing.assert_array_equal(dark, expected)                     # scatter view
    canvas = ax_canvas.images[0].get_array()
    rows, cols = m.input_at.reshape(-1, 2)[expected].T
    assert np.all(canvas[rows, cols] == to_rgb("#1f78b4"))            # zero-insertion view
    for ax in (ax_counts, ax_out):                                    # the red frame
        frames = [r for r in ax.patches if r.get_edgecolor()[:3] == to_rgb("#e31a1c")]
        assert [(r.get_x() + 0.5, r.get_y() + 0.5) for r in frames] == [pixel[::-1]]


def test_scatter_digits_contrast_with_their_cell():
    """Every count is written in the colour that reads best on its cell: WCAG contrast >= 4.5
    (black or white always reaches 4.58 on some side, whatever the background)."""
    def luminance(rgb):
        rgb = np.asarray(to_rgb(rgb))
        return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4) @ [
            0.2126, 0.7152, 0.0722]

    anim = animate_transposed_scatter(3, kernel_size=3, stride=2)
    for frame in range(anim.scene.n_frames):
        fig = show_step(anim, frame)
        counts = anim.scene.counts[frame]
        written = [t for t in fig.axes[1].texts if t.get_text()]
        assert len(written) == np.count_nonzero(counts)
        for text in written:
            c, r = (int(round(v)) for v in text.get_position())
            cell = anim.scene.cmap(anim.scene.norm(counts[r, c]))[:3]
            lighter, darker = sorted([luminance(cell), luminance(text.get_color())])[::-1]
            assert (lighter + 0.05) / (darker + 0.05) >= 4.5, (frame, r, c, text.get_color())


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="deconv"), "kind"),
    (dict(kind="dilated", dilation=1), "dilation > 1"),
    (dict(kind="conv", output_padding=1), "output_padding"),
    (dict(kind="transposed", stride=2, output_padding=2), "output_padding"),
    (dict(kind="conv", input_size=2, kernel_size=3), "empty"),
    (dict(kind="conv", stride=0), "stride"),
    (dict(kind="conv", kernel_size=2.5), "kernel_size"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        animate_conv(**kwargs)


# ------------------------------------------------------------------------- receptive fields
def test_theoretical_receptive_fields():
    assert layer_arithmetic(dilated_stack([3, 6, 12, 18, 24]))[0] == (127, 127)
    assert layer_arithmetic(dilated_stack([1, 2, 4, 8]))[0] == (31, 31)
    assert layer_arithmetic(dilated_stack([1, 1, 1, 1]))[0] == (9, 9)
    chain = [nn.Conv2d(1, 1, 3), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3), nn.ReLU(),
             nn.Conv2d(1, 1, 3, dilation=2), nn.MaxPool2d(2), nn.BatchNorm2d(1),
             nn.Conv2d(1, 1, 3)]
    assert layer_arithmetic(chain) == ((26, 26), (4, 4), (0, 0))
    assert layer_arithmetic([nn.ConvTranspose2d(1, 1, 2, stride=2)]) == (None, None, None)


def test_effective_field_lies_in_the_theoretical_one():
    # Uniform positive weights, no non-linearity: the gradient counts paths, nothing cancels.
    full = receptive_field(dilated_stack([1, 2, 4, 8]), (1, 41, 41))
    assert full.size == (31, 31) and full.start == (5, 5)
    assert full.support() == (31, 31)
    assert (full.gradient[5:36, 5:36] > 0).all()                     # no holes
    assert full.gradient.sum() == pytest.approx(full.gradient[5:36, 5:36].sum())
    assert full.effective_size(1.0) == 31 and 1 < full.effective_size(0.5) < 31
    aspp = receptive_field(dilated_stack([3, 6, 12, 18, 24]), (1, 131, 131))
    assert aspp.size == (127, 127) and aspp.support() == (127, 127)
    rows, cols = np.nonzero(aspp.gradient)
    assert ((rows - 65) % 3 == 0).all() and ((cols - 65) % 3 == 0).all()   # gridding
    # A strided chain with random weights and ReLUs: the support stays inside the window.
    nn.init.manual_seed(0)
    chain = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.ReLU(),
                          nn.Conv2d(4, 3, 3, stride=2, padding=1))
    rf = receptive_field(chain, (2, 40, 40), position=(4, 6))
    (r0, c0), (h, w) = rf.start, rf.size
    inside = np.zeros_like(rf.gradient, dtype=bool)
    inside[max(r0, 0):r0 + h, max(c0, 0):c0 + w] = True
    assert rf.gradient.sum() > 0 and not rf.gradient[~inside].any()
    fig = plot_receptive_fields([full, aspp, rf])
    assert len(fig.axes) == 3


def test_receptive_field_picture_log_scale_margin_and_holes():
    aspp = receptive_field(dilated_stack([3, 6, 12, 18, 24]), (1, 131, 131))
    small = receptive_field(dilated_stack([1, 1]), (1, 41, 41))        # a 5x5 field
    fig = plot_receptive_fields([aspp, small], ["aspp", "small"], scale="log", margin=3)
    ax_aspp, ax_small = fig.axes[:2]
    assert len(fig.axes) == 3                                          # + the colour bar
    # the margin crops to the theoretical field and 3 pixels around, in input coordinates
    assert ax_small.images[0].get_array().shape == (11, 11)
    assert ax_small.images[0].get_extent() == [14.5, 25.5, 25.5, 14.5]
    assert ax_aspp.images[0].get_array().shape == (131, 131)           # clipped to the input
    # zeros are masked (drawn grey) and counted: 127^2 - 43^2 pixels of the support
    assert ax_aspp.images[0].get_array().mask.sum() == 131 ** 2 - 43 ** 2
    assert "14280 holes" in ax_aspp.get_xlabel() and "0 holes" in ax_small.get_xlabel()
    linear = plot_receptive_fields([small])                            # the default: unchanged
    assert linear.axes[0].images[0].get_array().shape == (41, 41) and len(linear.axes) == 1
    with pytest.raises(ValueError, match="scale must be"):
        plot_receptive_fields([small], scale="sqrt")


def test_receptive_field_leaves_the_model_as_it_was():
    class Branches(nn.Module):                  # not a chain: no theoretical field
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 1, 3, padding=1)
            self.bn = nn.BatchNorm2d(1)

        def forward(self, x):
            return self.bn(self.a(x)) + x

    model = Branches()
    model.train()
    model.a.eval()                           # a mixed state must come back as it was
    rf = receptive_field(model, (9, 9))
    assert rf.size is None and rf.position == (4, 4)
    assert rf.support() == (3, 3)            # eval-mode BatchNorm: no mixing across pixels
    assert model.training and model.bn.training and not model.a.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="position"):
        receptive_field(model, (9, 9), position=(9, 0))


# ----------------------------------------------------------------------------- RoI sampling
ROI_CASES = [  # box, feature size, output size, spatial scale, sampling ratio, aligned
    ((10, 6, 50, 41), (6, 8), (2, 2), 1 / 8, 2, False),
    ((10, 6, 50, 41), (6, 8), (2, 3), 1 / 8, -1, True),
    ((1.3, 0.2, 4.9, 3.7), (6, 6), (3, 2), 1.0, 3, True),
]


@pytest.mark.parametrize("case", ROI_CASES, ids=str)
def test_roi_align_points_are_where_the_kernel_reads(case):
    box, (H, W), (PH, PW), scale, ratio, aligned = case
    g = roi_sampling_geometry(box, (H, W), (PH, PW), scale, ratio, aligned)
    for ph in range(PH):
        for pw in range(PW):
            x = Tensor(np.zeros((1, 1, H, W)), requires_grad=True)
            y = roi_align(x, np.array([[0.0, *box]]), (PH, PW), scale, ratio, aligned)
            dy = np.zeros(y.shape)
            dy[0, 0, ph, pw] = 1
            y.backward(dy)
            # Bilinear weights of the drawn points (drawing coordinate - 1/2 = pixel index).
            expected = np.zeros((H, W))
            points = g.align_points[ph, pw] - 0.5
            for py, px in points:
                assert -1 <= py <= H and -1 <= px <= W   # the cases stay inside the map
                py, px = min(max(py, 0), H - 1), min(max(px, 0), W - 1)
                y0, x0 = min(int(py), H - 2), min(int(px), W - 2)
                ly, lx = py - y0, px - x0
                expected[y0, x0] += (1 - ly) * (1 - lx)
                expected[y0, x0 + 1] += (1 - ly) * lx
                expected[y0 + 1, x0] += ly * (1 - lx)
                expected[y0 + 1, x0 + 1] += ly * lx
            np.testing.assert_allclose(x.grad[0, 0], expected / len(points), atol=1e-12)


@pytest.mark.parametrize("case", ROI_CASES, ids=str)
def test_roi_pool_bins_are_where_the_kernel_takes_its_max(case):
    box, (H, W), (PH, PW), scale, _, _ = case
    g = roi_sampling_geometry(box, (H, W), (PH, PW), scale)
    ramp = np.arange(H * W, dtype=np.float64).reshape(1, 1, H, W)
    # On a ramp whose values are the flat pixel indices, a bin's maximum IS the index of its
    # last pixel, and on the negated ramp minus the maximum is the index of its first pixel.
    last = roi_pool(ramp, np.array([[0.0, *box]]), (PH, PW), scale).data[0, 0]
    first = -roi_pool(-ramp, np.array([[0.0, *box]]), (PH, PW), scale).data[0, 0]
    for n, (y0, y1, x0, x1) in enumerate(g.pool_bins):
        ph, pw = divmod(n, PW)
        assert first[ph, pw] == y0 * W + x0            # top-left pixel of the drawn bin
        assert last[ph, pw] == (y1 - 1) * W + (x1 - 1)  # bottom-right pixel of the drawn bin


def test_roi_picture_draws_the_geometry():
    case = ROI_CASES[0]
    g = roi_sampling_geometry(*case)
    fig = roi_sampling(*case)
    offsets = [c.get_offsets() for c in fig.axes[1].collections if isinstance(c, PathCollection)]
    assert len(offsets) == 1
    np.testing.assert_allclose(offsets[0][:, ::-1], g.align_points.reshape(-1, 2))
    assert g.align_error == pytest.approx(0.5)         # aligned=False: half a feature pixel
    assert roi_sampling_geometry(*case[:-1], True).align_error == pytest.approx(0.0, abs=1e-12)
    assert g.pool_error > 0.5                          # two quantisations


# ----------------------------------------------------------------------------- segmentation
def test_show_segmentation_and_tasks():
    ds = Shapes(4, size=32, seed=0)
    s = ds[1]
    pred = s["mask"].copy()
    pred[:4] = 2
    fig = show_segmentation(s["image"], s["mask"], pred, ds.class_names)
    assert len(fig.axes) == 4
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    present = np.unique(np.concatenate([s["mask"].ravel(), pred.ravel()]))
    assert labels == [ds.class_names[c] for c in present]
    assert "errors" in fig.axes[3].get_title()
    assert len(show_segmentation(s["image"], s["mask"]).axes) == 2
    with pytest.raises(ValueError, match="mask"):
        show_segmentation(s["image"], s["mask"][:-1])
    with pytest.raises(ValueError, match="pred"):
        show_segmentation(s["image"], s["mask"], pred[:, :-1])
    tasks = show_tasks(s, ds.class_names)
    assert len(tasks.axes[2].patches) == len(s["boxes"])
