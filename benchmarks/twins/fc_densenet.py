"""PyTorch twin of ``fc_densenet``: FC-DenseNet (Jégou et al., "The One Hundred Layers
Tiramisu", CVPR Workshops 2017, arXiv:1611.09326).

Dense layers BN-ReLU-3x3 conv-dropout concatenated onto their input; transitions down
BN-ReLU-1x1 conv-dropout-2x2 max-pool; a bottleneck block; transitions up (3x3 transposed
conv, stride 2, padding 1, output padding 1) of the new maps of the block below only (or of
its whole stack with ``upsample="all"``), concatenated with the down path's stack; a 1x1
classifier on the last block's stack.
"""
from collections import OrderedDict

CHECKED_PRESETS = ("upsample_all",)

_DEFAULT = {"growth_rate": 8, "layers_per_block": (3, 3, 3, 3), "first_channels": 16,
            "dropout": 0.0, "upsample": "new"}
_FC_DENSENET103 = {"growth_rate": 16, "layers_per_block": (4, 5, 7, 10, 12, 15),
                   "first_channels": 48, "dropout": 0.2}
_PRESETS = {
    "fc_densenet56": {"growth_rate": 12, "layers_per_block": (4,) * 6, "first_channels": 48,
                      "dropout": 0.2},
    "fc_densenet67": {"growth_rate": 16, "layers_per_block": (5,) * 6, "first_channels": 48,
                      "dropout": 0.2},
    "fc_densenet103": _FC_DENSENET103,
    "paper": _FC_DENSENET103,
    "upsample_all": {"upsample": "all"},
}


def build(torch, num_classes, preset=None):
    """FC-DenseNet in PyTorch with our state-dict keys; ``preset`` as in ``models.create``."""
    nn = torch.nn
    c = {**_DEFAULT, **(_PRESETS[preset] if preset else {})}
    k, p = c["growth_rate"], c["dropout"]

    def dense_layer(cin):
        return nn.Sequential(OrderedDict(norm=nn.BatchNorm2d(cin), relu=nn.ReLU(),
                                  conv=nn.Conv2d(cin, k, 3, padding=1), drop=nn.Dropout(p)))

    class DenseBlock(nn.Module):
        def __init__(self, num_layers, cin):
            super().__init__()
            self.layers = nn.ModuleList([dense_layer(cin + i * k) for i in range(num_layers)])
            self.new_channels = num_layers * k
            self.out_channels = cin + num_layers * k

        def forward(self, x):
            for layer in self.layers:
                x = torch.cat([x, layer(x)], 1)
            return x

    class FCDenseNet(nn.Module):
        def __init__(self):
            super().__init__()
            *down, middle = c["layers_per_block"]
            self.first_conv = nn.Conv2d(3, c["first_channels"], 3, padding=1)
            ch, skips = c["first_channels"], []
            self.down_blocks, self.transitions_down = nn.ModuleList(), nn.ModuleList()
            for n in down:
                block = DenseBlock(n, ch)
                ch = block.out_channels
                skips.append(ch)
                self.down_blocks.append(block)
                self.transitions_down.append(nn.Sequential(OrderedDict(
                    norm=nn.BatchNorm2d(ch), relu=nn.ReLU(), conv=nn.Conv2d(ch, ch, 1),
                    drop=nn.Dropout(p), pool=nn.MaxPool2d(2))))
            self.bottleneck = below = DenseBlock(middle, ch)
            self.transitions_up, self.up_blocks = nn.ModuleList(), nn.ModuleList()
            for n, skip in zip(reversed(down), reversed(skips)):
                up = below.new_channels if c["upsample"] == "new" else below.out_channels
                self.transitions_up.append(nn.ConvTranspose2d(up, up, 3, stride=2, padding=1,
                                                              output_padding=1))
                below = DenseBlock(n, up + skip)
                self.up_blocks.append(below)
            self.classifier = nn.Conv2d(below.out_channels, num_classes, 1)

        def forward(self, x):
            h, skips = self.first_conv(x), []
            for block, down in zip(self.down_blocks, self.transitions_down):
                h = block(h)
                skips.append(h)
                h = down(h)
            below = self.bottleneck
            h = below(h)
            for up, block, skip in zip(self.transitions_up, self.up_blocks, reversed(skips)):
                if c["upsample"] == "new":
                    h = h[:, -below.new_channels:]
                h = block(torch.cat([up(h), skip], 1))
                below = block
            return self.classifier(h)

    return FCDenseNet()
