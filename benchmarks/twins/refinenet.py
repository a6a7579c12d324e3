"""PyTorch twin of ``edu_seg.models.refinenet``: the same RefineNet, module for module.

Lin, Milan, Shen and Reid, "RefineNet: Multi-Path Refinement Networks for High-Resolution
Semantic Segmentation", CVPR 2017 (arXiv:1611.06612).

``build(torch, num_classes, preset)`` returns a ``torch.nn.Module`` with the same state-dict
keys and shapes as ``models.create("refinenet", num_classes=num_classes, preset=preset)``, so
our weights load into it and the two compute the same scores (a Tensor in both modes). The
configs below repeat the model's defaults and presets; a twin that drifts from them fails the
weight-loading check. The ResNet is the twins' shared one (``_resnet.py``).
"""
from twins._resnet import resnet

#: The model's default config and presets (edu_seg/models/refinenet.py).
DEFAULT = {"backbone": "resnet_tiny", "widths": (64, 32, 32, 32), "pool_blocks": 2,
           "chained": True, "batch_norm": True, "dropout": 0.0}
#: The presets tests/test_twins.py checks and bench_models.py times (the paper sizes are
#: built on request only: they are slow on a CPU).
CHECKED_PRESETS = ("unchained",)

PRESETS = {"paper": {"backbone": "resnet50", "widths": (512, 256, 256, 256),
                     "pool_blocks": 2, "batch_norm": False},
           "unchained": {"chained": False}}


def build(torch, num_classes, preset=None):
    """The twin of ``models.create("refinenet", num_classes=num_classes, preset=preset)``."""
    tnn, F = torch.nn, torch.nn.functional
    c = {**DEFAULT, **(PRESETS[preset] if preset is not None else {})}

    def conv3x3(cin, cout):
        conv = tnn.Conv2d(cin, cout, 3, padding=1, bias=not c["batch_norm"])
        return tnn.Sequential(conv, tnn.BatchNorm2d(cout)) if c["batch_norm"] else conv

    class ResidualConvUnit(tnn.Module):
        def __init__(self, ch):
            super().__init__()
            self.relu = tnn.ReLU()
            self.conv1, self.conv2 = conv3x3(ch, ch), conv3x3(ch, ch)

        def forward(self, x):
            return x + self.conv2(self.relu(self.conv1(self.relu(x))))

    class MultiResolutionFusion(tnn.Module):
        def __init__(self, ch, num_paths):
            super().__init__()
            self.convs = tnn.ModuleList([conv3x3(ch, ch) for _ in range(num_paths)])

        def forward(self, paths):
            size = (max(p.shape[-2] for p in paths), max(p.shape[-1] for p in paths))
            fused = None
            for conv, path in zip(self.convs, paths):
                y = conv(path)
                if tuple(y.shape[-2:]) != size:
                    y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
                fused = y if fused is None else fused + y
            return fused

    class PoolBlock(tnn.Module):
        def __init__(self, ch):
            super().__init__()
            self.pool = tnn.MaxPool2d(5, stride=1, padding=2)
            self.conv = conv3x3(ch, ch)

        def forward(self, x):
            return self.conv(self.pool(x))

    class ChainedResidualPooling(tnn.Module):
        def __init__(self, ch, num_blocks, chained):
            super().__init__()
            self.relu = tnn.ReLU()
            self.blocks = tnn.ModuleList([PoolBlock(ch) for _ in range(num_blocks)])
            self.chained = chained

        def forward(self, x):
            x = self.relu(x)
            out, p = x, x
            for block in self.blocks:
                p = block(p if self.chained else x)
                out = out + p
            return out

    class RefineNetBlock(tnn.Module):
        def __init__(self, in_channels, width, pool_blocks, chained):
            super().__init__()
            self.reduce = tnn.ModuleList([conv3x3(ch, width) for ch in in_channels])
            self.rcus = tnn.ModuleList([tnn.Sequential(ResidualConvUnit(width),
                                                       ResidualConvUnit(width))
                                        for _ in in_channels])
            self.fusion = MultiResolutionFusion(width, len(in_channels)) \
                if len(in_channels) > 1 else None
            self.crp = ChainedResidualPooling(width, pool_blocks, chained)
            self.out_rcu = ResidualConvUnit(width)

        def forward(self, *paths):
            paths = [rcus(reduce(p)) for reduce, rcus, p in zip(self.reduce, self.rcus, paths)]
            h = paths[0] if self.fusion is None else self.fusion(paths)
            return self.out_rcu(self.crp(h))

    class RefineNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = resnet(torch, c["backbone"])
            ch = self.backbone.channels
            w4, w3, w2, w1 = c["widths"]
            block = {"pool_blocks": c["pool_blocks"], "chained": c["chained"]}
            self.refinenet4 = RefineNetBlock([ch[32]], w4, **block)
            self.refinenet3 = RefineNetBlock([ch[16], w4], w3, **block)
            self.refinenet2 = RefineNetBlock([ch[8], w3], w2, **block)
            self.refinenet1 = RefineNetBlock([ch[4], w2], w1, **block)
            self.final_rcus = tnn.Sequential(ResidualConvUnit(w1), ResidualConvUnit(w1))
            self.dropout = tnn.Dropout2d(c["dropout"])
            self.classifier = tnn.Conv2d(w1, num_classes, 1)

        def forward(self, x):
            f = self.backbone(x)
            h = self.refinenet4(f[32])
            h = self.refinenet3(f[16], h)
            h = self.refinenet2(f[8], h)
            h = self.refinenet1(f[4], h)
            scores = self.classifier(self.dropout(self.final_rcus(h)))
            return F.interpolate(scores, scale_factor=4, mode="bilinear", align_corners=False)

    return RefineNet()
