"""Animations of convolution, dilated convolution and transposed convolution, drawn from the
index maps the kernels themselves use.

The pictures in the style of Dumoulin & Visin's *A guide to convolution arithmetic* show an
input grid, a kernel footprint sliding over it and the output cell each position writes. Here
nothing in those frames is drawn from separate geometry: the cells a frame highlights come
from running the library's own kernels on inputs built to reveal the index map.

- **conv / dilated**: ``im2col`` of an input whose pixel values are ``flat index + 1`` gives,
  for every output pixel, the indices of the inputs its kernel taps read; a 0 is a tap that
  fell into the zero padding (:func:`conv_index_map`).
- **transposed**: ``conv_transpose2d`` of one-hot inputs with a kernel whose taps are numbered
  ``1 .. KH·KW`` gives, for every input pixel, the output cells it writes and through which tap
  (:func:`transposed_scatter_map`): the scatter view. The same numbers, read per output cell,
  are the "zeros inserted, then an ordinary convolution" view.

The canvas the footprint moves over (the padded input, or the zero-inserted and padded input)
is an image of canvas indices run through the same ``im2col``; ``tests/test_viz.py`` checks
that the two maps agree and that the inputs each frame highlights are exactly those with a
non-zero gradient when the real op is differentiated at that output pixel.

Every function returns matplotlib objects built without ``pyplot`` (headless-safe). In
Jupyter show an animation with :func:`edu_seg.viz.animation.animation_html` (matplotlib's
player, needing nothing from outside the page), save it with
``anim.save("conv.gif", writer="pillow")`` and step through it with :func:`show_step`.
"""
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.animation import FuncAnimation
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..autograd import Tensor, no_grad
from ..backend import host_kernels
from ..ops.conv import conv2d_output_size, conv_transpose2d, conv_transpose2d_output_size

__all__ = ["ConvIndexMap", "conv_index_map", "transposed_scatter_map", "animate_conv",
           "animate_transposed_scatter", "show_transposed_views", "show_step"]

KINDS = ("conv", "dilated", "transposed")

# Cell colours (one meaning each, in every picture of this module).
_INPUT = to_rgb("#a6cee3")           # an input pixel
_PAD = to_rgb("#ffffff")             # zero padding
_ZERO = to_rgb("#e6e6e6")            # a zero inserted between input pixels (transposed)
_READ = to_rgb("#1f78b4")            # an input pixel the kernel reads in this frame
_READ_ZERO = to_rgb("#9a9a9a")       # a padding / inserted zero under the kernel
_DONE = to_rgb("#b2df8a")            # an output pixel already written
_NOW = to_rgb("#33a02c")             # the output pixel this frame writes
_TODO = to_rgb("#ffffff")            # an output pixel not written yet
_TARGET = to_rgb("#e31a1c")          # outline: the output cell both views of a still compute


def _text_colour(background):
    """Black or white, whichever contrasts more with an RGB(A) background (WCAG luminance)."""
    rgb = np.asarray(background[:3], dtype=float)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    luminance = linear @ [0.2126, 0.7152, 0.0722]
    # contrast with black (L + .05)/.05 beats contrast with white 1.05/(L + .05) above L = 0.179
    return "black" if luminance > 0.179 else "white"


@dataclass
class ConvIndexMap:
    """Which input pixel every kernel tap reads, for every output pixel.

    The footprint moves over a *canvas*: the input with its zero padding for a convolution,
    the input with ``stride - 1`` zeros inserted between pixels and padded for a transposed
    convolution (where it then moves with stride 1, carrying the flipped kernel).

    Attributes
    ----------
    kind : str
        ``"conv"`` (dilated convolution is a conv with ``dilation > 1``) or ``"transposed"``.
    input_size, output_size, canvas_size : (int, int)
    kernel_size, stride, padding, dilation, output_padding : (int, int)
    input_at : (H, W, 2) int array
        Canvas ``(row, col)`` of every input pixel.
    footprint : (OH, OW, KH, KW, 2) int array
        Canvas ``(row, col)`` under tap ``(a, b)`` when computing output ``(oh, ow)``.
    taps : (OH, OW, KH, KW) int array
        Flat index ``h * W + w`` of the input pixel tap ``(a, b)`` reads for output ``(oh, ow)``,
        or -1 where it reads a padding zero or an inserted zero. For a transposed conv, tap
        ``(a, b)`` of the footprint holds weight ``w[KH-1-a, KW-1-b]`` (the flipped kernel).
    """

    kind: str
    input_size: tuple
    output_size: tuple
    canvas_size: tuple
    kernel_size: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    output_padding: tuple
    input_at: np.ndarray
    footprint: np.ndarray
    taps: np.ndarray

    def inputs_of(self, oh, ow):
        """Sorted flat indices of the input pixels that output ``(oh, ow)`` depends on."""
        t = self.taps[oh, ow]
        return np.unique(t[t >= 0])


# ------------------------------------------------------------------------- argument checks
def _pair(op, name, value, minimum):
    """``value`` as an ``(int, int)`` pair, each at least ``minimum``; ValueError otherwise."""
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                 for v in pair):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _options(op, kind, input_size, kernel_size, stride, padding, dilation, output_padding):
    if kind not in KINDS:
        raise ValueError(f"{op}: kind must be one of {KINDS}, got {kind!r}")
    opts = dict(input_size=_pair(op, "input_size", input_size, 1),
                kernel_size=_pair(op, "kernel_size", kernel_size, 1),
                stride=_pair(op, "stride", stride, 1), padding=_pair(op, "padding", padding, 0),
                dilation=_pair(op, "dilation", dilation, 1),
                output_padding=_pair(op, "output_padding", output_padding, 0))
    if kind == "dilated" and opts["dilation"] == (1, 1):
        raise ValueError(f"{op}: kind='dilated' needs dilation > 1, got dilation=1")
    if kind != "transposed" and opts["output_padding"] != (0, 0):
        raise ValueError(f"{op}: output_padding is for kind='transposed' only, got "
                         f"{output_padding!r} with kind={kind!r}")
    for axis in range(2):
        s, d, q = opts["stride"][axis], opts["dilation"][axis], opts["output_padding"][axis]
        if q >= max(s, d):
            raise ValueError(f"{op}: output_padding must be smaller than stride or "
                             f"dilation, got output_padding={output_padding!r}, "
                             f"stride={stride!r}, dilation={dilation!r}")
    geometry = [opts[k] for k in ("input_size", "kernel_size", "stride", "padding")]
    if kind == "transposed":
        out = conv_transpose2d_output_size(*geometry, opts["output_padding"], opts["dilation"])
    else:
        out = conv2d_output_size(*geometry, opts["dilation"])
    if min(out) < 1:
        raise ValueError(f"{op}: the output would be empty ({out[0]}x{out[1]}) for "
                         f"input_size={input_size!r}, kernel_size={kernel_size!r}, "
                         f"stride={stride!r}, padding={padding!r}, dilation={dilation!r}")
    return opts


# ------------------------------------------------------------------------------ index maps
def _im2col_windows(image, kernel_size, stride, padding, dilation):
    """Run the real ``im2col`` on a (rows, cols) image; return (OH, OW, KH, KW) of its values."""
    x = np.ascontiguousarray(image, dtype=np.float64)[None, None]       # (1, 1, rows, cols)
    cols = host_kernels("conv").im2col(x, kernel_size, stride, padding, dilation)  # (1, KH*KW, OH*OW)
    OH, OW = conv2d_output_size(image.shape, kernel_size, stride, padding, dilation)
    cols = cols.reshape(*kernel_size, OH, OW).transpose(2, 3, 0, 1)
    return np.rint(cols).astype(np.int64)


def transposed_scatter_map(input_size, kernel_size, stride=1, padding=0, output_padding=0,
                           dilation=1):
    """Which output pixels every input pixel of a transposed convolution writes, and by which tap.

    Runs the library's ``conv_transpose2d`` on ``H·W`` one-hot inputs with a kernel whose taps
    are numbered ``1 .. KH·KW``.

    Parameters
    ----------
    input_size, kernel_size, stride, padding, output_padding, dilation : int or (int, int)

    Returns
    -------
    scatter : (H, W, OH, OW) int array
        ``scatter[r, c, oh, ow] = kh * KW + kw + 1`` if input pixel ``(r, c)`` writes output
        ``(oh, ow)`` through weight ``w[kh, kw]``, else 0.

    Notes
    -----
    Input pixel ``(r, c)`` stamps ``x[r, c] · w`` into the output window whose tap ``(kh, kw)``
    is at ``(r·s − p + kh·d, c·s − p + kw·d)``; taps that land outside the output (cut away by
    the padding) are dropped.
    """
    o = _options("transposed_scatter_map", "transposed", input_size, kernel_size, stride,
                 padding, dilation, output_padding)
    (H, W), (KH, KW) = o["input_size"], o["kernel_size"]
    x = np.eye(H * W).reshape(H * W, 1, H, W)                    # one one-hot input per pixel
    w = np.arange(1.0, KH * KW + 1).reshape(1, 1, KH, KW)        # tap (kh, kw) is kh*KW+kw+1
    with no_grad():
        y = conv_transpose2d(Tensor(x), Tensor(w), stride=o["stride"], padding=o["padding"],
                             output_padding=o["output_padding"], dilation=o["dilation"]).data
    return np.rint(y[:, 0]).astype(np.int64).reshape(H, W, *y.shape[2:])


def conv_index_map(kind, input_size, kernel_size, stride=1, padding=0, dilation=1,
                   output_padding=0):
    """The index map of a (dilated or transposed) convolution, computed by the real kernels.

    Parameters
    ----------
    kind : {"conv", "dilated", "transposed"}
    input_size, kernel_size, stride, padding, dilation, output_padding : int or (int, int)
        PyTorch's meaning; ``output_padding`` only for ``"transposed"``.

    Returns
    -------
    ConvIndexMap

    Notes
    -----
    Convolution: ``taps`` is ``im2col(x) - 1`` for ``x = 1 .. H·W`` (zero padding reads 0, so it
    becomes -1); ``footprint`` is ``im2col`` (no padding, same stride and dilation) of the padded
    canvas numbered ``1 .. CH·CW``.

    Transposed convolution (view 3 of chapter 03): insert ``s − 1`` zeros between input pixels
    and pad each side by ``P = d(k−1) − p`` (plus ``output_padding`` at the bottom and right),
    then slide the flipped kernel with stride 1 and the same dilation ``d``. ``taps`` comes
    from :func:`transposed_scatter_map` (input ``j`` reaches output ``o`` through tap ``t`` ⇒
    footprint cell ``K−1−t`` of ``o`` reads ``j``); ``footprint`` from ``im2col`` of the
    canvas. If ``p`` exceeds ``d(k−1)``, ``P`` is negative: the canvas is then cropped instead
    of padded.
    """
    o = _options("conv_index_map", kind, input_size, kernel_size, stride, padding, dilation,
                 output_padding)
    (H, W), (KH, KW) = o["input_size"], o["kernel_size"]
    s, p, d, op = o["stride"], o["padding"], o["dilation"], o["output_padding"]
    if kind != "transposed":
        # The input numbered 1..H*W: each column of im2col lists what one output reads.
        taps = _im2col_windows(np.arange(1, H * W + 1).reshape(H, W), (KH, KW), s, p, d) - 1
        canvas_size = (H + 2 * p[0], W + 2 * p[1])
        start = (0, 0)
        rr, cc = np.meshgrid(np.arange(H) + p[0], np.arange(W) + p[1], indexing="ij")
        canvas_stride = s                                  # the window moves as in the conv
        out_size = taps.shape[:2]
    else:
        scatter = transposed_scatter_map(o["input_size"], (KH, KW), s, p, op, d)
        out_size = scatter.shape[2:]
        scatter = scatter.reshape(H * W, *out_size)               # input pixels by flat index
        taps = np.full(out_size + (KH, KW), -1, dtype=np.int64)
        j, oh, ow = np.nonzero(scatter)
        kh, kw = np.divmod(scatter[j, oh, ow] - 1, KW)
        taps[oh, ow, KH - 1 - kh, KW - 1 - kw] = j        # the zero-insertion view flips w
        P = [d[a] * (o["kernel_size"][a] - 1) - p[a] for a in range(2)]
        pad = [max(v, 0) for v in P]                       # padding drawn on the canvas
        start = (pad[0] - P[0], pad[1] - P[1])             # > 0 only when the canvas is cropped
        canvas_size = tuple(
            max(2 * pad[a] + (o["input_size"][a] - 1) * s[a] + 1,
                start[a] + out_size[a] + d[a] * (o["kernel_size"][a] - 1))
            for a in range(2))
        rr, cc = np.meshgrid(pad[0] + np.arange(H) * s[0], pad[1] + np.arange(W) * s[1],
                             indexing="ij")
        canvas_stride = (1, 1)                             # ... and moves one cell at a time
    # Where the footprint sits: im2col of the canvas numbered 1..CH*CW, from `start` on.
    CH, CW = canvas_size
    numbered = np.arange(1, CH * CW + 1).reshape(CH, CW)[start[0]:, start[1]:]
    flat = _im2col_windows(numbered, (KH, KW), canvas_stride, (0, 0), d)
    flat = flat[:out_size[0], :out_size[1]] - 1
    footprint = np.stack(np.divmod(flat, CW), axis=-1)
    return ConvIndexMap(kind="transposed" if kind == "transposed" else "conv",
                        input_size=(H, W), output_size=tuple(out_size), canvas_size=canvas_size,
                        kernel_size=(KH, KW), stride=s, padding=p, dilation=d,
                        output_padding=op, input_at=np.stack([rr, cc], axis=-1),
                        footprint=footprint, taps=taps)


# --------------------------------------------------------------------------------- drawing
def _grid_axes(ax, rows, cols, title):
    """An axes showing a rows x cols board of unit cells with thin grid lines."""
    ax.set_xticks([])                      # no major ticks: they would hide coinciding minor ones
    ax.set_yticks([])
    ax.set_xticks(np.arange(-0.5, cols, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, rows, 1), minor=True)
    ax.grid(which="minor", color="0.45", lw=0.8)
    ax.set_axisbelow(False)                # grid lines over the cell colours
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_title(title, fontsize=10)


class _ConvScene:
    """Frames of a sliding-kernel animation: frame ``i`` computes output pixel ``i`` (row-major)."""

    n_axes = 2

    def __init__(self, index_map):
        self.map = index_map
        self.n_frames = int(np.prod(index_map.output_size))
        CH, CW = index_map.canvas_size
        base = np.empty((CH, CW, 3))
        base[...] = _PAD if index_map.kind == "conv" else _ZERO
        if index_map.kind == "transposed":     # the padding border of the zero-inserted canvas
            r, c = index_map.input_at[..., 0], index_map.input_at[..., 1]
            top, left = r.min(), c.min()
            bottom, right = CH - 1 - r.max(), CW - 1 - c.max()
            base[:top] = base[CH - bottom:] = _PAD
            base[:, :left] = base[:, CW - right:] = _PAD
        base[index_map.input_at[..., 0], index_map.input_at[..., 1]] = _INPUT
        self.base = base

    def panel_widths(self):
        return [self.map.canvas_size[1], self.map.output_size[1]]

    def panel_height(self):
        return max(self.map.canvas_size[0], self.map.output_size[0])

    def highlighted(self, i):
        """Flat indices of the input pixels frame ``i`` lights up (what its output reads)."""
        oh, ow = divmod(i, self.map.output_size[1])
        return self.map.inputs_of(oh, ow)

    def canvas_image(self, i):
        m = self.map
        oh, ow = divmod(i, m.output_size[1])
        img = self.base.copy()
        fp = m.footprint[oh, ow].reshape(-1, 2)
        img[fp[:, 0], fp[:, 1]] = _READ_ZERO
        read = m.input_at.reshape(-1, 2)[self.highlighted(i)]
        img[read[:, 0], read[:, 1]] = _READ
        return img

    def output_image(self, i):
        OH, OW = self.map.output_size
        img = np.empty((OH * OW, 3))
        img[:i], img[i], img[i + 1:] = _DONE, _NOW, _TODO
        return img.reshape(OH, OW, 3)

    def setup(self, axes):
        m = self.map
        ax_in, ax_out = axes
        (H, W), (OH, OW), (CH, CW) = m.input_size, m.output_size, m.canvas_size
        KH, KW = m.kernel_size
        fmt = lambda v: f"{v[0]}" if v[0] == v[1] else f"{v[0]}x{v[1]}"  # noqa: E731
        if m.kind == "conv":
            title = (f"input {H}x{W} + padding {fmt(m.padding)}\nkernel {KH}x{KW}, stride "
                     f"{fmt(m.stride)}, dilation {fmt(m.dilation)}")
        else:
            gaps = tuple(v - 1 for v in m.stride)
            pad = tuple(d * (k - 1) - p
                        for d, k, p in zip(m.dilation, m.kernel_size, m.padding))
            extra = ("" if m.output_padding == (0, 0)
                     else f" (+{fmt(m.output_padding)} bottom/right)")
            title = (f"input {H}x{W}: s − 1 = {fmt(gaps)} zero{'s' * (max(gaps) != 1)} "
                     f"inserted between inputs,\npadded by d(k − 1) − p = {fmt(pad)}{extra}"
                     f"{' (< 0: cropped)' * (min(pad) < 0)}\nflipped {KH}x{KW} kernel, stride 1, "
                     f"dilation {fmt(m.dilation)}")
        _grid_axes(ax_in, CH, CW, title)
        _grid_axes(ax_out, OH, OW, f"output {OH}x{OW}")
        art = {"canvas": ax_in.imshow(self.canvas_image(0), interpolation="nearest"),
               "output": ax_out.imshow(self.output_image(0), interpolation="nearest"),
               "taps": [ax_in.add_patch(Rectangle((0, 0), 1, 1, fill=False, ec="black", lw=1.6))
                        for _ in range(KH * KW)],
               "label": ax_out.set_xlabel("(0, 0) reads 0 inputs", fontsize=9)}
        return art

    def update(self, art, i):
        m = self.map
        oh, ow = divmod(i, m.output_size[1])
        art["canvas"].set_data(self.canvas_image(i))
        art["output"].set_data(self.output_image(i))
        for rect, (r, c) in zip(art["taps"], m.footprint[oh, ow].reshape(-1, 2)):
            rect.set_xy((c - 0.5, r - 0.5))
        n = len(self.highlighted(i))
        art["label"].set_text(f"({oh}, {ow}) reads {n} input{'s' * (n != 1)}")
        return [art["canvas"], art["output"], *art["taps"], art["label"]]


class _ScatterScene:
    """Frames of the scatter view: frame ``j`` stamps input pixel ``j``'s kernel into the output."""

    n_axes = 2

    def __init__(self, scatter):
        self.input_size = scatter.shape[:2]
        self.scatter = scatter.reshape(-1, *scatter.shape[2:])   # (H*W, OH, OW): frame j = pixel j
        self.n_frames = self.scatter.shape[0]
        self.counts = np.cumsum(self.scatter > 0, axis=0)   # stamps per output cell after frame j
        self.vmax = max(int(self.counts[-1].max()), 1)
        self.cmap, self.norm = colormaps["Greens"], Normalize(0, self.vmax + 0.5)

    def panel_widths(self):
        return [self.input_size[1], self.scatter.shape[2]]

    def panel_height(self):
        return max(self.input_size[0], self.scatter.shape[1])

    def input_image(self, j):
        img = np.empty((self.n_frames, 3))
        img[:j], img[j], img[j + 1:] = _DONE, _READ, _INPUT
        return img.reshape(*self.input_size, 3)

    def setup(self, axes):
        ax_in, ax_out = axes
        H, W = self.input_size
        OH, OW = self.scatter.shape[1:]
        _grid_axes(ax_in, H, W, f"input {H}x{W}")
        _grid_axes(ax_out, OH, OW, f"output {OH}x{OW}: how many stamps\nadd up in each cell")
        art = {"input": ax_in.imshow(self.input_image(0), interpolation="nearest"),
               "output": ax_out.imshow(self.counts[0], cmap=self.cmap, norm=self.norm,
                                       interpolation="nearest"),
               "stamp": [],
               "text": [[ax_out.text(c, r, "", ha="center", va="center", fontsize=8)
                         for c in range(OW)] for r in range(OH)]}
        art["ax_out"] = ax_out
        return art

    def update(self, art, j):
        art["input"].set_data(self.input_image(j))
        self._draw_counts(art, self.counts[j])
        self._outline_stamps(art, [j])
        texts = [t for row in art["text"] for t in row]
        return [art["input"], art["output"], *art["stamp"], *texts]

    def focus(self, art, oh, ow):
        """The finished scatter, focused on output ``(oh, ow)``: the inputs whose stamps cover
        it are dark blue (the others light blue, as on the zero-insertion canvas), their stamps
        are outlined, and the cell itself is framed in red."""
        writers = np.flatnonzero(self.scatter[:, oh, ow])
        img = np.empty((self.n_frames, 3))
        img[:], img[writers] = _INPUT, _READ
        art["input"].set_data(img.reshape(*self.input_size, 3))
        self._draw_counts(art, self.counts[-1])
        self._outline_stamps(art, writers)
        art["ax_out"].add_patch(Rectangle((ow - 0.5, oh - 0.5), 1, 1, fill=False, ec=_TARGET,
                                          lw=3))
        n = len(writers)
        art["ax_out"].set_xlabel(f"({oh}, {ow}) gets {n} stamp{'s' * (n != 1)}", fontsize=9)

    def _draw_counts(self, art, counts):
        """Colour the output by ``counts`` and write each non-zero count in a legible colour."""
        art["output"].set_data(counts)
        for r, row in enumerate(art["text"]):
            for c, t in enumerate(row):
                t.set_text(str(counts[r, c]) if counts[r, c] else "")
                t.set_color(_text_colour(self.cmap(self.norm(counts[r, c]))))

    def _outline_stamps(self, art, pixels):
        """Outline every output cell the stamps of input ``pixels`` (flat indices) write."""
        for rect in art["stamp"]:
            rect.remove()
        rows, cols = np.nonzero((self.scatter[pixels] > 0).any(axis=0))
        art["stamp"] = [art["ax_out"].add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False,
                                                          ec="black", lw=1.6))
                        for r, c in zip(rows, cols)]


def _figure(scenes):
    """A figure with the axes of every scene side by side, each scene set up on its axes.

    Panel widths follow their number of columns and the figure is sized so that a cell has the
    same size in every panel.
    """
    widths, heights = [], []
    for scene in scenes:
        widths += scene.panel_widths()
        heights.append(scene.panel_height())
    cell = 0.36                                                  # inches per grid cell
    widths = [max(w, 4) for w in widths]                         # room for titles
    fig = Figure(figsize=(cell * sum(widths) + 0.9 * len(widths), cell * max(heights) + 1.8))
    axes = fig.subplots(1, len(widths), gridspec_kw={"width_ratios": widths})
    arts, k = [], 0
    for scene in scenes:
        arts.append(scene.setup(axes[k:k + scene.n_axes]))
        k += scene.n_axes
    fig.tight_layout()
    return fig, arts


def _animate(scene, interval):
    fig, (art,) = _figure([scene])
    scene.update(art, 0)
    anim = FuncAnimation(fig, lambda i: scene.update(art, i), frames=scene.n_frames,
                         interval=interval, repeat_delay=1000)
    anim.scene = scene            # show_step redraws any frame from it
    return anim


def animate_conv(kind="conv", input_size=5, kernel_size=3, stride=1, padding=0, dilation=1,
                 output_padding=0, interval=700):
    """Animate a convolution: the kernel footprint sliding over the input, one output per frame.

    Parameters
    ----------
    kind : {"conv", "dilated", "transposed"}
        ``"dilated"`` is a conv with ``dilation > 1``. ``"transposed"`` shows the transposed
        convolution as zeros inserted into the input plus an ordinary stride-1 convolution.
    input_size, kernel_size, stride, padding, dilation, output_padding : int or (int, int)
        PyTorch's meaning (``output_padding`` only for ``"transposed"``).
    interval : int
        Milliseconds per frame.

    Returns
    -------
    matplotlib.animation.FuncAnimation
        ``OH · OW`` frames. ``anim.scene.map`` is the :class:`ConvIndexMap` the frames are drawn
        from. Save with ``anim.save("conv.gif", writer="pillow")``; in Jupyter show it with
        :func:`edu_seg.viz.animation.animation_html` (anim); :func:`show_step` draws one frame.

    Notes
    -----
    The output grid has ``o = ⌊(i + 2p − d(k−1) − 1)/s⌋ + 1`` cells per axis for a convolution
    and ``o = (i−1)s − 2p + d(k−1) + output_padding + 1`` for a transposed one, because it is
    the shape of what the kernels return.

    Examples
    --------
    >>> anim = animate_conv("conv", input_size=5, kernel_size=3, stride=2, padding=1)
    >>> anim.scene.map.output_size
    (3, 3)
    """
    index_map = conv_index_map(kind, input_size, kernel_size, stride, padding, dilation,
                               output_padding)
    return _animate(_ConvScene(index_map), interval)


def animate_transposed_scatter(input_size=3, kernel_size=3, stride=2, padding=0,
                               output_padding=0, dilation=1, interval=700):
    """Animate the scatter view of a transposed convolution: each input pixel stamps the kernel.

    Frame ``j`` adds the stamp of input pixel ``j`` (outlined); each output cell shows how many
    stamps have landed on it so far. With ``kernel_size=3, stride=2`` the final counts form a
    checkerboard (1, 2 and 4 overlaps): the uneven coverage that makes transposed-conv decoders
    prone to grid artefacts, unless the weights compensate for it (chapter 03); with
    ``kernel_size=4, stride=2`` every interior cell gets the same count.

    Parameters
    ----------
    input_size, kernel_size, stride, padding, output_padding, dilation : int or (int, int)
    interval : int
        Milliseconds per frame.

    Returns
    -------
    matplotlib.animation.FuncAnimation
        ``H · W`` frames (input pixels in row-major order), drawn from
        :func:`transposed_scatter_map` (``anim.scene.scatter``, flattened to (H·W, OH, OW)).
    """
    scatter = transposed_scatter_map(input_size, kernel_size, stride, padding, output_padding,
                                     dilation)
    return _animate(_ScatterScene(scatter), interval)


def show_transposed_views(input_size=3, kernel_size=3, stride=2, padding=0, output_padding=0,
                          dilation=1, output_pixel=None):
    """The two pictures of one transposed convolution, side by side, as a still.

    Both pairs show how ``output_pixel`` (framed in red) is computed. Left pair: the scatter
    view after every input pixel has stamped its kernel (counts of overlapping stamps per
    output cell), with the inputs whose stamps cover ``output_pixel`` in dark blue and their
    stamps outlined. Right pair: the same op as zeros inserted into the input plus an ordinary
    convolution with the flipped kernel, at ``output_pixel``: the same inputs are dark blue
    under the kernel. Both are drawn from the library's ``conv_transpose2d``.

    Parameters
    ----------
    input_size, kernel_size, stride, padding, output_padding, dilation : int or (int, int)
    output_pixel : (int, int), optional
        The output cell the right pair computes (default: the centre one).

    Returns
    -------
    matplotlib.figure.Figure
    """
    scatter = transposed_scatter_map(input_size, kernel_size, stride, padding, output_padding,
                                     dilation)
    scatter_scene = _ScatterScene(scatter)
    conv_scene = _ConvScene(conv_index_map("transposed", input_size, kernel_size, stride,
                                           padding, dilation, output_padding))
    OH, OW = conv_scene.map.output_size
    oh, ow = output_pixel if output_pixel is not None else (OH // 2, OW // 2)
    if not (0 <= oh < OH and 0 <= ow < OW):
        raise ValueError(f"show_transposed_views: output_pixel must lie in the {OH}x{OW} "
                         f"output, got {output_pixel!r}")
    fig, (scatter_art, conv_art) = _figure([scatter_scene, conv_scene])
    scatter_scene.focus(scatter_art, oh, ow)
    conv_scene.update(conv_art, oh * OW + ow)
    conv_art["output"].axes.add_patch(Rectangle((ow - 0.5, oh - 0.5), 1, 1, fill=False,
                                                ec=_TARGET, lw=3))
    fig.suptitle(f"output ({oh}, {ow}) of one transposed convolution: scatter view (left), "
                 "zero-insertion view (right)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def show_step(anim, i):
    """Draw frame ``i`` of an animation from this module as a still figure.

    Parameters
    ----------
    anim : FuncAnimation
        From :func:`animate_conv` or :func:`animate_transposed_scatter`.
    i : int
        Frame number; negative counts from the end, as in a list.

    Returns
    -------
    matplotlib.figure.Figure
    """
    scene = getattr(anim, "scene", None)
    if scene is None:
        raise TypeError("show_step: anim must come from animate_conv or "
                        "animate_transposed_scatter")
    n = scene.n_frames
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= i < n:
        raise ValueError(f"show_step: frame must be an int in [{-n}, {n}), got {i!r}")
    fig, (art,) = _figure([scene])
    scene.update(art, int(i) % n)
    return fig
