"""PyTorch twin of ``pspnet``: PSPNet (Zhao et al., CVPR 2017, arXiv:1612.01105) in PyTorch.

A ResNet whose layer3 and layer4 trade their stride for dilation (output stride 8; the
first block of a dilated stage keeps the previous dilation in the conv that had the stride,
torchvision's ``replace_stride_with_dilation`` rule, extended to the basic block: conv1 the
previous dilation, conv2 the new one), a pyramid pooling module (adaptive pooling to 1, 2,
3, 6 bins, 1x1 conv-BN-ReLU to C/len(bins) channels each, bilinear back, concatenated with
the map), a 3x3 conv-BN-ReLU, dropout and a 1x1 classifier, bilinear x8; in training an
auxiliary head of the same form on layer3, returned at 1/8 resolution as ``"aux"``.
"""

__all__ = ["build", "CHECKED_PRESETS", "CONFIGS"]

#: Presets the twin tests and the speed benchmark also run (``"paper"``, a ResNet-50 at
#: output stride 8, is buildable but too slow for either).
CHECKED_PRESETS = ("no_pyramid", "max_pool")

_DEFAULT = {"backbone": "resnet_tiny", "backbone_widths": (16, 32, 64, 128), "bins": (1, 2, 3, 6),
            "pyramid": True, "pool": "avg", "head_width": 64, "aux_width": 32, "dropout": 0.1}
#: Config of each preset (None: the default small model).
CONFIGS = {None: _DEFAULT,
           "paper": {**_DEFAULT, "backbone": "resnet50", "backbone_widths": None,
                     "head_width": 512, "aux_width": 256},
           "no_pyramid": {**_DEFAULT, "pyramid": False},
           "max_pool": {**_DEFAULT, "pool": "max"}}

# block kind, blocks per stage, planes per stage, stem width (``backbone_widths`` replaces the
# last two: planes, and the stem gets the first of them)
_BACKBONES = {"resnet_tiny": ("basic", (1, 1, 1, 1), (8, 16, 32, 64), 8),
              "resnet50": ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), 64)}


def build(torch, num_classes, preset=None):
    """PSPNet in PyTorch with the state-dict keys and shapes of ``models.create("pspnet")``."""
    if preset not in CONFIGS:
        raise ValueError(f"pspnet twin: unknown preset {preset!r}; choose from "
                         f"{', '.join(map(repr, CONFIGS))}")
    nn, F = torch.nn, torch.nn.functional
    c = CONFIGS[preset]

    def conv3x3(cin, cout, stride=1, dilation=1):
        return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation,
                         bias=False)

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, cin, planes, stride, downsample, first_dilation, dilation):
            super().__init__()
            self.conv1 = conv3x3(cin, planes, stride, first_dilation)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = conv3x3(planes, planes, 1, dilation)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin, planes, stride, downsample, first_dilation, dilation):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = conv3x3(planes, planes, stride, first_dilation)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + identity)

    class DilatedResNet(nn.Module):
        """ResNet at output stride 8: layer3 and layer4 dilated 2 and 4 instead of strided."""

        def __init__(self, kind, layers, widths, stem):
            super().__init__()
            block = BasicBlock if kind == "basic" else Bottleneck
            self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(stem)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            cin, dilation = stem, 1
            self.channels = []
            for i, (blocks, planes) in enumerate(zip(layers, widths)):
                nominal = 1 if i == 0 else 2
                previous = dilation
                stride = nominal
                if i >= 2:                                  # dilate layer3 and layer4
                    dilation, stride = dilation * nominal, 1
                cout = planes * block.expansion
                downsample = None
                if nominal != 1 or cin != cout:
                    downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride,
                                                         bias=False), nn.BatchNorm2d(cout))
                stage = [block(cin, planes, stride, downsample, previous, dilation)]
                stage += [block(cout, planes, 1, None, dilation, dilation)
                          for _ in range(1, blocks)]
                setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
                cin = cout
                self.channels.append(cout)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer2(self.layer1(x))
            layer3 = self.layer3(x)
            return layer3, self.layer4(layer3)

    class ConvBNReLU(nn.Module):
        def __init__(self, cin, cout, k):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
            self.bn = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(self.bn(self.conv(x)))

    class PyramidPooling(nn.Module):
        def __init__(self, cin, bins, pool):
            super().__init__()
            Pool = nn.AdaptiveAvgPool2d if pool == "avg" else nn.AdaptiveMaxPool2d
            width = cin // len(bins)
            self.branches = nn.ModuleList([nn.Sequential(Pool(b), ConvBNReLU(cin, width, 1))
                                           for b in bins])
            self.out_channels = cin + len(bins) * width

        def forward(self, x):
            size = x.shape[-2:]
            return torch.cat([x] + [F.interpolate(b(x), size=size, mode="bilinear",
                                                  align_corners=False)
                                    for b in self.branches], dim=1)

    def head(cin, width):
        return nn.Sequential(ConvBNReLU(cin, width, 3), nn.Dropout2d(c["dropout"]),
                             nn.Conv2d(width, num_classes, 1))

    class PSPNet(nn.Module):
        def __init__(self):
            super().__init__()
            kind, layers, widths, stem = _BACKBONES[c["backbone"]]
            if c["backbone_widths"] is not None:
                widths, stem = c["backbone_widths"], c["backbone_widths"][0]
            self.backbone = DilatedResNet(kind, layers, widths, stem)
            aux_channels, channels = self.backbone.channels[-2:]
            if c["pyramid"]:
                self.pyramid = PyramidPooling(channels, c["bins"], c["pool"])
                channels = self.pyramid.out_channels
            else:
                self.pyramid = nn.Identity()
            self.head = head(channels, c["head_width"])
            self.aux_head = head(aux_channels, c["aux_width"])

        def forward(self, x):
            layer3, layer4 = self.backbone(x)
            out = F.interpolate(self.head(self.pyramid(layer4)), scale_factor=8,
                                mode="bilinear", align_corners=False)
            if not self.training:
                return out
            return {"out": out, "aux": self.aux_head(layer3)}

    return PSPNet()
