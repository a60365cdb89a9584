"""Minimal PyTorch ConvNeXt reference used by the fixture generators.

Written from the official ConvNeXt code's semantics (official
facebookresearch layout), so parameter names match the official checkpoints:

  classifier : downsample_layers.{0..3}.{0,1}.*, stages.S.B.{dwconv,norm,pwconv1,pwconv2,gamma},
               norm.*, head.*
  detection  : the same plus norm0..norm3 (channels-first LN applied to each stage output)
  isotropic  : stem.*, blocks.i.*, norm.*, head.*

Also contains the random "non-trivial" initialisation used by every fixture and the
official -> timm key renaming.  Not a test by itself; imported by make_backbone_fixtures.py
and make_op_fixtures.py (which only uses channels_first_layer_norm).
"""

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-6


class LayerNorm(nn.Module):
    """LayerNorm over channels, either channels_last (F.layer_norm) or channels_first (NCHW, dim 1)."""

    def __init__(self, dim, eps=EPS, data_format="channels_last"):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps
        self.data_format = data_format
        self.dim = dim

    def forward(self, x):
        if self.data_format == "channels_last":
            return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
        return channels_first_layer_norm(x, self.weight, self.bias, self.eps)


def channels_first_layer_norm(x, weight, bias, eps=EPS):
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)  # biased variance
    x = (x - u) / torch.sqrt(s + eps)
    return weight[:, None, None] * x + bias[:, None, None]


class Block(nn.Module):
    def __init__(self, dim, layer_scale=1.0):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()  # exact erf GELU
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim)) if layer_scale > 0 else None

    def forward(self, x):
        inp = x
        x = self.dwconv(x)
        x = x.permute(0, 2, 3, 1)
        x = self.norm(x)
        x = self.pwconv2(self.act(self.pwconv1(x)))
        if self.gamma is not None:
            x = self.gamma * x
        x = x.permute(0, 3, 1, 2)
        return inp + x


class ConvNeXt(nn.Module):
    """Official layout. detection=True adds norm0..norm3 and forward_det()."""

    def __init__(self, depths, dims, num_classes, in_chans=3, layer_scale=1.0, detection=False):
        super().__init__()
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(
                nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4),
                LayerNorm(dims[0], data_format="channels_first"),
            )
        )
        for i in range(1, 4):
            self.downsample_layers.append(
                nn.Sequential(
                    LayerNorm(dims[i - 1], data_format="channels_first"),
                    nn.Conv2d(dims[i - 1], dims[i], kernel_size=2, stride=2),
                )
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*[Block(dims[i], layer_scale) for _ in range(depths[i])]) for i in range(4)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=EPS)
        self.head = nn.Linear(dims[-1], num_classes)
        self.detection = detection
        if detection:
            for i in range(4):
                self.add_module(f"norm{i}", LayerNorm(dims[i], data_format="channels_first"))

    def forward(self, x):
        for i in range(4):
            x = self.downsample_layers[i](x)
            x = self.stages[i](x)
        x = self.norm(x.mean([-2, -1]))
        return self.head(x)

    def forward_det(self, x):
        outs = []
        for i in range(4):
            x = self.downsample_layers[i](x)
            x = self.stages[i](x)
            outs.append(getattr(self, f"norm{i}")(x))
        return outs


class ConvNeXtIsotropic(nn.Module):
    def __init__(self, depth, dim, num_classes, in_chans=3, layer_scale=0.0):
        super().__init__()
        self.stem = nn.Conv2d(in_chans, dim, kernel_size=16, stride=16)
        self.blocks = nn.Sequential(*[Block(dim, layer_scale) for _ in range(depth)])
        self.norm = LayerNorm(dim)  # custom class, channels_last
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        x = self.norm(x.mean([-2, -1]))
        return self.head(x)


@torch.no_grad()
def random_init(model, generator=None):
    """Large, non-default random init so every parameter visibly affects the output.

    conv/linear weights ~ N(0, 1/sqrt(fan_in)), their biases ~ U(-0.1, 0.1),
    LayerNorm weights ~ U(0.5, 1.5), LN biases ~ U(-0.1, 0.1), gamma ~ U(0.3, 1.0).
    Parameters are visited in named_parameters() order, so the result depends only on the
    RNG state and the architecture.
    """
    g = generator
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        if leaf == "gamma":
            p.copy_(torch.empty_like(p).uniform_(0.3, 1.0, generator=g))
        elif isinstance(owner, (LayerNorm, nn.LayerNorm)):
            if leaf == "weight":
                p.copy_(torch.empty_like(p).uniform_(0.5, 1.5, generator=g))
            else:
                p.copy_(torch.empty_like(p).uniform_(-0.1, 0.1, generator=g))
        elif isinstance(owner, (nn.Conv2d, nn.Linear)):
            if leaf == "weight":
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            else:
                p.copy_(torch.empty_like(p).uniform_(-0.1, 0.1, generator=g))
        else:
            raise ValueError(f"unhandled parameter {name}")


def state_dict_f32(model):
    """Plain {name: contiguous float32 clone} of a module's state_dict."""
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}


def official_to_timm_key(k):
    """Rename one official ConvNeXt classifier key to timm.models.convnext naming."""
    k = re.sub(r"^downsample_layers\.0\.", "stem.", k)
    k = re.sub(r"^downsample_layers\.(\d+)\.(\d+)\.", r"stages.\1.downsample.\2.", k)
    k = re.sub(r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", k)
    k = k.replace(".dwconv.", ".conv_dw.")
    k = k.replace(".pwconv1.", ".mlp.fc1.").replace(".pwconv2.", ".mlp.fc2.")
    k = re.sub(r"^norm\.", "head.norm.", k)
    k = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", k)
    return k
