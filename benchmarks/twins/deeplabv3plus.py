"""PyTorch twin of ``edu_seg.models.create("deeplabv3plus", ...)``: the same layers, state-dict
keys and shapes, and forward, so our weights load into it and the two can be timed side by
side.

``build(torch, num_classes, preset=None)`` follows the model's defaults and presets
(``paper``, ``no_decoder``, ``xception``). The aligned Xception is written out here (torchvision
has none); the ResNet comes from ``_resnet.py``, the ASPP and separable-conv builders from the
deeplabv3 twin beside this file.
"""
import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "deeplabv3_twin", pathlib.Path(__file__).with_name("deeplabv3.py"))
v3 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(v3)

from twins._resnet import resnet  # noqa: E402

DEFAULTS = {"in_channels": 3, "backbone": "resnet18", "output_stride": 8,
            "atrous_rates": (1, 2, 3), "aspp_channels": 64, "image_pooling": True,
            "separable": True, "decoder": True, "low_level_channels": 12,
            "decoder_channels": 64, "dropout": 0.1}
#: The presets tests/test_twins.py checks and bench_models.py times (the paper sizes are
#: built on request only: they are slow on a CPU).
CHECKED_PRESETS = ("no_decoder",)

PRESETS = {None: {},
           "paper": {"backbone": "resnet50", "output_stride": 16, "atrous_rates": (6, 12, 18),
                     "aspp_channels": 256,
                     "low_level_channels": 48, "decoder_channels": 256},
           "no_decoder": {"decoder": False},
           "xception": {"backbone": "xception_tiny"}}
# edu_seg's xception_tiny: stem widths, entry widths, middle blocks, exit widths.
XCEPTION_TINY = ((8, 16), (16, 32, 64), 1, (64, 64))


def xception(torch, in_channels, output_stride):
    """edu_seg's Xception (aligned); forward returns {stride: map} like features()."""
    nn = torch.nn
    (s0, s1), entry, middle_blocks, (e0, e1) = XCEPTION_TINY

    class SeparableConv2d(nn.Module):
        def __init__(self, cin, cout, stride=1, dilation=1):
            super().__init__()
            self.depthwise = nn.Conv2d(cin, cin, 3, stride, dilation, dilation, groups=cin,
                                       bias=False)
            self.bn_depthwise = nn.BatchNorm2d(cin)
            self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
            self.bn_pointwise = nn.BatchNorm2d(cout)

        def forward(self, x):
            return self.bn_pointwise(self.pointwise(self.bn_depthwise(self.depthwise(x))))

    class Block(nn.Module):
        def __init__(self, cin, cout, reps, nominal, stride, dilation):
            super().__init__()
            layers = []
            for i in range(reps):
                layers += [nn.ReLU(), SeparableConv2d(cin if i == 0 else cout, cout,
                                                      stride if i == reps - 1 else 1,
                                                      dilation)]
            self.convs = nn.Sequential(*layers)
            self.shortcut = None
            if nominal != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                              nn.BatchNorm2d(cout))

        def forward(self, x):
            return self.convs(x) + (x if self.shortcut is None else self.shortcut(x))

    class Schedule:                  # edu_seg's StrideSchedule
        stride, dilation = 1, 1

        def step(self):
            previous = self.dilation
            if self.stride * 2 > output_stride:
                self.dilation *= 2
                return 1, previous
            self.stride *= 2
            return 2, previous

    class Xception(nn.Module):
        def __init__(self):
            super().__init__()
            sch = Schedule()
            self.stem = nn.Sequential(v3.conv_bn_relu(torch, in_channels, s0, 3, 1),
                                      v3.conv_bn_relu(torch, s0, s1, 3, 1))
            self.stem[0].conv.stride = (sch.step()[0],) * 2
            self.strides = [sch.stride]
            width = s1
            for i, out in enumerate(entry):
                stride, dilation = sch.step()
                setattr(self, f"entry{i + 1}", Block(width, out, 2, 2, stride, dilation))
                width = out
                if i < 2:
                    self.strides.append(sch.stride)
            self.middle = nn.Sequential(*[Block(width, width, 3, 1, 1, sch.dilation)
                                          for _ in range(middle_blocks)])
            self.strides.append(sch.stride)
            stride, dilation = sch.step()
            self.exit = nn.Sequential(Block(width, e0, 2, 2, stride, dilation),
                                      SeparableConv2d(e0, e1, dilation=sch.dilation),
                                      nn.ReLU())
            self.strides.append(sch.stride)
            self.channels = dict(zip(self.strides, [s1, *entry[:2], entry[2], e1]))

        def forward(self, x):
            x = self.stem(x)
            outs = [x]
            x = self.entry1(x)
            outs.append(x)
            x = self.entry2(x)
            outs.append(x)
            x = self.middle(self.entry3(x))
            outs.append(x)
            outs.append(self.exit(x))
            return dict(zip(self.strides, outs))

    return Xception()


def build(torch, num_classes, preset=None):
    """The twin of ``models.create("deeplabv3plus", num_classes=num_classes, preset=preset)``."""
    c = v3.config(DEFAULTS, PRESETS, preset)
    nn, F = torch.nn, torch.nn.functional
    s = c["output_stride"]

    class DeepLabV3Plus(nn.Module):
        def __init__(self):
            super().__init__()
            if c["backbone"] == "xception_tiny":
                self.backbone = xception(torch, c["in_channels"], s)
            else:
                self.backbone = resnet(torch, c["backbone"], c["in_channels"], s)
            ch = self.backbone.channels
            self.aspp = v3.aspp(torch, ch[s], [r * 16 // s for r in c["atrous_rates"]],
                                c["aspp_channels"], c["image_pooling"], c["separable"],
                                c["dropout"])
            if c["decoder"]:
                self.reduce = v3.conv_bn_relu(torch, ch[4], c["low_level_channels"], 1)

                def conv(cin, cout):
                    return (v3.separable(torch, cin, cout) if c["separable"] else
                            v3.conv_bn_relu(torch, cin, cout, 3, 1))

                self.fuse = nn.Sequential(
                    conv(c["aspp_channels"] + c["low_level_channels"], c["decoder_channels"]),
                    conv(c["decoder_channels"], c["decoder_channels"]))
            self.classifier = nn.Conv2d(c["decoder_channels"] if c["decoder"]
                                        else c["aspp_channels"], num_classes, 1)

        def forward(self, x):
            features = self.backbone(x)
            h = self.aspp(features[s])
            if c["decoder"]:
                low = self.reduce(features[4])
                h = F.interpolate(h, size=low.shape[-2:], mode="bilinear", align_corners=False)
                h = self.fuse(torch.cat([h, low], dim=1))
            return F.interpolate(self.classifier(h), size=x.shape[-2:], mode="bilinear",
                                 align_corners=False)

    return DeepLabV3Plus()
