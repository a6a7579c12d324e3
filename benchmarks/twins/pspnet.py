"""PyTorch twin of ``pspnet``: PSPNet (Zhao et al., CVPR 2017, arXiv:1612.01105) in PyTorch.

A ResNet whose layer3 and layer4 trade their stride for dilation (output stride 8,
``_resnet.py``), a pyramid pooling module (adaptive pooling to 1, 2, 3, 6 bins, 1x1
conv-BN-ReLU to C/len(bins) channels each, bilinear back, concatenated with the map), a 3x3 conv-BN-ReLU, dropout and a 1x1 classifier, bilinear x8; in training an
auxiliary head of the same form on layer3, returned at 1/8 resolution as ``"aux"``.
"""
from twins._resnet import resnet

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


def build(torch, num_classes, preset=None):
    """PSPNet in PyTorch with the state-dict keys and shapes of ``models.create("pspnet")``."""
    if preset not in CONFIGS:
        raise ValueError(f"pspnet twin: unknown preset {preset!r}; choose from "
                         f"{', '.join(map(repr, CONFIGS))}")
    nn, F = torch.nn, torch.nn.functional
    c = CONFIGS[preset]

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
            self.backbone = resnet(torch, c["backbone"], output_stride=8,
                                   widths=c["backbone_widths"])
            aux_channels, channels = self.backbone.stage_channels[-2:]
            if c["pyramid"]:
                self.pyramid = PyramidPooling(channels, c["bins"], c["pool"])
                channels = self.pyramid.out_channels
            else:
                self.pyramid = nn.Identity()
            self.head = head(channels, c["head_width"])
            self.aux_head = head(aux_channels, c["aux_width"])

        def forward(self, x):
            layer3, layer4 = self.backbone.stages(x)[-2:]
            out = F.interpolate(self.head(self.pyramid(layer4)), scale_factor=8,
                                mode="bilinear", align_corners=False)
            if not self.training:
                return out
            return {"out": out, "aux": self.aux_head(layer3)}

    return PSPNet()
