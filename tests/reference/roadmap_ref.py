"""PyTorch reference of the roadmap backbone: ResNet-50 "modernized" into ConvNeXt-T one design
decision at a time (Section 2 and Table 10 of "A ConvNet for the 2020s", arXiv 2201.03545).

Written from the paper's description of each step; one class whose options are the steps' design
decisions, with the module names of nextdet's `Roadmap` backbone (backbones/src/roadmap/), which
follow the official ConvNeXt layout so that the last step is exactly ConvNeXt-T:

  downsample_layers.0      the stem: ResNet's (conv 7x7/2, norm, act, max-pool 3x3/2) as
                           .0 .1 .2 .3, or a patchify conv 4x4/4 (.0) with an optional norm (.1)
  downsample_layers.{1,2,3}  with separate downsampling: norm (.0), then conv 2x2/2 (.1)
  stages.S.B               blocks; a block whose spatial conv comes first is named as ConvNeXt's
                           (dwconv, norm, pwconv1, norm1, act, pwconv2, norm2, gamma), one with the
                           spatial conv in the middle as torchvision's bottleneck (conv1, norm1,
                           conv2, norm2, conv3, norm3, act); the shortcut of a block that changes
                           width or resolution is downsample.0 (1x1 conv) and downsample.1 (norm)
  norm, head               the optional norm after global average pooling, the linear classifier

A conv or linear directly followed by a batch norm has no bias; every other one has one. Layer
norms inside spatial-first blocks are channels-last (F.layer_norm, as ConvNeXt's block norm);
the others are ConvNeXt's channels-first tensor-op layer norm. Global pooling is x.mean([-2, -1]).
Imported by make_complexity_fixtures.py; not a test by itself.
"""

import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convnext_ref import LayerNorm  # noqa: E402

# One entry per step of the paper's Figure 2 / Table 10 (the enhanced-recipe ResNet-50 first):
# (name, options changed from the previous step). Names are the config files' stems.
STEPS = [
    ("r50", dict(depths=(3, 4, 6, 3), dims=(64, 128, 256, 512), stem="resnet", block="bottleneck")),
    ("stage_ratio", dict(depths=(3, 3, 9, 3))),
    ("patchify_stem", dict(stem="patchify")),
    ("depthwise_conv", dict(depthwise=True)),
    ("width_96", dict(dims=(96, 192, 384, 768))),
    ("inverted_bottleneck", dict(block="inverted")),
    ("move_up_dwconv", dict(spatial_first=True)),
    ("kernel_5", dict(kernel_size=5)),
    ("kernel_7", dict(kernel_size=7)),
    ("kernel_9", dict(kernel_size=9)),
    ("kernel_11", dict(kernel_size=11)),
    ("gelu", dict(kernel_size=7, act="gelu")),
    ("fewer_activations", dict(one_act=True)),
    ("fewer_norms", dict(one_norm=True)),
    ("layer_norm", dict(norm="ln")),
    ("separate_downsampling", dict(downsample="separate", stem_norm=True, head_norm=True, layer_scale=1e-6)),
]

DEFAULTS = dict(
    depths=(3, 4, 6, 3),
    dims=(64, 128, 256, 512),
    stem="resnet",
    stem_norm=False,
    block="bottleneck",
    depthwise=False,
    spatial_first=False,
    kernel_size=3,
    act="relu",
    one_act=False,
    one_norm=False,
    norm="bn",
    downsample="block",
    head_norm=False,
    layer_scale=0.0,
)


def step_options():
    """[(name, full options)] for every step, each step's options applied on top of the last."""
    out, cur = [], dict(DEFAULTS)
    for name, change in STEPS:
        cur = dict(cur, **change)
        out.append((name, dict(cur)))
    return out


def make_norm(kind, c, channels_last=False):
    if kind == "bn":
        return nn.BatchNorm2d(c)
    return LayerNorm(c, data_format="channels_last" if channels_last else "channels_first")


def make_act(kind):
    return nn.ReLU(inplace=False) if kind == "relu" else nn.GELU()


class ChannelsLastBN(nn.Module):
    """Batch norm over the channels of an NHWC tensor (the statistics of nn.BatchNorm2d)."""

    def __init__(self, c):
        super().__init__()
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return self.bn(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class SpatialFirstBlock(nn.Module):
    """dwconv (stride s) -> norm -> [act] -> pwconv1 -> [norm1] -> act -> pwconv2 -> [norm2] -> gamma."""

    def __init__(self, inp, dim, stride, o):
        super().__init__()
        k, bn = o["kernel_size"], o["norm"] == "bn"
        self.stride, self.one_act, self.one_norm = stride, o["one_act"], o["one_norm"]
        groups = inp if o["depthwise"] else 1
        self.dwconv = nn.Conv2d(inp, inp, k, stride, k // 2, groups=groups, bias=not bn)
        self.norm = ChannelsLastBN(inp) if bn else LayerNorm(inp)
        self.pwconv1 = nn.Linear(inp, 4 * dim, bias=not (bn and not self.one_norm))
        if not self.one_norm:
            self.norm1 = ChannelsLastBN(4 * dim) if bn else LayerNorm(4 * dim)
        self.act = make_act(o["act"])
        self.pwconv2 = nn.Linear(4 * dim, dim, bias=not (bn and not self.one_norm))
        if not self.one_norm:
            self.norm2 = ChannelsLastBN(dim) if bn else LayerNorm(dim)
        ls = o["layer_scale"]
        self.gamma = nn.Parameter(ls * torch.ones(dim)) if ls > 0 else None
        self.downsample = None
        if stride != 1 or inp != dim:
            self.downsample = nn.Sequential(
                nn.Conv2d(inp, dim, 1, stride, bias=not bn), make_norm(o["norm"], dim)
            )

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.norm(y)
        if not self.one_act:
            y = self.act(y)
        y = self.pwconv1(y)
        if not self.one_norm:
            y = self.norm1(y)
        y = self.pwconv2(self.act(y))
        if not self.one_norm:
            y = self.norm2(y)
        if self.gamma is not None:
            y = self.gamma * y
        y = y.permute(0, 3, 1, 2)
        y = y + (self.downsample(x) if self.downsample is not None else x)
        return y if self.one_act else self.act(y)


class MiddleSpatialBlock(nn.Module):
    """conv1 1x1 -> norm1 -> act -> conv2 kxk (stride s) -> norm2 -> act -> conv3 1x1 -> norm3 -> gamma,
    plus the shortcut, then act: the bottleneck (width dim, output 4 dim) or the inverted
    bottleneck (input and output dim, hidden 4 dim)."""

    def __init__(self, inp, dim, stride, o):
        super().__init__()
        assert not (o["one_act"] or o["one_norm"]), "fewer activations / norms need the spatial conv first"
        k, bn = o["kernel_size"], o["norm"] == "bn"
        hidden, out = (dim, 4 * dim) if o["block"] == "bottleneck" else (4 * dim, dim)
        self.conv1 = nn.Conv2d(inp, hidden, 1, bias=not bn)
        self.norm1 = make_norm(o["norm"], hidden)
        groups = hidden if o["depthwise"] else 1
        self.conv2 = nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=groups, bias=not bn)
        self.norm2 = make_norm(o["norm"], hidden)
        self.conv3 = nn.Conv2d(hidden, out, 1, bias=not bn)
        self.norm3 = make_norm(o["norm"], out)
        self.act = make_act(o["act"])
        ls = o["layer_scale"]
        self.gamma = nn.Parameter(ls * torch.ones(out)) if ls > 0 else None
        self.downsample = None
        if stride != 1 or inp != out:
            self.downsample = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=not bn), make_norm(o["norm"], out))

    def forward(self, x):
        y = self.act(self.norm1(self.conv1(x)))
        y = self.act(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        if self.gamma is not None:
            y = self.gamma[:, None, None] * y
        y = y + (self.downsample(x) if self.downsample is not None else x)
        return self.act(y)


class Roadmap(nn.Module):
    def __init__(self, o, num_classes=1000):
        super().__init__()
        dims, depths = o["dims"], o["depths"]
        bn = o["norm"] == "bn"
        width = [4 * d if o["block"] == "bottleneck" else d for d in dims]  # block outputs
        stem = []
        if o["stem"] == "resnet":
            stem = [nn.Conv2d(3, dims[0], 7, 2, 3, bias=False), make_norm(o["norm"], dims[0]), make_act(o["act"]),
                    nn.MaxPool2d(3, 2, 1)]
        else:
            stem = [nn.Conv2d(3, dims[0], 4, 4, bias=not (bn and o["stem_norm"]))]
            if o["stem_norm"]:
                stem.append(make_norm(o["norm"], dims[0]))
        self.downsample_layers = nn.ModuleList([nn.Sequential(*stem)])
        separate = o["downsample"] == "separate"
        for i in range(1, 4):
            if separate:
                self.downsample_layers.append(
                    nn.Sequential(make_norm(o["norm"], width[i - 1]), nn.Conv2d(width[i - 1], width[i], 2, 2)))
        spatial_first = o["block"] == "inverted" and o["spatial_first"]
        Block = SpatialFirstBlock if spatial_first else MiddleSpatialBlock
        self.stages = nn.ModuleList()
        inp = dims[0]
        for i, n in enumerate(depths):
            if separate and i > 0:
                inp = width[i]
            blocks = []
            for b in range(n):
                stride = 2 if (b == 0 and i > 0 and not separate) else 1
                blocks.append(Block(inp, dims[i], stride, o))
                inp = width[i]
            self.stages.append(nn.Sequential(*blocks))
        if o["head_norm"]:
            self.norm = nn.LayerNorm(width[3], eps=1e-6)
        self.head = nn.Linear(width[3], num_classes)
        self.separate, self.head_norm = separate, o["head_norm"]

    def forward(self, x):
        x = self.downsample_layers[0](x)
        for i in range(4):
            if self.separate and i > 0:
                x = self.downsample_layers[i](x)
            x = self.stages[i](x)
        x = x.mean([-2, -1])
        if self.head_norm:
            x = self.norm(x)
        return self.head(x)
