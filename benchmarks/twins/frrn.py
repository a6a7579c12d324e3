"""PyTorch twin of ``frrn``: FRRN A (Pohlen et al., CVPR 2017, arXiv:1611.08323), small or paper.

Two streams: a residual stream of ``residual`` channels at full resolution, never pooled, and
a pooling stream that goes down to 1/16 and back. Each FRRU at stride s concatenates the
pooling stream with the max-pooled residual stream, applies two 3x3 conv-BN-ReLU, and adds a
1x1 conv of the result, up-sampled x s (nearest), to the residual stream.
"""

#: Presets the harness checks and times besides the default ("paper" is built but too large
#: to time per step on CPU; "bootstrap" changes only the loss).
CHECKED_PRESETS = ("no_residual_stream",)

_SMALL = {"stem": 16, "residual": 16, "units": 3, "down_widths": (32, 64, 128, 128),
          "down_units": (1, 2, 1, 1), "up_widths": (64, 64, 32), "up_units": (1, 1, 1),
          "residual_stream": True}
_CONFIGS = {
    None: _SMALL,
    "no_residual_stream": {**_SMALL, "residual_stream": False},
    "bootstrap": _SMALL,
    "paper": {**_SMALL, "stem": 48, "residual": 32, "down_widths": (96, 192, 384, 384),
              "down_units": (3, 4, 2, 2), "up_widths": (192, 192, 96), "up_units": (2, 2, 2)},
}


def build(torch, num_classes, preset=None):
    """FRRN as a ``torch.nn.Module`` with our state-dict keys; ``preset`` as in our registry."""
    nn, F = torch.nn, torch.nn.functional
    c = _CONFIGS[preset]

    class ConvBNReLU(nn.Module):
        def __init__(self, cin, cout, k=3):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
            self.bn = nn.BatchNorm2d(cout)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    class RU(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv1 = ConvBNReLU(cin, cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.projection = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None

        def forward(self, x):
            shortcut = x if self.projection is None else self.projection(x)
            return self.bn2(self.conv2(self.conv1(x))) + shortcut

    class FRRU(nn.Module):
        def __init__(self, cin, cout, stride, r):
            super().__init__()
            self.stride = stride
            self.conv1 = ConvBNReLU(cin + (r or 0), cout)
            self.conv2 = ConvBNReLU(cout, cout)
            self.to_residual = nn.Conv2d(cout, r, 1) if r else None

        def forward(self, y, z):
            if self.to_residual is None:
                return self.conv2(self.conv1(y)), None
            s = self.stride
            y = self.conv2(self.conv1(torch.cat([y, F.max_pool2d(z, s)], 1)))
            return y, z + F.interpolate(self.to_residual(y), scale_factor=s, mode="nearest")

    def levels(cin, widths, units, strides, r):
        out = nn.ModuleList()
        for w, n, s in zip(widths, units, strides):
            out.append(nn.ModuleList([FRRU(cin if i == 0 else w, w, s, r) for i in range(n)]))
            cin = w
        return out

    class FRRN(nn.Module):
        def __init__(self):
            super().__init__()
            L = len(c["down_widths"])
            r = c["residual"] if c["residual_stream"] else None
            w0 = c["stem"]
            self.stem = ConvBNReLU(3, w0, 5)
            self.units_in = nn.Sequential(*[RU(w0, w0) for _ in range(c["units"])])
            self.split = nn.Sequential(nn.Conv2d(w0, r, 1, bias=False),
                                       nn.BatchNorm2d(r)) if r else None
            self.down = levels(w0, c["down_widths"], c["down_units"],
                               [2 ** (i + 1) for i in range(L)], r)
            self.up = levels(c["down_widths"][-1], c["up_widths"], c["up_units"],
                             [2 ** (L - 1 - j) for j in range(L - 1)], r)
            merged = (c["down_widths"] + c["up_widths"])[-1] + (r or 0)
            self.units_out = nn.Sequential(*[RU(merged if i == 0 else w0, w0)
                                             for i in range(c["units"])])
            self.classifier = nn.Conv2d(w0, num_classes, 1)

        def forward(self, x):
            h = self.units_in(self.stem(x))
            z = self.split(h) if self.split is not None else None
            y = h
            for level in self.down:
                y = F.max_pool2d(y, 2)
                for frru in level:
                    y, z = frru(y, z)
            for level in self.up:
                y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
                for frru in level:
                    y, z = frru(y, z)
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            h = y if z is None else torch.cat([y, z], 1)
            return self.classifier(self.units_out(h))

    return FRRN()
