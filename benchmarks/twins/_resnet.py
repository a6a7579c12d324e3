"""The ResNet every twin's backbone is: edu_seg's ResNet presets, written in PyTorch.

Shared by the twins of the models built on a ResNet (deeplabv3, deeplabv3plus, pspnet, gcn,
refinenet). The leading underscore keeps it out of ``twins.available()``: it is a part, not a
model. Written out rather than taken from torchvision because torchvision's BasicBlock refuses
dilation, which the output-stride-8 and -16 backbones need.
"""
__all__ = ["RESNETS", "resnet"]

#: edu_seg's ResNet presets: block, blocks per stage, planes per stage, stem width.
RESNETS = {"resnet_tiny": ("basic", (1, 1, 1, 1), (8, 16, 32, 64), 8),
           "resnet_bottleneck_tiny": ("bottleneck", (1, 1, 1, 1), (4, 8, 16, 16), 8),
           "resnet18": ("basic", (2, 2, 2, 2), (64, 128, 256, 512), 64),
           "resnet50": ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), 64)}


def resnet(torch, name, in_channels=3, output_stride=32, multi_grid=None, widths=None):
    """The ResNet preset ``name`` without classifier, as a ``torch.nn.Module``.

    ``output_stride`` 8 or 16 trades the later stages' stride for dilation (torchvision's
    ``replace_stride_with_dilation`` rule: the first block of a dilated stage keeps the
    previous dilation in the conv that had the stride); ``multi_grid`` multiplies layer4's
    rates block by block; ``widths`` replaces the planes of the four stages (the stem then
    gets ``widths[0]`` channels). ``forward(x)`` returns ``{stride: map}`` (the last map at
    each stride, stem included, like edu_seg's ``features``); ``stages(x)`` returns the four
    layers' outputs; ``stage_channels`` and ``channels`` give their widths.
    """
    nn = torch.nn
    kind, layers, planes, stem = RESNETS[name]
    if widths is not None:
        planes, stem = tuple(widths), widths[0]

    class Basic(nn.Module):
        expansion = 1

        def __init__(self, cin, width, stride, down, d1, d2):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, width, 3, stride, d1, d1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(width, width, 3, 1, d2, d2, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.downsample = down

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + idt)

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin, width, stride, down, d1, d2):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, d1, d1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(width * 4)
            self.relu = nn.ReLU()
            self.downsample = down

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + idt)

    block = Basic if kind == "basic" else Bottleneck

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(stem)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            stride_now, dilation, cin = 4, 1, stem
            self.strides = [2]
            for i in range(4):
                nominal = 1 if i == 0 else 2
                previous = dilation
                if nominal > 1 and stride_now * nominal > output_stride:
                    dilation *= nominal
                    stride = 1
                else:
                    stride = nominal
                stride_now *= stride
                cout = planes[i] * block.expansion
                down = None
                if nominal != 1 or cin != cout:
                    down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                         nn.BatchNorm2d(cout))
                if i == 3 and multi_grid is not None:
                    rates = firsts = [dilation * m for m in multi_grid]
                else:
                    rates = [dilation] * layers[i]
                    firsts = [previous] + rates[1:]
                blocks = [block(cin, planes[i], stride, down, firsts[0], rates[0])]
                blocks += [block(cout, planes[i], 1, None, firsts[j], rates[j])
                           for j in range(1, layers[i])]
                setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
                cin = cout
                self.strides.append(stride_now)
            self.stage_channels = [w * block.expansion for w in planes]
            self.channels = dict(zip(self.strides, [stem] + self.stage_channels))

        def _run(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            outs = [x]
            x = self.maxpool(x)
            for i in range(4):
                x = getattr(self, f"layer{i + 1}")(x)
                outs.append(x)
            return outs

        def stages(self, x):
            return self._run(x)[1:]

        def forward(self, x):
            return dict(zip(self.strides, self._run(x)))

    return ResNet()
