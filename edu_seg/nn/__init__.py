"""Neural-network building blocks, shaped like ``torch.nn``: ``Module``, ``Parameter``,
containers, layers and weight initialisation (``edu_seg.nn.init``).

>>> from edu_seg import nn
>>> block = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
"""
from . import init
from .batchnorm import BatchNorm2d
from .groupnorm import GroupNorm
from .layers import (AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, Conv2d, ConvTranspose2d,
                     Dropout, Dropout2d, Identity, LeakyReLU, Linear, MaxPool2d, MaxUnpool2d,
                     PixelShuffle, ReLU, ReLU6, Sigmoid, Upsample)
from .module import Module, ModuleDict, ModuleList, Parameter, Sequential, StateDictError

__all__ = ["init", "Module", "Parameter", "Sequential", "ModuleList", "ModuleDict",
           "StateDictError", "Conv2d", "ConvTranspose2d", "Linear", "BatchNorm2d", "ReLU",
           "ReLU6", "LeakyReLU", "Sigmoid",
           "Dropout", "Dropout2d", "MaxPool2d", "MaxUnpool2d", "AvgPool2d", "AdaptiveAvgPool2d",
           "AdaptiveMaxPool2d", "Upsample", "PixelShuffle", "Identity", "GroupNorm"]
