"""PyTorch twin of ``edu_seg.models.create("deeplabv3", ...)``: the same layers, state-dict keys
and shapes, and forward, so our weights load into it and the two can be timed side by side.

``build(torch, num_classes, preset=None)`` follows the model's defaults and presets
(``paper``, ``os8``, ``no_image_pool``); the ResNet, its dilation schedule and ASPP are
written out (the ResNet in ``_resnet.py``, shared by the twins) because torchvision's
BasicBlock refuses dilation. deeplabv3plus.py reuses the ASPP builders.
"""
from twins._resnet import resnet

DEFAULTS = {"in_channels": 3, "backbone": "resnet_tiny", "output_stride": 16,
            "multi_grid": None, "atrous_rates": (1, 2, 3), "aspp_channels": 64,
            "image_pooling": True, "dropout": 0.1}
#: The presets tests/test_twins.py checks and bench_models.py times (the paper sizes are
#: built on request only: they are slow on a CPU).
CHECKED_PRESETS = ("no_image_pool", "os8")

PRESETS = {None: {},
           "paper": {"backbone": "resnet50", "multi_grid": (1, 2, 4),
                     "atrous_rates": (6, 12, 18), "aspp_channels": 256},
           "os8": {"output_stride": 8},
           "no_image_pool": {"image_pooling": False}}


def config(defaults, presets, preset):
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}")
    return {**defaults, **presets[preset]}


def conv_bn_relu(torch, cin, cout, k, padding=0, dilation=1, groups=1):
    """edu_seg's ConvBNReLU: children conv, bn, relu."""
    nn = torch.nn

    class ConvBNReLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, padding=padding, dilation=dilation,
                                  groups=groups, bias=False)
            self.bn = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.bn(self.conv(x)))

    return ConvBNReLU()


def separable(torch, cin, cout, dilation=1):
    """edu_seg.models.blocks.separable_conv_bn_relu."""
    return torch.nn.Sequential(conv_bn_relu(torch, cin, cin, 3, dilation, dilation, cin),
                               conv_bn_relu(torch, cin, cout, 1))


def aspp(torch, cin, rates, cout, image_pooling, separable_convs, dropout):
    """edu_seg.models.blocks.ASPP (torchvision's layout)."""
    nn, F = torch.nn, torch.nn.functional

    class ImagePooling(nn.Sequential):
        def forward(self, x):
            return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear",
                                 align_corners=False)

    class ASPP(nn.Module):
        def __init__(self):
            super().__init__()
            branches = [nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False),
                                      nn.BatchNorm2d(cout), nn.ReLU())]
            for r in rates:
                branches.append(separable(torch, cin, cout, r) if separable_convs else
                                nn.Sequential(nn.Conv2d(cin, cout, 3, padding=r, dilation=r,
                                                        bias=False),
                                              nn.BatchNorm2d(cout), nn.ReLU()))
            if image_pooling:
                branches.append(ImagePooling(nn.AdaptiveAvgPool2d(1),
                                             nn.Conv2d(cin, cout, 1, bias=False),
                                             nn.BatchNorm2d(cout), nn.ReLU()))
            self.convs = nn.ModuleList(branches)
            self.project = nn.Sequential(nn.Conv2d(len(branches) * cout, cout, 1, bias=False),
                                         nn.BatchNorm2d(cout), nn.ReLU(), nn.Dropout(dropout))

        def forward(self, x):
            return self.project(torch.cat([b(x) for b in self.convs], dim=1))

    return ASPP()


def build(torch, num_classes, preset=None):
    """The twin of ``models.create("deeplabv3", num_classes=num_classes, preset=preset)``."""
    c = config(DEFAULTS, PRESETS, preset)
    nn, F = torch.nn, torch.nn.functional
    s = c["output_stride"]

    class DeepLabV3(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = resnet(torch, c["backbone"], c["in_channels"], s, c["multi_grid"])
            self.aspp = aspp(torch, self.backbone.channels[s],
                             [r * 16 // s for r in c["atrous_rates"]], c["aspp_channels"],
                             c["image_pooling"], False, c["dropout"])
            self.classifier = nn.Conv2d(c["aspp_channels"], num_classes, 1)

        def forward(self, x):
            h = self.aspp(self.backbone(x)[s])
            return F.interpolate(self.classifier(h), size=x.shape[-2:], mode="bilinear",
                                 align_corners=False)

    return DeepLabV3()
