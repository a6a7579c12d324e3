"""GCN (Peng et al., "Large Kernel Matters -- Improve Semantic Segmentation by Global
Convolutional Network", CVPR 2017, arXiv:1703.02719) in PyTorch: the twin of
``models.create("gcn", ...)``.

A ResNet; on each of res-2 .. res-5 a Global Convolution (``k x 1 -> 1 x k`` plus ``1 x k ->
k x 1``, summed, no nonlinearity) to K score maps and a Boundary Refinement block
``S + conv3x3(ReLU(conv3x3(S)))``; top-down fusion by x2 transposed convs (kernel 4, stride
2, padding 1), sums and BRs; two more x2 transposed convs with BRs back to the input size.
The ResNet is the twins' shared one (``_resnet.py``).
"""
from twins._resnet import resnet

#: Presets the twin tests and benchmarks check besides the default ("paper" builds too, but
#: a ResNet-50 is too slow for a CPU test).
CHECKED_PRESETS = ("k3", "no_br")

_CONFIGS = {
    None: {"backbone": "resnet18", "kernel_size": (3, 3, 7, 3), "br": True},
    "k3": {"backbone": "resnet18", "kernel_size": (3, 3, 3, 3), "br": True},
    "no_br": {"backbone": "resnet18", "kernel_size": (3, 3, 7, 3), "br": False},
    "paper": {"backbone": "resnet50", "kernel_size": (15, 15, 15, 15), "br": True},
}

def build(torch, num_classes, preset=None):
    """The GCN of ``preset`` (None: the small default) as a ``torch.nn.Module``."""
    if preset not in _CONFIGS:
        raise ValueError(f"gcn twin: unknown preset {preset!r}; known: {list(_CONFIGS)}")
    tnn = torch.nn
    cfg = _CONFIGS[preset]
    K = num_classes

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
            self.backbone = resnet(torch, cfg["backbone"])
            ch = self.backbone.stage_channels
            self.gcn = tnn.ModuleDict({n: GlobalConvolution(c, K, k) for n, c, k
                                       in zip(names, ch, cfg["kernel_size"])})
            self.br = tnn.ModuleDict({n: refine() for n in names})
            self.up = tnn.ModuleDict({n: up2() for n in names})
            self.fuse_br = tnn.ModuleDict({n: refine() for n in ("res4", "res3", "res2")})
            self.half_br = refine()
            self.full_up = up2()
            self.full_br = refine()

        def forward(self, x):
            feats = dict(zip(names, self.backbone.stages(x)))
            up = None
            for n in reversed(names):
                s = self.br[n](self.gcn[n](feats[n]))
                if up is not None:
                    s = self.fuse_br[n](s + up)
                up = self.up[n](s)
            return self.full_br(self.full_up(self.half_br(up)))

    return GCN()
