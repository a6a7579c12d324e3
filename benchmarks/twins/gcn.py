"""GCN (Peng et al., "Large Kernel Matters -- Improve Semantic Segmentation by Global
Convolutional Network", CVPR 2017, arXiv:1703.02719) in PyTorch: the twin of
``models.create("gcn", ...)``.

A ResNet; on each of res-2 .. res-5 a Global Convolution (``k x 1 -> 1 x k`` plus ``1 x k ->
k x 1``, summed, no nonlinearity) to K score maps and a Boundary Refinement block
``S + conv3x3(ReLU(conv3x3(S)))``; top-down fusion by x2 transposed convs (kernel 4, stride
2, padding 1), sums and BRs; two more x2 transposed convs with BRs back to the input size.
"""

#: Presets the twin tests and benchmarks check besides the default ("paper" builds too, but
#: a ResNet-50 is too slow for a CPU test).
CHECKED_PRESETS = ("k3", "no_br")

_CONFIGS = {
    None: {"backbone": "resnet18", "kernel_size": (3, 3, 7, 3), "br": True},
    "k3": {"backbone": "resnet18", "kernel_size": (3, 3, 3, 3), "br": True},
    "no_br": {"backbone": "resnet18", "kernel_size": (3, 3, 7, 3), "br": False},
    "paper": {"backbone": "resnet50", "kernel_size": (15, 15, 15, 15), "br": True},
}

# block, blocks per stage, planes per stage, stem width
_BACKBONES = {"resnet18": ("basic", (2, 2, 2, 2), (64, 128, 256, 512), 64),
              "resnet50": ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), 64)}


def build(torch, num_classes, preset=None):
    """The GCN of ``preset`` (None: the small default) as a ``torch.nn.Module``."""
    if preset not in _CONFIGS:
        raise ValueError(f"gcn twin: unknown preset {preset!r}; known: {list(_CONFIGS)}")
    tnn = torch.nn
    cfg = _CONFIGS[preset]
    K = num_classes

    class BasicBlock(tnn.Module):
        expansion = 1

        def __init__(self, cin, planes, stride, downsample):
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.relu = tnn.ReLU()
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class Bottleneck(tnn.Module):
        expansion = 4

        def __init__(self, cin, planes, stride, downsample):
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, planes, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = tnn.BatchNorm2d(planes * 4)
            self.relu = tnn.ReLU()
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + identity)

    class ResNet(tnn.Module):
        def __init__(self, kind, layers, widths, stem):
            super().__init__()
            block = BasicBlock if kind == "basic" else Bottleneck
            self.conv1 = tnn.Conv2d(3, stem, 7, 2, 3, bias=False)
            self.bn1 = tnn.BatchNorm2d(stem)
            self.relu = tnn.ReLU()
            self.maxpool = tnn.MaxPool2d(3, 2, 1)
            cin, self.channels = stem, []
            for i in range(4):
                stride = 1 if i == 0 else 2
                cout = widths[i] * block.expansion
                down = None
                if stride != 1 or cin != cout:
                    down = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                          tnn.BatchNorm2d(cout))
                blocks = [block(cin, widths[i], stride, down)]
                blocks += [block(cout, widths[i], 1, None) for _ in range(1, layers[i])]
                setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
                cin = cout
                self.channels.append(cout)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            outs = []
            for i in range(4):
                x = getattr(self, f"layer{i + 1}")(x)
                outs.append(x)
            return outs                                  # strides 4, 8, 16, 32

    class GlobalConvolution(tnn.Module):
        def __init__(self, cin, cout, k):
            super().__init__()
            p = k // 2
            self.left_kx1 = tnn.Conv2d(cin, cout, (k, 1), padding=(p, 0), bias=False)
            self.left_1xk = tnn.Conv2d(cout, cout, (1, k), padding=(0, p))
            self.right_1xk = tnn.Conv2d(cin, cout, (1, k), padding=(0, p), bias=False)
            self.right_kx1 = tnn.Conv2d(cout, cout, (k, 1), padding=(p, 0))

        def forward(self, x):
            return self.left_1xk(self.left_kx1(x)) + self.right_kx1(self.right_1xk(x))

    class BoundaryRefinement(tnn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = tnn.Conv2d(c, c, 3, padding=1)
            self.relu = tnn.ReLU()
            self.conv2 = tnn.Conv2d(c, c, 3, padding=1)

        def forward(self, s):
            return s + self.conv2(self.relu(self.conv1(s)))

    def refine():
        return BoundaryRefinement(K) if cfg["br"] else tnn.Identity()

    def up2():
        return tnn.ConvTranspose2d(K, K, 4, stride=2, padding=1, bias=False)

    names = ("res2", "res3", "res4", "res5")

    class GCN(tnn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = ResNet(*_BACKBONES[cfg["backbone"]])
            ch = self.backbone.channels
            self.gcn = tnn.ModuleDict({n: GlobalConvolution(c, K, k) for n, c, k
                                       in zip(names, ch, cfg["kernel_size"])})
            self.br = tnn.ModuleDict({n: refine() for n in names})
            self.up = tnn.ModuleDict({n: up2() for n in names})
            self.fuse_br = tnn.ModuleDict({n: refine() for n in ("res4", "res3", "res2")})
            self.half_br = refine()
            self.full_up = up2()
            self.full_br = refine()

        def forward(self, x):
            feats = dict(zip(names, self.backbone(x)))
            up = None
            for n in reversed(names):
                s = self.br[n](self.gcn[n](feats[n]))
                if up is not None:
                    s = self.fuse_br[n](s + up)
                up = self.up[n](s)
            return self.full_br(self.full_up(self.half_br(up)))

    return GCN()
